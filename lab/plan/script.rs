//! The same lab as a shell script: the plan translated to `ip` / `sysctl` /
//! ruleset-loader commands, for benchmarking faultlab's in-process engine against
//! the way kernel selftests build topologies.
//!
//! Two forms, both pure (no syscalls; nothing here runs anything):
//! - [`shell_steps`]: one process per step (`ip -n NS addr add ...`, `ip netns exec NS
//!   sysctl -qw ...`), the selftest style;
//! - [`batched`]: the fewest processes iproute2 allows: one `ip -batch -` in the root
//!   namespace for every `netns add` and every veth (both ends created directly in their
//!   namespaces), then per namespace one `ip -n NS -batch -` (two when the node has
//!   sysctls, which must come between devices and addresses), one `sysctl` with all of
//!   the node's keys, and one load per ruleset kind.
//!
//! Both follow the build order of `setup::Lab`: host sysctls, namespaces, veths, then
//! per node devices, bridge and vrf ports, sysctls, addresses, up, routes, ip rules, neighbours,
//! rulesets, commands. Planned MACs go into the `link add` that creates the device or veth end
//! (`address MAC`), as faultlab sets IFLA_ADDRESS in the creating request.
//! Helper processes are not translated (the bench topologies have none).

use super::ops::{build_ops, Op, Stage};
use crate::model::{
    AddressPlan, DeviceKind, DevicePlan, LabPlan, RouteKind, RoutePlan, RulesetKind, Sysctl,
};
use std::fmt::Write as _;

/// One command: its argv and, for ruleset loaders and `ip -batch -`, its standard input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub argv: Vec<String>,
    pub stdin: Option<String>,
}

impl Step {
    fn new(argv: Vec<String>) -> Step {
        Step { argv, stdin: None }
    }
    fn with_stdin(argv: Vec<String>, stdin: String) -> Step {
        Step {
            argv,
            stdin: Some(stdin),
        }
    }
}

fn s(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| w.to_string()).collect()
}

/// The `sysctl(8)` spelling of a key: dotted, unless a device segment has a dot
/// (`net.ipv4.conf.eth0.100.rp_filter`), which sysctl(8) needs as a slash path.
fn sysctl_key(key: &str) -> String {
    match crate::model::sysctl_key::key_to_path(key) {
        Ok(p) => {
            let rel = p
                .strip_prefix("/proc/sys")
                .map(|r| r.display().to_string())
                .unwrap_or_else(|_| key.to_string());
            // sysctl(8) turns every dot into a slash.
            if key.replace('.', "/") == rel {
                key.to_string()
            } else {
                rel
            }
        }
        Err(_) => key.to_string(),
    }
}

/// `KEY=VALUE` as sysctl(8) takes it.
pub fn sysctl_arg(key: &str, value: &str) -> String {
    format!("{}={}", sysctl_key(key), value)
}

/// `ip link add` arguments (after `link add`) of a device.
fn device_args(d: &DevicePlan) -> Vec<String> {
    let mut a = vec![d.name.clone()];
    if let DeviceKind::Macvlan { link, .. } = &d.kind {
        a.extend(["link".to_string(), link.clone()]);
    }
    if let Some(mac) = &d.mac {
        a.extend(["address".to_string(), mac.clone()]);
    }
    if let Some(m) = d.mtu {
        a.extend(["mtu".to_string(), m.to_string()]);
    }
    a.push("type".into());
    match &d.kind {
        DeviceKind::Bridge { .. } => a.push("bridge".into()),
        DeviceKind::Dummy => a.push("dummy".into()),
        DeviceKind::Macvlan { mode, sources, .. } => {
            a.extend([
                "macvlan".to_string(),
                "mode".to_string(),
                mode.key().to_string(),
            ]);
            if !sources.is_empty() {
                a.extend(["macaddr".to_string(), "set".to_string()]);
                a.extend(sources.iter().cloned());
            }
        }
        DeviceKind::Vrf { table, .. } => {
            a.extend(["vrf".to_string(), "table".to_string(), table.to_string()]);
        }
        DeviceKind::Vxlan {
            vni,
            local,
            remote,
            dev,
            port,
        } => {
            a.extend(["vxlan".to_string(), "id".to_string(), vni.to_string()]);
            if let Some(l) = local {
                a.extend(["local".to_string(), l.to_string()]);
            }
            if let Some(r) = remote {
                a.extend(["remote".to_string(), r.to_string()]);
            }
            if let Some(d) = dev {
                a.extend(["dev".to_string(), d.clone()]);
            }
            a.extend(["dstport".to_string(), port.to_string()]);
        }
    }
    a
}

/// `ip route add` arguments (after `route add`).
fn route_args(r: &RoutePlan) -> Vec<String> {
    let dst = r.dst.trunc().to_string();
    let mut a = Vec::new();
    match &r.kind {
        RouteKind::Unicast { via, dev, onlink } => {
            a.push(dst);
            if let Some(v) = via {
                a.extend(["via".to_string(), v.to_string()]);
            }
            if let Some(d) = dev {
                a.extend(["dev".to_string(), d.clone()]);
            }
            if *onlink {
                a.push("onlink".into());
            }
            // rtnetlink (faultlab) installs routes as RTPROT_STATIC; ip's default is boot.
            a.extend(["proto".to_string(), "static".to_string()]);
        }
        RouteKind::Multipath { nexthops } => {
            a.push(dst);
            for nh in nexthops {
                a.push("nexthop".into());
                if let Some(v) = nh.via {
                    a.extend(["via".to_string(), v.to_string()]);
                }
                if let Some(d) = &nh.dev {
                    a.extend(["dev".to_string(), d.clone()]);
                }
                a.extend(["weight".to_string(), nh.weight.to_string()]);
            }
            a.extend(["proto".to_string(), "static".to_string()]);
        }
        RouteKind::Blackhole => a.extend(["blackhole".to_string(), dst]),
        RouteKind::Unreachable => a.extend(["unreachable".to_string(), dst]),
        RouteKind::Prohibit => a.extend(["prohibit".to_string(), dst]),
    }
    if matches!(
        r.kind,
        RouteKind::Blackhole | RouteKind::Unreachable | RouteKind::Prohibit
    ) {
        a.extend(["proto".to_string(), "static".to_string()]);
    }
    if let Some(t) = r.table {
        a.extend(["table".to_string(), t.to_string()]);
    }
    a
}

/// `ip addr add` arguments; IPv6 gets `nodad`, as faultlab adds IFA_F_NODAD.
fn address_args(a: &AddressPlan) -> Vec<String> {
    let mut v = vec![a.addr.to_string(), "dev".to_string(), a.dev.clone()];
    if a.addr.addr().is_ipv6() {
        v.push("nodad".into());
    }
    v
}

/// `ip link add` arguments of every veth: both ends created directly in their namespaces.
fn veth_args(plan: &LabPlan, v: &crate::model::VethPlan, a_in_args: bool) -> Vec<String> {
    let ns = |node: &str| {
        plan.node(node)
            .map(|n| n.netns.clone())
            .unwrap_or_else(|| node.to_string())
    };
    let mut a = vec!["name".to_string(), v.a.dev.clone()];
    if a_in_args {
        a.extend(["netns".to_string(), ns(&v.a.node)]);
    }
    if let Some(mac) = &v.a.mac {
        a.extend(["address".to_string(), mac.clone()]);
    }
    if let Some(m) = v.mtu {
        a.extend(["mtu".to_string(), m.to_string()]);
    }
    a.extend(s(&["type", "veth", "peer", "name"]));
    a.push(v.b.dev.clone());
    a.extend(["netns".to_string(), ns(&v.b.node)]);
    if let Some(mac) = &v.b.mac {
        a.extend(["address".to_string(), mac.clone()]);
    }
    if let Some(m) = v.mtu {
        a.extend(["mtu".to_string(), m.to_string()]);
    }
    a
}

fn ip_n(ns: &str, rest: &[String]) -> Vec<String> {
    let mut v = s(&["ip", "-n", ns]);
    v.extend_from_slice(rest);
    v
}

fn in_ns(ns: &str, rest: &[&str]) -> Vec<String> {
    let mut v = s(&["ip", "netns", "exec", ns]);
    v.extend(rest.iter().map(|w| w.to_string()));
    v
}

fn loader_argv(ns: &str, kind: RulesetKind) -> Vec<String> {
    let (prog, args) = kind.loader();
    let mut words = vec![prog];
    words.extend_from_slice(args);
    in_ns(ns, &words)
}

/// The `ip` arguments (without `-n NS`) of a node-local link, address, route or
/// neighbour operation; None for the operations `ip` does not do.
fn ip_command(op: &Op) -> Option<Vec<String>> {
    Some(match op {
        Op::Device(_, d) => {
            let mut c = s(&["link", "add"]);
            c.extend(device_args(d));
            c
        }
        Op::Port { master, port, .. } => vec![
            "link".into(),
            "set".into(),
            port.to_string(),
            "master".into(),
            master.name.clone(),
        ],
        Op::Address(_, a) => {
            let mut c = s(&["addr", "add"]);
            c.extend(address_args(a));
            c
        }
        Op::Up(_, dev) => vec!["link".into(), "set".into(), dev.to_string(), "up".into()],
        Op::Route(_, r) => {
            let mut c = s(&["route", "add"]);
            c.extend(route_args(r));
            c
        }
        // IPv6 rules need `ip -6` (iproute2 takes a rule's family from it, not from
        // its addresses), which is an option, not a word of a batch line.
        Op::IpRule(_, r) => {
            let mut c = s(&["rule", "add"]);
            c.extend(r.args());
            c
        }
        Op::Neighbour(_, nb) => vec![
            "neigh".into(),
            "add".into(),
            nb.ip.to_string(),
            "lladdr".into(),
            nb.mac.clone(),
            "dev".into(),
            nb.dev.clone(),
            "nud".into(),
            "permanent".into(),
        ],
        _ => return None,
    })
}

/// One operation as one process, the kernel-selftest way. None for the operations a
/// selftest script does not do (waiting for carrier, helper processes).
pub fn step_of(plan: &LabPlan, op: &Op) -> Option<Step> {
    Some(match op {
        Op::HostSysctl(h) => Step::new(vec![
            "sysctl".into(),
            "-qw".into(),
            sysctl_arg(&h.key, &h.value),
        ]),
        Op::Netns(n) => Step::new(s(&["ip", "netns", "add", &n.netns])),
        Op::Veth { veth, a, .. } => {
            let mut c = s(&["link", "add"]);
            c.extend(veth_args(plan, veth, false));
            Step::new(ip_n(&a.netns, &c))
        }
        Op::Sysctl(n, sc) => Step::new(in_ns(
            &n.netns,
            &["sysctl", "-qw", &sysctl_arg(&sc.key, &sc.value)],
        )),
        Op::Ruleset { node, ruleset, .. } => {
            Step::with_stdin(loader_argv(&node.netns, ruleset.kind), ruleset.text.clone())
        }
        Op::Carrier(_) | Op::Process(..) => return None,
        Op::Command(n, c) => command_step(&n.netns, c),
        Op::IpRule(n, r) if r.v6 => {
            let mut c = s(&["-6"]);
            c.extend(ip_command(op)?);
            Step::new(ip_n(&n.netns, &c))
        }
        other => {
            let n = other.node()?;
            Step::new(ip_n(&n.netns, &ip_command(other)?))
        }
    })
}

/// One of a node's `commands`, run inside its namespace.
fn command_step(netns: &str, c: &crate::model::CommandPlan) -> Step {
    let words: Vec<&str> = c.argv.iter().map(String::as_str).collect();
    Step::new(in_ns(netns, &words))
}

/// The lab as one process per step, the kernel-selftest way.
pub fn shell_steps(plan: &LabPlan) -> Vec<Step> {
    build_ops(plan)
        .iter()
        .filter_map(|o| step_of(plan, &o.op))
        .collect()
}

fn batch_text(cmds: &[Vec<String>]) -> String {
    let mut t = String::new();
    for c in cmds {
        t += &c
            .iter()
            .map(|w| batch_quote(w))
            .collect::<Vec<_>>()
            .join(" ");
        t.push('\n');
    }
    t
}

/// `ip -batch` splits on blanks and understands double quotes.
fn batch_quote(w: &str) -> String {
    if w.is_empty() || w.contains(|c: char| c.is_whitespace() || c == '"' || c == '#') {
        format!("\"{}\"", w.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        w.to_string()
    }
}

/// The lab in the fewest processes: see the module documentation.
pub fn batched(plan: &LabPlan) -> Vec<Step> {
    let mut out = Vec::new();
    if !plan.host_sysctls.is_empty() {
        let mut argv = s(&["sysctl", "-qw"]);
        argv.extend(
            plan.host_sysctls
                .iter()
                .map(|h| sysctl_arg(&h.key, &h.value)),
        );
        out.push(Step::new(argv));
    }
    let ops = build_ops(plan);
    let mut root: Vec<Vec<String>> = Vec::new();
    for o in &ops {
        match o.op {
            Op::Netns(n) => root.push(s(&["netns", "add", &n.netns])),
            Op::Veth { veth, .. } => {
                let mut c = s(&["link", "add"]);
                c.extend(veth_args(plan, veth, true));
                root.push(c);
            }
            _ => {}
        }
    }
    if !root.is_empty() {
        out.push(Step::with_stdin(
            s(&["ip", "-batch", "-"]),
            batch_text(&root),
        ));
    }
    for n in &plan.nodes {
        let batch = || s(&["ip", "-n", &n.netns, "-batch", "-"]);
        let mine = || {
            ops.iter()
                .filter(|o| o.op.stage() == Stage::Configure)
                .filter(move |o| o.op.node().is_some_and(|x| std::ptr::eq(x, n)))
                .map(|o| o.op)
        };
        // Devices and ports come before the sysctls (which may name them), addresses
        // and the rest after.
        let mut before: Vec<Vec<String>> = mine()
            .filter(|op| matches!(op, Op::Device(..) | Op::Port { .. }))
            .filter_map(|op| ip_command(&op))
            .collect();
        let v6_rule = |op: &Op| matches!(op, Op::IpRule(_, r) if r.v6);
        let after: Vec<Vec<String>> = mine()
            .filter(|op| !matches!(op, Op::Device(..) | Op::Port { .. }) && !v6_rule(op))
            .filter_map(|op| ip_command(&op))
            .collect();
        let v6_rules: Vec<Vec<String>> = mine()
            .filter(v6_rule)
            .filter_map(|op| ip_command(&op))
            .collect();
        if n.sysctls.is_empty() {
            before.extend(after);
            if !before.is_empty() {
                out.push(Step::with_stdin(batch(), batch_text(&before)));
            }
        } else {
            if !before.is_empty() {
                out.push(Step::with_stdin(batch(), batch_text(&before)));
            }
            let kv: Vec<String> = n
                .sysctls
                .iter()
                .map(|sc| sysctl_arg(&sc.key, &sc.value))
                .collect();
            let mut words = vec!["sysctl", "-qw"];
            words.extend(kv.iter().map(|x| x.as_str()));
            out.push(Step::new(in_ns(&n.netns, &words)));
            if !after.is_empty() {
                out.push(Step::with_stdin(batch(), batch_text(&after)));
            }
        }
        if !v6_rules.is_empty() {
            out.push(Step::with_stdin(
                s(&["ip", "-n", &n.netns, "-6", "-batch", "-"]),
                batch_text(&v6_rules),
            ));
        }
        // One load per ruleset kind, texts concatenated in file order (each text is a
        // complete restore file / nft script, so concatenation is one valid input).
        let mut kinds: Vec<RulesetKind> = Vec::new();
        for rs in &n.rulesets {
            if !kinds.contains(&rs.kind) {
                kinds.push(rs.kind);
            }
        }
        for k in kinds {
            let text: String = n
                .rulesets
                .iter()
                .filter(|r| r.kind == k)
                .map(|r| {
                    let mut t = r.text.clone();
                    if !t.ends_with('\n') {
                        t.push('\n');
                    }
                    t
                })
                .collect();
            out.push(Step::with_stdin(loader_argv(&n.netns, k), text));
        }
        out.extend(n.commands.iter().map(|c| command_step(&n.netns, c)));
    }
    out
}

/// Teardown one process per step: `ip netns del` per namespace (reverse order), then the
/// host sysctls back to `originals` (the values read before the build).
pub fn shell_teardown(plan: &LabPlan, originals: &[Sysctl]) -> Vec<Step> {
    let mut out: Vec<Step> = plan
        .nodes
        .iter()
        .rev()
        .map(|n| Step::new(s(&["ip", "netns", "del", &n.netns])))
        .collect();
    for o in originals.iter().rev() {
        out.push(Step::new(vec![
            "sysctl".into(),
            "-qw".into(),
            sysctl_arg(&o.key, &o.value),
        ]));
    }
    out
}

/// Teardown in one `ip -batch -` (plus one `sysctl` for the host keys).
pub fn batched_teardown(plan: &LabPlan, originals: &[Sysctl]) -> Vec<Step> {
    let mut out = Vec::new();
    let dels: Vec<Vec<String>> = plan
        .nodes
        .iter()
        .rev()
        .map(|n| s(&["netns", "del", &n.netns]))
        .collect();
    if !dels.is_empty() {
        out.push(Step::with_stdin(
            s(&["ip", "-batch", "-"]),
            batch_text(&dels),
        ));
    }
    if !originals.is_empty() {
        let mut argv = s(&["sysctl", "-qw"]);
        argv.extend(originals.iter().rev().map(|o| sysctl_arg(&o.key, &o.value)));
        out.push(Step::new(argv));
    }
    out
}

/// Quotes a word for sh.
fn sh_quote(w: &str) -> String {
    if !w.is_empty()
        && w.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=+@%,".contains(c))
    {
        w.to_string()
    } else {
        format!("'{}'", w.replace('\'', "'\\''"))
    }
}

/// The steps as a readable sh script (standard input as quoted here-documents).
pub fn render_sh(steps: &[Step]) -> String {
    let mut out = String::new();
    for st in steps {
        let line = st
            .argv
            .iter()
            .map(|w| sh_quote(w))
            .collect::<Vec<_>>()
            .join(" ");
        match &st.stdin {
            None => {
                let _ = writeln!(out, "{line}");
            }
            Some(text) => {
                let mut marker = "EOF".to_string();
                while text.lines().any(|l| l == marker) {
                    marker.push('_');
                }
                let _ = writeln!(out, "{line} <<'{marker}'");
                out += text;
                if !text.ends_with('\n') {
                    out.push('\n');
                }
                let _ = writeln!(out, "{marker}");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        CommandPlan, Endpoint, IpRulePlan, MacvlanMode, NeighbourPlan, Nexthop, NodePlan,
        RulesetPlan, VethPlan,
    };

    fn node(name: &str) -> NodePlan {
        NodePlan {
            name: name.into(),
            netns: format!("flTEST-{name}"),
            up: vec!["lo".into()],
            ..Default::default()
        }
    }

    fn small_plan() -> LabPlan {
        let mut a = node("a");
        a.addresses = vec![
            AddressPlan {
                dev: "eth0".into(),
                addr: "192.0.2.1/24".parse().unwrap(),
            },
            AddressPlan {
                dev: "eth0".into(),
                addr: "2001:db8::1/64".parse().unwrap(),
            },
        ];
        a.up.push("eth0".into());
        a.routes = vec![
            RoutePlan {
                dst: "0.0.0.0/0".parse().unwrap(),
                kind: RouteKind::Unicast {
                    via: Some("192.0.2.2".parse().unwrap()),
                    dev: None,
                    onlink: false,
                },
                table: None,
            },
            RoutePlan {
                dst: "198.51.100.0/24".parse().unwrap(),
                kind: RouteKind::Multipath {
                    nexthops: vec![
                        Nexthop {
                            via: Some("192.0.2.2".parse().unwrap()),
                            dev: Some("eth0".into()),
                            weight: 1,
                        },
                        Nexthop {
                            via: Some("192.0.2.3".parse().unwrap()),
                            dev: None,
                            weight: 3,
                        },
                    ],
                },
                table: None,
            },
            RoutePlan {
                dst: "203.0.113.0/24".parse().unwrap(),
                kind: RouteKind::Blackhole,
                table: Some(10),
            },
        ];
        a.ip_rules = vec![
            IpRulePlan {
                from: Some("192.0.2.0/24".parse().unwrap()),
                priority: Some(100),
                ..IpRulePlan::lookup(10)
            },
            IpRulePlan {
                v6: true,
                fwmark: Some(1),
                fwmask: Some(0xff),
                iif: Some("eth0".into()),
                ..IpRulePlan::lookup(10)
            },
        ];
        a.neighbours = vec![NeighbourPlan {
            dev: "eth0".into(),
            ip: "192.0.2.3".parse().unwrap(),
            mac: "02:00:00:00:00:03".into(),
        }];
        let mut b = node("b");
        b.devices = vec![
            DevicePlan {
                name: "br0".into(),
                kind: DeviceKind::Bridge {
                    ports: vec!["p0".into()],
                },
                mtu: None,
                mac: None,
            },
            DevicePlan {
                name: "vx0".into(),
                kind: DeviceKind::Vxlan {
                    vni: 42,
                    local: Some("192.0.2.2".parse().unwrap()),
                    remote: None,
                    dev: Some("p0".into()),
                    port: 4789,
                },
                mtu: Some(1450),
                mac: None,
            },
        ];
        b.sysctls = vec![
            Sysctl {
                key: "net.ipv4.ip_forward".into(),
                value: "1".into(),
            },
            Sysctl {
                key: "net.ipv4.conf.p0.1.rp_filter".into(),
                value: "0".into(),
            },
        ];
        b.addresses = vec![AddressPlan {
            dev: "br0".into(),
            addr: "192.0.2.2/24".parse().unwrap(),
        }];
        b.up.extend(["p0".to_string(), "br0".to_string()]);
        b.routes = vec![RoutePlan {
            dst: "169.254.1.1/32".parse().unwrap(),
            kind: RouteKind::Unicast {
                via: None,
                dev: Some("br0".into()),
                onlink: false,
            },
            table: None,
        }];
        b.rulesets = vec![
            RulesetPlan {
                kind: RulesetKind::Iptables,
                text: "*filter\n:FORWARD DROP [0:0]\nCOMMIT\n".into(),
            },
            RulesetPlan {
                kind: RulesetKind::Nft,
                text: "table inet t { chain c { type filter hook input priority 0; } }".into(),
            },
            RulesetPlan {
                kind: RulesetKind::Iptables,
                text: "*filter\n-A FORWARD -m comment --comment \"it's ok\" -j ACCEPT\nCOMMIT\n"
                    .into(),
            },
        ];
        b.commands = vec![CommandPlan {
            argv: vec![
                "tc".into(),
                "qdisc".into(),
                "add".into(),
                "dev".into(),
                "p0".into(),
                "root".into(),
                "tbf".into(),
                "rate".into(),
                "1mbit".into(),
                "burst".into(),
                "4k".into(),
                "latency".into(),
                "20ms".into(),
            ],
        }];
        LabPlan {
            run_id: "flTEST".into(),
            nodes: vec![a, b],
            veths: vec![VethPlan {
                a: Endpoint {
                    node: "a".into(),
                    dev: "eth0".into(),
                    mac: None,
                },
                b: Endpoint {
                    node: "b".into(),
                    dev: "p0".into(),
                    mac: None,
                },
                mtu: Some(1500),
            }],
            host_sysctls: vec![Sysctl {
                key: "net.netfilter.nf_conntrack_max".into(),
                value: "4096".into(),
            }],
        }
    }

    fn argvs(steps: &[Step]) -> Vec<String> {
        steps.iter().map(|s| s.argv.join(" ")).collect()
    }

    #[test]
    fn one_process_per_step_in_build_order() {
        let steps = shell_steps(&small_plan());
        let lines = argvs(&steps);
        assert_eq!(lines[0], "sysctl -qw net.netfilter.nf_conntrack_max=4096");
        assert_eq!(lines[1], "ip netns add flTEST-a");
        assert_eq!(
            lines[3],
            "ip -n flTEST-a link add name eth0 mtu 1500 type veth peer name p0 netns flTEST-b mtu 1500"
        );
        // Every plan item is one step: 1 host sysctl + 2 netns + 1 veth
        // + a: 2 addr + 2 up + 3 routes + 2 ip rules + 1 neigh + b: 2 devices + 1 port
        // + 2 sysctls + 1 addr + 3 up + 1 route + 3 rulesets + 1 command.
        assert_eq!(steps.len(), 1 + 2 + 1 + 10 + 2 + 1 + 2 + 1 + 3 + 1 + 3 + 1);
        assert_eq!(
            lines.last().unwrap(),
            "ip netns exec flTEST-b tc qdisc add dev p0 root tbf rate 1mbit burst 4k latency 20ms"
        );
        assert!(lines
            .contains(&"ip -n flTEST-a rule add priority 100 from 192.0.2.0/24 lookup 10".into()));
        // iproute2 takes an IPv6 rule's family from `-6` only.
        assert!(
            lines.contains(&"ip -n flTEST-a -6 rule add fwmark 0x1/0xff iif eth0 lookup 10".into())
        );
        assert!(lines.contains(&"ip -n flTEST-a addr add 2001:db8::1/64 dev eth0 nodad".into()));
        assert!(lines.contains(
            &"ip -n flTEST-a route add 198.51.100.0/24 nexthop via 192.0.2.2 dev eth0 weight 1 nexthop via 192.0.2.3 weight 3 proto static".into()
        ));
        assert!(lines.contains(
            &"ip -n flTEST-a route add blackhole 203.0.113.0/24 proto static table 10".into()
        ));
        assert!(lines.contains(
            &"ip -n flTEST-b link add vx0 mtu 1450 type vxlan id 42 local 192.0.2.2 dev p0 dstport 4789"
                .into()
        ));
        // A dotted device name needs sysctl(8)'s slash spelling.
        assert!(lines
            .contains(&"ip netns exec flTEST-b sysctl -qw net/ipv4/conf/p0.1/rp_filter=0".into()));
        // Devices and ports come before sysctls, sysctls before addresses.
        let pos = |l: &str| lines.iter().position(|x| x == l).unwrap();
        assert!(
            pos("ip -n flTEST-b link set p0 master br0")
                < pos("ip netns exec flTEST-b sysctl -qw net.ipv4.ip_forward=1")
        );
        assert!(
            pos("ip netns exec flTEST-b sysctl -qw net.ipv4.ip_forward=1")
                < pos("ip -n flTEST-b addr add 192.0.2.2/24 dev br0")
        );
        let loads: Vec<&Step> = steps.iter().filter(|s| s.stdin.is_some()).collect();
        assert_eq!(loads.len(), 3);
        assert_eq!(
            loads[0].argv.join(" "),
            "ip netns exec flTEST-b iptables-nft-restore --noflush"
        );
    }

    #[test]
    fn batched_uses_one_batch_per_namespace_and_one_load_per_kind() {
        let steps = batched(&small_plan());
        let lines = argvs(&steps);
        assert_eq!(
            lines,
            [
                "sysctl -qw net.netfilter.nf_conntrack_max=4096",
                "ip -batch -",
                "ip -n flTEST-a -batch -",
                "ip -n flTEST-a -6 -batch -",
                "ip -n flTEST-b -batch -",
                "ip netns exec flTEST-b sysctl -qw net.ipv4.ip_forward=1 net/ipv4/conf/p0.1/rp_filter=0",
                "ip -n flTEST-b -batch -",
                "ip netns exec flTEST-b iptables-nft-restore --noflush",
                "ip netns exec flTEST-b nft -f -",
                "ip netns exec flTEST-b tc qdisc add dev p0 root tbf rate 1mbit burst 4k latency 20ms",
            ]
        );
        let root = steps[1].stdin.as_deref().unwrap();
        assert!(root.starts_with("netns add flTEST-a\nnetns add flTEST-b\n"));
        assert!(root.contains(
            "link add name eth0 netns flTEST-a mtu 1500 type veth peer name p0 netns flTEST-b mtu 1500\n"
        ));
        let ipt = steps
            .iter()
            .find(|s| s.argv.iter().any(|w| w == "iptables-nft-restore"))
            .and_then(|s| s.stdin.as_deref())
            .unwrap();
        let v6_rules = steps[3].stdin.as_deref().unwrap();
        assert_eq!(v6_rules, "rule add fwmark 0x1/0xff iif eth0 lookup 10\n");
        assert_eq!(
            ipt.matches("COMMIT").count(),
            2,
            "both iptables texts, in order"
        );
    }

    #[test]
    fn teardown_deletes_in_reverse_and_restores_host_keys() {
        let plan = small_plan();
        let orig = [Sysctl {
            key: "net.netfilter.nf_conntrack_max".into(),
            value: "262144".into(),
        }];
        assert_eq!(
            argvs(&shell_teardown(&plan, &orig)),
            [
                "ip netns del flTEST-b",
                "ip netns del flTEST-a",
                "sysctl -qw net.netfilter.nf_conntrack_max=262144"
            ]
        );
        let b = batched_teardown(&plan, &orig);
        assert_eq!(
            b[0].stdin.as_deref(),
            Some("netns del flTEST-b\nnetns del flTEST-a\n")
        );
    }

    #[test]
    fn macs_macvlan_and_vrf() {
        let mut plan = small_plan();
        plan.veths[0].a.mac = Some("02:00:00:00:00:0a".into());
        plan.veths[0].b.mac = Some("02:00:00:00:00:0b".into());
        let b = &mut plan.nodes[1];
        b.devices[0].mac = Some("02:00:00:00:01:00".into());
        b.devices.push(DevicePlan {
            name: "mv0".into(),
            kind: DeviceKind::Macvlan {
                link: "br0".into(),
                mode: MacvlanMode::Private,
                sources: vec![],
            },
            mtu: None,
            mac: Some("02:00:00:00:02:00".into()),
        });
        b.devices.push(DevicePlan {
            name: "mv1".into(),
            kind: DeviceKind::Macvlan {
                link: "br0".into(),
                mode: MacvlanMode::Source,
                sources: vec!["02:00:00:00:00:0a".into(), "02:00:00:00:00:0c".into()],
            },
            mtu: None,
            mac: None,
        });
        b.devices.push(DevicePlan {
            name: "blue".into(),
            kind: DeviceKind::Vrf {
                table: 10,
                ports: vec!["br0".into()],
            },
            mtu: None,
            mac: None,
        });
        let lines = argvs(&shell_steps(&plan));
        assert!(lines.contains(
            &"ip -n flTEST-a link add name eth0 address 02:00:00:00:00:0a mtu 1500 type veth peer name p0 netns flTEST-b address 02:00:00:00:00:0b mtu 1500".into()
        ), "{lines:#?}");
        for l in [
            "ip -n flTEST-b link add br0 address 02:00:00:00:01:00 type bridge",
            "ip -n flTEST-b link add mv0 link br0 address 02:00:00:00:02:00 type macvlan mode private",
            "ip -n flTEST-b link add mv1 link br0 type macvlan mode source macaddr set 02:00:00:00:00:0a 02:00:00:00:00:0c",
            "ip -n flTEST-b link add blue type vrf table 10",
            "ip -n flTEST-b link set br0 master blue",
        ] {
            assert!(lines.contains(&l.to_string()), "{l}\n{lines:#?}");
        }
        let root = batched(&plan)[1].stdin.clone().unwrap();
        assert!(root.contains(
            "link add name eth0 netns flTEST-a address 02:00:00:00:00:0a mtu 1500 type veth peer name p0 netns flTEST-b address 02:00:00:00:00:0b mtu 1500\n"
        ), "{root}");
    }

    #[test]
    fn quoting() {
        assert_eq!(batch_quote("a b"), "\"a b\"");
        assert_eq!(batch_quote("eth0"), "eth0");
        assert_eq!(sh_quote("it's"), "'it'\\''s'");
        assert_eq!(sh_quote("net.ipv4.ip_forward=1"), "net.ipv4.ip_forward=1");
    }

    #[test]
    fn small_plan_as_scripts() {
        let plan = small_plan();
        let text = format!(
            "# one process per step\n{}\n# batched\n{}",
            render_sh(&shell_steps(&plan)),
            render_sh(&batched(&plan))
        );
        insta::assert_snapshot!("small_plan_scripts", text);
    }
}
