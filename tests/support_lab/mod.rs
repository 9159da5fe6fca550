//! Helpers of the root tests that check a run left the host clean: what a run could
//! leave behind (namespaces, state file, tracefs instances, processes, scratch dirs),
//! whether other faultlab runs are live, and a snapshot of the root namespace.
//! Shared by tests/lab_hardening.rs, tests/lab_phases.rs and tests/lab_load.rs.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_faultlab");
pub const ROOT: &str = env!("CARGO_MANIFEST_DIR");
pub const CONNTRACK_MAX: &str = "/proc/sys/net/netfilter/nf_conntrack_max";
/// The fixture's helper listens on this port: no other scenario uses it.
pub const HELPER_MARK: [&str; 3] = ["udp-echo", "--port", "9137"];

pub fn fixture(name: &str) -> String {
    format!("{ROOT}/tests/fixtures/{name}")
}

pub fn faultlab() -> Command {
    let mut c = Command::new(BIN);
    c.current_dir(ROOT).env_remove("FAULTLAB_NO_TRACEFS");
    c
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A run id unique to this test process: lowercase alphanumerics (FAULTLAB_RUN_ID).
pub fn run_id(tag: &str, i: usize) -> String {
    format!("h{tag}{:04x}{i:02}", std::process::id() & 0xffff)
}

pub fn run(args: &[&str], id: &str) -> Output {
    faultlab()
        .args(args)
        .env("FAULTLAB_RUN_ID", id)
        .output()
        .expect("run faultlab")
}

/// Pids of the live runners that have a state file, other than `except`.
pub fn live_runs(except: &[u32]) -> Vec<u32> {
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
pub fn wait_quiet(max: Duration) -> bool {
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

pub fn read_trim(p: &str) -> String {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Everything the run `id` could have left behind, described.
pub fn leftovers(id: &str) -> Vec<String> {
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
    for pid in processes_of_run(id) {
        out.push(format!("process {pid} of the run"));
    }
    let log_dir = std::env::temp_dir().join(format!("faultlab-{id}"));
    if log_dir.exists() {
        out.push(format!("log dir {}", log_dir.display()));
    }
    out
}

/// Scratch artifact directories of runner `pid` (`faultlab-artifacts-<pid>-<start>`).
pub fn scratch_dirs_of(pid: u32) -> Vec<String> {
    let prefix = format!("{}{pid}-", faultlab::setup::state::SCRATCH_PREFIX);
    std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&prefix))
        .collect()
}

/// Live processes started by the run `id`: the lab's helpers (servers, tcpdump, the
/// runner's own children) inherit the runner's environment, FAULTLAB_RUN_ID included.
pub fn processes_of_run(id: &str) -> Vec<u32> {
    let tag = format!("FAULTLAB_RUN_ID={id}");
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let tagged = env.split(|b| *b == 0).any(|v| v == tag.as_bytes());
        if tagged && faultlab::setup::state::is_alive(pid, None) {
            pids.push(pid);
        }
    }
    pids
}

/// Live processes running the fixture's helper (`faultlab serve udp-echo --port 9137`).
pub fn helper_pids() -> Vec<u32> {
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

pub fn wait_timeout(child: &mut Child, max: Duration) -> ExitStatus {
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

/// The root namespace as check-host proves it unchanged (links, addresses, routes,
/// rules, rulesets, the sysctls it reads: `faultlab::hostcheck::snapshot`), plus
/// every host-global sysctl a lab may change and the tracefs instances.
pub fn root_snapshot() -> BTreeMap<String, String> {
    let mut s = faultlab::hostcheck::snapshot::take().0;
    s.insert("sysctls".into(), host_sysctls());
    s.insert(
        "tracefs instances".into(),
        faultlab::evidence::list_instances()
            .map(|v| v.join("\n"))
            .unwrap_or_else(|e| format!("{e:#}")),
    );
    s
}

/// The host-global sysctls a lab may change (netfilter, bridge, forwarding), one
/// `path = value` a line; cheap enough to read after every run.
pub fn host_sysctls() -> String {
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
    sysctls.join("\n")
}

pub fn diff(before: &BTreeMap<String, String>, after: &BTreeMap<String, String>) -> Vec<String> {
    use faultlab::hostcheck::snapshot::{diff, RootSnapshot};
    diff(&RootSnapshot(before.clone()), &RootSnapshot(after.clone()))
}
