//! Scenario files: discovery, parsing and validation into runnable cells.

pub mod error;
mod expand;
pub mod json_schema;
pub mod rule_syntax;
pub mod schema;
pub mod syntax;
pub mod template;

use crate::model::CellPlan;
pub use error::{ScenarioError, SourceMap};
pub use expand::HOST_GLOBAL_SYSCTLS;
use std::path::{Path, PathBuf};

/// A validated scenario: every cell is ready to run.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub file: String,
    pub name: String,
    pub about: String,
    pub seed: Option<String>,
    pub cells: Vec<CellPlan>,
    /// How `faultlab check-host` runs this phenomenon against a machine's settings.
    pub host_check: Option<crate::model::host_check::HostCheck>,
}

/// Parse and validate a scenario from its text. `file` is used in error messages.
pub fn parse(file: &str, text: &str) -> Result<Scenario, ScenarioError> {
    let src = SourceMap::new(file, text);
    let mut raw: schema::ScenarioFile =
        toml::from_str(text).map_err(|e| toml_error(&src, text, &e))?;
    let dir = Path::new(file).parent().unwrap_or(Path::new("."));
    template::apply(&mut raw, &src, dir)?;
    let cells = expand::expand_cells(&raw, &src)?;
    let host_check = expand::expand_host_check(&raw, &src, &cells)?;
    Ok(Scenario {
        file: file.to_string(),
        name: raw.name.into_inner(),
        about: raw.about,
        seed: raw.seed,
        cells,
        host_check,
    })
}

pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
    let file = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| ScenarioError {
        file: file.clone(),
        line: 0,
        column: 0,
        field: "-".into(),
        message: format!("cannot read the file: {e}"),
        fix: "check the path".into(),
    })?;
    let text = match String::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            // Point at the first byte that is not UTF-8, like any other error.
            let at = e.utf8_error().valid_up_to();
            let valid = String::from_utf8_lossy(&e.as_bytes()[..at]).into_owned();
            return Err(SourceMap::new(&file, &valid).error(
                at..at,
                "-",
                "the file is not valid UTF-8",
                "save the file as UTF-8",
            ));
        }
    };
    parse(&file, &text)
}

/// Turn toml's error (which carries a span) into ours: file:line:col, field, fix.
fn toml_error(src: &SourceMap, text: &str, e: &toml::de::Error) -> ScenarioError {
    let span = e.span().unwrap_or(0..0);
    let message = e.message().trim().to_string();
    let fix = if message.starts_with("unknown field") {
        "check the spelling; the message lists the fields allowed here"
    } else if message.starts_with("missing field") {
        "add the field"
    } else {
        "see the scenario reference in README.md"
    };
    let (line, column) = src.line_col(span.start);
    ScenarioError {
        file: src.file.clone(),
        line,
        column,
        field: field_at(text, span.start),
        message,
        fix: fix.into(),
    }
}

/// Best-effort name of the key at a byte offset, for errors toml reports by span
/// only: the key written on that line, qualified by the enclosing `[table]`.
fn field_at(text: &str, offset: usize) -> String {
    let offset = offset.min(text.len());
    let line_start = text[..offset].rfind('\n').map(|i| i + 1).unwrap_or(0);
    let line = text[line_start..].lines().next().unwrap_or("").trim();
    let table = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string());
    let key = if line.starts_with('[') {
        return line
            .trim_matches(|c| c == '[' || c == ']')
            .trim()
            .to_string();
    } else {
        line.split('=')
            .next()
            .unwrap_or("")
            .trim()
            .trim_matches('"')
            .to_string()
    };
    match (table, key.is_empty()) {
        (Some(t), false) => format!("{t}.{key}"),
        (Some(t), true) => t,
        (None, false) => key,
        (None, true) => "-".into(),
    }
}

/// Expand command-line arguments (files, directories, or scenario names) into
/// scenario files. Directories are searched for `*.toml` (not recursing into
/// `topologies/`); names are looked up as `scenarios/NAME.toml`.
/// Scenario files in a directory and its subdirectories (`selftests/`), sorted;
/// `topologies/` directories hold templates, not scenarios.
fn scenario_files_under(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut dirs = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n != "topologies") {
                dirs.push(p);
            }
        } else if p.extension().is_some_and(|x| x == "toml") {
            files.push(p);
        }
    }
    files.sort();
    dirs.sort();
    for d in dirs {
        files.extend(scenario_files_under(&d)?);
    }
    Ok(files)
}

pub fn discover(args: &[String], scenarios_dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    let args: Vec<String> = if args.is_empty() {
        vec![scenarios_dir.display().to_string()]
    } else {
        args.to_vec()
    };
    for a in &args {
        let p = Path::new(a);
        if p.is_dir() {
            out.extend(scenario_files_under(p).map_err(|e| format!("{a}: {e}"))?);
        } else if p.is_file() {
            out.push(p.to_path_buf());
        } else {
            let named = scenarios_dir.join(format!("{a}.toml"));
            if named.is_file() {
                out.push(named);
            } else {
                return Err(format!(
                    "`{a}` is neither a file, a directory nor a scenario name in {}",
                    scenarios_dir.display()
                ));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod timeline_tests;
