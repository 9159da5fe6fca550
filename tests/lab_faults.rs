//! Fault injection at every build operation, as root, through the real kernel seam:
//! for each template topology and each catalogue file's first cell, `faultlab run`
//! with `FAULTLAB_FAIL_OP=k` for k = 1..N (N = operations in that lab's build). Each
//! run must exit 1 (a failed cell), name the operation and the node that failed, and
//! leave nothing: namespaces, helper processes, tracefs instances, host sysctls,
//! helper logs and scratch directories, the state file.
//!
//! CI tries every k for the templates and every 4th k (and the last) for the
//! catalogue; `FAULTLAB_FAULT_SWEEP=full` tries every k everywhere.
#![cfg(feature = "lab")]

use faultlab::model::LabPlan;
use faultlab::plan::build_ops;
use std::path::{Path, PathBuf};
use std::process::Command;

const EXE: &str = env!("CARGO_BIN_EXE_faultlab");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A scenario file to run, its first cell, and that cell's lab.
struct Target {
    file: PathBuf,
    cell: String,
    lab: LabPlan,
    /// Try every k (templates), or a stride (catalogue, unless the full sweep is asked).
    every_k: bool,
}

fn load(file: &Path, every_k: bool) -> Target {
    let text = std::fs::read_to_string(file).unwrap();
    let scn = faultlab::scenario::parse(&file.display().to_string(), &text)
        .unwrap_or_else(|e| panic!("{e}"));
    let c = &scn.cells[0];
    Target {
        file: file.to_path_buf(),
        cell: c.name.clone(),
        lab: c.lab.clone(),
        every_k,
    }
}

fn targets(dir: &Path) -> Vec<Target> {
    let mut out = Vec::new();
    for (name, params) in [
        ("docker", "containers = 2"),
        ("openstack-qbr", "vms = 2"),
        ("calico", "pods = 2, backends = 2"),
    ] {
        let file = dir.join(format!("template-{name}.toml"));
        std::fs::write(
            &file,
            format!(
                "name = \"template-{name}\"\nabout = \"fault injection\"\n\
                 [template]\nname = \"{name}\"\nparams = {{ {params} }}\n\
                 [[cells]]\nname = \"c\"\nexpect = [\"1 == 1\"]\n"
            ),
        )
        .unwrap();
        out.push(load(&file, true));
    }
    for sub in ["scenarios", "scenarios/selftests"] {
        let mut files: Vec<PathBuf> = std::fs::read_dir(Path::new(ROOT).join(sub))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect();
        files.sort();
        out.extend(files.iter().map(|f| load(f, false)));
    }
    out
}

fn host_sysctls(plan: &LabPlan) -> Vec<(String, String)> {
    plan.host_sysctls
        .iter()
        .map(|s| {
            let v = faultlab::netns::sysctl::read_here(&s.key).unwrap_or_default();
            (s.key.clone(), v)
        })
        .collect()
}

/// Pids of processes started with `FAULTLAB_RUN_ID=run_id` in their environment
/// (the runner and every helper it spawned inherit it).
fn processes_of(run_id: &str) -> Vec<u32> {
    let needle = format!("FAULTLAB_RUN_ID={run_id}\0");
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .map(|env| env.windows(needle.len()).any(|w| w == needle.as_bytes()))
                .unwrap_or(false)
        })
        .collect()
}

/// Everything run `run_id` (runner pid `pid`) could have left behind.
fn leftovers(run_id: &str, pid: u32) -> Vec<String> {
    let mut left: Vec<String> = faultlab::netns::list()
        .into_iter()
        // Under --jobs each cell's namespaces carry `{run_id}c{k}-`.
        .filter(|n| n.starts_with(run_id))
        .map(|n| format!("netns {n}"))
        .collect();
    let state = Path::new(faultlab::setup::state::STATE_DIR).join(format!("{run_id}.json"));
    if state.exists() {
        left.push(format!("state file {}", state.display()));
    }
    if let Ok(rd) = std::fs::read_dir(faultlab::setup::state::TRACEFS_INSTANCES) {
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with(run_id) {
                left.push(format!("tracefs instance {n}"));
            }
        }
    }
    let logs = std::env::temp_dir().join(format!("faultlab-{run_id}"));
    if logs.exists() {
        left.push(format!("log dir {}", logs.display()));
    }
    let scratch = format!("faultlab-artifacts-{pid}-");
    for e in std::fs::read_dir(std::env::temp_dir()).unwrap().flatten() {
        if e.file_name().to_string_lossy().starts_with(&scratch) {
            left.push(format!("scratch dir {}", e.path().display()));
        }
    }
    left.extend(processes_of(run_id).iter().map(|p| format!("process {p}")));
    left
}

#[test]
fn every_build_operation_failing_leaves_nothing() {
    if !is_root() {
        eprintln!("lab_faults: needs root; skipped");
        return;
    }
    let full = std::env::var("FAULTLAB_FAULT_SWEEP").is_ok_and(|v| v == "full");
    let dir = std::env::temp_dir().join(format!("faultlab-faults-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let started = std::time::Instant::now();
    let mut tried = 0;
    let mut unreachable = 0;
    let mut failures = Vec::new();
    for (i, t) in targets(&dir).iter().enumerate() {
        let n = build_ops(&t.lab).len();
        let ks: Vec<usize> = (1..=n)
            .filter(|k| full || t.every_k || k % 4 == 1 || *k == n)
            .collect();
        for k in ks {
            let run_id = format!("flq{i:02}{k:03}");
            let plan = t.lab.for_run(&run_id);
            let ops = build_ops(&plan);
            let op = &ops[k - 1].op;
            let before = host_sysctls(&plan);
            let child = Command::new(EXE)
                .args(["run", "--no-results", "--format", "json", "--cell", &t.cell])
                .arg(&t.file)
                .env("FAULTLAB_FAIL_OP", k.to_string())
                .env("FAULTLAB_RUN_ID", &run_id)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let pid = child.id();
            let out = child.wait_with_output().unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            let what = format!("{}: {}", t.file.display(), k);
            let mut wrong = Vec::new();
            // A lab with a device kind this kernel lacks (rpath's dummy) is a skip at
            // that device's creation: the operations after it are never reached. It
            // must still leave nothing behind.
            let kind_missing = out.status.code() == Some(4) && stdout.contains("kernel has no `");
            if kind_missing {
                unreachable += 1;
            } else if out.status.code() != Some(1) {
                wrong.push(format!(
                    "exit {:?} (expected 1):\n{}",
                    out.status.code(),
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            for needle in [
                format!("injected failure of operation {k} "),
                op.what().to_string(),
            ]
            .into_iter()
            .chain(op.node().map(|n| format!("node `{}`", n.name)))
            .filter(|_| !kind_missing)
            {
                // JSON escapes quotes and backslashes; the op texts have neither.
                if !stdout.contains(&needle) {
                    wrong.push(format!("output does not name `{needle}`"));
                }
            }
            let left = leftovers(&run_id, pid);
            if !left.is_empty() {
                wrong.push(format!("left behind: {left:?}"));
            }
            let after = host_sysctls(&plan);
            if after != before {
                wrong.push(format!("host sysctls {before:?} became {after:?}"));
            }
            if !wrong.is_empty() {
                failures.push(format!("{what} ({op}): {}", wrong.join("; ")));
            }
            tried += 1;
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!(
        "lab_faults: {tried} (scenario, k) pairs tried in {:.1} s ({}), {unreachable} not reached (a device kind this kernel lacks)",
        started.elapsed().as_secs_f64(),
        if full { "full sweep" } else { "CI stride" }
    );
    assert!(
        failures.is_empty(),
        "{} of {tried} failure paths went wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(tried > 100, "only {tried} pairs tried");
}
