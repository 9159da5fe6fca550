//! The scenario parser is fuzzed: mutations of the real scenario files (byte flips,
//! line deletions and duplications, token swaps and insertions, truncation) never
//! panic, and every rejected input is reported as `file:line:column: ...` with line
//! and column >= 1.
//!
//! `cargo test --test fuzz_scenario` runs a CI-sized proptest; the long run is
//! `FAULTLAB_FUZZ_CASES=1000000 cargo test --release --test fuzz_scenario -- --ignored --nocapture`.

mod support_fuzz;

use proptest::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Seed inputs: every scenario file and test fixture, with the path templates
/// resolve against.
fn seeds() -> &'static [(String, Vec<u8>)] {
    static SEEDS: OnceLock<Vec<(String, Vec<u8>)>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut out = Vec::new();
        for dir in ["scenarios", "tests/fixtures"] {
            let Ok(rd) = std::fs::read_dir(root.join(dir)) else {
                continue;
            };
            let mut files: Vec<PathBuf> = rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .collect();
            files.sort();
            for f in files {
                out.push((f.display().to_string(), std::fs::read(&f).unwrap()));
            }
        }
        assert!(out.len() >= 2, "no seed files found");
        out
    })
}

/// Tokens worth inserting: TOML syntax, scenario keys, odd values.
const TOKENS: &[&str] = &[
    "=",
    "[",
    "]",
    "[[",
    "]]",
    "{",
    "}",
    ",",
    "\"",
    "'",
    "\"\"\"",
    "'''",
    "#",
    "\n",
    ".",
    "[[cells]]",
    "[[links]]",
    "[[traffic]]",
    "[nodes.x]",
    "[host_sysctls]",
    "[template]",
    "name",
    "about",
    "expect",
    "trigger",
    "kind",
    "from",
    "to",
    "a",
    "b",
    "cells",
    "nodes",
    "links",
    "traffic",
    "sysctls",
    "rulesets",
    "processes",
    "routes",
    "devices",
    "ports",
    "expect_by_kernel",
    "kernel",
    "repeat",
    "requires",
    "params",
    "extra_rulesets",
    "\"a:eth0 192.0.2.1/24\"",
    "\"x:\"",
    "\"default via 192.0.2.254\"",
    "\"<5.6\"",
    "\">=99.99.99\"",
    "\"sum(drops.*) > 0\"",
    "\"a - b\"",
    "\"(((\"",
    "\"not\"",
    "-1",
    "0",
    "4294967296",
    "1e999",
    "nan",
    "inf",
    "true",
    "1979-05-27T07:32:00Z",
    "\u{0}",
    "\u{feff}",
    "é",
    "\\u0000",
    "\\",
    "\r\n",
    "\t",
    "  ",
];

#[derive(Debug, Clone)]
enum Op {
    FlipByte(usize, u8),
    DeleteLine(usize),
    DuplicateLine(usize),
    SwapLines(usize, usize),
    SwapTokens(usize, usize),
    InsertToken(usize, usize),
    Truncate(usize),
}

fn lines_of(data: &[u8]) -> Vec<Vec<u8>> {
    data.split_inclusive(|b| *b == b'\n')
        .map(|l| l.to_vec())
        .collect()
}

/// Byte ranges of whitespace-separated tokens.
fn tokens_of(data: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, b) in data.iter().enumerate() {
        match (b.is_ascii_whitespace(), start) {
            (true, Some(s)) => {
                out.push((s, i));
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push((s, data.len()));
    }
    out
}

fn apply(data: &mut Vec<u8>, op: &Op) {
    if data.is_empty() {
        return;
    }
    match *op {
        Op::FlipByte(i, mask) => {
            let i = i % data.len();
            data[i] ^= mask.max(1);
        }
        Op::DeleteLine(i) => {
            let mut l = lines_of(data);
            let i = i % l.len();
            l.remove(i);
            *data = l.concat();
        }
        Op::DuplicateLine(i) => {
            let mut l = lines_of(data);
            let i = i % l.len();
            let dup = l[i].clone();
            l.insert(i, dup);
            *data = l.concat();
        }
        Op::SwapLines(i, j) => {
            let mut l = lines_of(data);
            let n = l.len();
            l.swap(i % n, j % n);
            *data = l.concat();
        }
        Op::SwapTokens(i, j) => {
            let t = tokens_of(data);
            if t.len() < 2 {
                return;
            }
            let (mut a, mut b) = (t[i % t.len()], t[j % t.len()]);
            if a.0 > b.0 {
                std::mem::swap(&mut a, &mut b);
            }
            if a == b {
                return;
            }
            let mut out = data[..a.0].to_vec();
            out.extend_from_slice(&data[b.0..b.1]);
            out.extend_from_slice(&data[a.1..b.0]);
            out.extend_from_slice(&data[a.0..a.1]);
            out.extend_from_slice(&data[b.1..]);
            *data = out;
        }
        Op::InsertToken(at, tok) => {
            let at = at % (data.len() + 1);
            let tok = TOKENS[tok % TOKENS.len()].as_bytes();
            data.splice(at..at, tok.iter().copied());
        }
        Op::Truncate(at) => data.truncate(at % (data.len() + 1)),
    }
}

/// What one input does: Ok(true) accepted, Ok(false) rejected with a well-formed
/// error, Err(why) for a malformed error. A panic propagates.
fn check_input(file: &str, data: &[u8], scratch: &Path) -> Result<bool, String> {
    let (result, name) = match std::str::from_utf8(data) {
        Ok(text) => (faultlab::scenario::parse(file, text), file.to_string()),
        Err(_) => {
            // Not UTF-8: only the file loader sees such bytes.
            std::fs::write(scratch, data).unwrap();
            (
                faultlab::scenario::load(scratch),
                scratch.display().to_string(),
            )
        }
    };
    let e = match result {
        Ok(_) => return Ok(true),
        Err(e) => e,
    };
    let rendered = e.to_string();
    if e.line < 1 || e.column < 1 {
        return Err(format!("no line:column: {rendered}"));
    }
    // Errors inside a template name the template file; all others the input.
    let prefix = format!("{}:{}:{}: ", e.file, e.line, e.column);
    if !rendered.starts_with(&prefix) {
        return Err(format!("not `file:line:col: `: {rendered}"));
    }
    if e.file != name && !e.file.contains("topologies") {
        return Err(format!("names {} instead of {name}: {rendered}", e.file));
    }
    if e.file == name {
        let text = String::from_utf8_lossy(data);
        let lines = text.split('\n').count();
        if e.line > lines {
            return Err(format!(
                "line {} of a {lines}-line input: {rendered}",
                e.line
            ));
        }
    }
    Ok(false)
}

fn scratch_file(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "faultlab-fuzz-{tag}-{}-{:?}.toml",
        std::process::id(),
        std::thread::current().id()
    ))
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let n = any::<usize>();
    prop_oneof![
        3 => (n, any::<u8>()).prop_map(|(i, m)| Op::FlipByte(i, m)),
        2 => n.prop_map(Op::DeleteLine),
        1 => n.prop_map(Op::DuplicateLine),
        1 => (n, n).prop_map(|(i, j)| Op::SwapLines(i, j)),
        2 => (n, n).prop_map(|(i, j)| Op::SwapTokens(i, j)),
        3 => (n, n).prop_map(|(i, t)| Op::InsertToken(i, t)),
        1 => n.prop_map(Op::Truncate),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 2000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn mutated_scenarios_never_panic_and_errors_have_a_location(
        seed in any::<usize>(),
        ops in proptest::collection::vec(op_strategy(), 1..5),
    ) {
        let (file, original) = &seeds()[seed % seeds().len()];
        let mut data = original.clone();
        for op in &ops {
            apply(&mut data, op);
        }
        let scratch = scratch_file("prop");
        let r = check_input(file, &data, &scratch);
        let _ = std::fs::remove_file(&scratch);
        prop_assert!(r.is_ok(), "{}\ninput:\n{}", r.unwrap_err(), String::from_utf8_lossy(&data));
    }
}

#[test]
fn the_seeds_parse() {
    for (file, data) in seeds() {
        let text = std::str::from_utf8(data).unwrap();
        if let Err(e) = faultlab::scenario::parse(file, text) {
            // A scenario being written right now may be broken; its error must still
            // be well-formed.
            assert!(e.line >= 1 && e.column >= 1, "{e}");
        }
    }
}

#[test]
fn invalid_utf8_is_located() {
    let scratch = scratch_file("utf8");
    std::fs::write(&scratch, b"name = \"x\"\nabout = \"\xff\"\n").unwrap();
    let e = faultlab::scenario::load(&scratch).unwrap_err();
    let _ = std::fs::remove_file(&scratch);
    assert_eq!((e.line, e.column), (2, 10), "{e}");
}

fn random_op(r: &mut support_fuzz::Rng) -> Op {
    let (i, j) = (r.next() as usize, r.next() as usize);
    match r.below(13) {
        0..=2 => Op::FlipByte(i, (j & 0xff) as u8),
        3..=4 => Op::DeleteLine(i),
        5 => Op::DuplicateLine(i),
        6 => Op::SwapLines(i, j),
        7..=8 => Op::SwapTokens(i, j),
        9..=11 => Op::InsertToken(i, j),
        _ => Op::Truncate(i),
    }
}

/// A million mutated inputs (FAULTLAB_FUZZ_CASES, FAULTLAB_FUZZ_SEED): no panic, every
/// error located. Prints the count, the time and the accepted/rejected split.
#[test]
#[ignore = "long run: ~1,000,000 inputs"]
fn fuzz_a_million_inputs() {
    let cases = support_fuzz::cases(1_000_000);
    let seed = support_fuzz::seed(0x5eed_fa17);
    let mut rng = support_fuzz::Rng::new(seed);
    let scratch = scratch_file("long");
    let (mut accepted, mut rejected) = (0u64, 0u64);
    let t0 = std::time::Instant::now();
    for n in 0..cases {
        let (file, original) = &seeds()[rng.below(seeds().len())];
        let mut data = original.clone();
        for _ in 0..1 + rng.below(4) {
            apply(&mut data, &random_op(&mut rng));
        }
        let r = std::panic::catch_unwind(|| check_input(file, &data, &scratch));
        match r {
            Ok(Ok(true)) => accepted += 1,
            Ok(Ok(false)) => rejected += 1,
            Ok(Err(why)) => panic!(
                "input {n} (seed {seed}): {why}\n{}",
                String::from_utf8_lossy(&data)
            ),
            Err(_) => panic!(
                "input {n} (seed {seed}) panicked the parser:\n{}",
                String::from_utf8_lossy(&data)
            ),
        }
    }
    let _ = std::fs::remove_file(&scratch);
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "fuzzed {cases} inputs in {secs:.1} s ({:.0}/s): {accepted} accepted, {rejected} rejected, 0 panics, every error located",
        cases as f64 / secs
    );
}
