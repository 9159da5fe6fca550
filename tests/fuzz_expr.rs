//! The expression language (triggers, expectations, waits) is fuzzed: mutations of
//! every expression in the catalogue (byte flips, deletions, duplications, token
//! insertions and swaps, truncation) never panic the parser or the evaluator, and
//! every rejected input is reported with a column inside the input (1 to len + 1).
//!
//! `cargo test --test fuzz_expr` runs a CI-sized proptest; the long run is
//! `FAULTLAB_FUZZ_CASES=1000000 cargo test --test fuzz_expr -- --ignored --nocapture`.

mod support_fuzz;

use faultlab::model::expr::Expectation;
use faultlab::verdict::Observations;
use proptest::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Every trigger and expectation of the catalogue's cells, plus a few edge cases.
fn seeds() -> &'static [String] {
    static SEEDS: OnceLock<Vec<String>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut out: Vec<String> = [
            "a == 1",
            "not (x.y > 2 or z < -3e6)",
            "sum(link.*.rx_packets) >= 0.5 * count(conntrack.*.drop)",
            "abs(min(a, b, 3) - max(c, 1)) != 0 and exists(p.*.q)",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for dir in ["scenarios", "scenarios/selftests"] {
            let mut files: Vec<PathBuf> = std::fs::read_dir(root.join(dir))
                .unwrap()
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .collect();
            files.sort();
            for f in files {
                let text = std::fs::read_to_string(&f).unwrap();
                let Ok(scn) = faultlab::scenario::parse(&f.display().to_string(), &text) else {
                    continue;
                };
                for c in &scn.cells {
                    out.extend(c.trigger.iter().map(|e| e.source().to_string()));
                    out.extend(c.expect.iter().map(|e| e.source().to_string()));
                }
            }
        }
        out.sort();
        out.dedup();
        assert!(out.len() > 50, "only {} seed expressions", out.len());
        out
    })
}

const TOKENS: &[&str] = &[
    "(", ")", ",", "+", "-", "*", "/", "==", "!=", "<", "<=", ">", ">=", "=", "!", "and", "or",
    "not", "sum(", "count(", "exists(", "abs(", "min(", "max(", "**", ".", "*", "@", "-1", "1e308",
    "1e309", "0.0", "NaN", "inf", "1e", ".5", "5.", "0x10", " ", "\t", "\n", "é", "\u{0}", "a.b-c",
    "a-", "-a", "_", "9a",
];

#[derive(Debug, Clone)]
enum Mutation {
    FlipByte(usize, u8),
    Delete(usize, usize),
    Duplicate(usize, usize),
    Insert(usize, usize),
    SwapTokens(usize, usize),
    Truncate(usize),
}

fn apply(s: &str, m: &Mutation) -> String {
    let mut b = s.as_bytes().to_vec();
    let n = b.len().max(1);
    match *m {
        Mutation::FlipByte(i, mask) => {
            if !b.is_empty() {
                b[i % n] ^= mask.max(1);
            }
        }
        Mutation::Delete(i, len) => {
            let i = i % (b.len() + 1);
            let end = (i + len % 8).min(b.len());
            b.drain(i..end);
        }
        Mutation::Duplicate(i, len) => {
            let i = i % (b.len() + 1);
            let end = (i + len % 12).min(b.len());
            let part = b[i..end].to_vec();
            b.splice(i..i, part);
        }
        Mutation::Insert(at, tok) => {
            let at = at % (b.len() + 1);
            b.splice(at..at, TOKENS[tok % TOKENS.len()].bytes());
        }
        Mutation::SwapTokens(i, j) => {
            let words: Vec<&str> = s.split(' ').collect();
            let mut w = words.clone();
            let k = w.len();
            w.swap(i % k, j % k);
            b = w.join(" ").into_bytes();
        }
        Mutation::Truncate(at) => b.truncate(at % (b.len() + 1)),
    }
    String::from_utf8_lossy(&b).into_owned()
}

/// Ok(true) accepted (and evaluated), Ok(false) rejected with a positioned error,
/// Err(why) for an error without a usable position. A panic propagates.
fn check(src: &str, value: f64) -> Result<bool, String> {
    match Expectation::parse(src) {
        Ok(e) => {
            // Every name it reads observed with `value`; globs then match one name.
            let obs: Observations = e
                .names()
                .iter()
                .map(|n| (n.replace("**", "x").replace('*', "x"), value))
                .collect();
            let _ = e.eval(&obs);
            let _ = e.eval(&Observations::new());
            Ok(true)
        }
        Err(err) => {
            let len = src.chars().count();
            if err.col < 1 || err.col > len + 1 {
                return Err(format!("column {} outside 1..={}: {err}", err.col, len + 1));
            }
            if !err.to_string().contains(&format!("at column {}", err.col)) {
                return Err(format!("rendered without its column: {err}"));
            }
            Ok(false)
        }
    }
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, m)| Mutation::FlipByte(i, m)),
        (any::<usize>(), any::<usize>()).prop_map(|(i, l)| Mutation::Delete(i, l)),
        (any::<usize>(), any::<usize>()).prop_map(|(i, l)| Mutation::Duplicate(i, l)),
        (any::<usize>(), any::<usize>()).prop_map(|(i, t)| Mutation::Insert(i, t)),
        (any::<usize>(), any::<usize>()).prop_map(|(i, j)| Mutation::SwapTokens(i, j)),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

const VALUES: &[f64] = &[0.0, 1.0, -1.0, 1e308, f64::NAN, f64::INFINITY, 0.5];

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 4000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn mutated_expressions_never_panic_and_errors_are_positioned(
        seed in any::<usize>(),
        value in any::<usize>(),
        ms in proptest::collection::vec(mutation(), 1..5),
    ) {
        let mut src = seeds()[seed % seeds().len()].clone();
        for m in &ms {
            src = apply(&src, m);
        }
        let r = check(&src, VALUES[value % VALUES.len()]);
        prop_assert!(r.is_ok(), "{}\ninput: {src:?}", r.unwrap_err());
    }
}

#[test]
fn the_seeds_parse_and_errors_point_into_the_input() {
    for s in seeds() {
        assert_eq!(check(s, 1.0), Ok(true), "{s}");
    }
    for (bad, col) in [("a ==", 5), ("(a", 1), ("a === 1", 5), ("", 1)] {
        let e = Expectation::parse(bad).unwrap_err();
        assert_eq!(e.col, col, "{bad:?}: {e}");
    }
}

/// A million mutated expressions (FAULTLAB_FUZZ_CASES, FAULTLAB_FUZZ_SEED).
#[test]
#[ignore = "long run: ~1,000,000 inputs"]
fn fuzz_a_million_expressions() {
    let cases = support_fuzz::cases(1_000_000);
    let seed = support_fuzz::seed(0x5eed_e4b2);
    let mut r = support_fuzz::Rng::new(seed);
    let (mut accepted, mut rejected) = (0u64, 0u64);
    let t0 = std::time::Instant::now();
    for n in 0..cases {
        let mut src = seeds()[(r.next() % seeds().len() as u64) as usize].clone();
        for _ in 0..1 + r.next() % 4 {
            let (i, j) = (r.next() as usize, r.next() as usize);
            let m = match r.next() % 6 {
                0 => Mutation::FlipByte(i, j as u8),
                1 => Mutation::Delete(i, j),
                2 => Mutation::Duplicate(i, j),
                3 => Mutation::Insert(i, j),
                4 => Mutation::SwapTokens(i, j),
                _ => Mutation::Truncate(i),
            };
            src = apply(&src, &m);
        }
        let value = VALUES[(r.next() % VALUES.len() as u64) as usize];
        match std::panic::catch_unwind(|| check(&src, value)) {
            Ok(Ok(true)) => accepted += 1,
            Ok(Ok(false)) => rejected += 1,
            Ok(Err(why)) => panic!("input {n} (seed {seed}): {why}\n{src:?}"),
            Err(_) => panic!("input {n} (seed {seed}) panicked:\n{src:?}"),
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "fuzzed {cases} expressions in {secs:.1} s: {accepted} accepted, {rejected} rejected, 0 panics, every error positioned"
    );
}
