//! `results/*.json`: one `ScenarioResult`, read back by `show` and `diff`.

use crate::verdict::ScenarioResult;
use anyhow::{Context, Result};
use std::path::Path;

pub fn json(result: &ScenarioResult) -> serde_json::Result<String> {
    serde_json::to_string_pretty(result)
}

pub fn read_json(path: impl AsRef<Path>) -> Result<ScenarioResult> {
    let path = path.as_ref();
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixture::results;

    #[test]
    fn round_trip_through_a_file() {
        let r = results().remove(0);
        let path =
            std::env::temp_dir().join(format!("faultlab-report-{}.json", std::process::id()));
        std::fs::write(&path, json(&r).unwrap()).unwrap();
        let back = read_json(&path);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(back.unwrap(), r);
    }

    #[test]
    fn errors_name_the_file() {
        let err = read_json("/nonexistent/x.json").unwrap_err();
        assert!(format!("{err:#}").starts_with("reading /nonexistent/x.json"));
    }

    #[test]
    fn optional_fields_default() {
        let text = r#"{"scenario":"s","file":"f.toml","kernel_release":"6.1.0","started_at":0,
            "duration_ms":5,"cells":[{"name":"c","outcome":"skip","duration_ms":0}]}"#;
        let r: ScenarioResult = serde_json::from_str(text).unwrap();
        assert!(r.cells[0].checks.is_empty());
    }
}
