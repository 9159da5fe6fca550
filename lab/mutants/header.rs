//! The metadata of a mutant, read from the comment that precedes the diff in
//! kernel-mutants/NAME.patch (`patch` skips text before the first `--- `), so a
//! new mutant is a new file:
//!
//! ```text
//! Mutant: udp-clash-off
//! Phenomenon: §1 conntrack insertion race
//! Own: conntrack-race-raw conntrack-race-dns-openstack   (the phenomenon's scenario files)
//! Run: conntrack-race-dns-openstack                      (what scripts/mutants.sh runs; default: the whole catalogue)
//! Breaks: what the patch re-breaks
//! Undoes: the upstream commit or function it undoes
//! ```

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq)]
pub struct Mutant {
    pub name: String,
    pub file: PathBuf,
    pub phenomenon: String,
    /// Scenario names (file stems) of the mutant's own phenomenon.
    pub own: Vec<String>,
    /// Scenario names scripts/mutants.sh runs; `None` is the whole catalogue.
    pub run: Option<Vec<String>>,
    pub breaks: String,
    pub undoes: String,
}

/// Parses the header of `file` (its text is `text`).
pub fn parse(file: &Path, text: &str) -> Result<Mutant> {
    let stem = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut fields: Vec<(String, String)> = Vec::new();
    let mut has_diff = false;
    for line in text.lines() {
        if line.starts_with("--- ") {
            has_diff = true;
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if !k.is_empty() && k.chars().all(|c| c.is_ascii_alphabetic() || c == '-') {
                fields.push((k.to_ascii_lowercase(), v.trim().to_owned()));
            }
        }
    }
    if !has_diff {
        bail!(
            "{}: no unified diff (no line starting with `--- `): append the output of `diff -u` after the header",
            file.display()
        );
    }
    let get = |key: &str| {
        fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    };
    let need = |key: &str, fix: &str| -> Result<String> {
        match get(key) {
            Some(v) if !v.is_empty() => Ok(v),
            _ => bail!(
                "{}: header field `{}:` is missing or empty: add a line `{}: {fix}` before the diff",
                file.display(),
                capitalised(key),
                capitalised(key)
            ),
        }
    };
    let name = need("mutant", &stem)?;
    if name != stem {
        bail!(
            "{}: header field `Mutant: {name}` differs from the file name: rename the file to {name}.patch or write `Mutant: {stem}`",
            file.display()
        );
    }
    let words = |v: String| v.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
    Ok(Mutant {
        name,
        file: file.to_path_buf(),
        phenomenon: need("phenomenon", "§N the phenomenon's name")?,
        own: words(need(
            "own",
            "the scenario files (stems) of that phenomenon",
        )?),
        run: get("run").map(words).filter(|r| !r.is_empty()),
        breaks: need("breaks", "the behaviour the patch re-breaks")?,
        undoes: need("undoes", "the upstream commit or function it undoes")?,
    })
}

fn capitalised(key: &str) -> String {
    let mut c = key.chars();
    c.next()
        .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
        .unwrap_or_default()
}

/// Every *.patch under `dir`, by name.
pub fn load_dir(dir: &Path) -> Result<Vec<Mutant>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "patch"))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("{} holds no *.patch mutants", dir.display());
    }
    files
        .iter()
        .map(|f| {
            let text =
                std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
            parse(f, &text)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIFF: &str = "--- a/x.c\n+++ b/x.c\n@@ -1 +1 @@\n-a\n+b\n";

    #[test]
    fn reads_the_fields_before_the_diff() {
        let text = format!(
            "Mutant: m1\nPhenomenon: §2 table full\nOwn: conntrack-table-full\nBreaks: b\nUndoes: u\n\nfree text: not a field\n{DIFF}"
        );
        let m = parse(Path::new("k/m1.patch"), &text).unwrap();
        assert_eq!(m.phenomenon, "§2 table full");
        assert_eq!(m.own, ["conntrack-table-full"]);
        assert_eq!(m.run, None, "no Run: is the whole catalogue");
        let m = parse(
            Path::new("k/m1.patch"),
            &text.replace("Breaks", "Run: a b\nBreaks"),
        )
        .unwrap();
        assert_eq!(m.run, Some(vec!["a".to_owned(), "b".to_owned()]));
    }

    #[test]
    fn errors_name_the_file_the_field_and_the_fix() {
        let e = parse(
            Path::new("k/m1.patch"),
            &format!("Mutant: m1\nPhenomenon: p\nOwn: o\nBreaks: b\n{DIFF}"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("k/m1.patch") && e.contains("`Undoes:`") && e.contains("add a line"),
            "{e}"
        );
        let e = parse(Path::new("k/m2.patch"), "Mutant: m1\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("no unified diff"), "{e}");
        let e = parse(
            Path::new("k/m2.patch"),
            &format!("Mutant: m1\nPhenomenon: p\nOwn: o\nBreaks: b\nUndoes: u\n{DIFF}"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("rename the file to m1.patch"), "{e}");
    }

    #[test]
    fn the_committed_mutants_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("kernel-mutants");
        let all = load_dir(&dir).unwrap();
        assert!(all.len() >= 10, "{} mutants", all.len());
        let scenarios = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        for m in &all {
            for s in m.own.iter().chain(m.run.iter().flatten()) {
                assert!(
                    scenarios.join(format!("{s}.toml")).is_file(),
                    "{}: no scenarios/{s}.toml",
                    m.file.display()
                );
            }
        }
    }
}
