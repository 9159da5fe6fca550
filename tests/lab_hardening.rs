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

mod support_reports;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

const BIN: &str = env!("CARGO_BIN_EXE_faultlab");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const CONNTRACK_MAX: &str = "/proc/sys/net/netfilter/nf_conntrack_max";
/// The fixture's helper listens on this port: no other scenario uses it.
const HELPER_MARK: [&str; 3] = ["udp-echo", "--port", "9137"];

fn fixture(name: &str) -> String {
    format!("{ROOT}/tests/fixtures/{name}")
}

fn faultlab() -> Command {
    let mut c = Command::new(BIN);
    c.current_dir(ROOT).env_remove("FAULTLAB_NO_TRACEFS");
    c
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A run id unique to this test process: lowercase alphanumerics (FAULTLAB_RUN_ID).
fn run_id(tag: &str, i: usize) -> String {
    format!("h{tag}{:04x}{i:02}", std::process::id() & 0xffff)
}

fn run(args: &[&str], id: &str) -> Output {
    faultlab()
        .args(args)
        .env("FAULTLAB_RUN_ID", id)
        .output()
        .expect("run faultlab")
}

/// Pids of the live runners that have a state file, other than `except`.
fn live_runs(except: &[u32]) -> Vec<u32> {
    let Ok(rd) = std::fs::read_dir(faultlab::setup::state::STATE_DIR) else {
        return vec![];
    };
    rd.filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .filter_map(|p| std::fs::read(p).ok())
        .filter_map(|b| serde_json::from_slice::<faultlab::setup::state::RunState>(&b).ok())
        .filter(|s| faultlab::setup::state::is_alive(s.runner_pid, s.runner_start))
        .map(|s| s.runner_pid)
        .filter(|p| !except.contains(p))
        .collect()
}

/// Waits until no other faultlab run is live (engineers and CI jobs may share the
/// machine); false if that did not happen within `max`.
fn wait_quiet(max: Duration) -> bool {
    let t0 = Instant::now();
    loop {
        if live_runs(&[]).is_empty() {
            return true;
        }
        if t0.elapsed() > max {
            eprintln!("other faultlab runs stay live: {:?}", live_runs(&[]));
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn read_trim(p: &str) -> String {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Everything the run `id` could have left behind, described.
fn leftovers(id: &str) -> Vec<String> {
    let mut out = Vec::new();
    let prefix = format!("{id}-");
    for ns in faultlab::netns::list() {
        if ns.starts_with(&prefix) {
            out.push(format!("netns {ns}"));
        }
    }
    let state = faultlab::setup::state::state_path(id);
    if state.exists() {
        out.push(format!("state file {}", state.display()));
    }
    match faultlab::evidence::list_instances() {
        Ok(names) => out.extend(
            names
                .into_iter()
                .filter(|n| n.starts_with(&prefix))
                .map(|n| format!("tracefs instance {n}")),
        ),
        Err(e) => out.push(format!("cannot list tracefs instances: {e:#}")),
    }
    for pid in helper_pids() {
        out.push(format!("helper process {pid}"));
    }
    let log_dir = std::env::temp_dir().join(format!("faultlab-{id}"));
    if log_dir.exists() {
        out.push(format!("log dir {}", log_dir.display()));
    }
    out
}

/// Scratch artifact directories of runner `pid` (`faultlab-artifacts-<pid>-<start>`).
fn scratch_dirs_of(pid: u32) -> Vec<String> {
    let prefix = format!("{}{pid}-", faultlab::setup::state::SCRATCH_PREFIX);
    std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&prefix))
        .collect()
}

/// Live processes running the fixture's helper (`faultlab serve udp-echo --port 9137`).
fn helper_pids() -> Vec<u32> {
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmd
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let marked = args
            .windows(HELPER_MARK.len())
            .any(|w| w.iter().zip(HELPER_MARK).all(|(a, b)| a == b));
        if marked && faultlab::setup::state::is_alive(pid, None) {
            pids.push(pid);
        }
    }
    pids
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

fn wait_timeout(child: &mut Child, max: Duration) -> ExitStatus {
    let t0 = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if t0.elapsed() > max {
            let _ = child.kill();
            panic!("pid {} did not exit within {max:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(10));
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

/// What the root namespace looks like, section by section, without counters.
fn root_snapshot() -> BTreeMap<String, String> {
    fn cmd(argv: &[&str]) -> String {
        match Command::new(argv[0]).args(&argv[1..]).output() {
            Ok(o) => text(&o.stdout) + &text(&o.stderr),
            Err(e) => format!("({} unavailable: {e})", argv[0]),
        }
    }
    let strip_counters = |s: String| -> String {
        s.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| {
                // iptables-save `[packets:bytes]`, nft `counter packets N bytes M`.
                let mut out = String::new();
                let mut rest = l;
                while let Some(i) = rest.find('[') {
                    out.push_str(&rest[..i]);
                    match rest[i..].find(']') {
                        Some(j) if rest[i + 1..i + j].contains(':') => {
                            out.push_str("[]");
                            rest = &rest[i + j + 1..];
                        }
                        _ => {
                            out.push('[');
                            rest = &rest[i + 1..];
                        }
                    }
                }
                out.push_str(rest);
                let words: Vec<&str> = out.split(' ').collect();
                let mut kept = Vec::new();
                let mut k = 0;
                while k < words.len() {
                    if (words[k] == "packets" || words[k] == "bytes") && k + 1 < words.len() {
                        kept.push(words[k]);
                        k += 2;
                    } else {
                        kept.push(words[k]);
                        k += 1;
                    }
                }
                kept.join(" ")
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let mut s = BTreeMap::new();
    // Link state, not statistics.
    s.insert("links".into(), cmd(&["ip", "-o", "link", "show"]));
    s.insert("addresses".into(), cmd(&["ip", "-o", "addr", "show"]));
    s.insert(
        "routes4".into(),
        cmd(&["ip", "-4", "route", "show", "table", "all"]),
    );
    s.insert(
        "routes6".into(),
        cmd(&["ip", "-6", "route", "show", "table", "all"]),
    );
    s.insert("rules4".into(), cmd(&["ip", "-4", "rule", "show"]));
    s.insert("rules6".into(), cmd(&["ip", "-6", "rule", "show"]));
    s.insert(
        "nft".into(),
        strip_counters(cmd(&["nft", "list", "ruleset"])),
    );
    for t in [
        "iptables-save",
        "ip6tables-save",
        "iptables-legacy-save",
        "ip6tables-legacy-save",
    ] {
        s.insert(t.into(), strip_counters(cmd(&[t])));
    }
    let mut sysctls = Vec::new();
    for dir in ["/proc/sys/net/netfilter", "/proc/sys/net/bridge"] {
        let Ok(rd) = std::fs::read_dir(dir) else {
            continue;
        };
        let mut files: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
        files.sort();
        for f in files {
            // The number of connections tracked moves with the host's own traffic.
            if f.ends_with("nf_conntrack_count") || f.is_dir() {
                continue;
            }
            if let Ok(v) = std::fs::read_to_string(&f) {
                sysctls.push(format!("{} = {}", f.display(), v.trim()));
            }
        }
    }
    for f in [
        "/proc/sys/net/ipv4/ip_forward",
        "/proc/sys/net/ipv6/conf/all/forwarding",
    ] {
        sysctls.push(format!("{f} = {}", read_trim(f)));
    }
    s.insert("sysctls".into(), sysctls.join("\n"));
    s.insert(
        "tracefs instances".into(),
        faultlab::evidence::list_instances()
            .map(|v| v.join("\n"))
            .unwrap_or_else(|e| format!("{e:#}")),
    );
    s
}

fn diff(before: &BTreeMap<String, String>, after: &BTreeMap<String, String>) -> Vec<String> {
    let mut out = Vec::new();
    for (k, b) in before {
        let a = &after[k];
        if a != b {
            let bl: Vec<&str> = b.lines().collect();
            let al: Vec<&str> = a.lines().collect();
            for l in bl.iter().filter(|l| !al.contains(l)) {
                out.push(format!("{k}: - {l}"));
            }
            for l in al.iter().filter(|l| !bl.contains(l)) {
                out.push(format!("{k}: + {l}"));
            }
            if out.is_empty() {
                out.push(format!("{k}: lines reordered"));
            }
        }
    }
    out
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
