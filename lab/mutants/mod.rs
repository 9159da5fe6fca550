//! `faultlab mutants-summary`: judges the mutant kernels `scripts/mutants.sh`
//! ran (kernel-mutants/*.patch) against the unmutated build, and the unmutated
//! build against the host, into results/mutants/summary.md.
//!
//! `header` reads a mutant's metadata from its patch, `record` what the script
//! left per run, `summary` compares (with `vm::diff`) and renders. Pure except
//! for reading those files; unit- and snapshot-tested on fixture directories.

pub mod header;
pub mod record;
pub mod summary;

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

pub struct Args {
    pub patches: PathBuf,
    pub runs: PathBuf,
    /// The host's results: a results/<kernel>/ directory or a run directory
    /// holding one; default RUNS/host.
    pub host: Option<PathBuf>,
    /// The unmutated build's .config, for config explanations.
    pub kernel_config: Option<PathBuf>,
    pub scenarios: PathBuf,
}

fn host_side(path: &Path) -> Result<Option<crate::vm::diff::Side>> {
    let direct = std::fs::read_dir(path)
        .with_context(|| format!("reading {}", path.display()))?
        .filter_map(|e| e.ok())
        .any(|e| e.path().extension().is_some_and(|x| x == "json"));
    if direct {
        return crate::vm::diff::Side::load(path).map(Some);
    }
    Ok(record::load(path)?.and_then(|r| r.side))
}

/// Loads everything and renders the markdown.
pub fn summarise(args: &Args) -> Result<String> {
    let mutants = header::load_dir(&args.patches)?;
    let mutants = mutants
        .into_iter()
        .map(|m| {
            let run = record::load(&args.runs.join(&m.name))?;
            Ok((m, run))
        })
        .collect::<Result<Vec<_>>>()?;
    let unmutated = record::load(&args.runs.join("unmutated"))?;
    let host_dir = args.host.clone().unwrap_or_else(|| args.runs.join("host"));
    let host = if host_dir.is_dir() {
        host_side(&host_dir)?
    } else {
        None
    };
    let kernel_config = match &args.kernel_config {
        Some(p) => {
            let text = crate::kconfig::read_config(p).map_err(anyhow::Error::msg)?;
            Some((
                p.display().to_string(),
                crate::kconfig::KernelConfig::parse(&text),
            ))
        }
        None => None,
    };
    let catalogue = crate::kconfig::catalogue(&args.scenarios).map_err(anyhow::Error::msg)?;
    Ok(summary::render(&summary::Input {
        runs_label: args.runs.display().to_string(),
        mutants,
        unmutated,
        host,
        kernel_config,
        catalogue,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdict::{CellResult, Outcome, ScenarioResult};

    struct Scratch(PathBuf);
    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn cell(
        name: &str,
        outcome: Outcome,
        failed: Option<&str>,
        reason: Option<&str>,
    ) -> CellResult {
        let checks = match failed {
            Some(d) => {
                serde_json::json!([{ "expr": "ping.received == 0", "ok": false, "detail": d }])
            }
            None => {
                serde_json::json!([{ "expr": "ping.received == 0", "ok": true, "detail": "ping.received = 0" }])
            }
        };
        serde_json::from_value(serde_json::json!({
            "name": name, "outcome": outcome, "reason": reason,
            "checks": checks, "duration_ms": 900,
        }))
        .unwrap()
    }

    fn write(dir: &Path, kernel: &str, scenario: &str, cells: Vec<CellResult>) {
        let d = dir.join(kernel);
        std::fs::create_dir_all(&d).unwrap();
        let r = ScenarioResult {
            scenario: scenario.into(),
            about: String::new(),
            file: format!("scenarios/{scenario}.toml"),
            kernel_release: kernel.into(),
            started_at: 0,
            duration_ms: 1000,
            cells,
        };
        std::fs::write(
            d.join(format!("{scenario}.json")),
            crate::report::json(&r).unwrap(),
        )
        .unwrap();
    }

    const BUILD: &str = "6.1.158-faultlab";

    /// The unmutated verdicts; `changed` turns call-iptables-on into a failure.
    fn bridge(changed: bool) -> Vec<CellResult> {
        vec![
            if changed {
                cell(
                    "call-iptables-on",
                    Outcome::Fail,
                    Some("ping.received = 20"),
                    None,
                )
            } else {
                cell("call-iptables-on", Outcome::Pass, None, None)
            },
            cell("call-iptables-off", Outcome::Pass, None, None),
            cell(
                "nft-bridge-family-drop",
                Outcome::Skip,
                None,
                Some("nft bridge family is not available"),
            ),
            cell(
                "iptables-legacy-drop",
                Outcome::Fail,
                Some("iptables-legacy: can't initialize iptables table `filter'"),
                None,
            ),
        ]
    }

    fn ecmp(host: bool) -> Vec<CellResult> {
        vec![
            if host {
                cell("l4-one-bad", Outcome::Pass, None, None)
            } else {
                cell(
                    "l4-one-bad",
                    Outcome::Fail,
                    Some("multiflow.dead_fraction = 0.41"),
                    None,
                )
            },
            cell("l4-all-good", Outcome::Pass, None, None),
        ]
    }

    fn patch(dir: &Path, name: &str, own: &str, run: Option<&str>) {
        let run = run.map(|r| format!("Run: {r}\n")).unwrap_or_default();
        std::fs::write(
            dir.join(format!("{name}.patch")),
            format!("Mutant: {name}\nPhenomenon: §9 test\nOwn: {own}\n{run}Breaks: {name} breaks\nUndoes: f() in x.c\n\n--- a/x.c\n+++ b/x.c\n@@ -1 +1 @@\n-a\n+b\n"),
        )
        .unwrap();
    }

    fn env(dir: &Path, text: &str) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("run.env"), text).unwrap();
    }

    #[test]
    fn summary_of_fixture_runs() {
        let root =
            Scratch(std::env::temp_dir().join(format!("faultlab-mutants-{}", std::process::id())));
        let (patches, runs) = (root.0.join("kernel-mutants"), root.0.join("runs"));
        std::fs::create_dir_all(&patches).unwrap();
        patch(
            &patches,
            "bridge-broken",
            "bridge-netfilter",
            Some("bridge-netfilter"),
        );
        patch(&patches, "killed-elsewhere", "ecmp-bad-path", None);
        patch(&patches, "survivor", "ecmp-bad-path", Some("ecmp-bad-path"));
        patch(
            &patches,
            "timed-out",
            "ecmp-bad-path",
            Some("ecmp-bad-path"),
        );
        patch(&patches, "no-build", "ecmp-bad-path", Some("ecmp-bad-path"));
        patch(
            &patches,
            "never-run",
            "ecmp-bad-path",
            Some("ecmp-bad-path"),
        );
        let all = "scenarios=/r/scenarios\n";
        env(
            &runs.join("unmutated"),
            &format!("rebuild_seconds=600\nbuild_exit=0\n{all}vm_seconds=1501\nvm_exit=124\n"),
        );
        write(
            &runs.join("unmutated"),
            BUILD,
            "bridge-netfilter",
            bridge(false),
        );
        write(&runs.join("unmutated"), BUILD, "ecmp-bad-path", ecmp(false));
        // The host: everything passes.
        let host = runs.join("host");
        env(&host, "run_exit=0\n");
        let host_bridge = [
            "call-iptables-on",
            "call-iptables-off",
            "nft-bridge-family-drop",
            "iptables-legacy-drop",
        ]
        .map(|n| cell(n, Outcome::Pass, None, None))
        .to_vec();
        write(&host, "6.18.44-fc", "bridge-netfilter", host_bridge);
        write(&host, "6.18.44-fc", "ecmp-bad-path", ecmp(true));
        write(
            &host,
            "6.18.44-fc",
            "selftest-xt-string",
            vec![cell("string-match-offsets", Outcome::Pass, None, None)],
        );
        let m = runs.join("bridge-broken");
        env(&m, "rebuild_seconds=14\nbuild_exit=0\nscenarios=/r/scenarios/bridge-netfilter.toml\nvm_seconds=60\nvm_exit=1\n");
        write(&m, BUILD, "bridge-netfilter", bridge(true));
        let m = runs.join("killed-elsewhere");
        env(
            &m,
            &format!("rebuild_seconds=15\nbuild_exit=0\n{all}vm_seconds=530\nvm_exit=1\n"),
        );
        write(&m, BUILD, "bridge-netfilter", bridge(true));
        write(&m, BUILD, "ecmp-bad-path", ecmp(false));
        let m = runs.join("survivor");
        env(&m, "rebuild_seconds=13\nbuild_exit=0\nscenarios=/r/scenarios/ecmp-bad-path.toml\nvm_seconds=40\nvm_exit=1\n");
        write(&m, BUILD, "ecmp-bad-path", ecmp(false));
        env(&runs.join("timed-out"), "rebuild_seconds=12\nbuild_exit=0\nscenarios=/r/scenarios/ecmp-bad-path.toml\nvm_seconds=1500\nvm_exit=124\n");
        env(&runs.join("no-build"), "rebuild_seconds=3\nbuild_exit=2\n");
        // The build's config: the whole fragment but legacy iptables' filter table.
        let config = root.0.join("config");
        let text: String = crate::kconfig::fragment_options(crate::kconfig::FRAGMENT)
            .iter()
            .filter(|o| *o != "CONFIG_IP_NF_FILTER")
            .map(|o| format!("{o}=y\n"))
            .collect();
        std::fs::write(&config, text).unwrap();

        let md = summarise(&Args {
            patches,
            runs: runs.clone(),
            host: None,
            kernel_config: Some(config.clone()),
            scenarios: Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios"),
        })
        .unwrap();
        let md = md
            .replace(&runs.display().to_string(), "RUNS")
            .replace(&config.display().to_string(), "BUILD/.config");
        assert!(
            md.contains("**Mutation score: 2 of 3 judged mutants killed (67 %)**; 1 of them"),
            "{md}"
        );
        assert!(md.contains("1 of them unexplained"), "{md}");
        insta::assert_snapshot!(md);
    }
}
