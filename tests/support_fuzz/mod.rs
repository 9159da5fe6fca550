//! What the fuzz tests share: a fast reproducible generator (xorshift64*) and the
//! long runs' knobs, FAULTLAB_FUZZ_CASES and FAULTLAB_FUZZ_SEED. Used by
//! tests/fuzz_scenario.rs, fuzz_expr.rs, fuzz_cli.rs and lab_fuzz_capture_filter.rs.
#![allow(dead_code)]

pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in 0..n (0 when n is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// FAULTLAB_FUZZ_CASES, else `default`.
pub fn cases(default: u64) -> u64 {
    std::env::var("FAULTLAB_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// FAULTLAB_FUZZ_SEED, else `default` (fixed, so a run is reproducible).
pub fn seed(default: u64) -> u64 {
    std::env::var("FAULTLAB_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}
