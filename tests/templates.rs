//! Each topology template expands to the same plan model as a hand-written
//! topology; these snapshots pin what they build (reviewable without root).

use faultlab::model::LabPlan;

fn expand(template: &str, params: &str) -> LabPlan {
    let text = format!(
        r#"
name = "t"
about = "template snapshot"
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
    scn.cells[0].lab.for_run("flTEST")
}

#[test]
fn docker_plan() {
    insta::assert_yaml_snapshot!("docker_2_containers", expand("docker", "containers = 2"));
}

#[test]
fn openstack_qbr_plan() {
    insta::assert_yaml_snapshot!("openstack_qbr_2_vms", expand("openstack-qbr", "vms = 2"));
}

#[test]
fn calico_plan() {
    insta::assert_yaml_snapshot!(
        "calico_1_pod_3_backends",
        expand("calico", "pods = 1, backends = 3")
    );
}

#[test]
fn calico_backend_probabilities_follow_kube_proxy() {
    let plan = expand("calico", "backends = 3");
    let node1 = plan.node("node1").unwrap();
    let texts: Vec<&str> = node1.rulesets.iter().map(|r| r.text.as_str()).collect();
    let probs: Vec<&str> = texts
        .iter()
        .filter_map(|t| t.split("--probability ").nth(1))
        .map(|rest| rest.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(probs, ["0.3333333333333333", "0.5", "1"]);
}

#[test]
fn unknown_template_parameter_is_an_error() {
    let text = r#"
name = "t"
about = "x"
[template]
name = "docker"
params = { containerz = 2 }
[[cells]]
name = "c"
expect = ["1 == 1"]
"#;
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios/inline.toml");
    let e = faultlab::scenario::parse(file, text).unwrap_err();
    assert_eq!(
        (e.line, e.field.as_str()),
        (6, "template.params.containerz"),
        "{e}"
    );
    assert!(e.fix.contains("containers"), "{e}");
}

#[test]
fn scenario_nodes_merge_into_template_nodes() {
    let text = r#"
name = "t"
about = "x"
[template]
name = "docker"
[nodes.host]
sysctls = { "net.ipv4.conf.all.send_redirects" = 0 }
extra_rulesets.iptables = """
*filter
-A INPUT -m conntrack --ctstate INVALID -j DROP
COMMIT
"""
[[cells]]
name = "c"
expect = ["1 == 1"]
"#;
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios/inline.toml");
    let scn = faultlab::scenario::parse(file, text).unwrap_or_else(|e| panic!("{e}"));
    let host = scn.cells[0].lab.node("host").unwrap();
    assert!(host.sysctls.iter().any(|s| s.key == "net.ipv4.ip_forward"));
    assert!(host
        .sysctls
        .iter()
        .any(|s| s.key == "net.ipv4.conf.all.send_redirects"));
    assert!(host
        .rulesets
        .last()
        .unwrap()
        .text
        .contains("INVALID -j DROP"));
    assert_eq!(
        host.rulesets.len(),
        3,
        "template iptables + ip6tables + the extra"
    );
}
