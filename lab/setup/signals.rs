//! SIGINT/SIGTERM/SIGHUP set a flag the runner polls, so it can tear the lab down normally.
//! A second signal while the flag is already set kills the process the default way;
//! `faultlab clean` then sweeps what the state file lists.

use std::sync::atomic::{AtomicBool, Ordering};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(sig: libc::c_int) {
    // Only atomics, signal(2) and raise(3): all async-signal-safe.
    if INTERRUPTED.swap(true, Ordering::SeqCst) {
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
}
