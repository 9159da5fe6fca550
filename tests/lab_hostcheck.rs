//! Root-only: every fixture node under tests/fixtures/hostcheck/ is loaded into a
//! namespace standing in for that node (its rules and sysctls, a veth uplink with
//! the default route), `check-host`'s reader is pointed at the namespace, and the
//! verdicts must be what the fixture's `expect` says the catalogue gives that
//! configuration. The root namespace must be the same before and after.
#![cfg(feature = "lab")]

use faultlab::hostcheck::reader::HostSource;
use faultlab::hostcheck::{self, reader, snapshot};
use faultlab::model::RulesetKind;
use faultlab::netns;
use std::path::{Path, PathBuf};

/// Keys a child namespace cannot have its own value of: the fixture's value is
/// reported from the files but cannot be planted in the stand-in namespace.
const MACHINE_WIDE: &[&str] = &[
    "net.netfilter.nf_conntrack_max",
    "net.netfilter.nf_conntrack_buckets",
];

struct StandIn(String);

impl Drop for StandIn {
    fn drop(&mut self) {
        let _ = netns::delete(&self.0);
    }
}

fn fixtures() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("tests/fixtures/hostcheck")
        .expect("the fixtures directory")
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("node.toml").is_file())
        .collect();
    dirs.sort();
    dirs
}

fn run(ns: &str, argv: &[&str], stdin: Option<&str>) {
    netns::exec::output_in(ns, argv, stdin).unwrap_or_else(|e| panic!("{}: {e}", argv.join(" ")));
}

/// A namespace with the fixture's uplink, sysctls and rules.
fn stand_in(dir: &Path, fixture: &reader::FixtureHost) -> StandIn {
    let ns = format!("{}-node", faultlab::setup::new_run_id());
    netns::create(&ns).expect("create the stand-in namespace");
    let guard = StandIn(ns.clone());
    let up = &fixture.node().uplink;
    // A veth pair: this kernel may lack the dummy driver.
    run(
        &ns,
        &[
            "ip",
            "link",
            "add",
            up,
            "type",
            "veth",
            "peer",
            "name",
            "uplink-peer",
        ],
        None,
    );
    run(&ns, &["ip", "link", "set", "uplink-peer", "up"], None);
    run(
        &ns,
        &["ip", "addr", "add", "192.0.2.10/24", "dev", up],
        None,
    );
    run(&ns, &["ip", "link", "set", up, "up"], None);
    run(
        &ns,
        &[
            "ip",
            "route",
            "add",
            "default",
            "via",
            "192.0.2.1",
            "dev",
            up,
        ],
        None,
    );
    for (k, v) in fixture.sysctls() {
        if !MACHINE_WIDE.contains(&k.as_str()) {
            netns::sysctl::sysctl_write(&ns, &k, &v)
                .unwrap_or_else(|e| panic!("{}: {k}: {e:#}", dir.display()));
        }
    }
    for kind in RulesetKind::ALL {
        let path = dir.join(reader::FixtureHost::file_of(kind));
        if let Ok(text) = std::fs::read_to_string(&path) {
            let text = without_ipsets(&text);
            let (prog, args) = kind.loader();
            let mut argv = vec![prog];
            argv.extend(args.iter().filter(|a| **a != "--noflush"));
            run(&ns, &argv, Some(&text));
        }
    }
    guard
}

/// ipset matches need the sets, and this machine has no `ipset` to create them:
/// the stand-in gets the rest (check-host leaves those rules out too, and says so).
fn without_ipsets(text: &str) -> String {
    text.lines()
        .filter(|l| !l.contains("--match-set"))
        .map(|l| format!("{l}\n"))
        .collect()
}

#[test]
fn lab_every_fixture_node_gets_the_catalogues_verdicts_and_the_host_is_unchanged() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skip: needs root");
        return;
    }
    // Held across both snapshots: no other run changes host-global sysctls meanwhile.
    let _lock = faultlab::setup::state::HostLock::acquire_shared(
        std::time::Duration::from_secs(600),
        &|| false,
    )
    .unwrap()
    .expect("the host lock");
    let before = snapshot::take();
    let mut mismatches = Vec::new();
    let mut checked = 0;
    for dir in fixtures() {
        let fixture = reader::FixtureHost::open(&dir).unwrap();
        let ns = stand_in(&dir, &fixture);
        let live = reader::LiveHost {
            netns: Some(ns.0.clone()),
        };
        // The reader sees the node as the fixture describes it.
        assert_eq!(
            live.uplink(),
            reader::Reading::Value(fixture.node().uplink.clone())
        );
        for (k, v) in fixture.sysctls() {
            if !MACHINE_WIDE.contains(&k.as_str()) {
                assert_eq!(
                    live.sysctl(&k),
                    reader::Reading::Value(v.clone()),
                    "{}: {k}",
                    dir.display()
                );
            }
        }
        for kind in RulesetKind::ALL {
            let want = hostcheck::mapping::rule_lines(
                kind.key(),
                &without_ipsets(fixture.ruleset(kind).value().unwrap()),
            )
            .iter()
            .filter(|l| l.contains(" -A "))
            .count();
            let got =
                hostcheck::mapping::rule_lines(kind.key(), live.ruleset(kind).value().unwrap())
                    .iter()
                    .filter(|l| l.contains(" -A "))
                    .count();
            assert_eq!(
                got,
                want,
                "{}: {} rules read back",
                dir.display(),
                kind.key()
            );
        }
        let scenarios: Vec<_> = fixture
            .node()
            .expect
            .keys()
            .map(|name| {
                faultlab::scenario::load(Path::new(&format!("scenarios/{name}.toml"))).unwrap()
            })
            .collect();
        let report = hostcheck::run::check_host(&scenarios, &live, true);
        assert_eq!(
            report.host_changes,
            Some(vec![]),
            "{}: the root namespace changed",
            dir.display()
        );
        for v in &report.verdicts {
            checked += 1;
            let want = &fixture.node().expect[&v.scenario];
            if v.verdict.as_str() != want {
                mismatches.push(format!(
                    "{} / {}: {} (want {want}); {:?} {:?} {:?}",
                    dir.display(),
                    v.scenario,
                    v.verdict.as_str(),
                    v.reason,
                    v.evidence,
                    v.notes
                ));
            }
        }
    }
    let after = snapshot::take();
    assert_eq!(snapshot::diff(&before, &after), Vec::<String>::new());
    assert!(checked >= 10, "only {checked} verdicts");
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}
