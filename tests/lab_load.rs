//! Root-only: four catalogue runs at once judge as one run alone does.
//!
//! The files run once alone, then four times at once (distinct FAULTLAB_RUN_IDs).
//! Then:
//! - every cell's verdict in each of the four equals the solo one, except in cells
//!   that are timing-sensitive — a `race` or `dns` step (the A/AAAA pair is a race),
//!   a `multiflow` step, a `churn` step with a `rate` — which may only turn
//!   inconclusive: never a pass or a fail the solo run did not give;
//! - no run sees another's counters: in the cells that are not timing-sensitive,
//!   passed alone and send a fixed number of packets (pings, UDP), the ruleset
//!   counters (`nft.*`, `iptables.*` packets) equal the solo run's; a namespace of
//!   one run never carries another's id;
//! - nothing is left: no namespace, process, tracefs instance, state file or scratch
//!   dir of any of the five runs, and the root namespace is as before.
//!
//! CI runs a subset (bridge-netfilter, conntrack-race-calico-dnat, ecmp-bad-path,
//! selftests/conntrack_dump_flush); FAULTLAB_LOAD_FULL=1 runs all of scenarios/.
//! Concurrent labs that change host-global sysctls take turns on the host lock.
#![cfg(feature = "lab")]

mod support_lab;

use faultlab::model::steps::{Action, TrafficSpec};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use support_lab::*;

const CI_FILES: [&str; 4] = [
    "scenarios/bridge-netfilter.toml",
    "scenarios/conntrack-race-calico-dnat.toml",
    "scenarios/ecmp-bad-path.toml",
    "scenarios/selftests/conntrack_dump_flush.toml",
];
const LOADED: usize = 4;

/// True when a cell's outcome depends on CPU time and scheduling (the scheduler's
/// own rule, `runner::schedule::timing_sensitive`).
fn timing_sensitive(cell: &faultlab::model::CellPlan) -> bool {
    faultlab::runner::schedule::timing_sensitive(cell).is_some()
}

/// True when the cell's traffic is only pings and UDP datagrams: a fixed number of
/// packets, so its ruleset counters are the same in every run (TCP's ACKs and
/// retransmissions vary with scheduling).
fn fixed_packet_counts(cell: &faultlab::model::CellPlan) -> bool {
    cell.steps.iter().all(|s| match &s.action {
        Action::Traffic(t) => matches!(t, TrafficSpec::Ping(_) | TrafficSpec::Udp(_)),
        _ => true,
    })
}

/// `scenario::cell` → (outcome, ruleset packet counters) of one run's JSON output.
type Verdicts = BTreeMap<String, (String, BTreeMap<String, f64>)>;

fn verdicts(stdout: &[u8]) -> Verdicts {
    let mut out = BTreeMap::new();
    for doc in serde_json::Deserializer::from_slice(stdout).into_iter::<Value>() {
        let doc = doc.expect("a JSON result per scenario");
        let scn = doc["scenario"].as_str().unwrap();
        for c in doc["cells"].as_array().unwrap() {
            let counters = c["observations"]
                .as_object()
                .map(|o| {
                    o.iter()
                        .filter(|(k, _)| {
                            (k.starts_with("nft.") || k.starts_with("iptables."))
                                && k.ends_with(".packets")
                        })
                        .map(|(k, v)| (k.clone(), v.as_f64().unwrap_or(f64::NAN)))
                        .collect()
                })
                .unwrap_or_default();
            out.insert(
                format!("{scn}::{}", c["name"].as_str().unwrap()),
                (c["outcome"].as_str().unwrap().to_string(), counters),
            );
        }
    }
    out
}

#[test]
fn four_catalogue_runs_at_once_judge_as_one_alone() {
    let full = std::env::var_os("FAULTLAB_LOAD_FULL").is_some();
    let files: Vec<PathBuf> = if full {
        faultlab::scenario::discover(&[], &Path::new(ROOT).join("scenarios")).unwrap()
    } else {
        CI_FILES.iter().map(|f| Path::new(ROOT).join(f)).collect()
    };
    let mut sensitive = BTreeSet::new();
    let mut fixed = BTreeSet::new();
    for f in &files {
        let scn = faultlab::scenario::load(f).unwrap_or_else(|e| panic!("{e}"));
        for c in scn.cells.iter().filter(|c| timing_sensitive(c)) {
            sensitive.insert(format!("{}::{}", scn.name, c.name));
        }
        for c in scn.cells.iter().filter(|c| fixed_packet_counts(c)) {
            fixed.insert(format!("{}::{}", scn.name, c.name));
        }
    }
    // Each run one cell at a time: the load is the four runs, not cells within one.
    let args: Vec<String> = ["run", "--no-results", "--format", "json", "--jobs", "1"]
        .iter()
        .map(|s| s.to_string())
        .chain(files.iter().map(|f| f.display().to_string()))
        .collect();
    assert!(
        wait_quiet(Duration::from_secs(180)),
        "the machine never got quiet"
    );
    let before = root_snapshot();

    let t0 = Instant::now();
    let solo_id = run_id("l", 0);
    let solo = faultlab()
        .args(&args)
        .env("FAULTLAB_RUN_ID", &solo_id)
        .output()
        .unwrap();
    let solo_secs = t0.elapsed().as_secs_f64();
    assert!(
        !text(&solo.stderr).contains("panicked"),
        "{}",
        text(&solo.stderr)
    );
    let solo_v = verdicts(&solo.stdout);
    assert!(!solo_v.is_empty(), "solo run: {}", text(&solo.stderr));
    assert_eq!(leftovers(&solo_id), Vec::<String>::new());

    let ids: Vec<String> = (1..=LOADED).map(|i| run_id("l", i)).collect();
    let t1 = Instant::now();
    let children: Vec<_> = ids
        .iter()
        .map(|id| {
            faultlab()
                .args(&args)
                .env("FAULTLAB_RUN_ID", id)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let pids: Vec<u32> = children.iter().map(|c| c.id()).collect();
    // While they run: every lab namespace of theirs carries exactly one of their ids.
    let done = AtomicBool::new(false);
    let (outputs, foreign) = std::thread::scope(|s| {
        let watcher = s.spawn(|| {
            let mut bad = BTreeSet::new();
            let mut seen = 0usize;
            while !done.load(Ordering::Relaxed) {
                for ns in faultlab::netns::list() {
                    let owners = ids.iter().filter(|id| ns.starts_with(&format!("{id}-")));
                    let n = owners.count();
                    if n > 1 {
                        bad.insert(ns);
                    } else if n == 1 {
                        seen += 1;
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            (bad, seen)
        });
        let outputs: Vec<_> = children
            .into_iter()
            .map(|c| c.wait_with_output().unwrap())
            .collect();
        done.store(true, Ordering::Relaxed);
        (outputs, watcher.join().unwrap())
    });
    let loaded_secs = t1.elapsed().as_secs_f64();
    assert!(foreign.1 > 0, "never saw a namespace of the loaded runs");
    assert!(foreign.0.is_empty(), "shared namespaces: {:?}", foreign.0);

    let mut turned_inconclusive = Vec::new();
    let mut false_verdicts = Vec::new();
    let mut counter_mismatches = Vec::new();
    let mut counters_compared = 0;
    for ((id, out), pid) in ids.iter().zip(&outputs).zip(&pids) {
        assert_eq!(scratch_dirs_of(*pid), Vec::<String>::new(), "{id}");
        let err = text(&out.stderr);
        assert!(!err.contains("panicked"), "{id}: {err}");
        assert_ne!(out.status.code(), Some(130), "{id}: {err}");
        let got = verdicts(&out.stdout);
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            solo_v.keys().collect::<Vec<_>>(),
            "{id}: {err}"
        );
        for (cell, (want, want_counters)) in &solo_v {
            let (outcome, counters) = &got[cell];
            if outcome == want {
                if sensitive.contains(cell) || !fixed.contains(cell) || want != "pass" {
                    continue;
                }
                // Zero-valued counters may be left out of the results.
                let nonzero = |m: &BTreeMap<String, f64>| -> BTreeMap<String, f64> {
                    m.iter()
                        .filter(|(_, v)| **v != 0.0)
                        .map(|(k, v)| (k.clone(), *v))
                        .collect()
                };
                counters_compared += want_counters.len();
                if nonzero(counters) != nonzero(want_counters) {
                    counter_mismatches.push(format!(
                        "{id} {cell}: {counters:?}, alone {want_counters:?}"
                    ));
                }
            } else if sensitive.contains(cell) && outcome == "inconclusive" {
                turned_inconclusive.push(format!("{id} {cell}: {want} alone"));
            } else {
                false_verdicts.push(format!("{id} {cell}: {outcome}, alone {want}"));
            }
        }
        assert_eq!(leftovers(id), Vec::<String>::new(), "{id}");
    }
    eprintln!(
        "{} files, {} cells ({} timing-sensitive): alone {solo_secs:.1} s, {LOADED} at once \
         {loaded_secs:.1} s; {counters_compared} ruleset counters compared; turned inconclusive under load: {}\n  {}",
        files.len(),
        solo_v.len(),
        sensitive.len(),
        turned_inconclusive.len(),
        turned_inconclusive.join("\n  ")
    );
    assert!(counters_compared > 0, "no ruleset counter to compare");
    assert!(
        false_verdicts.is_empty(),
        "verdicts that differ from the solo run's:\n{}",
        false_verdicts.join("\n")
    );
    assert!(
        counter_mismatches.is_empty(),
        "ruleset counters that differ from the solo run's:\n{}",
        counter_mismatches.join("\n")
    );
    assert!(
        wait_quiet(Duration::from_secs(180)),
        "other faultlab runs stayed live: cannot compare host state"
    );
    let d = diff(&before, &root_snapshot());
    assert!(
        d.is_empty(),
        "the root namespace changed:\n{}",
        d.join("\n")
    );
}
