//! The CPU gate of `run --jobs`: a timing-sensitive cell (a race) runs only while no
//! other cell is busy, but beside cells that are only waiting (a `wait` for a kernel
//! timer, a `sleep`, a `join` of connections the kernel retries by itself). A shared
//! cell holds a busy share for its whole run except while its timeline waits
//! ([`idle`]); a quiet cell holds a busy share while its lab is built, read and torn
//! down, and the gate exclusively while its timeline runs ([`timeline`]).
//!
//! A cell that stops waiting gets its share back before any further quiet cell
//! starts, so its timeline is held up by at most the one quiet cell running then.
//! A cell that starts anew waits while a quiet cell is queued, so the queued one gets
//! its turn once the cells busy now finish or wait (without this, a pool that keeps
//! starting shared cells held a quiet one back until the pool ran dry: 9 s on the host
//! for a 0.35 s multiflow cell).

use std::cell::RefCell;
use std::sync::{Arc, Condvar, Mutex};

#[derive(Default)]
struct State {
    /// Shared cells not waiting now.
    busy: usize,
    /// Shared cells asking for their share back (they go before quiet cells).
    resuming: usize,
    /// Quiet cells waiting for their turn (cells starting anew go after them).
    queued: usize,
    /// A quiet cell runs.
    exclusive: bool,
}

#[derive(Default)]
pub struct Gate {
    state: Mutex<State>,
    changed: Condvar,
}

impl Gate {
    fn wait_while(&self, busy: impl Fn(&State) -> bool) -> std::sync::MutexGuard<'_, State> {
        let guard = self.state.lock().unwrap_or_else(|e| e.into_inner());
        self.changed
            .wait_while(guard, |s| busy(s))
            .unwrap_or_else(|e| e.into_inner())
    }

    fn update(&self, f: impl FnOnce(&mut State)) {
        f(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()));
        self.changed.notify_all();
    }

    /// Runs `f` with no other cell busy.
    pub fn quiet<T>(&self, f: impl FnOnce() -> T) -> T {
        self.update(|s| s.queued += 1);
        let mut s = self.wait_while(|s| s.exclusive || s.busy > 0 || s.resuming > 0);
        s.queued -= 1;
        s.exclusive = true;
        drop(s);
        let _release = Release(|| self.update(|s| s.exclusive = false));
        f()
    }

    /// A busy share: at a cell's start after the quiet cells queued now; back after a
    /// wait (`resuming`) before them.
    fn take_share(&self, resuming: bool) {
        if resuming {
            self.update(|s| s.resuming += 1);
        }
        let mut s = self.wait_while(|s| s.exclusive || (!resuming && s.queued > 0));
        if resuming {
            s.resuming -= 1;
        }
        s.busy += 1;
        drop(s);
        self.changed.notify_all();
    }

    fn give_share(&self) {
        self.update(|s| s.busy -= 1);
    }

    /// Runs `f` (a quiet cell): as a shared cell, but its [`timeline`] runs alone.
    pub fn quiet_cell<T>(self: &Arc<Self>, f: impl FnOnce() -> T) -> T {
        QUIET.with(|q| q.set(true));
        let _release = Release(|| QUIET.with(|q| q.set(false)));
        self.shared(f)
    }

    /// Runs `f` (a shared cell) holding a busy share, given up only inside [`idle`].
    pub fn shared<T>(self: &Arc<Self>, f: impl FnOnce() -> T) -> T {
        self.take_share(false);
        CURRENT.with(|c| *c.borrow_mut() = Some(self.clone()));
        let _release = Release(|| {
            CURRENT.with(|c| c.borrow_mut().take());
            self.give_share();
        });
        f()
    }
}

thread_local! {
    /// The gate whose share this thread's cell holds.
    static CURRENT: RefCell<Option<Arc<Gate>>> = const { RefCell::new(None) };
    /// This thread's cell is quiet.
    static QUIET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f`, a cell's timeline: with no other cell busy when the cell is quiet
/// ([`Gate::quiet_cell`]), else as it is.
pub fn timeline<T>(f: impl FnOnce() -> T) -> T {
    if !QUIET.with(|q| q.get()) {
        return f();
    }
    without_share(|gate| match gate {
        Some(gate) => gate.quiet(f),
        None => f(),
    })
}

/// Runs `f`, a part of a cell's timeline that only waits, without the cell's busy
/// share (when it runs under a gate at all), so a quiet cell may run meanwhile.
pub fn idle<T>(f: impl FnOnce() -> T) -> T {
    without_share(|_| f())
}

/// Runs `f` with this thread's busy share given up, and takes it back after (also
/// while unwinding); `f` gets the gate, or None when the thread runs under none.
fn without_share<T>(f: impl FnOnce(Option<&Gate>) -> T) -> T {
    let Some(gate) = CURRENT.with(|c| c.borrow_mut().take()) else {
        return f(None);
    };
    gate.give_share();
    let _back = Release(|| {
        gate.take_share(true);
        CURRENT.with(|c| *c.borrow_mut() = Some(gate.clone()));
    });
    f(Some(&gate))
}

/// Runs its closure when dropped (also while unwinding).
struct Release<F: FnMut()>(F);

impl<F: FnMut()> Drop for Release<F> {
    fn drop(&mut self) {
        (self.0)()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::time::Duration;

    #[test]
    fn a_quiet_cell_runs_beside_waiting_cells_only() {
        let gate = Arc::new(Gate::default());
        let busy_now = AtomicUsize::new(0);
        let quiet_ran = AtomicBool::new(false);
        let overlapped_idle = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                gate.shared(|| {
                    busy_now.fetch_add(1, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(30));
                    busy_now.fetch_sub(1, Ordering::SeqCst);
                    idle(|| {
                        // The quiet cell gets its turn while this one waits.
                        for _ in 0..200 {
                            if quiet_ran.load(Ordering::SeqCst) {
                                overlapped_idle.store(true, Ordering::SeqCst);
                                break;
                            }
                            std::thread::sleep(Duration::from_millis(5));
                        }
                    });
                    busy_now.fetch_add(1, Ordering::SeqCst);
                    busy_now.fetch_sub(1, Ordering::SeqCst);
                })
            });
            std::thread::sleep(Duration::from_millis(5));
            s.spawn(|| {
                gate.quiet(|| {
                    assert_eq!(busy_now.load(Ordering::SeqCst), 0, "a busy cell beside");
                    std::thread::sleep(Duration::from_millis(20));
                    assert_eq!(busy_now.load(Ordering::SeqCst), 0, "a busy cell beside");
                    quiet_ran.store(true, Ordering::SeqCst);
                })
            });
        });
        assert!(overlapped_idle.load(Ordering::SeqCst));
    }

    #[test]
    fn a_resuming_cell_goes_before_the_next_quiet_cell() {
        let gate = Arc::new(Gate::default());
        let order = Mutex::new(Vec::new());
        std::thread::scope(|s| {
            s.spawn(|| {
                gate.shared(|| {
                    idle(|| std::thread::sleep(Duration::from_millis(30)));
                    order.lock().unwrap().push("resumed");
                    std::thread::sleep(Duration::from_millis(30));
                })
            });
            std::thread::sleep(Duration::from_millis(5));
            // The first quiet cell runs while the shared one waits and outlasts its wait;
            // the second is queued behind the resumed cell.
            s.spawn(|| {
                gate.quiet(|| {
                    std::thread::sleep(Duration::from_millis(50));
                    order.lock().unwrap().push("quiet1");
                })
            });
            std::thread::sleep(Duration::from_millis(40));
            s.spawn(|| gate.quiet(|| order.lock().unwrap().push("quiet2")));
        });
        assert_eq!(*order.lock().unwrap(), ["quiet1", "resumed", "quiet2"]);
    }

    #[test]
    fn a_queued_quiet_cell_goes_before_cells_that_start_after_it() {
        let gate = Arc::new(Gate::default());
        let order = Mutex::new(Vec::new());
        std::thread::scope(|s| {
            s.spawn(|| {
                gate.shared(|| {
                    std::thread::sleep(Duration::from_millis(40));
                    order.lock().unwrap().push("busy");
                })
            });
            std::thread::sleep(Duration::from_millis(5));
            s.spawn(|| gate.quiet(|| order.lock().unwrap().push("quiet")));
            std::thread::sleep(Duration::from_millis(5));
            // Starts while the quiet cell is queued behind the busy one: goes after it.
            s.spawn(|| gate.shared(|| order.lock().unwrap().push("later")));
        });
        assert_eq!(*order.lock().unwrap(), ["busy", "quiet", "later"]);
    }

    #[test]
    fn idle_outside_a_gate_just_runs() {
        assert_eq!(idle(|| 7), 7);
        assert_eq!(timeline(|| 8), 8);
    }

    #[test]
    fn a_quiet_cell_builds_beside_busy_cells_and_runs_its_timeline_alone() {
        let gate = Arc::new(Gate::default());
        let busy_now = AtomicUsize::new(0);
        let built_beside_busy = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                gate.shared(|| {
                    busy_now.fetch_add(1, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(60));
                    busy_now.fetch_sub(1, Ordering::SeqCst);
                })
            });
            std::thread::sleep(Duration::from_millis(10));
            s.spawn(|| {
                gate.quiet_cell(|| {
                    // The build: beside the busy cell.
                    if busy_now.load(Ordering::SeqCst) > 0 {
                        built_beside_busy.store(true, Ordering::SeqCst);
                    }
                    timeline(|| {
                        assert_eq!(busy_now.load(Ordering::SeqCst), 0, "busy beside a timeline");
                        // Nothing to give up inside a quiet timeline.
                        idle(|| assert_eq!(busy_now.load(Ordering::SeqCst), 0));
                    });
                })
            });
        });
        assert!(built_beside_busy.load(Ordering::SeqCst));
    }
}
