//! What scripts/mutants.sh left for one kernel run in RUNS/NAME/: `run.env`
//! (`key=value` lines: rebuild_seconds, build_exit, patch_failed, scenarios,
//! vm_seconds, vm_exit; run_exit for the host) and the results of the inner
//! `faultlab run` in RUNS/NAME/<kernel-release>/.

use crate::vm::diff::Side;
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Default)]
pub struct RunRecord {
    pub dir: PathBuf,
    pub env: BTreeMap<String, String>,
    /// The scenario results, when the run produced any.
    pub side: Option<Side>,
}

impl RunRecord {
    pub fn number(&self, key: &str) -> Option<i64> {
        self.env.get(key).and_then(|v| v.trim().parse().ok())
    }

    /// The scenario names the script passed (file stems; `scenarios` for the
    /// whole catalogue directory).
    pub fn scenarios(&self) -> Vec<String> {
        self.env
            .get("scenarios")
            .map(|v| {
                v.split_whitespace()
                    .map(|p| {
                        let p = Path::new(p);
                        p.file_stem()
                            .map(|s| s.to_string_lossy().into_owned())
                            .unwrap_or_default()
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn parse_env(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

/// The record in `dir`, or `None` when the directory does not exist (not run).
pub fn load(dir: &Path) -> Result<Option<RunRecord>> {
    if !dir.is_dir() {
        return Ok(None);
    }
    let env = match std::fs::read_to_string(dir.join("run.env")) {
        Ok(t) => parse_env(&t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}/run.env", dir.display())),
    };
    // The results directory is the one subdirectory named like a kernel release.
    let mut side = None;
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let p = e?.path();
        let kernel_like = p
            .file_name()
            .is_some_and(|n| crate::judge::KernelVersion::parse(&n.to_string_lossy()).is_ok());
        // A run still going (or killed before its first scenario) has none yet.
        let has_results = p.is_dir()
            && std::fs::read_dir(&p)?.filter_map(|e| e.ok()).any(|e| {
                e.path().extension().is_some_and(|x| x == "json") && e.file_name() != "vm.json"
            });
        if kernel_like && has_results {
            side = Some(Side::load(&p)?);
            break;
        }
    }
    Ok(Some(RunRecord {
        dir: dir.to_path_buf(),
        env,
        side,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_lines_and_scenario_stems() {
        let r = RunRecord {
            env: parse_env("rebuild_seconds=14\nvm_exit=1\nscenarios=/r/scenarios/a.toml /r/scenarios/b.toml\n"),
            ..Default::default()
        };
        assert_eq!(r.number("rebuild_seconds"), Some(14));
        assert_eq!(r.number("vm_exit"), Some(1));
        assert_eq!(r.number("build_exit"), None);
        assert_eq!(r.scenarios(), ["a", "b"]);
    }
}
