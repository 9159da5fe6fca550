//! Speed of the same-5-tuple race sender (issue 4), side by side in one run (root):
//!
//! 1. faultlab: `faultlab::traffic::run` with a `TrafficSpec::Race` parsed from TOML
//!    (mode raw, proto udp, threads 2, gap_ms 0, payload 32): the public generator,
//!    per-iteration spinning barrier included. Its `pps` metric is sent packets over
//!    the send phase (thread start, setns and socket creation included).
//! 2. C: `benches/c/race_sendto.c`, compiled here with `cc -O2` into target/: one
//!    IPPROTO_RAW socket, one thread, a tight `sendto` loop of packets of the same size
//!    (60-byte IPv4/UDP), the source port moving on every 2 packets so the router
//!    creates one conntrack entry per 2 packets as in a race iteration. Run in the same
//!    sending namespace toward the same destination; it times its own loop.
//! 3. Fire rate: clashres per iteration of the generator's runs, from the router's
//!    /proc/net/stat/nf_conntrack (`snapshot_node` / `observations_delta` around each run).
//!
//! gen -- mid (forwards, nft `ct state` rule) -- sink (drops UDP in prerouting). With
//! veth the whole path (mid's conntrack included) runs in the sender's syscall on the
//! sender's CPU, so pps is the send path's rate. Not criterion's loop: on a shared
//! 2-CPU machine the load drifts between variants (see benches/fixcost.rs), so the two
//! senders alternate in interleaved rounds (the starting one alternates) and medians
//! are reported. Every round uses a fresh destination port, so every iteration races
//! for a new conntrack entry. Writes results/bench/race.json.
//!
//! Size: 11 rounds of 8,000 iterations (16,000 packets per sender per round); every
//! flow stays in mid's table for the UDP timeout (30 s), so both senders together add
//! 176,000 entries, below the default nf_conntrack_max (262,144): a full table would
//! drop packets and skew both rates. `FAULTLAB_BENCH_RACE_ITERATIONS` and
//! `FAULTLAB_BENCH_RACE_ROUNDS` override the size.

#[path = "common/mod.rs"]
mod common;

use anyhow::{bail, Context, Result};
use common::*;
use faultlab::observe::{observations_delta, snapshot_node, NodeCounters};
use faultlab::setup::{new_run_id, Lab};
use faultlab::traffic::{TrafficContext, TrafficSpec};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

const SRC: &str = "10.5.0.1";
const DST: &str = "10.6.0.2";
const PAYLOAD: usize = 32;
const SPORT: u16 = 1024;
const THREADS: usize = 2;

fn plan() -> faultlab::model::LabPlan {
    plan_from_toml(&format!(
        r#"
name = "bench"
about = "gen - mid (ct state) - sink"
[nodes.gen]
routes = ["default via 10.5.0.2"]
[nodes.mid]
sysctls = {{ "net.ipv4.ip_forward" = 1 }}
rulesets.nft = '''
table inet filter {{
  chain forward {{
    type filter hook forward priority filter; policy accept;
    ct state invalid counter drop
    ct state new,established counter accept
  }}
}}
'''
[nodes.sink]
routes = ["default via 10.6.0.1"]
rulesets.nft = '''
table ip sink {{
  chain pre {{ type filter hook prerouting priority -300; policy accept; udp dport 1-65535 counter drop; }}
}}
'''
[[links]]
a = "gen:eth0 {SRC}/24"
b = "mid:eth0 10.5.0.2/24"
[[links]]
a = "mid:eth1 10.6.0.1/24"
b = "sink:eth0 {DST}/24"
[[cells]]
name = "c"
expect = ["1 == 1"]
"#
    ))
}

/// Compiles the C sender into target/ (once per run).
fn compile_c() -> Result<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let src = root.join("benches/c/race_sendto.c");
    let out = root.join("target/race_sendto");
    let st = std::process::Command::new("cc")
        .args(["-O2", "-Wall", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .context("running cc")?;
    if !st.success() {
        bail!("cc -O2 {} failed: {st}", src.display());
    }
    Ok(out)
}

fn race_spec(iterations: u32, dport: u16) -> TrafficSpec {
    let text = format!(
        r#"
kind = "race"
from = "gen"
to = "{DST}"
dport = {dport}
sport = {SPORT}
proto = "udp"
mode = "raw"
threads = {THREADS}
iterations = {iterations}
payload = {PAYLOAD}
gap_ms = 0
"#
    );
    toml::from_str(&text).unwrap_or_else(|e| panic!("race spec: {e}"))
}

struct CRun {
    sent: u64,
    errors: u64,
    pps: f64,
}

fn run_c(bin: &std::path::Path, ns: &str, dport: u16, count: u64) -> Result<CRun> {
    let argv = [
        bin.to_string_lossy().into_owned(),
        SRC.into(),
        DST.into(),
        SPORT.to_string(),
        dport.to_string(),
        PAYLOAD.to_string(),
        count.to_string(),
        THREADS.to_string(),
    ];
    let out = faultlab::netns::output_in(ns, &argv, None)?;
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |k: &str| -> Result<f64> {
        text.split_whitespace()
            .find_map(|w| w.strip_prefix(k)?.strip_prefix('='))
            .with_context(|| format!("no {k} in `{}`", text.trim()))?
            .parse::<f64>()
            .with_context(|| format!("bad {k} in `{}`", text.trim()))
    };
    Ok(CRun {
        sent: field("sent")? as u64,
        errors: field("errors")? as u64,
        pps: field("pps")?,
    })
}

fn snap(ns: &str) -> NodeCounters {
    snapshot_node(ns, &[]).unwrap_or_else(|e| panic!("snapshot {ns}: {e:#}"))
}

/// conntrack.mid.* and link.sink.eth0.rx_packets between two pairs of snapshots.
fn deltas(before: &(NodeCounters, NodeCounters), after: &(NodeCounters, NodeCounters)) -> Ct {
    let m = observations_delta("mid", &before.0, &after.0);
    let s = observations_delta("sink", &before.1, &after.1);
    let g = |k: &str| m.get(&format!("conntrack.mid.{k}")).copied().unwrap_or(0.0);
    Ct {
        clashres: g("clashres"),
        early_drop: g("early_drop"),
        insert_failed: g("insert_failed"),
        drop: g("drop"),
        delivered: s.get("link.sink.eth0.rx_packets").copied().unwrap_or(0.0),
    }
}

#[derive(Default, Clone, Copy)]
struct Ct {
    clashres: f64,
    early_drop: f64,
    insert_failed: f64,
    drop: f64,
    delivered: f64,
}

impl Ct {
    fn add(&mut self, o: &Ct) {
        self.clashres += o.clashres;
        self.early_drop += o.early_drop;
        self.insert_failed += o.insert_failed;
        self.drop += o.drop;
        self.delivered += o.delivered;
    }
    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "clashres": self.clashres, "early_drop": self.early_drop,
            "insert_failed": self.insert_failed, "drop": self.drop,
            "delivered_at_sink": self.delivered,
        })
    }
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    s[s.len() / 2]
}

fn env_or(key: &str, default: u32) -> u32 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn bench() -> Result<()> {
    let iterations = env_or("FAULTLAB_BENCH_RACE_ITERATIONS", 8_000);
    let rounds = env_or("FAULTLAB_BENCH_RACE_ROUNDS", 11) as usize;
    let packets = u64::from(iterations) * THREADS as u64;
    let bin = compile_c()?;
    let plan = plan().for_run(&new_run_id());
    let lab = Lab::build(&plan)?;
    let node = |n: &str| lab.netns_of(n).unwrap().to_string();
    let (gen, mid, sink) = (node("gen"), node("mid"), node("sink"));
    let netns: BTreeMap<String, String> = [("gen", &gen), ("mid", &mid), ("sink", &sink)]
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.clone()))
        .collect();
    let artifacts = std::env::temp_dir().join(format!("faultlab-bench-race-{}", plan.run_id));
    let interrupted = || false;
    let ctx = TrafficContext {
        netns: &netns,
        artifacts: &artifacts,
        interrupted: &interrupted,
        enough: &faultlab::traffic::never,
        slow: 1.0,
    };
    let both = || (snap(&mid), snap(&sink));
    // Warm-up: neighbour entries, page cache of the C binary, conntrack module paths.
    faultlab::traffic::run(&race_spec(500, 999), &ctx)?;
    run_c(&bin, &gen, 998, 2000)?;

    let (mut f_pps, mut f_wall, mut c_pps) = (Vec::new(), Vec::new(), Vec::new());
    let (mut f_ct, mut c_ct) = (Ct::default(), Ct::default());
    let (mut f_sent, mut f_err, mut f_iter, mut c_sent, mut c_err) = (0.0, 0.0, 0.0, 0, 0);
    let mut per_round = Vec::new();
    let steps = common::Steps::new(rounds, "rounds");
    for r in 0..rounds {
        let id = format!("round {}", r + 1);
        let round_started = steps.started(&id);
        let mut row = serde_json::Map::new();
        for k in 0..2 {
            // Fresh destination ports every round and sender: every flow is new.
            if (r + k) % 2 == 0 {
                let spec = race_spec(iterations, 1000 + r as u16);
                let b = both();
                let t = Instant::now();
                let m = faultlab::traffic::run(&spec, &ctx)?;
                let wall = t.elapsed().as_secs_f64();
                let d = deltas(&b, &both());
                let sent = m["sent"];
                f_pps.push(m["pps"]);
                f_wall.push(sent / wall);
                f_ct.add(&d);
                f_sent += sent;
                f_err += m["send_errors"];
                f_iter += m["iterations"];
                row.insert("faultlab_pps".into(), m["pps"].into());
                row.insert(
                    "faultlab_clashres_per_iteration".into(),
                    (d.clashres / m["iterations"]).into(),
                );
            } else {
                let b = both();
                let c = run_c(&bin, &gen, 3000 + r as u16, packets)?;
                let d = deltas(&b, &both());
                c_pps.push(c.pps);
                c_ct.add(&d);
                c_sent += c.sent;
                c_err += c.errors;
                row.insert("c_pps".into(), c.pps.into());
            }
        }
        steps.finished(&id, round_started);
        steps.note(&format!(
            "round {r}: faultlab {:.0} kpps, C {:.0} kpps",
            f_pps[r] / 1e3,
            c_pps[r] / 1e3
        ));
        per_round.push(serde_json::Value::Object(row));
    }
    drop(steps);
    let errs = lab.teardown();
    anyhow::ensure!(errs.is_empty(), "teardown: {errs:?}");
    let _ = std::fs::remove_dir_all(&artifacts);

    let (fm, cm) = (median(&f_pps), median(&c_pps));
    let ratios: Vec<f64> = f_pps.iter().zip(&c_pps).map(|(f, c)| f / c).collect();
    let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    let fire = f_ct.clashres / f_iter.max(1.0);
    eprintln!(
        "race sender: faultlab {:.0} kpps, C {:.0} kpps, ratio {:.2} (median of per-round ratios {:.2}); clashres/iteration {:.3}; C clashres {}",
        fm / 1e3,
        cm / 1e3,
        fm / cm,
        median(&ratios),
        fire,
        c_ct.clashres
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    record(
        "race.json",
        "race",
        serde_json::json!({
            "unix_time": now,
            "kernel": kernel,
            "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "command": "cargo bench --features lab --bench race",
            "rounds": rounds,
            "iterations_per_round": iterations,
            "packet_bytes": 20 + 8 + PAYLOAD,
            "threads": THREADS,
            "faultlab": {
                "what": "faultlab::traffic::run, kind race, mode raw, proto udp, threads 2, gap_ms 0 (barrier included); pps metric of the generator",
                "median_pps": fm, "min_pps": min(&f_pps), "max_pps": max(&f_pps),
                "median_wall_pps": median(&f_wall),
                "sent": f_sent, "send_errors": f_err, "iterations": f_iter,
                "conntrack": f_ct.json(),
                "clashres_per_iteration": fire,
            },
            "c": {
                "what": "benches/c/race_sendto.c (cc -O2): one IPPROTO_RAW socket, one thread, sendto loop, 2 packets per flow",
                "median_pps": cm, "min_pps": min(&c_pps), "max_pps": max(&c_pps),
                "sent": c_sent, "send_errors": c_err,
                "conntrack": c_ct.json(),
            },
            "ratio": fm / cm,
            // faultlab sends from 2 threads on 2 CPUs, the C loop from one.
            "per_thread_ratio": fm / THREADS as f64 / cm,
            "median_round_ratio": median(&ratios),
            "per_round": per_round,
        }),
    );
    Ok(())
}

fn main() {
    if !is_root() {
        eprintln!("race bench: needs root (namespaces); skipped");
        return;
    }
    // `cargo bench` passes criterion-style options (--bench, filters): ignored.
    let t = Instant::now();
    let _ = std::fs::remove_file(results_dir().join("race.json"));
    if let Err(e) = bench() {
        panic!("race bench: {e:#}");
    }
    eprintln!("race bench: {:.1} s", t.elapsed().as_secs_f64());
}
