//! Validators for the machine-readable outputs, shared by tests/cli.rs and
//! tests/lab_hardening.rs: KTAP following the kernel's Documentation/dev-tools/ktap.rst,
//! JUnit XML checked with an XML parser.
#![allow(dead_code)]

/// One test result of a KTAP document, with its nested subtests.
#[derive(Debug, Clone, PartialEq)]
pub struct KtapTest {
    pub ok: bool,
    pub number: usize,
    pub name: String,
    /// `SKIP`, `TODO`, `XFAIL`, `TIMEOUT`, `ERROR`, if the line has one.
    pub directive: Option<String>,
    /// Text after `#` (and after the directive).
    pub diagnostic: String,
    pub subtests: Vec<KtapTest>,
}

const DIRECTIVES: [&str; 5] = ["SKIP", "TODO", "XFAIL", "TIMEOUT", "ERROR"];

struct Line<'a> {
    no: usize,
    indent: usize,
    text: &'a str,
}

/// Parses and validates a KTAP version 1 document:
/// - it starts with `KTAP version 1`, and every nested test too, indented by two
///   spaces per level (the indentation starts at the version line and ends before the
///   parent's result line);
/// - a plan line `1..N` follows each version line, and exactly N results follow at
///   that level, numbered 1, 2, ... N;
/// - result lines are `ok|not ok N description [# [DIRECTIVE] [diagnostic]]`, the
///   description has no `#`;
/// - a parent with a failed (not skipped) subtest is `not ok`;
/// - every other line is a diagnostic line (`# ...`): this validator allows no
///   unknown lines, since faultlab has no reason to print any.
///
/// Returns the top-level tests.
pub fn parse_ktap(text: &str) -> Result<Vec<KtapTest>, String> {
    let mut lines = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        if raw.contains('\t') {
            return Err(format!("line {}: a tab: {raw:?}", i + 1));
        }
        let trimmed = raw.trim_start_matches(' ');
        let indent = raw.len() - trimmed.len();
        if trimmed.is_empty() {
            return Err(format!("line {}: an empty line", i + 1));
        }
        if indent % 2 != 0 && !trimmed.starts_with('#') {
            return Err(format!("line {}: odd indentation {indent}: {raw:?}", i + 1));
        }
        lines.push(Line {
            no: i + 1,
            indent,
            text: trimmed.trim_end(),
        });
    }
    let mut pos = 0;
    let tests = parse_block(&lines, &mut pos, 0)?;
    // Trailing diagnostics at top level (kselftest's `# Totals:`) are fine.
    while pos < lines.len() {
        let l = &lines[pos];
        if !l.text.starts_with('#') {
            return Err(format!(
                "line {}: unexpected after the last result: {:?}",
                l.no, l.text
            ));
        }
        pos += 1;
    }
    Ok(tests)
}

fn parse_block(lines: &[Line], pos: &mut usize, indent: usize) -> Result<Vec<KtapTest>, String> {
    let at = |p: usize| {
        lines
            .get(p)
            .ok_or_else(|| "unexpected end of output".to_string())
    };
    let v = at(*pos)?;
    if v.indent != indent || v.text != "KTAP version 1" {
        return Err(format!(
            "line {}: expected `KTAP version 1` at indent {indent}, got {:?} at {}",
            v.no, v.text, v.indent
        ));
    }
    *pos += 1;
    // Diagnostics may precede the plan (`# Subtest: NAME`).
    while at(*pos)?.text.starts_with('#') {
        *pos += 1;
    }
    let p = at(*pos)?;
    let plan: usize = p
        .text
        .strip_prefix("1..")
        .and_then(|n| n.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .filter(|_| p.indent == indent)
        .ok_or_else(|| format!("line {}: expected a plan `1..N`, got {:?}", p.no, p.text))?;
    *pos += 1;
    let mut tests = Vec::new();
    let mut pending_subtests: Option<Vec<KtapTest>> = None;
    while tests.len() < plan {
        let l = at(*pos)?;
        if l.text.starts_with('#') {
            *pos += 1;
            continue;
        }
        if l.text == "KTAP version 1" && l.indent == indent + 2 {
            if pending_subtests.is_some() {
                return Err(format!(
                    "line {}: two nested blocks without a result between",
                    l.no
                ));
            }
            pending_subtests = Some(parse_block(lines, pos, indent + 2)?);
            continue;
        }
        if l.indent != indent {
            return Err(format!(
                "line {}: expected a result at indent {indent}, got {:?} at {}",
                l.no, l.text, l.indent
            ));
        }
        let mut t = parse_result(l.text).map_err(|e| format!("line {}: {e}", l.no))?;
        if t.number != tests.len() + 1 {
            return Err(format!(
                "line {}: test number {} where {} was due",
                l.no,
                t.number,
                tests.len() + 1
            ));
        }
        t.subtests = pending_subtests.take().unwrap_or_default();
        let failed_child = t
            .subtests
            .iter()
            .any(|s| !s.ok && s.directive.as_deref() != Some("SKIP"));
        if failed_child && t.ok {
            return Err(format!("line {}: `ok` although a subtest failed", l.no));
        }
        tests.push(t);
        *pos += 1;
    }
    if pending_subtests.is_some() {
        return Err("a nested block without its result line".into());
    }
    Ok(tests)
}

fn parse_result(text: &str) -> Result<KtapTest, String> {
    let (ok, rest) = if let Some(r) = text.strip_prefix("not ok ") {
        (false, r)
    } else if let Some(r) = text.strip_prefix("ok ") {
        (true, r)
    } else {
        return Err(format!("not a result line: {text:?}"));
    };
    let (head, tail) = match rest.split_once('#') {
        Some((h, t)) => (h, Some(t.trim())),
        None => (rest, None),
    };
    let mut words = head.split_whitespace();
    let number: usize = words
        .next()
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("no test number: {text:?}"))?;
    let name = words.collect::<Vec<_>>().join(" ");
    let (directive, diagnostic) = match tail {
        None => (None, String::new()),
        Some(t) => {
            let first = t.split_whitespace().next().unwrap_or("");
            if DIRECTIVES.contains(&first) {
                (Some(first.to_string()), t[first.len()..].trim().to_string())
            } else {
                (None, t.to_string())
            }
        }
    };
    Ok(KtapTest {
        ok,
        number,
        name,
        directive,
        diagnostic,
        subtests: Vec::new(),
    })
}

/// faultlab's conventions on every result line: a name of `[A-Za-z0-9_-]` only (what
/// LAVA's parser keeps), `time=Nms` last (what NIPA reads), a reason on SKIP and XFAIL.
fn check_conventions(t: &KtapTest) {
    assert!(
        !t.name.is_empty()
            && t.name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
        "a name outside [A-Za-z0-9_-]: {t:?}"
    );
    let ms = t
        .diagnostic
        .rsplit_once("time=")
        .map(|(_, ms)| ms)
        .or_else(|| t.diagnostic.strip_prefix("time="))
        .and_then(|ms| ms.strip_suffix("ms"));
    assert!(
        ms.is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit())),
        "no time=Nms at the end: {t:?}"
    );
    if matches!(t.directive.as_deref(), Some("SKIP") | Some("XFAIL")) {
        assert!(
            !t.diagnostic.starts_with("time="),
            "a {} without a reason: {t:?}",
            t.directive.as_deref().unwrap_or("")
        );
    }
}

/// Validates faultlab's KTAP and returns it parsed: on top of [`parse_ktap`], every
/// scenario is a test with one subtest per cell, and every line keeps the
/// conventions of [`check_conventions`].
pub fn check_faultlab_ktap(text: &str) -> Vec<KtapTest> {
    let tests = parse_ktap(text).unwrap_or_else(|e| panic!("invalid KTAP: {e}\n{text}"));
    for t in &tests {
        check_conventions(t);
        for c in &t.subtests {
            check_conventions(c);
        }
    }
    assert!(
        text.lines().last().unwrap_or("").starts_with("# Totals: "),
        "no kselftest totals line:\n{text}"
    );
    tests
}

/// Validates the output of one kselftest program (`--format kselftest`): kselftest.h's
/// `TAP version 13` header (KTAP's allowed alternative), then flat KTAP, one test per
/// cell, with the conventions above and the `# Totals:` line.
pub fn check_kselftest_tap(text: &str) -> Vec<KtapTest> {
    let body = text
        .strip_prefix("TAP version 13\n")
        .unwrap_or_else(|| panic!("no `TAP version 13` header:\n{text}"));
    let tests = parse_ktap(&format!("KTAP version 1\n{body}"))
        .unwrap_or_else(|e| panic!("invalid TAP: {e}\n{text}"));
    for t in &tests {
        assert!(t.subtests.is_empty(), "nested: {t:?}");
        check_conventions(t);
    }
    assert!(
        text.lines().last().unwrap_or("").starts_with("# Totals: "),
        "no kselftest totals line:\n{text}"
    );
    tests
}

/// What a JUnit document says, per suite: (name, [(testcase, outcome)]) where outcome
/// is `pass`, `failure` or `skipped`.
pub type JunitSuites = Vec<(String, Vec<(String, &'static str)>)>;

/// Parses JUnit XML and checks its structure: `testsuites` > `testsuite` >
/// `testcase`; the `tests`/`failures`/`skipped`/`errors` attributes of every suite and
/// of the root equal the counts of their test cases; each test case has a name, a
/// classname and a numeric time, and at most one `failure`/`skipped`/`error` child.
pub fn check_junit(xml: &str) -> JunitSuites {
    let doc = roxmltree::Document::parse(xml).unwrap_or_else(|e| panic!("not XML: {e}\n{xml}"));
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "testsuites", "{xml}");
    let num = |n: roxmltree::Node, a: &str| -> usize {
        n.attribute(a)
            .unwrap_or_else(|| panic!("<{}> without {a}", n.tag_name().name()))
            .parse()
            .unwrap_or_else(|_| panic!("<{}> {a} is not a number", n.tag_name().name()))
    };
    let mut out = Vec::new();
    let (mut tests, mut failures, mut skipped) = (0, 0, 0);
    for suite in root.children().filter(|n| n.is_element()) {
        assert_eq!(suite.tag_name().name(), "testsuite");
        let name = suite.attribute("name").expect("testsuite name").to_string();
        let mut cases = Vec::new();
        let (mut f, mut s) = (0, 0);
        for case in suite.children().filter(|n| n.is_element()) {
            match case.tag_name().name() {
                "properties" => continue,
                "testcase" => {}
                other => panic!("unexpected <{other}> in a testsuite"),
            }
            let cname = case.attribute("name").expect("testcase name").to_string();
            assert!(case.attribute("classname").is_some(), "testcase classname");
            let time: f64 = case
                .attribute("time")
                .expect("testcase time")
                .parse()
                .expect("numeric time");
            assert!(time >= 0.0);
            let kinds: Vec<&str> = case
                .children()
                .filter(|n| n.is_element())
                .map(|n| n.tag_name().name())
                .filter(|n| ["failure", "skipped", "error"].contains(n))
                .collect();
            assert!(kinds.len() <= 1, "{cname}: {kinds:?}");
            let outcome = match kinds.first() {
                None => "pass",
                Some(&"failure") => {
                    f += 1;
                    "failure"
                }
                Some(&"skipped") => {
                    s += 1;
                    let el = case.children().find(|n| n.has_tag_name("skipped")).unwrap();
                    assert!(
                        !el.attribute("message").unwrap_or("").is_empty(),
                        "{cname}: a skip without a message"
                    );
                    "skipped"
                }
                Some(_) => panic!("faultlab writes no <error>"),
            };
            cases.push((cname, outcome));
        }
        assert_eq!(num(suite, "tests"), cases.len(), "{name}: tests");
        assert_eq!(num(suite, "failures"), f, "{name}: failures");
        assert_eq!(num(suite, "skipped"), s, "{name}: skipped");
        assert_eq!(num(suite, "errors"), 0, "{name}: errors");
        tests += cases.len();
        failures += f;
        skipped += s;
        out.push((name, cases));
    }
    assert_eq!(num(root, "tests"), tests, "testsuites tests");
    assert_eq!(num(root, "failures"), failures, "testsuites failures");
    assert_eq!(num(root, "skipped"), skipped, "testsuites skipped");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_specs_example_is_valid() {
        let text = "KTAP version 1\n1..1\n  KTAP version 1\n  1..3\n    KTAP version 1\n    1..1\n    # test_1: initializing test_1\n    ok 1 test_1\n  ok 1 example_test_1\n    KTAP version 1\n    1..2\n    ok 1 test_1 # SKIP test_1 skipped\n    ok 2 test_2\n  ok 2 example_test_2\n    KTAP version 1\n    1..3\n    ok 1 test_1\n    # test_2: FAIL\n    not ok 2 test_2\n    ok 3 test_3 # SKIP test_3 skipped\n  not ok 3 example_test_3\nnot ok 1 main_test\n";
        let t = parse_ktap(text).unwrap();
        assert_eq!(t[0].subtests.len(), 3);
        assert_eq!(
            t[0].subtests[1].subtests[0].directive.as_deref(),
            Some("SKIP")
        );
    }

    #[test]
    fn violations_are_caught() {
        // Numbers out of sequence, a missing plan, ok over a failed subtest.
        assert!(parse_ktap("KTAP version 1\n1..2\nok 1 a\nok 3 b\n").is_err());
        assert!(parse_ktap("KTAP version 1\nok 1 a\n").is_err());
        assert!(parse_ktap(
            "KTAP version 1\n1..1\n  KTAP version 1\n  1..1\n  not ok 1 x\nok 1 a\n"
        )
        .is_err());
        assert!(parse_ktap("KTAP version 1\n1..2\nok 1 a\n").is_err());
    }
}
