//! Root-only: rule counters read over nfnetlink equal those of `nft -j list ruleset`.
#![cfg(feature = "lab")]

use faultlab::netns;
use faultlab::observe::{nft, nft_netlink};
use std::net::UdpSocket;

/// Deletes the namespace even when an assertion fails.
struct Ns(String);

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = netns::ns::delete(&self.0);
    }
}

const RULESET: &str = r#"
table inet filter {
  counter seen { }
  chain output {
    type filter hook output priority 0; policy accept;
    udp dport 9 counter comment "discard port"
    udp dport 9 counter name "seen"
    udp dport 7 counter comment "twice"
    udp dport 7 counter comment "twice"
    meta l4proto udp counter
    accept
  }
}
table ip filter {
  chain output {
    type filter hook output priority 10; policy accept;
    udp dport 9 counter comment "discard port"
  }
}
"#;

#[test]
fn netlink_counters_equal_nft_list_ruleset() {
    let ns = Ns(format!("fl-nftnl-{}", std::process::id()));
    netns::ns::create(&ns.0).unwrap();
    netns::with_netlink(&ns.0, |nl| nl.set_up("lo")).unwrap();
    netns::output_in(&ns.0, &["nft", "-f", "-"], Some(RULESET)).unwrap();
    netns::ns::run_in(&ns.0, || {
        let s = UdpSocket::bind("127.0.0.1:0")?;
        for _ in 0..5 {
            s.send_to(b"hello", "127.0.0.1:9")?;
        }
        s.send_to(b"hi", "127.0.0.1:7")?;
        Ok(())
    })
    .unwrap();

    let over_netlink = nft_netlink::read(&ns.0).unwrap();
    let out = netns::output_in(&ns.0, &["nft", "-j", "list", "ruleset"], None).unwrap();
    let from_nft = nft::parse(&String::from_utf8_lossy(&out.stdout)).unwrap();
    assert_eq!(over_netlink, from_nft);

    // The names cover comments, positions, clashing tables and named counters, and the
    // traffic was counted (so equal maps are not two empty ones).
    let v = |k: &str| over_netlink.get(k).copied();
    assert_eq!(v("filter@inet.output.discard_port.packets"), Some(5));
    assert_eq!(v("filter@ip.output.discard_port.packets"), Some(5));
    assert_eq!(v("filter.counter.seen.packets"), Some(5));
    assert_eq!(v("filter.output.rule3.packets"), Some(1));
    assert_eq!(v("filter.output.rule4.packets"), Some(1));
    assert_eq!(v("filter.output.rule5.packets"), Some(6));
    assert!(
        v("filter.output.rule2.packets").is_none(),
        "named-counter rule has no own counter"
    );
}
