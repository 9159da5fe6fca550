//! Shared by the root traffic tests: one `[[traffic]]` step, written as TOML, run
//! against namespaces a test built itself.

use faultlab::traffic::{run, Metrics, TrafficContext, TrafficSpec};
use std::collections::BTreeMap;
use std::path::Path;

/// Parses `toml_step` (the body of one `[[traffic]]` table) and runs it; `netns` maps
/// node names to namespace names.
pub fn run_step(
    netns: &BTreeMap<String, String>,
    artifacts: &Path,
    toml_step: &str,
) -> anyhow::Result<Metrics> {
    #[derive(serde::Deserialize)]
    struct F {
        traffic: Vec<TrafficSpec>,
    }
    let spec = toml::from_str::<F>(&format!("[[traffic]]\n{toml_step}"))
        .expect("spec")
        .traffic
        .remove(0);
    let never = || false;
    let ctx = TrafficContext {
        netns,
        artifacts,
        interrupted: &never,
        enough: &never,
        slow: 1.0,
    };
    run(&spec, &ctx)
}
