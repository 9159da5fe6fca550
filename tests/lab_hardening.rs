//! Root-only: faultlab never leaves the host dirty, whatever happens to a run.
//!
//! - runs killed at random points (SIGINT, SIGTERM, SIGKILL followed by `faultlab
//!   clean` or by the next run's automatic sweep) leave no namespace, helper process,
//!   tracefs instance, state file or changed host sysctl;
//! - two runs at the same time do not interfere;
//! - the root namespace (links, addresses, routes, rules, nft and iptables rulesets,
//!   netfilter sysctls) is the same before and after the catalogue;
//! - missing prerequisites (not root, no nft/iptables, a kernel path, no tracefs) are
//!   skips with the reason (exit 4), never failures or stack traces;
//! - `--format ktap` and `--format junit` of real runs are valid.
//!
//! The tests take a lock so they run one at a time, and wait until no other faultlab
//! run is live before reading host-global state (other runs change it legitimately).
#![cfg(feature = "lab")]

mod support_lab;
mod support_reports;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use support_lab::*;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// xorshift64*, seeded from FAULTLAB_KILL_SEED or the clock (printed, to replay).
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let seed = std::env::var("FAULTLAB_KILL_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        eprintln!("FAULTLAB_KILL_SEED={seed}");
        Rng(seed | 1)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

#[test]
fn runs_killed_at_random_points_leave_nothing_behind() {
    use nix::sys::signal::{kill, Signal};
    use std::os::unix::process::ExitStatusExt;
    let _g = serial();
    let kills: usize = std::env::var("FAULTLAB_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let fx = fixture("host-sysctl-helper.toml");
    assert!(
        wait_quiet(Duration::from_secs(180)),
        "the machine never got quiet"
    );
    let original = read_trim(CONNTRACK_MAX);
    let mut rng = Rng::new();
    let mut sweeps_by_next_run = 0;
    let mut sysctl_checks = 0;
    let mut log = Vec::new();
    let t0 = Instant::now();
    for i in 0..kills {
        let sig = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGKILL][i % 3];
        let id = run_id("k", i);
        // The fixture takes ~1.7 s; some kills land after it ended, which is fine too.
        let delay = Duration::from_millis(rng.below(2000));
        let mut child = faultlab()
            .args(["run", &fx, "--no-results"])
            .env("FAULTLAB_RUN_ID", &id)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let _ = kill(nix::unistd::Pid::from_raw(child.id() as i32), sig);
        let status = wait_timeout(&mut child, Duration::from_secs(30));
        let how = match (status.code(), status.signal()) {
            (Some(c), _) => format!("exit {c}"),
            (None, Some(s)) => format!("signal {s}"),
            _ => "?".into(),
        };
        log.push(format!("{sig:?} after {delay:?}: {how}"));
        match sig {
            Signal::SIGKILL => {
                // Every other SIGKILL: `faultlab clean`; the others are swept by the
                // next run, automatically.
                if (i / 3) % 2 == 0 {
                    let out = run(&["clean"], &id);
                    assert!(out.status.success(), "clean: {}", text(&out.stderr));
                } else {
                    // Killed before its state file existed, it created nothing.
                    let had_state = faultlab::setup::state::state_path(&id).exists();
                    let next = run_id("n", i);
                    let out = run(&["run", &fx, "--no-results"], &next);
                    let err = text(&out.stderr);
                    if had_state {
                        assert!(
                            err.contains(&format!("cleaned leftover of an interrupted run: {id}")),
                            "the next run did not sweep {id}: {err}"
                        );
                        sweeps_by_next_run += 1;
                    }
                    assert_eq!(out.status.code(), Some(0), "{err}");
                    assert_eq!(leftovers(&next), Vec::<String>::new(), "after {next}");
                }
            }
            _ => {
                // Torn down by the run itself: interrupted (130), finished (0), or
                // killed before the handler was installed (nothing built yet).
                assert!(
                    matches!(status.code(), Some(130) | Some(0))
                        || status.signal() == Some(sig as i32),
                    "{sig:?} after {delay:?}: {status:?}"
                );
            }
        }
        assert_eq!(
            leftovers(&id),
            Vec::<String>::new(),
            "{sig:?} after {delay:?} ({how}) left things behind"
        );
        assert_eq!(scratch_dirs_of(child.id()), Vec::<String>::new());
        if live_runs(&[]).is_empty() {
            assert_eq!(
                read_trim(CONNTRACK_MAX),
                original,
                "{sig:?} after {delay:?} ({how}): nf_conntrack_max not restored"
            );
            sysctl_checks += 1;
        }
    }
    eprintln!(
        "{kills} kills in {:.1} s ({sweeps_by_next_run} swept by the next run, \
         nf_conntrack_max checked {sysctl_checks} times):\n  {}",
        t0.elapsed().as_secs_f64(),
        log.join("\n  ")
    );
}

#[test]
fn two_runs_at_the_same_time_do_not_interfere() {
    let _g = serial();
    let bridge = format!("{ROOT}/scenarios/bridge-netfilter.toml");
    let fx = fixture("host-sysctl-helper.toml");
    let quiet = wait_quiet(Duration::from_secs(180));
    let original = read_trim(CONNTRACK_MAX);
    let t0 = Instant::now();
    for (file, cells) in [(&bridge, 5), (&fx, 1)] {
        let spawn = || {
            faultlab()
                .args(["run", file, "--no-results", "--format", "json"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        };
        let (a, b) = (spawn(), spawn());
        let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
        let mut ids = Vec::new();
        for out in [&a, &b] {
            let err = text(&out.stderr);
            assert_eq!(out.status.code(), Some(0), "{file}: {err}");
            let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            let outcomes: Vec<&str> = r["cells"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["outcome"].as_str().unwrap())
                .collect();
            assert_eq!(outcomes, vec!["pass"; cells], "{file}: {err}");
            let id = err
                .lines()
                .find_map(|l| l.strip_prefix("faultlab run "))
                .expect("the run id on stderr")
                .to_string();
            assert_eq!(leftovers(&id), Vec::<String>::new());
            ids.push(id);
        }
        assert_ne!(ids[0], ids[1]);
    }
    eprintln!(
        "two pairs of concurrent runs: {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    if quiet && live_runs(&[]).is_empty() {
        // The host-sysctl lock made the second run save the true original.
        assert_eq!(read_trim(CONNTRACK_MAX), original);
    }
}

/// All of scenarios/ (FAULTLAB_SNAPSHOT_QUICK=1: bridge-netfilter only) plus the
/// host-sysctl fixture, each file on its own so one broken file does not stop the rest.
#[test]
fn the_root_namespace_is_the_same_after_the_catalogue() {
    let _g = serial();
    let mut files: Vec<String> = if std::env::var_os("FAULTLAB_SNAPSHOT_QUICK").is_some() {
        vec![format!("{ROOT}/scenarios/bridge-netfilter.toml")]
    } else {
        let mut v: Vec<String> = std::fs::read_dir(Path::new(ROOT).join("scenarios"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .map(|p| p.display().to_string())
            .collect();
        v.sort();
        v
    };
    files.push(fixture("host-sysctl-helper.toml"));
    assert!(
        wait_quiet(Duration::from_secs(180)),
        "the machine never got quiet"
    );
    let before = root_snapshot();
    let t0 = Instant::now();
    let mut ran = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let id = run_id("s", i);
        let t = Instant::now();
        let out = run(&["run", f, "--no-results"], &id);
        ran.push(format!(
            "{f}: exit {:?} in {:.1} s",
            out.status.code(),
            t.elapsed().as_secs_f64()
        ));
        assert!(
            !text(&out.stderr).contains("panicked"),
            "{f}: {}",
            text(&out.stderr)
        );
        assert_eq!(leftovers(&id), Vec::<String>::new(), "{f}");
    }
    eprintln!(
        "ran in {:.1} s:\n  {}",
        t0.elapsed().as_secs_f64(),
        ran.join("\n  ")
    );
    if !wait_quiet(Duration::from_secs(180)) {
        panic!("other faultlab runs stayed live: cannot compare host state");
    }
    let after = root_snapshot();
    let d = diff(&before, &after);
    assert!(
        d.is_empty(),
        "the root namespace changed:\n{}",
        d.join("\n")
    );
}

#[test]
fn not_root_is_a_skip_with_the_reason() {
    let _g = serial();
    let nobody = |args: &[&str]| -> Output {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN])
            .args(args)
            .current_dir(ROOT)
            .output()
            .expect("setpriv (util-linux)")
    };
    let bridge = format!("{ROOT}/scenarios/bridge-netfilter.toml");
    let out = nobody(&["run", &bridge, "--no-results"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(4), "{stdout}{stderr}");
    assert!(stdout.contains("not root"), "{stdout}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("warning"),
        "{stderr}"
    );

    let out = nobody(&["run", &bridge, "--no-results", "--format", "ktap"]);
    let tests = support_reports::check_faultlab_ktap(&text(&out.stdout));
    assert!(tests[0]
        .subtests
        .iter()
        .all(|c| c.directive.as_deref() == Some("SKIP") && c.diagnostic.contains("not root")));

    let out = nobody(&["clean"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("not root"));
}

#[test]
fn missing_programs_are_skips_with_the_reason() {
    let _g = serial();
    // A PATH with only what the lab needs besides the rulesets' tools.
    let dir = std::env::temp_dir().join(format!("faultlab-path-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for p in ["ip", "ping", "sh"] {
        if let Some(found) = faultlab::runner::prereq::which(p) {
            std::os::unix::fs::symlink(found, dir.join(p)).unwrap();
        }
    }
    let bridge = format!("{ROOT}/scenarios/bridge-netfilter.toml");
    let out = faultlab()
        .args(["run", &bridge, "--no-results", "--format", "ktap"])
        .env("PATH", &dir)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let ktap = text(&out.stdout);
    assert_eq!(out.status.code(), Some(4), "{ktap}{}", text(&out.stderr));
    let tests = support_reports::check_faultlab_ktap(&ktap);
    for c in &tests[0].subtests {
        assert_eq!(c.directive.as_deref(), Some("SKIP"), "{c:?}");
        assert!(c.diagnostic.contains("is not installed"), "{c:?}");
    }
    assert!(ktap.contains("`nft` is not installed"), "{ktap}");
}

#[test]
fn a_missing_kernel_path_is_a_skip() {
    let _g = serial();
    let out = run(
        &["run", &fixture("requires-missing.toml"), "--no-results"],
        &run_id("p", 0),
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(4), "{stdout}");
    assert!(
        stdout.contains("/proc/sys/net/nonexistent is missing"),
        "{stdout}"
    );
}

#[test]
fn without_tracefs_the_cells_are_judged_without_drop_evidence() {
    let _g = serial();
    let bridge = format!("{ROOT}/scenarios/bridge-netfilter.toml");
    let id = run_id("t", 0);
    let out = faultlab()
        .args(["run", &bridge, "--no-results", "--format", "json"])
        .env("FAULTLAB_NO_TRACEFS", "1")
        .env("FAULTLAB_RUN_ID", &id)
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for c in r["cells"].as_array().unwrap() {
        assert_eq!(c["outcome"], "pass", "{c}");
        let reason = c["reason"].as_str().unwrap_or_default();
        assert!(
            reason.starts_with("no drop evidence (tracefs disabled"),
            "{c}"
        );
        assert!(c["observations"]
            .as_object()
            .unwrap()
            .keys()
            .all(|k| !k.starts_with("drops.")));
    }
    let on = r["cells"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "call-iptables-on")
        .unwrap();
    assert!(on["reason"]
        .as_str()
        .unwrap()
        .contains("; not evaluated: drops."));
    assert_eq!(leftovers(&id), Vec::<String>::new());
}

#[test]
fn ktap_and_junit_of_a_real_run_are_valid() {
    let _g = serial();
    let bridge = format!("{ROOT}/scenarios/bridge-netfilter.toml");
    let skip = fixture("requires-missing.toml");
    let out = run(
        &["run", &bridge, &skip, "--no-results", "--format", "ktap"],
        &run_id("r", 0),
    );
    let ktap = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{ktap}{}", text(&out.stderr));
    let tests = support_reports::check_faultlab_ktap(&ktap);
    assert_eq!(tests.len(), 2);
    assert!(tests[0].ok && tests[0].subtests.len() == 5);
    assert!(tests[0]
        .subtests
        .iter()
        .all(|c| c.ok && c.directive.is_none()));
    assert_eq!(tests[1].directive.as_deref(), Some("SKIP"));

    let out = run(
        &["run", &bridge, &skip, "--no-results", "--format", "junit"],
        &run_id("r", 1),
    );
    let suites = support_reports::check_junit(&text(&out.stdout));
    assert_eq!(suites[0].1.len(), 5);
    assert!(suites[0].1.iter().all(|(_, o)| *o == "pass"));
    assert_eq!(
        suites[1].1,
        vec![("needs-nonexistent".to_string(), "skipped")]
    );
}

/// A dead run's state that lists a tracefs instance made through a detached tracefs
/// mount (tracefs need not be mounted), a namespace file that was never bind-mounted
/// (runner killed in between) and a scratch dir: the sweep removes all of them.
#[test]
fn a_sweep_removes_detached_tracefs_instances_and_half_made_namespaces() {
    use faultlab::setup::state;
    let _g = serial();
    let id = run_id("w", 0);
    let instance = format!("{id}-drops");
    let inst = faultlab::evidence::tracefs::Instance::create(&instance).unwrap();
    std::mem::forget(inst); // as if the runner died
    assert!(faultlab::evidence::list_instances()
        .unwrap()
        .contains(&instance));
    let half = format!("{id}-half");
    std::fs::create_dir_all(faultlab::netns::NETNS_RUN_DIR).unwrap();
    std::fs::write(faultlab::netns::path_of(&half).unwrap(), b"").unwrap();
    let dir = std::env::temp_dir().join(format!("faultlab-{id}"));
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    let mut gone = Command::new("true").spawn().unwrap();
    let dead = gone.id();
    gone.wait().unwrap();
    let st = state::RunState {
        run_id: id.clone(),
        runner_pid: dead,
        runner_start: Some(1),
        namespaces: vec![half.clone()],
        tracefs_instances: vec![instance.clone()],
        dirs: vec![dir.display().to_string()],
        ..Default::default()
    };
    std::fs::create_dir_all(state::STATE_DIR).unwrap();
    std::fs::write(state::state_path(&id), serde_json::to_vec(&st).unwrap()).unwrap();
    let report = state::sweep_dead()
        .unwrap_or_else(|e| panic!("{e:#}"))
        .join("\n");
    assert!(
        report.contains(&format!("removed tracefs instance {instance}")),
        "{report}"
    );
    assert!(
        report.contains(&format!("deleted netns {half}")),
        "{report}"
    );
    assert!(!dir.exists(), "{report}");
    assert_eq!(leftovers(&id), Vec::<String>::new());
}

#[test]
fn the_host_sysctl_lock_is_exclusive() {
    use faultlab::setup::state::HostLock;
    let _g = serial();
    let t0 = Instant::now();
    let first = loop {
        // Another run may hold it for a moment.
        if let Some(l) = HostLock::try_acquire().unwrap() {
            break l;
        }
        assert!(t0.elapsed() < Duration::from_secs(120));
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(HostLock::try_acquire().unwrap().is_none());
    let t = Instant::now();
    assert!(HostLock::acquire(Duration::from_millis(200), &|| false)
        .unwrap()
        .is_none());
    assert!(t.elapsed() >= Duration::from_millis(200));
    // Released on drop; a waiter gets it as soon as it is.
    let waiter = std::thread::spawn(|| HostLock::acquire(Duration::from_secs(10), &|| false));
    std::thread::sleep(Duration::from_millis(100));
    drop(first);
    assert!(waiter.join().unwrap().unwrap().is_some());
}
