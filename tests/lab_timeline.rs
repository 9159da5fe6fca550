//! Root tests of timeline cells: every step kind, run through the real runner on a
//! small lab (a — r — b, r routes and tracks connections).
#![cfg(feature = "lab")]

use faultlab::runner::{self, RunOptions};
use faultlab::verdict::{CellResult, Outcome};

const LAB: &str = r#"
name = "timeline"
about = "a - r - b"

[nodes.a]
routes = ["default via 10.0.1.1"]
[nodes.b]
routes = ["default via 10.0.2.1"]
[nodes.r]
sysctls = { "net.ipv4.ip_forward" = 1 }
rulesets.nft = """
table inet t {
  chain fw {
    type filter hook forward priority 0;
    ct state new counter comment "new"
  }
}
"""

[[links]]
a = "a:eth0 10.0.1.2/24"
b = "r:ra 10.0.1.1/24"

[[links]]
a = "b:eth0 10.0.2.2/24"
b = "r:rb 10.0.2.1/24"
"#;

fn run(steps_and_cells: &str) -> Vec<CellResult> {
    run_file("timeline.toml", &format!("{LAB}\n{steps_and_cells}"))
}

/// Loads a scenario text and runs every cell through the runner.
fn run_file(file: &str, text: &str) -> Vec<CellResult> {
    let _ = faultlab::setup::signals::install();
    let scn = faultlab::scenario::parse(file, text).unwrap_or_else(|e| panic!("{e}"));
    let opts = RunOptions {
        cell: None,
        repeat: 1,
        artifacts: std::env::temp_dir().join("faultlab-timeline-test"),
        slow: 1.0,
    };
    let result = runner::run_scenario(&scn, &opts, &faultlab::setup::new_run_id());
    for c in &result.cells {
        eprintln!("{} {:?} {:?}", c.name, c.outcome, c.reason);
    }
    result.cells
}

fn outcome(cells: &[CellResult], name: &str) -> Outcome {
    cells.iter().find(|c| c.name == name).unwrap().outcome
}

fn obs(cells: &[CellResult], cell: &str, name: &str) -> f64 {
    let c = cells.iter().find(|c| c.name == cell).unwrap();
    *c.observations
        .get(name)
        .unwrap_or_else(|| panic!("{cell}: no observation {name}"))
}

#[test]
fn conntrack_steps_insert_query_delete_and_flush() {
    let cells = run(r#"
[[traffic]]
kind = "conntrack"
name = "ins1"
node = "r"
action = "insert"
entry = { proto = "udp", src = "10.0.1.2", dst = "10.0.2.2", sport = 5000, dport = 53, reply_src = "10.0.2.9", timeout = 300, status = "ASSURED,SEEN_REPLY", zone = 7, mark = 42 }

[[traffic]]
kind = "conntrack"
name = "ins2"
node = "r"
action = "insert"
entry = { proto = "tcp", src = "10.0.1.2", dst = "10.0.2.2", sport = 4000, dport = 80, state = "ESTABLISHED" }

[[traffic]]
kind = "checkpoint"
name = "full"

[[traffic]]
kind = "conntrack"
name = "del"
node = "r"
action = "delete"
filter = "proto=udp zone=7"

[[traffic]]
kind = "checkpoint"
name = "deleted"

[[traffic]]
kind = "conntrack"
name = "flush"
node = "r"
action = "flush"

[[cells]]
name = "table"
expect = [
  "at.full.ct.r.count == 2",
  "at.full.ct.r.count(proto=udp dport=53 reply.src=10.0.2.9) == 1",
  "at.full.ct.r.entry(proto=udp dport=53).mark == 42",
  "at.full.ct.r.entry(proto=udp dport=53).zone == 7",
  "at.full.ct.r.entry(proto=udp dport=53).status.ASSURED == 1",
  "at.full.ct.r.entry(proto=udp dport=53).timeout > 200",
  "at.full.ct.r.entry(proto=tcp dport=80).state.ESTABLISHED == 1",
  "at.full.ct.r.count(status=ASSURED) == 1",
  "del.deleted == 1",
  "at.deleted.ct.r.count == 1",
  "flush.entries_after == 0",
  "ct.r.count == 0",
]
"#);
    assert_eq!(outcome(&cells, "table"), Outcome::Pass);
}

#[test]
fn configure_changes_routes_rulesets_and_links_mid_run() {
    let cells = run(r#"
[[traffic]]
kind = "ping"
name = "before"
from = "a"
to = "10.0.2.2"
count = 3
interval_ms = 10

[[traffic]]
kind = "configure"
name = "cut"
node = "a"
routes = { delete = ["default via 10.0.1.1"] }

[[traffic]]
kind = "ping"
name = "cut_off"
from = "a"
to = "10.0.2.2"
count = 2
interval_ms = 10
timeout_ms = 200

[[traffic]]
kind = "configure"
name = "restore"
node = "a"
routes = { add = ["10.0.2.0/24 via 10.0.1.1"] }

[[traffic]]
kind = "configure"
name = "drop"
node = "r"
load.nft = """
table inet d {
  chain fw {
    type filter hook forward priority 10;
    icmp type echo-request counter drop comment "dropped"
  }
}
"""

[[traffic]]
kind = "ping"
name = "dropped"
from = "a"
to = "10.0.2.2"
count = 2
interval_ms = 10
timeout_ms = 200

[[traffic]]
kind = "checkpoint"
name = "dropping"

[[traffic]]
kind = "configure"
name = "undo"
node = "r"
flush = ["nft"]
links = { rb = { mtu = 1400 } }

[[traffic]]
kind = "ping"
name = "after"
from = "a"
to = "10.0.2.2"
count = 2
interval_ms = 10

[[cells]]
name = "mid-run"
expect = [
  "before.received == 3",
  "cut_off.received == 0",
  "dropped.received == 0",
  "at.dropping.nft.r.d.fw.dropped.packets == 2",
  "not exists(nft.r.d.fw.dropped.packets)",
  "after.received == 2",
]
"#);
    assert_eq!(outcome(&cells, "mid-run"), Outcome::Pass);
}

#[test]
fn wait_background_join_sample_and_checkpoint_deltas() {
    let cells = run(r#"
[[traffic]]
kind = "udp"
name = "ab"
background = true
from = "a"
to = "10.0.2.2"
receiver = "b"
count = 300
interval_ms = 2
sample = ["ct.r.count", "link.r.ra.rx_packets"]
sample_every_ms = 20

[[traffic]]
kind = "udp"
name = "ba"
background = true
from = "b"
to = "10.0.1.2"
port = 9001
receiver = "a"
count = 300
interval_ms = 2

[[traffic]]
kind = "wait"
name = "seen"
until = "ct.r.count(proto=udp dport=9000) >= 1 and ct.r.count(proto=udp dport=9001) >= 1"
timeout_ms = 3000

[[traffic]]
kind = "checkpoint"
name = "mid"

[[traffic]]
kind = "join"
steps = ["ab"]

[[traffic]]
kind = "checkpoint"
name = "end"

[[cells]]
name = "concurrent"
expect = [
  "ab.received == 300",
  "ba.received == 300",
  "seen.waited_ms < 3000",
  "ab.sample.max.ct.r.count >= 2",
  "ab.sample.count >= 3",
  "ab.sample.max.link.r.ra.rx_packets >= 300",
  "ab.sample.min.link.r.ra.rx_packets < 300",
  "at.mid.nft.r.t.fw.new.packets >= 2",
  "at.mid.link.r.ra.rx_packets > 0",
  "at.end.link.r.ra.rx_packets - at.mid.link.r.ra.rx_packets > 0",
  "at.end.link.r.ra.rx_packets <= link.r.ra.rx_packets",
]

[[cells]]
name = "timeout-fails"
traffic.seen = { until = "ct.r.count(proto=tcp) >= 1", timeout_ms = 200 }
expect = ["ab.sent > 0"]

[[cells]]
name = "timeout-inconclusive"
traffic.seen = { until = "ct.r.count(proto=tcp) >= 1", timeout_ms = 200, on_timeout = "inconclusive" }
expect = ["ab.sent > 0"]

[[cells]]
name = "timeout-recorded"
traffic.seen = { until = "ct.r.count(proto=tcp) >= 1", timeout_ms = 200, on_timeout = "record" }
expect = ["seen.held == 0", "seen.waited_ms >= 200", "ab.received == 300"]

# No TCP ever flows: the 20 s wait gives up as soon as the UDP flow is tracked.
[[cells]]
name = "gives-up-recorded"
traffic.seen = { until = "ct.r.count(proto=tcp) >= 1", give_up = "ct.r.count(proto=udp dport=9000) >= 1", timeout_ms = 20000, on_timeout = "record" }
expect = ["seen.held == 0", "seen.gave_up == 1", "seen.waited_ms < 3000", "ab.received == 300"]

[[cells]]
name = "gives-up-fails"
traffic.seen = { until = "ct.r.count(proto=tcp) >= 1", give_up = "ct.r.count(proto=udp dport=9000) >= 1", timeout_ms = 20000 }
expect = ["ab.sent > 0"]
"#);
    assert_eq!(outcome(&cells, "concurrent"), Outcome::Pass);
    assert_eq!(outcome(&cells, "timeout-fails"), Outcome::Fail);
    assert_eq!(
        outcome(&cells, "timeout-inconclusive"),
        Outcome::Inconclusive
    );
    let c = cells.iter().find(|c| c.name == "timeout-fails").unwrap();
    assert!(
        c.reason
            .as_deref()
            .unwrap_or("")
            .contains("did not hold within 200 ms"),
        "{:?}",
        c.reason
    );
    assert_eq!(outcome(&cells, "gives-up-recorded"), Outcome::Pass);
    assert_eq!(outcome(&cells, "gives-up-fails"), Outcome::Fail);
    let c = cells.iter().find(|c| c.name == "gives-up-fails").unwrap();
    let reason = c.reason.as_deref().unwrap_or("");
    assert!(
        reason.contains("gave up after") && reason.contains("dport=9000"),
        "{reason}"
    );
    assert!(c.duration_ms < 10_000, "the 20 s cap was waited out");
    assert_eq!(obs(&cells, "concurrent", "seen.gave_up"), 0.0);
    assert!(obs(&cells, "concurrent", "seen.polls") >= 1.0);
    assert_eq!(obs(&cells, "concurrent", "seen.held"), 1.0);
    // A recorded timeout lets the timeline run on: its later steps' metrics exist.
    assert_eq!(outcome(&cells, "timeout-recorded"), Outcome::Pass);
}

#[test]
fn cells_add_skip_and_replace_steps_processes_and_routes() {
    let cells = run(r#"
[[traffic]]
kind = "ping"
name = "p"
from = "a"
to = "10.0.2.2"
count = 2
interval_ms = 10
timeout_ms = 300

[[cells]]
name = "no-route"
remove_routes = { a = ["default"] }
expect = ["p.received == 0"]

[[cells]]
name = "replaced-route"
routes = { a = ["10.0.2.0/24 via 10.0.1.1"] }
expect = ["p.received == 2"]

[[cells]]
name = "extra-step"
traffic.p = { skip = true }
expect = ["q.received == 1", "not exists(p.sent)"]
[[cells.extra_steps]]
kind = "sleep"
name = "nap"
ms = 50
[[cells.extra_steps]]
kind = "ping"
name = "q"
before = "nap"
from = "b"
to = "10.0.1.2"
count = 1
"#);
    for c in ["no-route", "replaced-route", "extra-step"] {
        assert_eq!(outcome(&cells, c), Outcome::Pass, "{c}");
    }
}

/// A device kind the kernel lacks makes the cell a skip with the reason, not a failure.
#[test]
fn a_missing_device_kind_is_a_skip() {
    let kernel_has_vrf = std::path::Path::new("/proc/config.gz").exists()
        && std::process::Command::new("sh")
            .args([
                "-c",
                "zcat /proc/config.gz | grep -qE '^CONFIG_NET_VRF=(y|m)'",
            ])
            .status()
            .is_ok_and(|s| s.success());
    let text = r#"
name = "vrf"
about = "a vrf device"
[nodes.a.devices.blue]
kind = "vrf"
table = 10
[nodes.b]
[[links]]
a = "a:eth0 192.0.2.1/24"
b = "b:eth0 192.0.2.2/24"
[[traffic]]
kind = "ping"
from = "b"
to = "192.0.2.1"
count = 1
[[cells]]
name = "c"
expect = ["ping.received == 1"]
"#;
    let cells = run_file("vrf.toml", text);
    let c = &cells[0];
    if kernel_has_vrf {
        assert_eq!(c.outcome, Outcome::Pass, "{:?}", c.reason);
    } else {
        assert_eq!(c.outcome, Outcome::Skip, "{:?}", c.reason);
        assert!(
            c.reason.as_deref().unwrap().contains("CONFIG_NET_VRF"),
            "{:?}",
            c.reason
        );
    }
}

#[test]
fn until_ends_a_traffic_step_once_its_live_condition_holds() {
    let cells = run(r#"
[[traffic]]
kind = "udp"
name = "flood"
from = "a"
to = "10.0.2.2"
port = 9
count = 5000
interval_ms = 1
until = "link.r.ra.rx_packets >= 40"

[[traffic]]
kind = "ping"
name = "pings"
from = "a"
to = "10.0.2.2"
count = 2000
interval_ms = 1
until = "link.b.eth0.rx_packets >= 40"

# Never holds: the count stays the cap.
[[traffic]]
kind = "udp"
name = "capped"
from = "a"
to = "10.0.2.2"
port = 9
count = 30
until = "link.r.ra.rx_packets >= 1000000"

[[cells]]
name = "stops"
expect = ["flood.sent > 0"]
"#);
    assert_eq!(outcome(&cells, "stops"), Outcome::Pass);
    // Read at most every 25 ms while one datagram leaves per ms: the step stops within
    // a few reads of the condition, far below its 5000. ra's rx_packets also counts a's
    // ARP and IPv6 router/neighbour solicitations and MLD reports (CI saw 38 datagrams
    // make 40 packets), so the floor leaves room for them.
    let flood = obs(&cells, "stops", "flood.sent");
    assert!((25.0..1000.0).contains(&flood), "flood.sent = {flood}");
    assert_eq!(obs(&cells, "stops", "flood.until_held"), 1.0);
    let pings = obs(&cells, "stops", "pings.sent");
    assert!(pings < 1000.0, "pings.sent = {pings}");
    assert_eq!(obs(&cells, "stops", "pings.received"), pings);
    assert_eq!(obs(&cells, "stops", "pings.until_held"), 1.0);
    assert_eq!(obs(&cells, "stops", "capped.sent"), 30.0);
    assert_eq!(obs(&cells, "stops", "capped.until_held"), 0.0);
}

#[test]
fn until_gives_up_the_connects_in_flight_of_tcp_and_churn_steps() {
    // Nothing answers 10.0.2.99 (no host has it; r's neighbour lookup fails): every
    // SYN is counted in r's "new" rule and lost, so a connect only ends at its cap.
    let cells = run(r#"
[[traffic]]
kind = "tcp"
name = "lost"
from = "a"
to = "10.0.2.99"
port = 5201
connections = 3
connect_timeout_ms = 20000
until = "nft.r.t.fw.new.packets >= 1"

[[traffic]]
kind = "churn"
name = "burst"
from = "a"
to = "10.0.2.99"
port = 5202
connections = 50
in_flight = 10
connect_timeout_ms = 20000
until = "nft.r.t.fw.new.packets >= 3"

[[cells]]
name = "given-up"
expect = ["lost.connected == 0", "burst.connected == 0"]
"#);
    assert_eq!(outcome(&cells, "given-up"), Outcome::Pass);
    // The first connect was given up once its SYN was seen; no second one started.
    assert_eq!(obs(&cells, "given-up", "lost.attempted"), 1.0);
    assert_eq!(obs(&cells, "given-up", "lost.given_up"), 1.0);
    assert_eq!(obs(&cells, "given-up", "lost.failed"), 1.0);
    assert_eq!(obs(&cells, "given-up", "lost.until_held"), 1.0);
    // The burst's ten in flight were given up together.
    let attempted = obs(&cells, "given-up", "burst.attempted");
    assert!(
        (3.0..50.0).contains(&attempted),
        "burst.attempted = {attempted}"
    );
    assert_eq!(obs(&cells, "given-up", "burst.given_up"), attempted);
    assert_eq!(obs(&cells, "given-up", "burst.until_held"), 1.0);
    let ms = cells[0].duration_ms;
    assert!(
        ms < 10_000,
        "the cell took {ms} ms: a 20 s connect cap was waited out"
    );
}

#[test]
fn a_join_with_stop_ends_the_holds_it_waits_for() {
    let cells = run(r#"
[[traffic]]
kind = "tcp"
name = "held"
background = true
from = "a"
to = "10.0.2.2"
port = 5201
server = "b"
connections = 1
bytes = 10
hold_ms = 60000

[[traffic]]
kind = "wait"
name = "up"
until = "ct.r.count(proto=tcp dport=5201 state=ESTABLISHED) == 1"
timeout_ms = 5000

[[traffic]]
kind = "join"
stop = true

[[cells]]
name = "stopped"
expect = ["held.connected == 1", "held.completed == 1", "up.held == 1"]
"#);
    assert_eq!(outcome(&cells, "stopped"), Outcome::Pass);
    // The hold's cap is 60 s; the join ended it once the connection was up.
    let ms = cells[0].duration_ms;
    assert!(
        ms < 30_000,
        "the cell took {ms} ms: the hold was waited out"
    );
}

/// `exec` runs a program in the node's namespace: its exit status, output lines and a
/// numeric output are metrics; a wrong status fails the cell (or is recorded); a
/// program past its timeout is killed. Node `commands` run while the lab is built.
#[test]
fn exec_steps_and_node_commands_run_inside_the_node() {
    let cells = run(r#"
[[traffic]]
kind = "exec"
name = "links"
node = "r"
run = "sh -c 'ls /sys/class/net | wc -l'"

[[traffic]]
kind = "exec"
name = "status"
node = "r"
run = "sh -c 'echo one; echo two; exit 3'"
expect_exit = 3

[[cells]]
name = "metrics"
extra_commands = { r = ["ip link add dummyish type bridge"] }
# lo, ra, rb and the bridge the command added, seen from inside r only.
expect = ["links.value == 4", "links.exit_code == 0", "status.exit_code == 3", "status.stdout_lines == 2"]

[[cells]]
name = "wrong-status-fails"
traffic.status = { expect_exit = 0 }
expect = ["links.value >= 3"]

[[cells]]
name = "wrong-status-recorded"
traffic.status = { expect_exit = 0, on_failure = "record" }
expect = ["status.exit_code == 3"]

[[cells]]
name = "killed-at-the-timeout"
traffic.status = { run = "sh -c 'sleep 30 & sleep 30'", timeout_ms = 300 }
expect = ["links.value >= 3"]

[[cells]]
name = "a-failing-command-fails-the-build"
extra_commands = { r = ["sh -c 'echo no such qdisc >&2; exit 2'"] }
expect = ["links.value >= 3"]
"#);
    assert_eq!(outcome(&cells, "metrics"), Outcome::Pass);
    assert_eq!(obs(&cells, "metrics", "links.value"), 4.0);
    assert_eq!(outcome(&cells, "wrong-status-fails"), Outcome::Fail);
    let reason = |name: &str| {
        let c = cells.iter().find(|c| c.name == name).unwrap();
        c.reason.clone().unwrap_or_default()
    };
    assert!(
        reason("wrong-status-fails").contains("exited 3, not 0: one / two"),
        "{}",
        reason("wrong-status-fails")
    );
    assert_eq!(outcome(&cells, "wrong-status-recorded"), Outcome::Pass);
    assert_eq!(outcome(&cells, "killed-at-the-timeout"), Outcome::Fail);
    assert!(
        reason("killed-at-the-timeout").contains("did not exit within 300 ms"),
        "{}",
        reason("killed-at-the-timeout")
    );
    let killed = cells
        .iter()
        .find(|c| c.name == "killed-at-the-timeout")
        .unwrap();
    assert!(killed.duration_ms < 10_000, "the sleeps were waited out");
    assert_eq!(
        outcome(&cells, "a-failing-command-fails-the-build"),
        Outcome::Fail
    );
    assert!(
        reason("a-failing-command-fails-the-build").contains("no such qdisc"),
        "{}",
        reason("a-failing-command-fails-the-build")
    );
    // The killed group left no sleeper behind.
    let sleepers: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.trim_end() == "sleep 30")
        .collect();
    assert!(sleepers.is_empty(), "left behind: {sleepers:?}");
}
