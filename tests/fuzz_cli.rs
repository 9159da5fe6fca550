//! The command line is fuzzed in-process (`faultlab::cli::Cli`, the parser `main`
//! uses; nothing is run): argument lists built from the real subcommands and flags,
//! valid and invalid values, and random words never panic clap or our value parsers,
//! and every rejection names what it rejected (the argument, subcommand or value), so
//! the user can see where the command line went wrong.
//!
//! `cargo test --test fuzz_cli` runs a CI-sized proptest; the long run is
//! `FAULTLAB_FUZZ_CASES=1000000 cargo test --test fuzz_cli -- --ignored --nocapture`.

mod support_fuzz;

use clap::error::{ContextKind, ErrorKind};
use clap::Parser;
use faultlab::cli::Cli;
use proptest::prelude::*;

/// Words the grammar knows, and values of each kind (good and bad).
const WORDS: &[&str] = &[
    "list",
    "run",
    "show",
    "plan",
    "clean",
    "vm",
    "diff",
    "kernel-config",
    "check-host",
    "kselftest-export",
    "mutants-summary",
    "schema",
    "compact",
    "serve",
    "help",
    "--cell",
    "--repeat",
    "--format",
    "--results",
    "--no-results",
    "--slow",
    "--bisect",
    "--bad-threshold",
    "--jobs",
    "--schedule",
    "--all-observations",
    "--templates",
    "--kernel",
    "--accel",
    "--share",
    "--timeout",
    "--smp",
    "--memory",
    "--preload",
    "--fixture",
    "--netns",
    "--all",
    "--link",
    "--help",
    "--version",
    "-v",
    "--",
    "=",
    "table",
    "json",
    "ktap",
    "kselftest",
    "junit",
    "markdown",
    "tcg",
    "kvm",
    "9p",
    "virtiofs",
    "0",
    "1",
    "-1",
    "3",
    "1e309",
    "NaN",
    "0.5",
    "18446744073709551616",
    "scenarios/",
    "bridge-netfilter",
    "debian:cloud/trixie",
    "",
    "\u{feff}",
    "é",
];

fn arg() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::sample::select(WORDS).prop_map(str::to_string),
        1 => "[ -~]{0,12}",
        1 => (proptest::sample::select(WORDS), proptest::sample::select(WORDS))
            .prop_map(|(a, b)| format!("{a}={b}")),
    ]
}

/// Parses; Ok(()) when the outcome is acceptable, else why not.
fn check(args: &[String]) -> Result<(), String> {
    let argv = std::iter::once("faultlab".to_string()).chain(args.iter().cloned());
    let e = match Cli::try_parse_from(argv) {
        Ok(_) => return Ok(()),
        Err(e) => e,
    };
    let named = [
        ContextKind::InvalidArg,
        ContextKind::InvalidSubcommand,
        ContextKind::InvalidValue,
    ]
    .iter()
    .any(|k| e.get(*k).is_some());
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
        | ErrorKind::MissingSubcommand => Ok(()),
        _ if named => Ok(()),
        k => Err(format!(
            "{args:?}: {k:?} error names no argument, subcommand or value:\n{e}"
        )),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, failure_persistence: None, .. ProptestConfig::default() })]
    #[test]
    fn random_command_lines_never_panic_and_errors_name_the_culprit(
        args in proptest::collection::vec(arg(), 0..8)
    ) {
        if let Err(why) = check(&args) {
            prop_assert!(false, "{}", why);
        }
    }
}

#[test]
fn known_mistakes_are_named() {
    let cases: &[&[&str]] = &[
        &["run", "--repeat", "x"],
        &["run", "--format", "yaml"],
        &["run", "--bogus"],
        &["frobnicate"],
        &["vm", "--accel", "xen", "--kernel", "k"],
        &["check-host", "--fixture", "a", "--netns", "b"],
    ];
    for args in cases {
        let argv = std::iter::once("faultlab").chain(args.iter().copied());
        let e = match Cli::try_parse_from(argv) {
            Ok(_) => panic!("{args:?} parsed"),
            Err(e) => e,
        };
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        check(&args).unwrap();
        assert_ne!(e.kind(), ErrorKind::DisplayHelp, "{args:?}");
    }
}

#[test]
#[ignore = "long run: ~1,000,000 command lines"]
fn fuzz_a_million_command_lines() {
    let cases = support_fuzz::cases(1_000_000);
    let seed = support_fuzz::seed(0x5eed_0c11);
    eprintln!("FAULTLAB_FUZZ_SEED={seed}");
    let mut rng = support_fuzz::Rng::new(seed);
    let (mut ok, mut rejected) = (0u64, 0u64);
    let t0 = std::time::Instant::now();
    for _ in 0..cases {
        let n = rng.next() % 8;
        let args: Vec<String> = (0..n)
            .map(|_| {
                let w = WORDS[(rng.next() % WORDS.len() as u64) as usize];
                match rng.next() % 6 {
                    0 => format!("{w}={}", WORDS[(rng.next() % WORDS.len() as u64) as usize]),
                    1 => w.chars().rev().collect(),
                    _ => w.to_string(),
                }
            })
            .collect();
        let argv = std::iter::once("faultlab".to_string()).chain(args.iter().cloned());
        match Cli::try_parse_from(argv) {
            Ok(_) => ok += 1,
            Err(_) => rejected += 1,
        }
        if let Err(why) = check(&args) {
            panic!("{why}");
        }
    }
    eprintln!(
        "{cases} command lines in {:.1} s: {ok} accepted, {rejected} rejected, 0 panics, \
         every rejection named its culprit",
        t0.elapsed().as_secs_f64()
    );
}
