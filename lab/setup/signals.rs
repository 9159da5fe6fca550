//! SIGINT/SIGTERM/SIGHUP set a flag the runner polls, so it can tear the lab down normally.
//! A second signal while the flag is already set (and more than a second after the
//! first) kills the process the default way;
//! `faultlab clean` then sweeps what the state file lists.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// CLOCK_MONOTONIC milliseconds of the first signal (0: none yet).
static FIRST_MS: AtomicU64 = AtomicU64::new(0);

/// Signals this soon after the first are the same request, not a second one:
/// coreutils' `timeout` (which kselftest's runner.sh wraps every test in, twice)
/// sends SIGTERM to the command and again to its process group
/// (timeout.c `cleanup` → `send_sig(monitored_pid)` and `send_sig(0)`).
const SAME_REQUEST_MS: u64 = 1000;

fn now_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime is async-signal-safe and writes only `ts`.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1000 + (ts.tv_nsec as u64) / 1_000_000 + 1
}

extern "C" fn on_signal(sig: libc::c_int) {
    // Only atomics, clock_gettime(2), signal(2) and raise(3): all async-signal-safe.
    let now = now_ms();
    let first = match FIRST_MS.compare_exchange(0, now, Ordering::SeqCst, Ordering::SeqCst) {
        Ok(_) => now,
        Err(first) => first,
    };
    if INTERRUPTED.swap(true, Ordering::SeqCst) && now.saturating_sub(first) >= SAME_REQUEST_MS {
        // SAFETY: resetting the disposition and re-raising is async-signal-safe.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
            libc::raise(sig);
        }
    }
}

/// Installs the SIGINT, SIGTERM and SIGHUP (terminal gone) handlers. Idempotent.
pub fn install() -> anyhow::Result<()> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: the handler only touches an AtomicBool and async-signal-safe calls.
        unsafe { sigaction(sig, &action) }
            .map_err(|e| anyhow::anyhow!("install {sig} handler: {e}"))?;
    }
    Ok(())
}

/// True once SIGINT, SIGTERM or SIGHUP has been received.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Clears the flag (after the runner has handled it, or in tests).
pub fn reset() {
    INTERRUPTED.store(false, Ordering::SeqCst);
    FIRST_MS.store(0, Ordering::SeqCst);
}
