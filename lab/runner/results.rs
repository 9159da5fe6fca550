//! results/<kernel-release>/: one JSON per scenario and a summary.md regenerated
//! from every JSON in the directory.

use crate::verdict::ScenarioResult;
use anyhow::Context;
use std::path::{Path, PathBuf};

pub fn kernel_dir(results_root: &Path, kernel: &str) -> PathBuf {
    results_root.join(kernel)
}

pub fn write(results_root: &Path, result: &ScenarioResult) -> anyhow::Result<PathBuf> {
    let dir = kernel_dir(results_root, &result.kernel_release);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("{}.json", result.scenario));
    std::fs::write(&path, crate::report::json(result)?)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// Rewrite summary.md from all scenario JSON files in the kernel's directory.
pub fn write_summary(results_root: &Path, kernel: &str) -> anyhow::Result<PathBuf> {
    let dir = kernel_dir(results_root, kernel);
    let mut all = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        // vm.json holds `faultlab vm` boot/run timings, not a scenario.
        .filter(|p| p.file_name().is_some_and(|n| n != "vm.json"))
        .collect();
    files.sort();
    for f in files {
        all.push(crate::report::read_json(&f)?);
    }
    let path = dir.join("summary.md");
    std::fs::write(&path, crate::report::markdown_summary(&all, kernel))?;
    Ok(path)
}
