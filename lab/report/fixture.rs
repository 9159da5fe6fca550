//! Results with every outcome, shared by the report snapshot tests.

use crate::verdict::{CellResult, Check, DropStat, Outcome, ScenarioResult};

fn check(expr: &str, ok: bool, detail: &str) -> Check {
    Check {
        expr: expr.into(),
        ok,
        detail: detail.into(),
    }
}

fn cell(name: &str, outcome: Outcome, duration_ms: u64) -> CellResult {
    CellResult {
        phases_ms: [
            ("build".to_string(), 30),
            ("traffic".to_string(), duration_ms / 2),
        ]
        .into_iter()
        .collect(),
        name: name.into(),
        about: String::new(),
        outcome,
        reason: None,
        trigger: None,
        checks: Vec::new(),
        observations: Default::default(),
        drops: Vec::new(),
        captures: Vec::new(),
        repetitions: Vec::new(),
        splats: Vec::new(),
        duration_ms,
    }
}

fn drop_stat(reason: &str, location: &str, node: Option<&str>, count: u64) -> DropStat {
    DropStat {
        reason: reason.into(),
        location: location.into(),
        node: node.map(Into::into),
        count,
    }
}

pub fn results() -> Vec<ScenarioResult> {
    let mut on = cell("call-iptables-on", Outcome::Pass, 1840);
    on.about = "br_netfilter hands bridged frames to iptables".into();
    on.trigger = Some(check(
        "iptables.sw.filter.FORWARD.policy.packets >= 20",
        true,
        "iptables.sw.filter.FORWARD.policy.packets=20",
    ));
    on.checks = vec![check("received == 0", true, "received=0")];
    on.observations = [
        ("iptables.sw.filter.FORWARD.policy.packets", 20.0),
        ("received", 0.0),
        ("sent", 20.0),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), *v))
    .collect();
    on.drops = vec![drop_stat(
        "NETFILTER_DROP",
        "nf_hook_slow+0x9f",
        Some("sw"),
        20,
    )];

    let mut off = cell("call-iptables-off", Outcome::Fail, 1712);
    off.reason = Some("expected received == sent (received=0 sent=20) (+2 more failed)".into());
    off.checks = vec![
        check("received == sent", false, "received=0 sent=20"),
        check("link.sw.sw-b.tx_drop < 1", true, "link.sw.sw-b.tx_drop=0"),
        check(
            "sum(nft.sw.**.packets) < 1",
            false,
            "sum(nft.sw.**.packets)=3",
        ),
        check(
            "rst_to_remote >= 1",
            false,
            "no observation named `rst_to_remote`; closest: received, sent",
        ),
    ];
    off.drops = vec![
        drop_stat("NETFILTER_DROP", "nf_hook_slow+0x9f", Some("sw"), 12),
        drop_stat("NO_SOCKET", "__udp4_lib_rcv+0x5c1", Some("b"), 1),
        drop_stat("NEIGH_FAILED", "neigh_invalidate+0x8e", None, 3),
        drop_stat("OTHERHOST", "ip_rcv_core+0x1b2", Some("a"), 2),
        drop_stat("TC_EGRESS", "tcf_classify+0x10", Some("sw"), 2),
        drop_stat("SKB_CSUM", "__skb_checksum_complete+0x4", Some("b"), 1),
    ];

    let mut clash = cell("udp-clash", Outcome::Inconclusive, 5003);
    clash.reason = Some(
        "trigger not proven: sum(conntrack.*.clashres) > 0 (sum(conntrack.*.clashres)=0)".into(),
    );
    clash.trigger = Some(check(
        "sum(conntrack.*.clashres) > 0",
        false,
        "sum(conntrack.*.clashres)=0",
    ));
    clash.checks = vec![check("dns.timeouts == 0", true, "dns.timeouts=0")];
    clash.repetitions = vec![
        Outcome::Pass,
        Outcome::Inconclusive,
        Outcome::Pass,
        Outcome::Pass,
        Outcome::Inconclusive,
    ];

    let mut skipped = cell("nft-notrack", Outcome::Skip, 0);
    skipped.reason = Some("nft not installed (apt install nftables)".into());

    vec![
        ScenarioResult {
            scenario: "bridge-forward-drop".into(),
            about: "Bridged frames meet iptables FORWARD policy DROP via br_netfilter".into(),
            file: "scenarios/bridge-forward-drop.toml".into(),
            kernel_release: "6.18.44-fc-v669".into(),
            started_at: 1_763_769_600,
            duration_ms: 3552,
            cells: vec![on, off],
        },
        ScenarioResult {
            scenario: "conntrack-udp-clash".into(),
            about: "Parallel UDP DNS queries race conntrack insertion".into(),
            file: "scenarios/conntrack-udp-clash.toml".into(),
            kernel_release: "6.18.44-fc-v669".into(),
            started_at: 1_763_769_604,
            duration_ms: 5003,
            cells: vec![clash, skipped],
        },
    ]
}
