//! Build order, rollback and teardown through the kernel seam, without root: each
//! template topology and a catalogue cell built on the recording fake (the op
//! sequence pinned by snapshots), and every build operation made to fail in turn.

use faultlab::model::LabPlan;
use faultlab::model::Sysctl;
use faultlab::plan::{build_ops, shell_steps, shell_teardown, Op};
use faultlab::setup::fake::{FailAt, Recorder};
use faultlab::setup::script::Script;
use faultlab::setup::{Lab, Record};

fn template(template: &str, params: &str, run_id: &str) -> LabPlan {
    let text = format!(
        r#"
name = "t"
about = "seam test"
[template]
name = "{template}"
params = {{ {params} }}
[[cells]]
name = "c"
expect = ["1 == 1"]
"#
    );
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios/inline.toml");
    let scn = faultlab::scenario::parse(file, &text).unwrap_or_else(|e| panic!("{e}"));
    scn.cells[0].lab.for_run(run_id)
}

/// The first cell of a catalogue file (conntrack-table-full: host sysctls and
/// rulesets; nf_nat_edemux: helper processes).
fn first_cell(name: &str, run_id: &str) -> LabPlan {
    let file = format!("{}/scenarios/{name}.toml", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&file).unwrap();
    let scn = faultlab::scenario::parse(&file, &text).unwrap_or_else(|e| panic!("{e}"));
    scn.cells[0].lab.for_run(run_id)
}

fn plans(prefix: &str) -> Vec<(&'static str, LabPlan)> {
    vec![
        (
            "docker",
            template("docker", "containers = 2", &format!("{prefix}d")),
        ),
        (
            "openstack_qbr",
            template("openstack-qbr", "vms = 2", &format!("{prefix}o")),
        ),
        (
            "calico",
            template("calico", "pods = 2, backends = 2", &format!("{prefix}c")),
        ),
        (
            "conntrack_table_full",
            first_cell("conntrack-table-full", &format!("{prefix}t")),
        ),
        (
            "nf_nat_edemux",
            first_cell("selftests/nf_nat_edemux", &format!("{prefix}n")),
        ),
    ]
}

/// Builds and tears down on the recorder; returns the transcript.
fn build_and_teardown(plan: &LabPlan) -> String {
    let rec = Recorder::new();
    let lab = Lab::build_with(plan, Box::new(rec.clone()), Record::Nothing)
        .unwrap_or_else(|e| panic!("{e:#}"));
    let errs = lab.teardown();
    assert!(errs.is_empty(), "{errs:?}");
    rec.transcript().replace(&plan.run_id, "RUN")
}

#[test]
fn build_then_teardown_op_sequences() {
    for (name, plan) in plans("fls") {
        insta::assert_snapshot!(format!("build_teardown_{name}"), build_and_teardown(&plan));
    }
}

#[test]
fn the_walk_covers_the_plan_and_the_script_follows_it() {
    for (name, plan) in plans("flw") {
        let ops = build_ops(&plan);
        let per_node: usize = plan
            .nodes
            .iter()
            .map(|n| {
                n.devices.len()
                    + n.devices
                        .iter()
                        .map(|d| d.kind.ports().len())
                        .sum::<usize>()
                    + n.sysctls.len()
                    + n.addresses.len()
                    + n.up.len()
                    + n.routes.len()
                    + n.neighbours.len()
                    + n.rulesets.len()
                    + n.processes.len()
                    + 2 // its namespace, its carrier wait
            })
            .sum();
        assert_eq!(
            ops.len(),
            plan.host_sysctls.len() + plan.veths.len() + per_node,
            "{name}"
        );
        assert!(ops.iter().enumerate().all(|(i, o)| o.seq == i + 1));
        // The script is one process per operation, except the two a selftest
        // script does not do.
        let skipped = ops
            .iter()
            .filter(|o| matches!(o.op, Op::Carrier(_) | Op::Process(..)))
            .count();
        assert_eq!(shell_steps(&plan).len(), ops.len() - skipped, "{name}");
    }
}

/// Every build operation failing in turn: the error names it and its node, and
/// what was created before it is undone, in reverse.
#[test]
fn every_failing_operation_is_rolled_back() {
    let mut tried = 0;
    for (name, plan) in plans("flf") {
        let ops = build_ops(&plan);
        for o in &ops {
            let rec = Recorder::new();
            let err = Lab::build_with(
                &plan,
                Box::new(FailAt::new(rec.clone(), o.seq)),
                Record::Nothing,
            )
            .expect_err("the injected failure must fail the build");
            let msg = format!("{err:#}");
            assert!(
                msg.contains(&o.op.to_string()),
                "{name} op {}: {msg}",
                o.seq
            );
            if let Some(n) = o.op.node() {
                assert!(msg.contains(&format!("node `{}`", n.name)), "{msg}");
            }
            assert!(msg.contains(&format!("injected failure of operation {}", o.seq)));
            let calls = rec.calls();
            let texts: Vec<&str> = calls.iter().map(|c| c.text.as_str()).collect();
            // Nothing after k was carried out, except other nodes' share of k's stage
            // (nodes run in parallel there, and each finishes its own).
            for c in &calls {
                let Some(s) = c.seq.filter(|s| *s >= o.seq) else {
                    continue;
                };
                let later = &ops[s - 1].op;
                assert!(
                    later.stage() == o.op.stage()
                        && o.op.stage().is_per_node()
                        && later.node().map(|n| &n.name) != o.op.node().map(|n| &n.name),
                    "{name}: op {s} ({later}) ran after op {} failed",
                    o.seq
                );
            }
            // Namespaces: each created one deleted, latest first.
            let created: Vec<String> = ops
                .iter()
                .filter(|p| p.seq < o.seq)
                .filter_map(|p| match p.op {
                    Op::Netns(n) => Some(format!("delete netns `{}`", n.netns)),
                    _ => None,
                })
                .rev()
                .collect();
            let deleted: Vec<&str> = texts
                .iter()
                .copied()
                .filter(|t| t.starts_with("delete netns"))
                .collect();
            assert_eq!(deleted, created, "{name} op {}", o.seq);
            // Host sysctls: each written one restored to what was read.
            let written = calls
                .iter()
                .filter(|c| c.text.starts_with("host sysctl"))
                .count();
            let restored: Vec<&&str> = texts
                .iter()
                .filter(|t| t.starts_with("restore host sysctl"))
                .collect();
            assert!(restored.len() >= written, "{name} op {}", o.seq);
            assert!(restored.iter().all(|t| t.ends_with("= orig")));
            // Helpers: each started one stopped.
            let started = calls
                .iter()
                .filter(|c| c.stage == Some(faultlab::plan::Stage::Processes))
                .count();
            let stopped = texts.iter().filter(|t| t.starts_with("stop ")).count();
            assert_eq!(started, stopped, "{name} op {}", o.seq);
            tried += 1;
        }
    }
    assert!(tried > 100, "only {tried} failure paths");
}

#[test]
fn rollback_of_a_failed_ruleset_load() {
    let plan = template("docker", "containers = 2", "flr");
    let k = build_ops(&plan)
        .iter()
        .find(|o| matches!(o.op, Op::Ruleset { .. }))
        .expect("docker loads a ruleset")
        .seq;
    let rec = Recorder::new();
    let err = Lab::build_with(
        &plan,
        Box::new(FailAt::new(rec.clone(), k)),
        Record::Nothing,
    )
    .unwrap_err();
    insta::assert_snapshot!(
        "rollback_docker_ruleset",
        format!("error: {err:#}\n{}", rec.transcript()).replace("flr", "RUN")
    );
}

/// The script renderer driven through the seam writes exactly the selftest-style
/// script the benches run: build steps, then namespaces deleted and host keys put back.
#[test]
fn the_script_kernel_renders_the_benchmarked_script() {
    for (name, plan) in plans("flk") {
        let script = Script::new(&plan);
        let lab = Lab::build_with(&plan, Box::new(script.clone()), Record::Nothing)
            .unwrap_or_else(|e| panic!("{e:#}"));
        assert!(lab.teardown().is_empty());
        let originals: Vec<Sysctl> = plan
            .host_sysctls
            .iter()
            .map(|s| Sysctl {
                key: s.key.clone(),
                value: "orig".into(),
            })
            .collect();
        let mut expected = shell_steps(&plan);
        expected.extend(shell_teardown(&plan, &originals));
        assert_eq!(script.steps(), expected, "{name}");
    }
}
