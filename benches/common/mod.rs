//! Shared by the benches: plans from inline TOML, running command steps, and the
//! safety net that removes this run's namespaces whatever happens.
#![allow(dead_code)]

use anyhow::{bail, Context, Result};
use faultlab::model::LabPlan;
use faultlab::plan::Step;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// The lab of the first cell of an inline scenario.
pub fn plan_from_toml(text: &str) -> LabPlan {
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios/inline.toml");
    let scn = faultlab::scenario::parse(file, text).unwrap_or_else(|e| panic!("{e}"));
    scn.cells[0].lab.clone()
}

/// A template topology (`docker`, `openstack-qbr`, `calico`) with `params`.
pub fn template_plan(template: &str, params: &str) -> LabPlan {
    plan_from_toml(&format!(
        r#"
name = "bench"
about = "bench topology"
[template]
name = "{template}"
params = {{ {params} }}
[[cells]]
name = "c"
expect = ["1 == 1"]
"#
    ))
}

/// Runs one step, waiting for it; a failure carries its stderr.
pub fn run_step(step: &Step) -> Result<()> {
    let mut cmd = Command::new(&step.argv[0]);
    cmd.args(&step.argv[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .stdin(if step.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    let mut child = cmd
        .spawn()
        .with_context(|| format!("spawn {}", step.argv.join(" ")))?;
    if let (Some(text), Some(mut pipe)) = (&step.stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            step.argv.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

pub fn run_steps(steps: &[Step]) -> Result<()> {
    let debug = std::env::var_os("FAULTLAB_BENCH_DEBUG").is_some();
    for s in steps {
        let t = std::time::Instant::now();
        run_step(s)?;
        if debug {
            eprintln!(
                "{:>8.2} ms  {}",
                t.elapsed().as_secs_f64() * 1e3,
                s.argv.join(" ")
            );
        }
    }
    Ok(())
}

/// Waits until every up link of every node runs (what `Lab::build` does last).
pub fn wait_running(plan: &LabPlan) -> Result<()> {
    let t = std::time::Instant::now();
    for n in &plan.nodes {
        faultlab::netns::with_netlink(&n.netns, faultlab::setup::node::wait_running)?;
    }
    if std::env::var_os("FAULTLAB_BENCH_DEBUG").is_some() {
        eprintln!(
            "{:>8.2} ms  wait for carrier",
            t.elapsed().as_secs_f64() * 1e3
        );
    }
    Ok(())
}

/// Deletes every namespace named `<run_id>-*` when dropped (the shell variants and
/// the replay build outside `Lab`, so they need their own safety net).
pub struct NsGuard(pub String);

impl Drop for NsGuard {
    fn drop(&mut self) {
        let prefix = format!("{}-", self.0);
        for ns in faultlab::netns::list() {
            if ns.starts_with(&prefix) {
                let _ = faultlab::netns::delete(&ns);
            }
        }
    }
}

/// results/bench/ of the crate.
pub fn results_dir() -> PathBuf {
    let d = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/results/bench"));
    let _ = std::fs::create_dir_all(&d);
    d
}

/// Merges `value` under `key` into results/bench/<file>.json.
pub fn record(file: &str, key: &str, value: serde_json::Value) {
    let path = results_dir().join(file);
    let mut root: serde_json::Map<String, serde_json::Value> = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    root.insert(key.to_string(), value);
    let _ = std::fs::write(
        &path,
        serde_json::to_vec_pretty(&serde_json::Value::Object(root)).unwrap(),
    );
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Progress of a long bench loop on stderr, drawn by faultlab's own reporter (a bar
/// on a terminal, one line per finished step otherwise). Ends when dropped.
pub struct Steps {
    progress: Box<dyn faultlab::runner::progress::Progress>,
}

impl Steps {
    /// `total` steps of `unit` (`rounds`, `sweeps`).
    pub fn new(total: usize, unit: &str) -> Steps {
        let progress = faultlab::report::progress::for_stderr(unit);
        progress.event(&faultlab::runner::progress::Event::Planned { cells: total });
        Steps { progress }
    }

    /// Run one step, reported as `id` (started, then finished with its time).
    pub fn step<T>(&self, id: &str, f: impl FnOnce() -> T) -> T {
        let t = self.started(id);
        let out = f();
        self.finished(id, t);
        out
    }

    pub fn started(&self, id: &str) -> std::time::Instant {
        let e = faultlab::runner::progress::Event::CellStarted { id: id.into() };
        self.progress.event(&e);
        std::time::Instant::now()
    }

    pub fn finished(&self, id: &str, since: std::time::Instant) {
        self.progress
            .event(&faultlab::runner::progress::Event::CellFinished {
                id: id.into(),
                outcome: None,
                ms: since.elapsed().as_millis() as u64,
                reason: None,
            });
    }

    /// A line of results, printed above the bar.
    pub fn note(&self, line: &str) {
        self.progress.suspend(&mut || eprintln!("{line}"));
    }
}

impl Drop for Steps {
    fn drop(&mut self) {
        self.progress
            .event(&faultlab::runner::progress::Event::Finished);
    }
}
