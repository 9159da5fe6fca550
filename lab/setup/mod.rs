//! Builds a [`LabPlan`] into live namespaces and tears it down again.
//!
//! [`Lab`] is RAII: dropping it stops the helper processes, deletes the namespaces and
//! restores host sysctls. Everything created is listed in a state file first
//! ([`state`]), so a run that dies without tearing down can be swept later.

pub mod caps;
pub mod fake;
pub mod node;
pub mod process;
pub mod rtnetlink;
pub mod script;
pub mod seam;
pub mod signals;
pub mod state;

pub use process::LabProcess;
pub use seam::Kernel;

use crate::model::{LabPlan, NodePlan};
use crate::plan::{build_ops, Op, PlannedOp, Stage};
use anyhow::{anyhow, bail, Context, Result};
use state::{SavedSysctl, StateFile};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

/// How long a lab waits for another run to finish with the host-global sysctls.
pub const HOST_LOCK_TIMEOUT: Duration = Duration::from_secs(120);

/// FAULTLAB_RUN_ID when it is a valid id (1-12 lowercase letters and digits; tests
/// that look for what a run left behind fix it), else a fresh one.
pub fn run_id_from_env() -> String {
    std::env::var("FAULTLAB_RUN_ID")
        .ok()
        .filter(|id| {
            (1..=12).contains(&id.len())
                && id
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        })
        .unwrap_or_else(new_run_id)
}

/// A fresh run id: `fl` + 5 hex digits from pid, time and a counter.
pub fn new_run_id() -> String {
    use std::hash::{Hash, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::DefaultHasher::new();
    std::process::id().hash(&mut h);
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
        .hash(&mut h);
    COUNTER.fetch_add(1, Ordering::Relaxed).hash(&mut h);
    format!("fl{:05x}", h.finish() & 0xf_ffff)
}

/// The namespace of node `node` in `plan`.
pub fn netns_for<'a>(plan: &'a LabPlan, node: &str) -> Result<&'a str> {
    plan.nodes
        .iter()
        .find(|n| n.name == node)
        .map(|n| n.netns.as_str())
        .ok_or_else(|| anyhow!("unknown node `{node}`"))
}

/// Checks a plan for mistakes that would otherwise surface half-way through a build.
pub fn validate(plan: &LabPlan) -> Result<()> {
    if plan.run_id.is_empty() || plan.run_id.contains('/') {
        bail!("invalid run id {:?}", plan.run_id);
    }
    let mut names = HashSet::new();
    let mut nss = HashSet::new();
    for n in &plan.nodes {
        if !names.insert(n.name.as_str()) {
            bail!("node `{}` appears twice", n.name);
        }
        crate::netns::path_of(&n.netns).with_context(|| format!("node `{}`", n.name))?;
        if !n.netns.starts_with(&format!("{}-", plan.run_id)) {
            bail!(
                "node `{}`: netns `{}` does not start with `{}-`",
                n.name,
                n.netns,
                plan.run_id
            );
        }
        if !nss.insert(n.netns.as_str()) {
            bail!("netns `{}` used by two nodes", n.netns);
        }
        for p in &n.processes {
            if p.argv.is_empty() {
                bail!("node `{}`: process `{}` has an empty argv", n.name, p.name);
            }
        }
    }
    let mut ends = HashSet::new();
    for v in &plan.veths {
        for e in [&v.a, &v.b] {
            if !names.contains(e.node.as_str()) {
                bail!(
                    "link {}:{} <-> {}:{}: unknown node `{}`",
                    v.a.node,
                    v.a.dev,
                    v.b.node,
                    v.b.dev,
                    e.node
                );
            }
            if e.dev.is_empty() || e.dev.len() > 15 {
                bail!(
                    "link end {}:{}: device names are 1 to 15 bytes",
                    e.node,
                    e.dev
                );
            }
            if !ends.insert((e.node.as_str(), e.dev.as_str())) {
                bail!("device {}:{} is used by two links", e.node, e.dev);
            }
        }
    }
    Ok(())
}

/// Where a lab keeps the record of what it put on the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record {
    /// The state file under [`state::STATE_DIR`], and the host lock: every real lab.
    StateFile,
    /// Nothing on disk and no host lock: for a fake [`Kernel`] in tests without root.
    Nothing,
}

/// `FAULTLAB_FAIL_OP=K` (K from 1): every lab of this process fails its K-th build
/// operation (see [`fake::FailAt`]), to try failure paths from the command line.
pub const FAIL_OP_ENV: &str = "FAULTLAB_FAIL_OP";

/// The kernel a real lab uses: rtnetlink, wrapped in the fault injector when
/// [`FAIL_OP_ENV`] is set.
pub fn kernel_from_env() -> Result<Box<dyn Kernel>> {
    match std::env::var(FAIL_OP_ENV) {
        Err(_) => Ok(Box::new(rtnetlink::Rtnetlink)),
        Ok(v) => {
            let k: usize = v.trim().parse().ok().filter(|k| *k >= 1).ok_or_else(|| {
                anyhow!("{FAIL_OP_ENV}={v:?}: expected the number of the operation to fail, from 1")
            })?;
            Ok(Box::new(fake::FailAt::new(rtnetlink::Rtnetlink, k)))
        }
    }
}

/// A built lab. Dropping it tears everything down.
pub struct Lab {
    plan: LabPlan,
    kernel: Box<dyn Kernel>,
    state: Mutex<Option<StateFile>>,
    /// Namespaces this lab created, in creation order.
    namespaces: Vec<String>,
    procs: Vec<LabProcess>,
    /// Host sysctls written, with their values before.
    saved_host: Vec<SavedSysctl>,
    /// Held while host sysctls are changed (see [`state::HostLock`]).
    host_lock: Option<state::HostLock>,
    log_dir: PathBuf,
    torn_down: bool,
}

impl std::fmt::Debug for Lab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lab")
            .field("run_id", &self.plan.run_id)
            .field("namespaces", &self.namespaces)
            .field("pids", &self.pids())
            .finish()
    }
}

impl Lab {
    /// Builds `plan`. On failure everything created so far is removed again and the
    /// error names the node, device and step that failed.
    pub fn build(plan: &LabPlan) -> Result<Lab> {
        Self::build_with(plan, kernel_from_env()?, Record::StateFile)
    }

    /// Builds `plan` through `kernel`, one [`Op`] after another in the order of
    /// [`build_ops`] (nodes in parallel within the per-node stages).
    pub fn build_with(plan: &LabPlan, kernel: Box<dyn Kernel>, record: Record) -> Result<Lab> {
        validate(plan)?;
        let state = match record {
            Record::StateFile => Some(StateFile::create(&plan.run_id)?),
            Record::Nothing => None,
        };
        let log_dir = std::env::temp_dir().join(format!("faultlab-{}", plan.run_id));
        let mut lab = Lab {
            plan: plan.clone(),
            kernel,
            state: Mutex::new(state),
            namespaces: Vec::new(),
            procs: Vec::new(),
            saved_host: Vec::new(),
            host_lock: None,
            log_dir,
            torn_down: false,
        };
        match lab.build_steps(record) {
            Ok(()) => Ok(lab),
            Err(e) => {
                let errs = lab.teardown_all();
                if errs.is_empty() {
                    Err(e)
                } else {
                    let left = errs
                        .iter()
                        .map(|e| format!("{e:#}"))
                        .collect::<Vec<_>>()
                        .join("; ");
                    Err(e.context(format!(
                        "build of {} failed, and the cleanup after it left things behind \
                         (run `faultlab clean`): {left}",
                        plan.run_id
                    )))
                }
            }
        }
    }

    fn update_state(&self, f: impl FnOnce(&mut state::RunState)) -> Result<()> {
        let mut guard = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match guard.as_mut() {
            Some(sf) => sf.update(f),
            None => Ok(()),
        }
    }

    fn build_steps(&mut self, record: Record) -> Result<()> {
        if record == Record::StateFile {
            self.take_host_lock()?;
        }
        let plan = self.plan.clone();
        let ops = build_ops(&plan);
        for stage in ops.chunk_by(|a, b| a.op.stage() == b.op.stage()) {
            match stage[0].op.stage() {
                Stage::Host => self.write_host_sysctls(stage)?,
                Stage::Namespaces => self.create_namespaces(stage)?,
                Stage::Processes => self.start_processes(stage)?,
                _ => self.per_node(&plan, stage)?,
            }
        }
        Ok(())
    }

    /// Host-global sysctls: one run at a time (another run's values must not be saved
    /// as the originals), and put back what a run that died holding the lock left
    /// behind. Labs without host sysctls hold the lock shared.
    fn take_host_lock(&mut self) -> Result<()> {
        let held_too_long = || {
            anyhow!(
                "another faultlab run has held the host-sysctl lock ({}/{}) for {HOST_LOCK_TIMEOUT:?}",
                state::STATE_DIR,
                state::HOST_LOCK_FILE
            )
        };
        if !self.plan.host_sysctls.is_empty() {
            let lock = state::HostLock::acquire(HOST_LOCK_TIMEOUT, &signals::interrupted)?
                .ok_or_else(|| {
                    if signals::interrupted() {
                        anyhow!("interrupted while waiting for the host-sysctl lock")
                    } else {
                        held_too_long()
                    }
                })?;
            match state::sweep_dead_holding(&lock) {
                Ok(done) => {
                    for d in done {
                        eprintln!("cleaned leftover of an interrupted run: {d}");
                    }
                }
                Err(e) => eprintln!("warning: could not sweep leftovers of earlier runs: {e:#}"),
            }
            self.host_lock = Some(lock);
        } else {
            // Shared: this lab must not run while another has host sysctls changed.
            let lock = state::HostLock::acquire_shared(HOST_LOCK_TIMEOUT, &signals::interrupted)?
                .ok_or_else(held_too_long)?;
            self.host_lock = Some(lock);
        }
        Ok(())
    }

    /// Saves each host sysctl (state file first), then writes it.
    fn write_host_sysctls(&mut self, ops: &[PlannedOp]) -> Result<()> {
        for o in ops {
            let Op::HostSysctl(s) = o.op else { continue };
            let original = self.kernel.read_host_sysctl(&s.key)?;
            let saved = SavedSysctl {
                key: s.key.clone(),
                original,
            };
            self.update_state(|st| st.host_sysctls.push(saved.clone()))?;
            self.saved_host.push(saved);
            self.kernel.write_host_sysctl(Some(o), &s.key, &s.value)?;
        }
        Ok(())
    }

    fn create_namespaces(&mut self, ops: &[PlannedOp]) -> Result<()> {
        for o in ops {
            let Op::Netns(n) = o.op else { continue };
            self.update_state(|st| st.namespaces.push(n.netns.clone()))?;
            if let Err(e) = self.kernel.create_netns(o) {
                // Not ours (e.g. it already existed): it must not be deleted on cleanup.
                self.update_state(|st| st.namespaces.retain(|x| x != &n.netns))?;
                return Err(e.context(format!("node `{}`", n.name)));
            }
            self.namespaces.push(n.netns.clone());
        }
        Ok(())
    }

    /// One per-node stage: each node's operations in order on a thread of its own.
    fn per_node(&self, plan: &LabPlan, ops: &[PlannedOp]) -> Result<()> {
        let mut by_node: Vec<(&NodePlan, Vec<PlannedOp>)> = Vec::new();
        for o in ops {
            let Some(n) = o.op.node() else { continue };
            match by_node.iter_mut().find(|(m, _)| std::ptr::eq(*m, n)) {
                Some((_, v)) => v.push(*o),
                None => by_node.push((n, vec![*o])),
            }
        }
        let kernel = &*self.kernel;
        parallel(by_node.into_iter().map(|(n, ops)| {
            move || -> Result<()> {
                kernel
                    .in_node(plan, n, &ops)
                    .with_context(|| format!("node `{}`", n.name))
            }
        }))
    }

    fn start_processes(&mut self, ops: &[PlannedOp]) -> Result<()> {
        let dir = self.log_dir.display().to_string();
        self.update_state(|st| st.dirs.push(dir))?;
        std::fs::create_dir_all(&self.log_dir)
            .with_context(|| format!("create log dir {}", self.log_dir.display()))?;
        for o in ops {
            let Op::Process(n, p) = o.op else { continue };
            let what = format!("node `{}`: process `{}`", n.name, p.name);
            let mut lp = self
                .kernel
                .start_process(o, n, p, &self.log_dir)
                .context(what.clone())?;
            let helper = state::Helper {
                pid: lp.pid,
                start: state::process_start_time(lp.pid),
                what: format!("{}/{}", n.name, p.name),
            };
            let recorded = self.update_state(|st| st.helpers.push(helper));
            let ready = match p.ready_port {
                Some(port) if recorded.is_ok() => self.kernel.wait_ready(&mut lp, port),
                _ => Ok(()),
            };
            self.procs.push(lp);
            recorded.context(what.clone())?;
            ready.context(what)?;
        }
        Ok(())
    }

    pub fn plan(&self) -> &LabPlan {
        &self.plan
    }

    pub fn run_id(&self) -> &str {
        &self.plan.run_id
    }

    /// Namespace of `node`, if the plan has that node.
    pub fn netns_of(&self, node: &str) -> Option<&str> {
        netns_for(&self.plan, node).ok()
    }

    /// Pids of the helper processes, in start order.
    pub fn pids(&self) -> Vec<u32> {
        self.procs.iter().map(|p| p.pid).collect()
    }

    /// The helper processes (node, name, pid, log file).
    pub fn processes(&self) -> &[LabProcess] {
        &self.procs
    }

    /// Directory of the helper processes' logs (removed at teardown unless
    /// `FAULTLAB_KEEP_LOGS` is set).
    pub fn log_dir(&self) -> &Path {
        &self.log_dir
    }

    /// Records a tracefs instance (under /sys/kernel/tracing/instances) in the state
    /// file, so it is removed if the run dies; teardown removes it if still there.
    pub fn register_tracefs_instance(&self, name: &str) -> Result<()> {
        let name = name.to_string();
        self.update_state(|st| {
            if !st.tracefs_instances.contains(&name) {
                st.tracefs_instances.push(name)
            }
        })
    }

    /// Forgets a tracefs instance its owner has removed itself.
    pub fn unregister_tracefs_instance(&self, name: &str) -> Result<()> {
        self.update_state(|st| st.tracefs_instances.retain(|n| n != name))
    }

    /// Tears down and returns every error met (an empty vector means all is gone).
    pub fn teardown(mut self) -> Vec<anyhow::Error> {
        self.teardown_all()
    }

    fn teardown_all(&mut self) -> Vec<anyhow::Error> {
        if self.torn_down {
            return Vec::new();
        }
        self.torn_down = true;
        let mut errors = Vec::new();
        for p in self.procs.iter_mut().rev() {
            if let Err(e) = self.kernel.stop_process(p) {
                errors.push(e.context(format!("stop {}/{} (pid {})", p.node, p.name, p.pid)));
            }
        }
        self.procs.clear();
        let tracefs = self
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|s| s.state().tracefs_instances.clone())
            .unwrap_or_default();
        for t in &tracefs {
            if let Err(e) = self.kernel.remove_tracefs_instance(t) {
                errors.push(e);
            }
        }
        for ns in self.namespaces.drain(..).rev() {
            if let Err(e) = self.kernel.delete_netns(&ns) {
                errors.push(e);
            }
        }
        let mut restored = true;
        for s in self.saved_host.drain(..).rev() {
            if let Err(e) = self.kernel.write_host_sysctl(None, &s.key, &s.original) {
                restored = false;
                errors.push(e.context(format!("restore host sysctl {} = {}", s.key, s.original)));
            }
        }
        if restored {
            // Before the lock goes: a live run listing host sysctls while another holds
            // the lock is taken for a dying one (state::sweep_dead_holding).
            if let Err(e) = self.update_state(|st| st.host_sysctls.clear()) {
                errors.push(e);
            }
        }
        self.host_lock = None;
        if std::env::var_os("FAULTLAB_KEEP_LOGS").is_none() && self.log_dir.exists() {
            if let Err(e) = std::fs::remove_dir_all(&self.log_dir) {
                errors.push(anyhow!(e).context(format!("remove {}", self.log_dir.display())));
            }
        }
        let sf = self.state.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(sf) = sf {
            if errors.is_empty() {
                if let Err(e) = sf.remove() {
                    errors.push(e);
                }
            }
            // Otherwise the state file stays, for `faultlab clean` once this process is gone.
        }
        errors
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for e in self.teardown_all() {
            eprintln!("faultlab: teardown of {}: {e:#}", self.plan.run_id);
        }
    }
}

/// Runs the jobs on one thread each and returns the first error (all jobs finish).
fn parallel<'a, F>(jobs: impl Iterator<Item = F>) -> Result<()>
where
    F: FnOnce() -> Result<()> + Send + 'a,
{
    let results: Vec<Result<()>> = std::thread::scope(|s| {
        let handles: Vec<_> = jobs.map(|j| s.spawn(j)).collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    results.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Endpoint, NodePlan, VethPlan};

    fn node(name: &str, ns: &str) -> NodePlan {
        NodePlan {
            name: name.into(),
            netns: ns.into(),
            ..Default::default()
        }
    }

    #[test]
    fn run_ids_are_short_and_distinct() {
        let a = new_run_id();
        let b = new_run_id();
        assert_eq!(a.len(), 7);
        assert!(a.starts_with("fl"));
        assert!(a[2..].chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn validation_catches_plan_mistakes() {
        let mut plan = LabPlan {
            run_id: "fl00000".into(),
            nodes: vec![node("a", "fl00000-a"), node("b", "fl00000-b")],
            veths: vec![VethPlan {
                a: Endpoint {
                    node: "a".into(),
                    dev: "eth0".into(),
                    mac: None,
                },
                b: Endpoint {
                    node: "b".into(),
                    dev: "eth0".into(),
                    mac: None,
                },
                mtu: None,
            }],
            host_sysctls: vec![],
        };
        validate(&plan).unwrap();
        plan.veths[0].b.node = "c".into();
        let e = validate(&plan).unwrap_err().to_string();
        assert!(e.contains("unknown node `c`"), "{e}");
        plan.veths[0].b.node = "b".into();
        plan.nodes[1].netns = "other-b".into();
        assert!(validate(&plan).is_err());
        plan.nodes[1].netns = "fl00000-b".into();
        plan.veths.push(plan.veths[0].clone());
        assert!(validate(&plan)
            .unwrap_err()
            .to_string()
            .contains("two links"));
    }
}
