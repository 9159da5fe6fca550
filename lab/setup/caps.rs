//! How much the lab build's own caps (a helper process binding its port, links getting
//! carrier) are stretched: `--slow`, set once by the runner before any lab is built.
//! Under TCG with several guests on two cores, starting a helper process took over the
//! host's 5 s.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

static SLOW_BITS: AtomicU64 = AtomicU64::new(0x3ff0_0000_0000_0000); // 1.0

/// Sets the factor (`--slow`); values below 1 keep the host's caps.
pub fn set_slow(factor: f64) {
    SLOW_BITS.store(factor.max(1.0).to_bits(), Ordering::Relaxed);
}

/// `cap` stretched by the factor.
pub fn scaled(cap: Duration) -> Duration {
    cap.mul_f64(f64::from_bits(SLOW_BITS.load(Ordering::Relaxed)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_stretch_by_the_factor_and_never_shrink() {
        assert_eq!(1.0f64.to_bits(), 0x3ff0_0000_0000_0000);
        set_slow(10.0);
        assert_eq!(scaled(Duration::from_secs(5)), Duration::from_secs(50));
        set_slow(0.5);
        assert_eq!(scaled(Duration::from_secs(5)), Duration::from_secs(5));
        set_slow(1.0);
    }
}
