//! TCP connects in flight at once, each with its own cap: non-blocking `connect(2)`
//! and one `poll(2)` over all of them. `churn` uses it so that a connect whose SYN was
//! dropped (it only times out) does not hold up the ones after it; with one in flight
//! it is a plain connect with a timeout.

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use socket2::{SockAddr, Socket};
use std::io::ErrorKind;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

/// How one connect ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outcome {
    /// Established, after this long.
    Connected(Duration),
    /// Nothing within the cap (a dropped SYN is retried by the kernel only after 1 s).
    TimedOut,
    /// RST in answer to the SYN.
    Refused,
    /// Any other error (unreachable, ...).
    Failed,
}

struct Pending {
    sock: Socket,
    started: Instant,
    deadline: Instant,
}

#[derive(Default)]
pub struct Connects {
    pending: Vec<Pending>,
}

fn errno_outcome(e: &std::io::Error) -> Outcome {
    match e.kind() {
        ErrorKind::ConnectionRefused => Outcome::Refused,
        ErrorKind::TimedOut => Outcome::TimedOut,
        _ => Outcome::Failed,
    }
}

impl Connects {
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// How long the most recently started connect in flight has waited (None: none).
    pub fn youngest_waited(&self) -> Option<Duration> {
        self.pending.iter().map(|p| p.started.elapsed()).min()
    }

    /// Gives up every connect in flight (closing its socket); returns how many.
    pub fn give_up(&mut self) -> usize {
        std::mem::take(&mut self.pending).len()
    }

    /// One connect: as [`Connects::start`] and [`Connects::wait`], but given up (None)
    /// as soon as `give_up()` holds, checked every few milliseconds.
    pub fn one(
        sock: Socket,
        dst: &SockAddr,
        cap: Duration,
        give_up: impl Fn() -> bool,
    ) -> std::io::Result<Option<(Socket, Outcome)>> {
        let mut c = Connects::default();
        if let Some(done) = c.start(sock, dst, cap) {
            return Ok(Some(done));
        }
        loop {
            if let Some(done) = c.wait(Duration::from_millis(5))?.pop() {
                return Ok(Some(done));
            }
            if give_up() {
                c.give_up();
                return Ok(None);
            }
        }
    }

    /// Starts connecting `sock` to `dst` with at most `cap` to get there. A connect
    /// that ends at once (an error, or a connect the kernel completes inside the call)
    /// is returned; otherwise it is in flight until [`Connects::wait`] returns it.
    pub fn start(
        &mut self,
        sock: Socket,
        dst: &SockAddr,
        cap: Duration,
    ) -> Option<(Socket, Outcome)> {
        let started = Instant::now();
        if let Err(e) = sock.set_nonblocking(true) {
            return Some((sock, errno_outcome(&e)));
        }
        match sock.connect(dst) {
            Ok(()) => Some((sock, Outcome::Connected(started.elapsed()))),
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {
                self.pending.push(Pending {
                    sock,
                    started,
                    deadline: started + cap,
                });
                None
            }
            Err(e) => Some((sock, errno_outcome(&e))),
        }
    }

    /// Waits at most `max_wait` (and never past the earliest cap) for connects in
    /// flight to end, and returns every one that did or whose cap passed.
    pub fn wait(&mut self, max_wait: Duration) -> std::io::Result<Vec<(Socket, Outcome)>> {
        if self.pending.is_empty() {
            std::thread::sleep(max_wait);
            return Ok(Vec::new());
        }
        let now = Instant::now();
        let earliest = self.pending.iter().map(|p| p.deadline).min().unwrap_or(now);
        let wait = max_wait.min(earliest.saturating_duration_since(now));
        let ready: Vec<bool> = {
            let mut fds: Vec<PollFd> = self
                .pending
                .iter()
                .map(|p| PollFd::new(p.sock.as_fd(), PollFlags::POLLOUT))
                .collect();
            // Rounded up, so a wait shorter than a millisecond does not spin.
            let ms = wait.as_micros().div_ceil(1000).min(u128::from(u16::MAX)) as u16;
            match poll(&mut fds, PollTimeout::from(ms)) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
            fds.iter()
                .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
                .collect()
        };
        let now = Instant::now();
        let mut done = Vec::new();
        let mut keep = Vec::with_capacity(self.pending.len());
        for (p, ready) in std::mem::take(&mut self.pending).into_iter().zip(ready) {
            if ready {
                let outcome = match p.sock.take_error() {
                    Ok(None) => Outcome::Connected(p.started.elapsed()),
                    Ok(Some(e)) | Err(e) => errno_outcome(&e),
                };
                done.push((p.sock, outcome));
            } else if now >= p.deadline {
                done.push((p.sock, Outcome::TimedOut));
            } else {
                keep.push(p);
            }
        }
        self.pending = keep;
        Ok(done)
    }
}

/// Root: in a scratch namespace of its own (loopback only).
#[cfg(all(test, feature = "lab"))]
mod tests {
    use super::*;
    use socket2::{Domain, Protocol, Type};
    use std::net::{Ipv4Addr, SocketAddr};

    fn socket() -> Socket {
        Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap()
    }

    fn listener(backlog: i32) -> (Socket, SockAddr) {
        let l = socket();
        l.bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into())
            .unwrap();
        l.listen(backlog).unwrap();
        let addr = l.local_addr().unwrap();
        (l, addr)
    }

    fn drain(c: &mut Connects) -> Vec<(Socket, Outcome)> {
        let mut out = Vec::new();
        while !c.is_empty() {
            out.extend(c.wait(Duration::from_millis(50)).unwrap());
        }
        out
    }

    /// Runs `f` in a fresh namespace, deleted after.
    fn in_scratch(tag: &str, f: impl FnOnce() -> anyhow::Result<()> + Send) {
        let ns = format!("fltest-conn-{}-{tag}", std::process::id());
        crate::netns::create(&ns).unwrap();
        let res = crate::netns::run_in(&ns, f);
        crate::netns::delete(&ns).unwrap();
        res.unwrap();
    }

    #[test]
    fn connects_to_a_listener_and_is_refused_by_a_closed_port() {
        in_scratch("open", || {
            let (_l, open) = listener(16);
            let closed = listener(16).1; // dropped: its port is closed now
            let mut c = Connects::default();
            let mut outcomes = Vec::new();
            for dst in [&open, &closed, &open] {
                if let Some(done) = c.start(socket(), dst, Duration::from_secs(5)) {
                    outcomes.push(done.1);
                }
            }
            assert!(c.len() <= 3);
            outcomes.extend(drain(&mut c).into_iter().map(|d| d.1));
            let connected = outcomes
                .iter()
                .filter(|o| matches!(o, Outcome::Connected(_)))
                .count();
            assert_eq!(connected, 2, "{outcomes:?}");
            let refused = outcomes.iter().filter(|o| **o == Outcome::Refused).count();
            assert_eq!(refused, 1, "{outcomes:?}");
            Ok(())
        });
    }

    #[test]
    fn a_connect_nobody_answers_times_out_at_its_cap_beside_one_that_connects() {
        in_scratch("cap", || {
            // A listener whose accept queue is full drops further SYNs
            // (tcp_conn_request: sk_acceptq_is_full), so a connect stays in SYN_SENT.
            let (_full, full_addr) = listener(0);
            let mut c = Connects::default();
            assert!(c
                .start(socket(), &full_addr, Duration::from_secs(5))
                .is_none());
            let first = drain(&mut c);
            assert!(
                matches!(first[0].1, Outcome::Connected(_)),
                "{:?}",
                first[0].1
            );
            let (_open, open_addr) = listener(16);
            let t0 = Instant::now();
            assert!(c
                .start(socket(), &full_addr, Duration::from_millis(150))
                .is_none());
            assert!(c
                .start(socket(), &open_addr, Duration::from_secs(5))
                .is_none());
            assert_eq!(c.len(), 2);
            let mut order = Vec::new();
            while !c.is_empty() {
                for (_, o) in c.wait(Duration::from_millis(50))? {
                    order.push((o, t0.elapsed()));
                }
            }
            // The open port's connect ends first, not after the hanging one's cap.
            assert!(matches!(order[0].0, Outcome::Connected(_)), "{order:?}");
            assert!(order[0].1 < Duration::from_millis(150), "{order:?}");
            assert_eq!(order[1].0, Outcome::TimedOut, "{order:?}");
            assert!(order[1].1 >= Duration::from_millis(150), "{order:?}");
            assert!(order[1].1 < Duration::from_millis(900), "{order:?}");
            drop(first);
            Ok(())
        });
    }

    #[test]
    fn one_connect_is_given_up_when_asked_and_not_before() {
        in_scratch("one", || {
            let (_full, full_addr) = listener(0);
            let (_open, open_addr) = listener(16);
            let first = Connects::one(socket(), &full_addr, Duration::from_secs(5), || false)?;
            assert!(matches!(first, Some((_, Outcome::Connected(_)))));
            let done = Connects::one(socket(), &open_addr, Duration::from_secs(5), || false)?;
            assert!(matches!(done, Some((_, Outcome::Connected(_)))));
            // The hanging connect: given up once asked (after 100 ms), not at its 5 s cap.
            let t0 = Instant::now();
            let late = || t0.elapsed() >= Duration::from_millis(100);
            let hanging = Connects::one(socket(), &full_addr, Duration::from_secs(5), late)?;
            assert!(hanging.is_none());
            let took = t0.elapsed();
            assert!(
                took >= Duration::from_millis(100) && took < Duration::from_secs(1),
                "{took:?}"
            );
            drop(first);
            Ok(())
        });
    }
}
