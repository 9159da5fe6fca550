//! Root-only: macvlan devices, planned MACs (explicit and derived) and `@node:dev`
//! neighbours, built from a scenario file; device kinds this kernel lacks (vrf, dummy)
//! fail with the typed missing-kind error the runner turns into a skip.
#![cfg(feature = "lab")]

use faultlab::model::{DeviceKind, LabPlan, MacvlanMode};
use faultlab::netns;
use faultlab::setup::{self, node::missing_feature, Lab};
use serde_json::Value;
use std::path::PathBuf;

/// a:eth0 (explicit MAC) --- b:eth0 (derived), with two macvlans on b:eth0. ARP is off
/// in both nodes (arp_ignore = 8 answers no request), so only the static neighbours,
/// written as `@node:dev`, let packets through.
const DEVICES: &str = r#"
name = "devices"
about = "macvlan, MACs and @node:dev neighbours"

[nodes.a]
sysctls = { "net.ipv4.conf.all.arp_ignore" = 8 }
neighbours = [
    "10.0.0.2 lladdr @b:mv0 dev eth0",
    "10.0.0.3 lladdr @b:mv1 dev eth0",
]

[nodes.b]
sysctls = { "net.ipv4.conf.all.arp_ignore" = 8 }
neighbours = ["10.0.0.1 lladdr @a:eth0 dev mv0"]

[nodes.b.devices.mv0]
kind = "macvlan"
link = "eth0"
addresses = ["10.0.0.2/24", "10.0.0.4/32"]

[nodes.b.devices.mv1]
kind = "macvlan"
link = "eth0"
mode = "private"
mac = "02:00:00:00:bb:02"
addresses = ["10.0.0.3/32"]

[[links]]
a = "a:eth0 10.0.0.1/24 mac=02:00:00:00:aa:01"
b = "b:eth0"

[[cells]]
name = "one"
expect = ["1 == 1"]
"#;

/// A scenario with one extra device of `kind` on node a.
fn with_device(kind: &str, extra: &str) -> String {
    format!(
        r#"
name = "kind"
about = "a device kind"
[nodes.a.devices.x0]
kind = "{kind}"
{extra}
[nodes.b]
[[links]]
a = "a:eth0 10.0.1.1/24"
b = "b:eth0 10.0.1.2/24"
[[cells]]
name = "one"
expect = ["1 == 1"]
"#
    )
}

/// Writes `text` as a scenario file in a fresh temp dir and loads it for a new run.
fn load(name: &str, text: &str) -> LabPlan {
    let dir: PathBuf = std::env::temp_dir().join(format!(
        "faultlab-lab-devices-{}-{name}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    let scn = faultlab::scenario::load(&path).unwrap_or_else(|e| panic!("{e}"));
    std::fs::remove_dir_all(&dir).unwrap();
    scn.cells[0].lab.for_run(&setup::new_run_id())
}

fn mine(run_id: &str) -> Vec<String> {
    netns::list()
        .into_iter()
        .filter(|n| n.starts_with(run_id))
        .collect()
}

/// Names of the root namespace's links, seen through this process's /sys.
fn root_links() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir("/sys/class/net")
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// The MAC of `dev` as the kernel has it, read inside `ns` with SIOCGIFHWADDR. (Not
/// /sys/class/net: sysfs shows the namespace it was mounted in, the root's, whatever
/// namespace the reading thread is in.)
fn mac_in(ns: &str, dev: &str) -> String {
    let dev = dev.to_string();
    netns::run_in(ns, move || {
        let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        for (d, s) in req.ifr_name.iter_mut().zip(dev.as_bytes()) {
            *d = *s as libc::c_char;
        }
        use std::os::fd::AsRawFd;
        let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFHWADDR, &mut req) };
        if rc != 0 {
            anyhow::bail!("SIOCGIFHWADDR {dev}: {}", std::io::Error::last_os_error());
        }
        let sa = unsafe { req.ifr_ifru.ifru_hwaddr };
        Ok(sa.sa_data[..6]
            .iter()
            .map(|b| format!("{:02x}", *b as u8))
            .collect::<Vec<_>>()
            .join(":"))
    })
    .unwrap()
}

fn ip_json(ns: &str, args: &[&str]) -> Value {
    let mut argv = vec!["ip", "-j"];
    argv.extend_from_slice(args);
    let out = netns::output_in(ns, &argv, None).unwrap();
    serde_json::from_slice(&out.stdout).unwrap()
}

fn ping(ns: &str, to: &str) -> bool {
    // A missing binary must not read as "unreachable" (the test asserts both ways).
    assert!(
        std::process::Command::new("ping")
            .arg("-V")
            .output()
            .is_ok(),
        "ping is not installed: run scripts/install-deps.sh (Debian package iputils-ping)"
    );
    netns::output_in(ns, &["ping", "-c", "1", "-W", "1", "-q", to], None).is_ok()
}

#[test]
fn macvlan_with_planned_macs_and_peer_neighbours() {
    let root_before = root_links();
    let plan = load("devices", DEVICES);
    let run_id = plan.run_id.clone();
    let b = plan.node("b").unwrap();
    let planned = |name: &str| {
        b.devices
            .iter()
            .find(|d| d.name == name)
            .and_then(|d| d.mac.clone())
            .unwrap()
    };
    let (a_eth0, b_eth0) = (
        plan.veths[0].a.mac.clone().unwrap(),
        plan.veths[0].b.mac.clone().unwrap(),
    );
    let (mv0, mv1) = (planned("mv0"), planned("mv1"));
    assert_eq!(a_eth0, "02:00:00:00:aa:01");
    assert_eq!(mv1, "02:00:00:00:bb:02");
    assert_eq!(b_eth0, faultlab::model::derived_mac("b", "eth0", 0));
    assert!(mv0.starts_with("02:") && mv0 != b_eth0, "{mv0}");
    assert!(matches!(
        b.devices[1].kind,
        DeviceKind::Macvlan {
            mode: MacvlanMode::Private,
            ..
        }
    ));

    let lab = Lab::build(&plan).unwrap_or_else(|e| panic!("{e:#}"));
    let ns_a = lab.netns_of("a").unwrap().to_string();
    let ns_b = lab.netns_of("b").unwrap().to_string();

    // The kernel has the planned MACs.
    assert_eq!(mac_in(&ns_a, "eth0"), a_eth0);
    assert_eq!(mac_in(&ns_b, "eth0"), b_eth0);
    assert_eq!(mac_in(&ns_b, "mv0"), mv0);
    assert_eq!(mac_in(&ns_b, "mv1"), mv1);
    let link = ip_json(&ns_b, &["-d", "link", "show", "mv1"]);
    assert_eq!(link[0]["address"], mv1.as_str());
    assert_eq!(link[0]["linkinfo"]["info_kind"], "macvlan");
    assert_eq!(link[0]["linkinfo"]["info_data"]["mode"], "private");
    assert_eq!(link[0]["link"], "eth0");

    // `@b:mv0` / `@b:mv1` / `@a:eth0` became those MACs, as permanent entries.
    let neigh = ip_json(&ns_a, &["neigh", "show", "dev", "eth0"]);
    let entry = |ip: &str| {
        neigh
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["dst"] == ip)
            .unwrap_or_else(|| panic!("no neighbour {ip}: {neigh}"))
            .clone()
    };
    assert_eq!(entry("10.0.0.2")["lladdr"], mv0.as_str());
    assert_eq!(entry("10.0.0.3")["lladdr"], mv1.as_str());
    assert_eq!(entry("10.0.0.2")["state"][0], "PERMANENT");
    let back = ip_json(&ns_b, &["neigh", "show", "dev", "mv0"]);
    assert_eq!(back[0]["lladdr"], a_eth0.as_str());

    // With ARP answering nothing, only the resolved static entries carry traffic:
    // 10.0.0.4 (on mv0 too, but no static entry in a) stays unreachable.
    assert!(ping(&ns_a, "10.0.0.2"), "ping via @b:mv0");
    assert!(ping(&ns_a, "10.0.0.3"), "ping via @b:mv1");
    assert!(!ping(&ns_a, "10.0.0.4"), "ARP should be off on this path");

    assert!(lab.teardown().is_empty());
    assert!(mine(&run_id).is_empty(), "{:?}", mine(&run_id));
    assert_eq!(
        root_links(),
        root_before,
        "the root namespace's links changed"
    );
}

/// Whether the running kernel's config sets `option` (`=y` or `=m`), when
/// /proc/config.gz is there to say.
fn kernel_has(option: &str) -> Option<bool> {
    let out = std::process::Command::new("zcat")
        .arg("/proc/config.gz")
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let text = String::from_utf8_lossy(&out.stdout);
    Some(text.lines().any(|l| {
        l.strip_prefix(option)
            .is_some_and(|rest| rest == "=y" || rest == "=m")
    }))
}

/// A kind the kernel lacks fails the build with the typed error and leaves nothing;
/// on a kernel that has it, the device is built with its planned MAC.
fn missing_or_built(kind: &str, extra: &str, kconfig: &str) {
    let plan = load(kind, &with_device(kind, extra));
    let run_id = plan.run_id.clone();
    let expected = kernel_has(kconfig);
    match Lab::build(&plan) {
        Ok(lab) => {
            assert_ne!(
                expected,
                Some(false),
                "{kconfig} is not set, yet {kind} was built"
            );
            let d = ip_json(lab.netns_of("a").unwrap(), &["-d", "link", "show", "x0"]);
            assert_eq!(d[0]["linkinfo"]["info_kind"], kind);
            let planned = plan.node("a").unwrap().devices[0].mac.clone().unwrap();
            assert_eq!(d[0]["address"], planned.as_str());
            assert!(lab.teardown().is_empty());
        }
        Err(e) => {
            let msg = format!("{e:#}");
            assert_ne!(expected, Some(true), "{kconfig} is set: {msg}");
            assert_eq!(
                missing_feature(&e),
                Some(format!("kernel has no `{kind}` devices ({kconfig})")),
                "{msg}"
            );
            assert!(
                msg.contains("node `a`") && msg.contains("device `x0`"),
                "{msg}"
            );
        }
    }
    assert!(mine(&run_id).is_empty(), "{:?}", mine(&run_id));
}

#[test]
fn vrf_device_or_the_missing_kind_error() {
    missing_or_built("vrf", "table = 10\nports = [\"eth0\"]", "CONFIG_NET_VRF");
}

#[test]
fn dummy_device_or_the_missing_kind_error() {
    missing_or_built("dummy", "", "CONFIG_DUMMY");
}

#[test]
fn other_build_errors_are_not_a_missing_kind() {
    // A failure that is not a missing kind (a port the node lacks, from a hand-edited
    // plan) is not turned into a skip.
    let mut plan = load("bridge", &with_device("bridge", "ports = [\"eth0\"]"));
    if let DeviceKind::Bridge { ports } = &mut plan.nodes[0].devices[0].kind {
        ports[0] = "nope0".into();
    }
    let e = Lab::build(&plan).unwrap_err();
    assert_eq!(missing_feature(&e), None, "{e:#}");
    assert!(mine(&plan.run_id).is_empty());
}
