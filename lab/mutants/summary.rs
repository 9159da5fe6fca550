//! results/mutants/summary.md: per mutant, the cells whose verdict changed
//! against the unmutated build (killed) or none (survived), the mutation score,
//! whether a killing cell belongs to the mutant's own phenomenon; and the
//! unmutated build against the host, every difference with the reason the tool
//! can give (a skip reason, an option of `config` the build lacks). The
//! comparison itself is `vm::diff`'s.

use super::header::Mutant;
use super::record::RunRecord;
use crate::kconfig::{self, CatalogueCell, KernelConfig};
use crate::verdict::{CellResult, Outcome};
use crate::vm::diff::{self, Change, Side};
use std::collections::BTreeMap;
use std::fmt::Write;

/// Exit codes of `faultlab vm` that carry verdicts (kselftest: all pass, any
/// fail or inconclusive, only skips); anything else is a timeout or an
/// infrastructure failure.
const VERDICT_EXITS: [i64; 3] = [0, 1, 4];

pub struct Input {
    /// How the runs directory is named in the text (e.g. /var/cache/faultlab/mutants).
    pub runs_label: String,
    pub mutants: Vec<(Mutant, Option<RunRecord>)>,
    pub unmutated: Option<RunRecord>,
    /// The host's results (label, side).
    pub host: Option<Side>,
    /// The unmutated build's .config (label, parsed) and the catalogue's cells.
    pub kernel_config: Option<(String, KernelConfig)>,
    pub catalogue: Vec<CatalogueCell>,
}

#[derive(Debug)]
pub enum Status {
    NotRun,
    PatchFailed,
    BuildFailed(i64),
    /// The VM exited without verdicts (timeout 124, infrastructure 125, a panic).
    NoVerdicts(Option<i64>),
    Killed(Vec<Change>),
    Survived,
}

impl Status {
    fn label(&self) -> String {
        match self {
            Status::NotRun => "not run".into(),
            Status::PatchFailed => "patch does not apply".into(),
            Status::BuildFailed(rc) => format!("build failed (exit {rc})"),
            Status::NoVerdicts(Some(rc)) => format!("no verdicts (vm exit {rc})"),
            Status::NoVerdicts(None) => "no verdicts".into(),
            Status::Killed(_) => "**killed**".into(),
            Status::Survived => "**survived**".into(),
        }
    }
}

/// The unmutated side restricted to the scenarios the mutant's run holds.
fn restricted(base: &Side, to: &Side) -> Side {
    Side {
        label: base.label.clone(),
        results: base
            .results
            .iter()
            .filter(|r| to.results.iter().any(|m| m.scenario == r.scenario))
            .cloned()
            .collect(),
    }
}

pub fn status(run: Option<&RunRecord>, base: Option<&Side>) -> Status {
    let Some(run) = run else {
        return Status::NotRun;
    };
    if run.number("patch_failed") == Some(1) {
        return Status::PatchFailed;
    }
    if let Some(rc) = run.number("build_exit").filter(|rc| *rc != 0) {
        return Status::BuildFailed(rc);
    }
    let vm_exit = run.number("vm_exit");
    let (Some(side), Some(base)) = (run.side.as_ref(), base) else {
        return Status::NoVerdicts(vm_exit);
    };
    if vm_exit.is_some_and(|rc| !VERDICT_EXITS.contains(&rc)) {
        return Status::NoVerdicts(vm_exit);
    }
    let cmp = diff::compare(&restricted(base, side), side);
    if cmp.changes.is_empty() {
        Status::Survived
    } else {
        Status::Killed(cmp.changes)
    }
}

fn secs(run: Option<&RunRecord>, key: &str) -> String {
    run.and_then(|r| r.number(key))
        .map(|s| format!("{s} s"))
        .unwrap_or_else(|| "-".into())
}

fn files_run(m: &Mutant, run: Option<&RunRecord>) -> String {
    let names = match run.map(RunRecord::scenarios) {
        Some(s) if !s.is_empty() => s,
        _ => m
            .run
            .clone()
            .unwrap_or_else(|| vec!["scenarios".to_owned()]),
    };
    names
        .iter()
        .map(|n| {
            if n == "scenarios" {
                "the whole catalogue (`scenarios/`)".to_owned()
            } else {
                format!("`{n}.toml`")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Why a cell differs between the host and the unmutated build, when the tool knows.
/// `unmutated_exit` is the unmutated VM's exit code: a timeout ends the run
/// early, and the files it did not reach are absent.
fn explanation(
    ch: &Change,
    missing: &BTreeMap<String, Vec<String>>,
    unmutated_exit: Option<i64>,
) -> Option<String> {
    let mut why = Vec::new();
    if ch.b.is_none() {
        if let Some(rc) = unmutated_exit.filter(|rc| !VERDICT_EXITS.contains(rc)) {
            why.push(format!(
                "not run on the unmutated build: its VM exited {rc}{} before reaching this file",
                if rc == 124 { " (timeout)" } else { "" }
            ));
        }
    }
    let id = format!("{}::{}", ch.scenario, ch.cell);
    if let Some(opts) = missing.get(&id) {
        why.push(format!("the build lacks {}", opts.join(", ")));
    }
    for (side, c) in [("host", &ch.a), ("unmutated", &ch.b)] {
        if let Some(c) = c.as_ref().filter(|c| c.outcome == Outcome::Skip) {
            why.push(format!(
                "skipped on the {side}: {}",
                c.reason.as_deref().unwrap_or("(no reason)")
            ));
        }
    }
    (!why.is_empty()).then(|| why.join("; "))
}

/// What the failing or inconclusive side said, for a difference the tool cannot explain.
fn symptom(c: Option<&CellResult>) -> String {
    match c {
        None => "absent".into(),
        Some(c) => {
            let failed: Vec<&str> = c
                .trigger
                .iter()
                .chain(&c.checks)
                .filter(|k| !k.ok)
                .map(|k| k.detail.as_str())
                .collect();
            match (&c.reason, failed.is_empty()) {
                (_, false) => failed.join("; "),
                (Some(r), true) => r.clone(),
                (None, true) => c.outcome.as_str().into(),
            }
        }
    }
}

/// Options of the catalogue's fragment the kernel lacks, per cell they matter to.
fn missing_by_cell(
    kernel: Option<&KernelConfig>,
    cells: &[CatalogueCell],
) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let Some(kernel) = kernel else {
        return out;
    };
    for opt in kconfig::fragment_options(kconfig::FRAGMENT) {
        if kconfig::present(kernel, &opt) {
            continue;
        }
        for (c, effect) in kconfig::cells_needing(&opt, cells) {
            out.entry(c.id())
                .or_default()
                .push(format!("{opt} ({})", effect.as_str()));
        }
    }
    out
}

pub fn render(input: &Input) -> String {
    let base = input.unmutated.as_ref().and_then(|r| r.side.as_ref());
    let statuses: Vec<Status> = input
        .mutants
        .iter()
        .map(|(_, run)| status(run.as_ref(), base))
        .collect();
    let killed = statuses
        .iter()
        .filter(|s| matches!(s, Status::Killed(_)))
        .count();
    let judged = killed
        + statuses
            .iter()
            .filter(|s| matches!(s, Status::Survived))
            .count();
    let own = input
        .mutants
        .iter()
        .zip(&statuses)
        .filter(|((m, _), s)| match s {
            Status::Killed(ch) => ch.iter().any(|c| m.own.contains(&c.scenario)),
            _ => false,
        })
        .count();
    let weak: Vec<String> = input
        .mutants
        .iter()
        .zip(&statuses)
        .filter(|(_, s)| matches!(s, Status::Killed(ch) if only_inconclusive(ch)))
        .map(|((m, _), _)| format!("`{}`", m.name))
        .collect();
    let not_judged: Vec<String> = input
        .mutants
        .iter()
        .zip(&statuses)
        .filter(|(_, s)| !matches!(s, Status::Killed(_) | Status::Survived))
        .map(|((m, _), s)| format!("`{}` ({})", m.name, s.label()))
        .collect();

    let mut md =
        String::from("# Mutation testing: does the catalogue catch a re-broken kernel?\n\n");
    let _ = writeln!(
        md,
        "Generated by `faultlab mutants-summary` from the runs `scripts/mutants.sh` left in \
         `{}`. Each mutant is one patch in `kernel-mutants/` that re-breaks a behaviour the \
         catalogue pins; the script applies it to the linux-source tree of \
         `scripts/kernel-build.sh`, rebuilds incrementally, boots the build with `faultlab vm` \
         and runs the scenario files the patch's `Run:` header names (default the whole \
         catalogue), then reverses the patch. A mutant is **killed** when a cell's verdict \
         differs from the unmutated build's in the files it ran, **survived** when none does. \
         Reproduce: `sudo scripts/mutants.sh [NAME...]`.\n",
        input.runs_label
    );
    match base {
        Some(b) => {
            let _ = writeln!(
                md,
                "Unmutated build: {}, which ran {} (boot + run {}{}). Every mutant shares its \
                 kernel release string.\n",
                b.label,
                files_run_record(input.unmutated.as_ref()),
                secs(input.unmutated.as_ref(), "vm_seconds"),
                match input.unmutated.as_ref().and_then(|r| r.number("vm_exit")) {
                    Some(rc) if !VERDICT_EXITS.contains(&rc) => {
                        let u = input.unmutated.as_ref();
                        match u.and_then(|r| r.env.get("resumed")) {
                            Some(files) => format!(
                                "; the VM exited {rc} before the end, and a second boot ran the {} \
                                 files it had not reached (exit {}, {})",
                                files.split_whitespace().count(),
                                u.and_then(|r| r.number("resume_vm_exit"))
                                    .map(|x| x.to_string())
                                    .unwrap_or_else(|| "-".into()),
                                secs(u, "resume_vm_seconds")
                            ),
                            None => format!(
                                "; the VM exited {rc} before the end, the files after that are absent"
                            ),
                        }
                    }
                    _ => String::new(),
                }
            );
        }
        None => md.push_str("No results of the unmutated build: no mutant can be judged.\n\n"),
    }
    let score = if judged == 0 {
        "-".to_owned()
    } else {
        format!("{:.0} %", 100.0 * killed as f64 / judged as f64)
    };
    let _ =
        writeln!(
        md,
        "**Mutation score: {killed} of {judged} judged mutants killed ({score})**; {own} of them \
         by a cell of their own phenomenon; {} only through cells turning inconclusive (the \
         trigger stopped holding; no cell failed): {}. {} mutants in `kernel-mutants/`; not \
         judged: {}.\n",
        weak.len(),
        if weak.is_empty() { "none".to_owned() } else { weak.join(", ") },
        input.mutants.len(),
        if not_judged.is_empty() {
            "none".to_owned()
        } else {
            not_judged.join(", ")
        }
    );
    md.push_str("| mutant | phenomenon | files run | rebuild | boot + run | result | cells changed | killed by own phenomenon |\n|---|---|---|---|---|---|---|---|\n");
    for ((m, run), s) in input.mutants.iter().zip(&statuses) {
        let (n, mine) = match s {
            Status::Killed(ch) => (
                format!("{} ({})", ch.len(), kinds(ch)),
                if ch.iter().any(|c| m.own.contains(&c.scenario)) {
                    "yes"
                } else {
                    "no"
                },
            ),
            Status::Survived => ("0".into(), "-"),
            _ => ("-".into(), "-"),
        };
        let _ = writeln!(
            md,
            "| `{}` | {} | {} | {} | {} | {} | {n} | {mine} |",
            m.name,
            m.phenomenon,
            files_run(m, run.as_ref()),
            secs(run.as_ref(), "rebuild_seconds"),
            secs(run.as_ref(), "vm_seconds"),
            s.label()
        );
    }
    md.push_str("\n## Each mutant\n");
    for ((m, run), s) in input.mutants.iter().zip(&statuses) {
        let _ = writeln!(md, "\n### `{}`: {}\n", m.name, s.label());
        let _ = writeln!(md, "- Breaks: {}", m.breaks);
        let _ = writeln!(md, "- Undoes: {}", m.undoes);
        let _ = writeln!(md, "- Files run: {}", files_run(m, run.as_ref()));
        if let (Status::Killed(_) | Status::Survived, Some(side), Some(b)) =
            (s, run.as_ref().and_then(|r| r.side.as_ref()), base)
        {
            let b = Side {
                label: "unmutated".into(),
                ..restricted(b, side)
            };
            let side = Side {
                label: "mutant".into(),
                ..side.clone()
            };
            let cmp = diff::compare(&b, &side);
            let own_cells: Vec<String> = cmp
                .changes
                .iter()
                .filter(|c| m.own.contains(&c.scenario))
                .map(|c| format!("`{}::{}`", c.scenario, c.cell))
                .collect();
            if !cmp.changes.is_empty() {
                let _ = writeln!(
                    md,
                    "- Killing cells of its own phenomenon: {}",
                    if own_cells.is_empty() {
                        "none".to_owned()
                    } else {
                        own_cells.join(", ")
                    }
                );
            }
            md.push('\n');
            let _ = writeln!(md, "```text\n{}```", diff::table(&b, &side, &cmp));
        }
    }
    md.push_str("\n## The unmutated build against the host\n\n");
    match (input.host.as_ref(), base) {
        (Some(h), Some(b)) => {
            let missing = missing_by_cell(
                input.kernel_config.as_ref().map(|(_, k)| k),
                &input.catalogue,
            );
            let unmutated_exit = input.unmutated.as_ref().and_then(|r| r.number("vm_exit"));
            let cmp = diff::compare(h, b);
            let unexplained = cmp
                .changes
                .iter()
                .filter(|c| explanation(c, &missing, unmutated_exit).is_none())
                .count();
            let _ = writeln!(
                md,
                "Host {} against the unmutated build {}: {} cells compared, {} differ, {} of \
                 them unexplained. Kernel config of the build: {}.\n",
                h.label,
                b.label,
                cmp.compared,
                cmp.changes.len(),
                unexplained,
                input
                    .kernel_config
                    .as_ref()
                    .map(|(l, _)| format!("`{l}`"))
                    .unwrap_or_else(|| "not given (no config explanations)".into())
            );
            if !cmp.changes.is_empty() {
                md.push_str("| cell | host | unmutated | reason |\n|---|---|---|---|\n");
                for ch in &cmp.changes {
                    let why = explanation(ch, &missing, unmutated_exit).unwrap_or_else(|| {
                        let failing = if ch.b.as_ref().map(|c| c.outcome) == Some(Outcome::Pass) {
                            ("host", ch.a.as_ref())
                        } else {
                            ("unmutated", ch.b.as_ref())
                        };
                        format!(
                            "**unexplained**; {} says: {}",
                            failing.0,
                            symptom(failing.1).replace('|', "\\|")
                        )
                    });
                    let out = |c: &Option<CellResult>| {
                        c.as_ref().map(|c| c.outcome.as_str()).unwrap_or("(absent)")
                    };
                    let _ = writeln!(
                        md,
                        "| `{}::{}` | {} | {} | {} |",
                        ch.scenario,
                        ch.cell,
                        out(&ch.a),
                        out(&ch.b),
                        why
                    );
                }
            }
        }
        (None, _) => md.push_str("No host results given (`--host`).\n"),
        (_, None) => md.push_str("No results of the unmutated build.\n"),
    }
    md
}

/// "2 pass -> fail, 1 pass -> inconclusive".
fn kinds(changes: &[Change]) -> String {
    let mut n: BTreeMap<String, usize> = BTreeMap::new();
    for c in changes {
        let o = |c: &Option<CellResult>| c.as_ref().map(|c| c.outcome.as_str()).unwrap_or("absent");
        *n.entry(format!("{} -> {}", o(&c.a), o(&c.b))).or_default() += 1;
    }
    n.iter()
        .map(|(k, v)| format!("{v} {k}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Killed, but no changed cell fails: the mutant only stopped a trigger from
/// holding (inconclusive), which says "this experiment says nothing", not "wrong".
fn only_inconclusive(changes: &[Change]) -> bool {
    !changes
        .iter()
        .any(|c| c.b.as_ref().is_some_and(|c| c.outcome == Outcome::Fail))
}

fn files_run_record(run: Option<&RunRecord>) -> String {
    match run.map(RunRecord::scenarios) {
        Some(s) if s == ["scenarios"] => "the whole catalogue".into(),
        Some(s) if !s.is_empty() => s.join(", "),
        _ => "unknown files".into(),
    }
}
