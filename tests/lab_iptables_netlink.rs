//! Root: the in-process iptables-nft counter reader gives exactly what
//! `iptables-nft-save -c` gives, for every iptables ruleset of the catalogue's cells,
//! with traffic through each (so counters are not all zero).
#![cfg(feature = "lab")]

use faultlab::model::RulesetKind;
use faultlab::observe::{iptables, iptables_netlink};
use std::path::Path;
use std::process::Command;

fn sh(ns: &str, cmd: &str, stdin: Option<&str>) -> String {
    use std::io::Write;
    let mut c = Command::new("ip")
        .args(["netns", "exec", ns, "sh", "-c", cmd])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin
        .take()
        .unwrap()
        .write_all(stdin.unwrap_or("").as_bytes())
        .unwrap();
    let out = c.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn netlink_counters_equal_iptables_save_for_every_catalogue_ruleset() {
    let files = faultlab::scenario::discover(&[], Path::new("scenarios")).unwrap();
    // Each node's rulesets of one kind, in load order (later ones use chains of the
    // earlier ones: they are loaded with --noflush).
    let mut rulesets: Vec<(String, RulesetKind, Vec<String>)> = Vec::new();
    for f in &files {
        let scn = faultlab::scenario::load(f).unwrap();
        for cell in &scn.cells {
            for node in &cell.lab.nodes {
                for kind in [RulesetKind::Iptables, RulesetKind::Ip6tables] {
                    let texts: Vec<String> = node
                        .rulesets
                        .iter()
                        .filter(|rs| rs.kind == kind && !rs.text.trim().is_empty())
                        .map(|rs| rs.text.clone())
                        .collect();
                    if !texts.is_empty()
                        && !rulesets.iter().any(|(_, k, t)| *k == kind && *t == texts)
                    {
                        let origin = format!("{}::{}:{}", scn.name, cell.name, node.name);
                        rulesets.push((origin, kind, texts));
                    }
                }
            }
        }
    }
    assert!(
        rulesets.len() >= 5,
        "only {} iptables rulesets found",
        rulesets.len()
    );
    let ns = format!("fltest-iptnl-{}", std::process::id());
    faultlab::netns::create(&ns).unwrap();
    let result = std::panic::catch_unwind(|| {
        let (mut compared, mut moved) = (0, 0);
        for (origin, kind, texts) in &rulesets {
            let (restore, save, family, to) = match kind {
                RulesetKind::Iptables => (
                    "iptables-nft-restore",
                    "iptables-nft-save -c",
                    libc::NFPROTO_IPV4 as u8,
                    "127.0.0.1",
                ),
                _ => (
                    "ip6tables-nft-restore",
                    "ip6tables-nft-save -c",
                    libc::NFPROTO_IPV6 as u8,
                    "::1",
                ),
            };
            sh(&ns, "nft flush ruleset", None);
            for text in texts {
                sh(&ns, &format!("{restore} --noflush"), Some(text));
            }
            // Loopback traffic: INPUT/OUTPUT (and nat OUTPUT) counters move.
            let _ = Command::new("ip")
                .args([
                    "netns", "exec", &ns, "ping", "-c", "3", "-i", "0.01", "-W", "1", to,
                ])
                .output();
            let text_counters = iptables::parse(&sh(&ns, save, None)).unwrap();
            let netlink = iptables_netlink::read(&ns, family).unwrap();
            assert_eq!(netlink, text_counters, "{origin}");
            compared += 1;
            moved += usize::from(netlink.values().any(|v| *v > 0));
        }
        (compared, moved)
    });
    faultlab::netns::delete(&ns).unwrap();
    let (compared, moved) = result.unwrap();
    eprintln!("compared {compared} rulesets, {moved} with counters above zero");
    assert!(
        moved >= 3,
        "only {moved} rulesets counted the loopback traffic"
    );
}
