//! `faultlab schema`: the JSON Schema generated from the parser's types accepts
//! every scenario the parser accepts, rejects what it rejects at the level of
//! fields and types, and the copy committed for editors is current.

use faultlab::scenario::{self, json_schema};
use std::path::{Path, PathBuf};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn toml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n != "topologies") {
                out.extend(toml_files(&p));
            }
        } else if p.extension().is_some_and(|x| x == "toml") {
            out.push(p);
        }
    }
    out.sort();
    out
}

fn validator() -> jsonschema::Validator {
    jsonschema::validator_for(&json_schema::scenario_schema()).expect("the schema compiles")
}

fn as_json(text: &str) -> serde_json::Value {
    toml::from_str(text).expect("TOML")
}

fn errors(v: &jsonschema::Validator, doc: &serde_json::Value) -> Vec<String> {
    v.iter_errors(doc)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

#[test]
fn schema_snapshot() {
    insta::assert_snapshot!(json_schema::scenario_schema_text());
}

#[test]
fn committed_schema_is_current() {
    let path = root().join(json_schema::COMMITTED_PATH);
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == json_schema::scenario_schema_text(),
        "{} is stale: run `faultlab schema > {}`",
        path.display(),
        json_schema::COMMITTED_PATH
    );
}

#[test]
fn every_file_the_parser_accepts_validates() {
    let v = validator();
    let mut files = toml_files(&root().join("scenarios"));
    let catalogue = files.len();
    files.extend(toml_files(&root().join("tests/fixtures")));
    let mut checked = 0;
    for f in &files {
        if scenario::load(f).is_err() {
            continue;
        }
        let doc = as_json(&std::fs::read_to_string(f).unwrap());
        let errs = errors(&v, &doc);
        assert!(errs.is_empty(), "{}: {errs:#?}", f.display());
        checked += 1;
    }
    // The catalogue itself must all parse; the count makes an empty walk fail.
    assert!(
        checked >= catalogue && catalogue >= 10,
        "checked {checked} of {catalogue}"
    );
}

const MINIMAL: &str = r#"
name = "mini"
about = "two namespaces"
[nodes.a]
[nodes.b]
[[links]]
a = "a:eth0 192.0.2.1/24"
b = "b:eth0 192.0.2.2/24"
[[traffic]]
kind = "ping"
from = "a"
to = "192.0.2.2"
[[cells]]
name = "c"
expect = ["ping.received == ping.sent"]
"#;

#[test]
fn wrong_files_fail_like_the_parser() {
    let v = validator();
    assert!(scenario::parse("mini.toml", MINIMAL).is_ok());
    assert_eq!(errors(&v, &as_json(MINIMAL)), Vec::<String>::new());
    // A misspelled field, a string where a number goes, a missing required field
    // and a traffic step without a kind: each fails both the parser and the schema.
    for (wrong, at) in [
        (MINIMAL.replace("[[links]]", "[[link]]"), ""),
        (
            MINIMAL.replace(
                "about = \"two namespaces\"",
                "about = \"x\"\nrepeat = \"3\"",
            ),
            "/repeat",
        ),
        (MINIMAL.replace("name = \"mini\"\n", ""), ""),
        (MINIMAL.replace("kind = \"ping\"\n", ""), "/traffic/0"),
        (
            MINIMAL.replace("[nodes.b]", "[nodes.b]\nroutes = \"default\""),
            "/nodes/b/routes",
        ),
    ] {
        assert!(
            scenario::parse("wrong.toml", &wrong).is_err(),
            "parser accepted:\n{wrong}"
        );
        let errs = errors(&v, &as_json(&wrong));
        assert!(
            errs.iter().any(|e| e.starts_with(&format!("{at}:"))),
            "schema error at `{at}` expected, got {errs:?} for\n{wrong}"
        );
    }
}
