//! Each topology template, built for real: a reachability matrix (IPv4 and
//! IPv6), NAT seen from the far side, service traffic spread over every
//! backend, and nothing left behind. Root only.
#![cfg(feature = "lab")]

use faultlab::runner::{self, RunOptions};
use faultlab::verdict::Outcome;

fn run(text: &str) {
    let file = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scenarios/inline-template-test.toml"
    );
    let scn = faultlab::scenario::parse(file, text).unwrap_or_else(|e| panic!("{e}"));
    let opts = RunOptions {
        cell: None,
        repeat: 1,
        artifacts: std::env::temp_dir().join("faultlab-template-tests"),
        slow: 1.0,
    };
    let run_id = faultlab::setup::new_run_id();
    let result = runner::run_scenario(&scn, &opts, &run_id);
    let table = faultlab::report::table(std::slice::from_ref(&result), false);
    assert!(
        result.cells.iter().all(|c| c.outcome == Outcome::Pass),
        "{table}"
    );
    let left: Vec<String> = faultlab::netns::list()
        .into_iter()
        .filter(|n| n.starts_with(&run_id))
        .collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
}

#[test]
fn docker_reachability_nat_and_published_port() {
    run(r#"
name = "docker-template"
about = "docker template reachability"
[template]
name = "docker"
params = { containers = 2, published_port = 8080, container_port = 8080 }

[[captures]]
name = "remote"
node = "remote"
dev = "eth0"
count = { from_host = "tcp and src host 203.0.113.1", from_containers = "src net 172.17.0.0/16", from_host6 = "tcp and src host 2001:db8:113::1", from_containers6 = "src net fd00:17::/64" }

[[traffic]]
name = "c1_remote4"
kind = "tcp"
from = "c1"
to = "203.0.113.2"
server = "remote"
port = 9001
connections = 2
bytes = 1000

[[traffic]]
name = "c1_remote6"
kind = "tcp"
from = "c1"
to = "2001:db8:113::2"
server = "remote"
port = 9002
connections = 2
bytes = 1000

[[traffic]]
name = "c1_c2"
kind = "ping"
from = "c1"
to = "172.17.0.3"
count = 3
interval_ms = 10

[[traffic]]
name = "c1_c2_v6"
kind = "ping"
from = "c1"
to = "fd00:17::3"
count = 3
interval_ms = 10

[[traffic]]
name = "published"
kind = "tcp"
from = "remote"
to = "203.0.113.1"
server = "c1"
port = 8080
connections = 2
bytes = 1000

[[cells]]
name = "matrix"
expect = [
  "c1_remote4.completed == 2", "c1_remote6.completed == 2",
  "c1_c2.received == 3", "c1_c2_v6.received == 3",
  "published.completed == 2",
  "capture.remote.from_host > 0", "capture.remote.from_containers == 0",
  "capture.remote.from_host6 > 0", "capture.remote.from_containers6 == 0",
  "iptables.host.nat.POSTROUTING.masquerade.packets >= 2",
  "iptables.host.nat.DOCKER.published.packets >= 2",
]
"#);
}

#[test]
fn openstack_qbr_reachability_and_snat() {
    run(r#"
name = "qbr-template"
about = "openstack-qbr template reachability"
[template]
name = "openstack-qbr"
params = { vms = 2 }

[[captures]]
name = "dns"
node = "dns"
dev = "eth0"
count = { from_router = "udp and src host 198.51.100.1", from_vms = "src net 10.0.0.0/24", from_vm6 = "udp and src host fd00:10::11" }

[[traffic]]
name = "dns4"
kind = "dns"
from = "vm1"
to = "198.51.100.53"
server = "dns"
lookups = 3
timeout_ms = 1000

[[traffic]]
name = "dns6"
kind = "dns"
from = "vm1"
to = "2001:db8:51::53"
server = "dns"
lookups = 3
timeout_ms = 1000

[[traffic]]
name = "vm1_vm2"
kind = "tcp"
from = "vm1"
to = "10.0.0.12"
server = "vm2"
connections = 2
bytes = 1000

[[traffic]]
name = "vm1_vm2_v6"
kind = "tcp"
from = "vm1"
to = "fd00:10::12"
server = "vm2"
connections = 2
bytes = 1000

[[cells]]
name = "matrix"
expect = [
  "dns4.ok == 3", "dns6.ok == 3",
  "vm1_vm2.completed == 2", "vm1_vm2_v6.completed == 2",
  "capture.dns.from_router > 0", "capture.dns.from_vms == 0", "capture.dns.from_vm6 > 0",
  "iptables.router.nat.POSTROUTING.snat.packets >= 1",
  "iptables.compute.filter.neutron-sg.sg-egress.packets > 0",
]

[[cells]]
name = "sg-blocks-other-groups"
about = "without the remote-group rule, a VM cannot open connections to another VM"
extra_rulesets.compute.iptables = """
*filter
-I neutron-sg 4 -s 10.0.0.0/24 -m physdev --physdev-out tap2 -m state --state NEW -m comment --comment deny-vm2 -j DROP
COMMIT
"""
traffic.vm1_vm2 = { connections = 1, connect_timeout_ms = 300 }
expect = ["vm1_vm2.failed == 1", "iptables.compute.filter.neutron-sg.deny-vm2.packets >= 1", "dns4.ok == 3"]
"#);
}

#[test]
fn calico_proxy_arp_vxlan_and_service_spread() {
    run(r#"
name = "calico-template"
about = "calico template reachability and service spread"
[template]
name = "calico"
params = { pods = 2, backends = 2 }

[[traffic]]
name = "pod_backend"
kind = "tcp"
from = "pod1"
to = "10.244.2.2"
server = "backend2"
connections = 2
bytes = 1000

[[traffic]]
name = "pod_pod"
kind = "ping"
from = "pod1"
to = "10.244.1.2"
count = 3
interval_ms = 10

[[traffic]]
name = "service"
kind = "multiflow"
from = "pod1"
to = "10.96.0.10"
port = 53
receiver = "backend1"
flows = 64
packets_per_flow = 2

[[cells]]
name = "matrix"
expect = [
  "pod_backend.completed == 2",
  "pod_pod.received == 3",
  "service.dead_fraction > 0.1", "service.dead_fraction < 0.9",
  "link.backend1.eth0.rx_packets > 20", "link.backend2.eth0.rx_packets > 20",
  "iptables.node1.nat.KUBE-SVC.backend1.packets > 5",
  "iptables.node1.nat.KUBE-SVC.backend2.packets > 5",
]
"#);
}
