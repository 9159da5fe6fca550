//! check-host's answer as a table (default), JSON or markdown, like `run`'s.

use super::HostReport;
use std::fmt::Write;

fn host_line(r: &HostReport) -> String {
    match &r.host_changes {
        None => String::new(),
        Some(c) if c.is_empty() => {
            "host unchanged (root namespace: links, addresses, routes, rules, rulesets, sysctls)\n"
                .into()
        }
        Some(c) => {
            let mut s = format!("HOST CHANGED ({} differences):\n", c.len());
            for l in c {
                let _ = writeln!(s, "  {l}");
            }
            s
        }
    }
}

pub fn table(r: &HostReport) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "check-host: {}", r.source);
    let _ = writeln!(s, "kernel {}, uplink {}", r.kernel, r.uplink);
    let rules: Vec<String> = r
        .rulesets
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect();
    let _ = writeln!(s, "rulesets: {}", rules.join("; "));
    let settings: Vec<String> = r.settings.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let _ = writeln!(s, "sysctls: {}", settings.join(" "));
    s.push('\n');
    let w = r
        .verdicts
        .iter()
        .map(|v| v.scenario.len())
        .max()
        .unwrap_or(8)
        .max(8);
    let _ = writeln!(
        s,
        "{:<w$}  {:<12}  {:>6}  MEANS",
        "SCENARIO", "VERDICT", "TIME"
    );
    for v in &r.verdicts {
        let _ = writeln!(
            s,
            "{:<w$}  {:<12}  {:>5.1}s  {}",
            v.scenario,
            v.verdict.as_str(),
            v.duration_ms as f64 / 1000.0,
            v.says
        );
        if let Some(reason) = &v.reason {
            let _ = writeln!(s, "{:w$}  why: {reason}", "");
        }
        for d in &v.deciding {
            let _ = writeln!(s, "{:w$}  knob: {d}", "");
        }
        for e in &v.evidence {
            let _ = writeln!(s, "{:w$}  evidence: {e}", "");
        }
        let _ = writeln!(s, "{:w$}  fix: {}", "", v.fix);
        for n in &v.notes {
            let _ = writeln!(s, "{:w$}  note: {n}", "");
        }
    }
    s.push('\n');
    s + &host_line(r)
}

pub fn json(r: &HostReport) -> String {
    serde_json::to_string_pretty(r).expect("the report serializes") + "\n"
}

fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

pub fn markdown(r: &HostReport) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "## check-host: {}\n", cell(&r.source));
    let _ = writeln!(s, "kernel `{}`, uplink `{}`\n", r.kernel, r.uplink);
    s.push_str("| scenario | verdict | deciding | evidence | fix |\n|---|---|---|---|---|\n");
    for v in &r.verdicts {
        let mut verdict = format!("**{}**", v.verdict.as_str());
        if let Some(reason) = &v.reason {
            verdict += &format!(": {}", cell(reason));
        }
        let _ = writeln!(
            s,
            "| `{}` ({}) | {} | {} | {} | {} |",
            v.scenario,
            cell(&v.says),
            verdict,
            cell(&v.deciding.join("; ")),
            cell(&v.evidence.join("; ")),
            cell(&v.fix)
        );
    }
    let notes: Vec<String> = r
        .verdicts
        .iter()
        .flat_map(|v| {
            v.notes
                .iter()
                .map(move |n| format!("- `{}`: {}", v.scenario, n))
        })
        .collect();
    if !notes.is_empty() {
        s.push_str("\nNot carried over:\n\n");
        for n in notes {
            let _ = writeln!(s, "{}", cell(&n));
        }
    }
    let h = host_line(r);
    if !h.is_empty() {
        s.push('\n');
        s.push_str(&h);
    }
    s
}
