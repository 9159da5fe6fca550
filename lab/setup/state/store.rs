//! The run state file, `/run/faultlab/<run_id>.json`: everything a run has put on the
//! machine, written before each thing is created, so that a crashed run can be swept.
use super::liveness::process_start_time;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const STATE_DIR: &str = "/run/faultlab";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    pub run_id: String,
    pub runner_pid: u32,
    /// Start time of the runner (field 22 of /proc/PID/stat), so a recycled pid is
    /// not mistaken for a live runner.
    #[serde(default)]
    pub runner_start: Option<u64>,
    #[serde(default)]
    pub namespaces: Vec<String>,
    #[serde(default)]
    pub helpers: Vec<Helper>,
    /// Host-global sysctls with the values to put back, in the order they were saved.
    #[serde(default)]
    pub host_sysctls: Vec<SavedSysctl>,
    /// Names under /sys/kernel/tracing/instances.
    #[serde(default)]
    pub tracefs_instances: Vec<String>,
    /// Scratch directories (helper logs), removed with everything in them.
    #[serde(default)]
    pub dirs: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Helper {
    pub pid: u32,
    #[serde(default)]
    pub start: Option<u64>,
    /// `node/process`, for reports.
    pub what: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedSysctl {
    pub key: String,
    pub original: String,
}

/// A state file owned by a live run.
#[derive(Debug)]
pub struct StateFile {
    path: PathBuf,
    state: RunState,
}

pub fn state_path(run_id: &str) -> PathBuf {
    Path::new(STATE_DIR).join(format!("{run_id}.json"))
}

impl StateFile {
    /// Writes the initial state of run `run_id` (owned by this process).
    pub fn create(run_id: &str) -> Result<Self> {
        if run_id.is_empty() || run_id.contains('/') {
            bail!("invalid run id {run_id:?}");
        }
        std::fs::create_dir_all(STATE_DIR).with_context(|| format!("create {STATE_DIR}"))?;
        let path = state_path(run_id);
        let pid = std::process::id();
        let sf = StateFile {
            path,
            state: RunState {
                run_id: run_id.to_string(),
                runner_pid: pid,
                runner_start: process_start_time(pid),
                ..Default::default()
            },
        };
        // The file appears complete or not at all: a concurrent sweep never reads a
        // half-written state. Written aside, then hard-linked into place (which, unlike
        // rename, fails if the name is taken).
        let tmp = sf.tmp_path();
        let text = serde_json::to_vec_pretty(&sf.state)?;
        std::fs::write(&tmp, text).with_context(|| format!("write {}", tmp.display()))?;
        let linked = std::fs::hard_link(&tmp, &sf.path);
        let _ = std::fs::remove_file(&tmp);
        linked.with_context(|| {
            format!(
                "create state file {} (is run id `{run_id}` in use?)",
                sf.path.display()
            )
        })?;
        Ok(sf)
    }

    /// `<run_id>.json.<pid>.tmp`: the writer's pid in the name lets a sweep remove the
    /// temp files of dead writers.
    fn tmp_path(&self) -> PathBuf {
        self.path
            .with_extension(format!("json.{}.tmp", std::process::id()))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn state(&self) -> &RunState {
        &self.state
    }

    /// Applies `f` and rewrites the file (atomically: temp file + rename).
    pub fn update(&mut self, f: impl FnOnce(&mut RunState)) -> Result<()> {
        f(&mut self.state);
        self.write()
    }

    fn write(&self) -> Result<()> {
        let tmp = self.tmp_path();
        let text = serde_json::to_vec_pretty(&self.state)?;
        std::fs::write(&tmp, text).with_context(|| format!("write {}", tmp.display()))?;
        std::fs::rename(&tmp, &self.path)
            .with_context(|| format!("rename {} into place", tmp.display()))
    }

    /// Deletes the file (after a clean teardown).
    pub fn remove(self) -> Result<()> {
        std::fs::remove_file(&self.path)
            .with_context(|| format!("remove state file {}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_roundtrips_and_tolerates_missing_fields() {
        let st: RunState = serde_json::from_str(r#"{"run_id":"fl00001","runner_pid":1}"#).unwrap();
        assert_eq!(st.run_id, "fl00001");
        assert!(st.namespaces.is_empty());
        let back: RunState = serde_json::from_str(&serde_json::to_string(&st).unwrap()).unwrap();
        assert_eq!(back, st);
    }
}
