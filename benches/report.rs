//! Writes results/bench/summary.md and results/bench/conntrack.svg from criterion's
//! estimates (target/criterion) and the JSON the other benches record in
//! results/bench/. Run after them: `cargo bench --features lab --bench report`
//! (scripts/bench.sh does it).

#[path = "common/mod.rs"]
mod common;

use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// (group, function) -> mean time per iteration in ns, with its 95% interval.
type Estimates = BTreeMap<(String, String), (f64, f64, f64)>;

fn criterion_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target")))
        .join("criterion")
}

fn read_json(p: &Path) -> Option<Value> {
    serde_json::from_slice(&std::fs::read(p).ok()?).ok()
}

fn collect(dir: &Path, out: &mut Estimates) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if !p.is_dir() {
            continue;
        }
        if p.file_name().and_then(|n| n.to_str()) == Some("new") {
            if let (Some(b), Some(est)) = (
                read_json(&p.join("benchmark.json")),
                read_json(&p.join("estimates.json")),
            ) {
                let group = b["group_id"].as_str().unwrap_or("").to_string();
                let func = b["function_id"]
                    .as_str()
                    .or(b["value_str"].as_str())
                    .unwrap_or("")
                    .to_string();
                let m = &est["mean"];
                out.insert(
                    (group, func),
                    (
                        m["point_estimate"].as_f64().unwrap_or(f64::NAN),
                        m["confidence_interval"]["lower_bound"]
                            .as_f64()
                            .unwrap_or(f64::NAN),
                        m["confidence_interval"]["upper_bound"]
                            .as_f64()
                            .unwrap_or(f64::NAN),
                    ),
                );
            }
        } else {
            collect(&p, out);
        }
    }
}

/// Civil date (UTC) of a Unix time, Howard Hinnant's algorithm.
fn utc_date(secs: u64) -> String {
    let days = (secs / 86400) as i64;
    let tod = secs % 86400;
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        tod / 3600,
        (tod / 60) % 60
    )
}

fn ms(ns: f64) -> String {
    format!("{:.1} ms", ns / 1e6)
}

/// The conntrack plot: throughput against entries/buckets (log scale), two series.
fn svg(points: &[Value], entries: u64) -> String {
    let (w, h) = (800.0, 430.0);
    let (l, r, t, b) = (80.0, 250.0, 60.0, 60.0);
    let pw = w - l - r;
    let ph = h - t - b;
    let ratios: Vec<f64> = points
        .iter()
        .map(|p| p["ratio"].as_f64().unwrap_or(1.0))
        .collect();
    let hit: Vec<f64> = points
        .iter()
        .map(|p| p["hit_pps"].as_f64().unwrap_or(0.0) / 1e3)
        .collect();
    let new: Vec<f64> = points
        .iter()
        .map(|p| {
            p["new_per_s"].as_f64().unwrap_or(0.0)
                * p["new_delivered_fraction"].as_f64().unwrap_or(0.0)
                / 1e3
        })
        .collect();
    let ymax_raw = hit.iter().chain(&new).cloned().fold(0.0, f64::max).max(1.0);
    let step = [10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0]
        .into_iter()
        .find(|s| ymax_raw / s <= 8.0)
        .unwrap_or(2000.0);
    let ymax = (ymax_raw / step).ceil() * step;
    let lx = |x: f64| {
        let (a, bb) = (ratios[0].log2(), ratios[ratios.len() - 1].log2());
        l + if bb > a {
            (x.log2() - a) / (bb - a) * pw
        } else {
            0.0
        }
    };
    let ly = |y: f64| t + ph - y / ymax * ph;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="13">"#
    );
    let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="26" font-size="16" font-weight="bold" text-anchor="middle">conntrack cost vs average chain length (entries / buckets)</text>"#,
        l + pw / 2.0
    );
    let _ = writeln!(
        s,
        r##"<text x="{}" y="45" text-anchor="middle" fill="#555">{entries} UDP flows through one forwarding namespace; higher is better</text>"##,
        l + pw / 2.0
    );
    let mut yv = 0.0;
    while yv <= ymax + 1e-9 {
        let y = ly(yv);
        let _ = writeln!(
            s,
            r##"<line x1="{l}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{yv:.0}</text>"##,
            l + pw,
            l - 8.0,
            y + 4.0
        );
        yv += step;
    }
    let chains: Vec<f64> = points
        .iter()
        .map(|p| p["avg_chain"].as_f64().unwrap_or(f64::NAN))
        .collect();
    for (&x, c) in ratios.iter().zip(&chains) {
        let px = lx(x);
        let _ = writeln!(
            s,
            r##"<text x="{px:.1}" y="{:.1}" text-anchor="middle" font-size="10" fill="#555">(reached {c:.1})</text>"##,
            t + ph + 33.0
        );
        let _ = writeln!(
            s,
            r##"<line x1="{px:.1}" y1="{t}" x2="{px:.1}" y2="{:.1}" stroke="#eee"/><text x="{px:.1}" y="{:.1}" text-anchor="middle">{x:.0}</text>"##,
            t + ph,
            t + ph + 20.0
        );
    }
    let _ = writeln!(
        s,
        r#"<line x1="{l}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="black"/><line x1="{l}" y1="{t}" x2="{l}" y2="{:.1}" stroke="black"/>"#,
        t + ph,
        l + pw,
        t + ph,
        t + ph
    );
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">target entries / nf_conntrack_buckets (log scale); reached average chain length below</text>"#,
        l + pw / 2.0,
        h - 8.0
    );
    let _ = writeln!(
        s,
        r#"<text transform="translate(22 {:.1}) rotate(-90)" text-anchor="middle">thousand packets per second</text>"#,
        t + ph / 2.0
    );
    for (vals, color, label) in [
        (&hit, "#1f77b4", "packets of existing flows"),
        (&new, "#d62728", "new connections"),
    ] {
        let pts: Vec<String> = ratios
            .iter()
            .zip(vals.iter())
            .map(|(x, y)| format!("{:.1},{:.1}", lx(*x), ly(*y)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2.5"/>"#,
            pts.join(" ")
        );
        for (x, y) in ratios.iter().zip(vals.iter()) {
            let _ = writeln!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="4" fill="{color}"/><text x="{:.1}" y="{:.1}" fill="{color}" text-anchor="middle" font-size="11">{y:.0}</text>"#,
                lx(*x),
                ly(*y),
                lx(*x),
                ly(*y) - 9.0
            );
        }
        let _ = label;
    }
    let lgx = l + pw + 20.0;
    for (i, (color, label)) in [
        ("#1f77b4", "existing flows (pps)"),
        ("#d62728", "new connections accepted/s"),
    ]
    .iter()
    .enumerate()
    {
        let y = t + 20.0 + i as f64 * 24.0;
        let _ = writeln!(
            s,
            r#"<line x1="{lgx}" y1="{y}" x2="{}" y2="{y}" stroke="{color}" stroke-width="3"/><text x="{}" y="{}">{label}</text>"#,
            lgx + 24.0,
            lgx + 30.0,
            y + 4.0
        );
    }
    s += "</svg>\n";
    s
}

/// The date, kernel and command lines a measured section opens with.
fn provenance(md: &mut String, r: &Value) {
    let _ = writeln!(
        md,
        "- date: {}\n- kernel: {}, {} CPUs\n- command (root): `{}`\n",
        utc_date(r["unix_time"].as_u64().unwrap_or(0)),
        r["kernel"].as_str().unwrap_or("?"),
        r["cpus"],
        r["command"].as_str().unwrap_or("?")
    );
}

/// "Race sender": results/bench/race.json of benches/race.rs.
fn race_section(md: &mut String, r: &Value) {
    let _ = writeln!(md, "\n## Race sender\n");
    let (Some(f), Some(c)) = (
        r["faultlab"]["median_pps"].as_f64(),
        r["c"]["median_pps"].as_f64(),
    ) else {
        let _ = writeln!(md, "not measured");
        return;
    };
    let k = |v: &Value| v.as_f64().unwrap_or(f64::NAN) / 1e3;
    provenance(md, r);
    let _ = writeln!(
        md,
        "{}-byte IPv4/UDP packets from `gen` through `mid` (forwards; nft `ct state` rule, so \
         conntrack) to `sink` (drops in prerouting); median of {} interleaved rounds, \
         {} packets per sender per round, a fresh destination port per round.\n",
        r["packet_bytes"],
        r["rounds"],
        r["iterations_per_round"].as_u64().unwrap_or(0) * r["threads"].as_u64().unwrap_or(0)
    );
    let _ = writeln!(
        md,
        "| sender | kpps (median) | min-max | delivered / sent | clashres |\n|---|---|---|---|---|"
    );
    for (name, d) in [
        (
            "faultlab `race` (raw, udp, threads 2, gap_ms 0, barrier included)",
            &r["faultlab"],
        ),
        ("C `sendto` loop (one raw socket, one thread)", &r["c"]),
    ] {
        let _ = writeln!(
            md,
            "| {name} | {:.0} | {:.0}-{:.0} | {:.3} | {:.0} |",
            k(&d["median_pps"]),
            k(&d["min_pps"]),
            k(&d["max_pps"]),
            d["conntrack"]["delivered_at_sink"].as_f64().unwrap_or(0.0)
                / d["sent"].as_f64().unwrap_or(1.0),
            d["conntrack"]["clashres"].as_f64().unwrap_or(f64::NAN)
        );
    }
    let _ = writeln!(
        md,
        "\n- pps ratio faultlab / C: **{:.2}x** (goal >= 1.0; median of per-round ratios {:.2}x). \
         faultlab sends from 2 threads on 2 CPUs, the C loop from one: per thread the ratio is {:.2}x.\n\
         - race fire rate: **{:.3} clashres per iteration** ({:.0} clashes in {:.0} iterations, \
         mid's /proc/net/stat/nf_conntrack around each generator run); the C sender's clashres: {:.0}.",
        f / c,
        r["median_round_ratio"].as_f64().unwrap_or(f64::NAN),
        r["per_thread_ratio"].as_f64().unwrap_or(f64::NAN),
        r["faultlab"]["clashres_per_iteration"]
            .as_f64()
            .unwrap_or(f64::NAN),
        r["faultlab"]["conntrack"]["clashres"]
            .as_f64()
            .unwrap_or(f64::NAN),
        r["faultlab"]["iterations"].as_f64().unwrap_or(f64::NAN),
        r["c"]["conntrack"]["clashres"].as_f64().unwrap_or(f64::NAN)
    );
}

/// "Catalogue": results/bench/catalogue.json of benches/catalogue.rs.
fn catalogue_section(md: &mut String, c: &Value) {
    let _ = writeln!(md, "\n## Catalogue: `--jobs 1` against `--jobs N`\n");
    if c.is_null() {
        let _ = writeln!(md, "not measured");
        return;
    }
    provenance(md, c);
    let _ = writeln!(
        md,
        "The whole catalogue through the CLI (`faultlab run scenarios/ --jobs J`), wall time \
         from spawn to exit; the variants alternate, and their verdict tables must be \
         identical. Goals (issue 13): host >= 3x and <= 15 s; one kernel under TCG <= 120 s.\n"
    );
    let _ = writeln!(
        md,
        "| where | cells | rounds | `--jobs 1` (median) | `--jobs N` (median) | N | speed-up | verdicts |\n|---|---|---|---|---|---|---|---|"
    );
    for (name, r) in [("host", &c["host"]), ("vm", &c["vm"])] {
        if r.is_null() {
            let _ = writeln!(
                md,
                "| {name} | not measured (set FAULTLAB_BENCH_KERNEL) | | | | | | |"
            );
            continue;
        }
        let where_ = r["kernel"]
            .as_str()
            .map_or(name.to_string(), |k| format!("vm `{k}`"));
        let outcomes = r["outcomes"]
            .as_object()
            .map(|o| {
                o.iter()
                    .map(|(k, v)| format!("{v} {k}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        let verdicts = verdicts_cell(r, &outcomes);
        let _ = writeln!(
            md,
            "| {where_} | {} | {} | {:.1} s | {:.1} s | {} | **{:.2}x** | {verdicts} |",
            r["cells"],
            r["rounds"],
            r["jobs1_median_s"].as_f64().unwrap_or(f64::NAN),
            r["jobsn_median_s"].as_f64().unwrap_or(f64::NAN),
            r["jobs"],
            r["speedup"].as_f64().unwrap_or(f64::NAN)
        );
    }
}

/// `identical (...)`, or the differing cells in bold.
fn verdicts_cell(r: &Value, outcomes: &str) -> String {
    if r["identical"].as_bool() == Some(true) {
        return format!("identical ({outcomes})");
    }
    let differing = r["differing"]
        .as_array()
        .map(|d| {
            d.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join("; ")
        })
        .unwrap_or_default();
    format!("**differ**: {differing}")
}

/// Several kernels under `vm`, one after the other against all at once.
fn parallel_kernels_section(md: &mut String, c: &Value) {
    let _ = writeln!(
        md,
        "
## Kernels one after the other against all at once
"
    );
    let p = &c["parallel_kernels"];
    if p.is_null() {
        let _ = writeln!(md, "not measured (set FAULTLAB_BENCH_KERNELS=K1,K2,...)");
        return;
    }
    let kernels = p["kernels"]
        .as_array()
        .map(|k| {
            k.iter()
                .filter_map(Value::as_str)
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    // Runs before smp_each was recorded gave each guest host CPUs / N.
    let smp = p["smp_each"]
        .as_u64()
        .map_or("host CPUs / N".to_string(), |n| n.to_string());
    let _ = writeln!(
        md,
        "`faultlab vm --kernel K1 --kernel K2 ... -- run scenarios/` with `--parallel 1` \
         (one guest at a time) and `--parallel N` (every guest at once), one run each, \
         on {kernels}, {smp} CPUs per guest. Goal (issue 13): three kernels together \
         <= 6 min.\n"
    );
    let _ = writeln!(
        md,
        "| cells | `--parallel 1` | `--parallel N` | speed-up | verdicts |\n|---|---|---|---|---|"
    );
    let _ = writeln!(
        md,
        "| {} | {:.1} s | {:.1} s | **{:.2}x** | {} |",
        p["cells"],
        p["sequential_wall_s"].as_f64().unwrap_or(f64::NAN),
        p["parallel_wall_s"].as_f64().unwrap_or(f64::NAN),
        p["speedup"].as_f64().unwrap_or(f64::NAN),
        verdicts_cell(p, "every kernel's cells")
    );
}

fn main() {
    let mut est = Estimates::new();
    collect(&criterion_dir(), &mut est);
    let dir = common::results_dir();
    let harness = read_json(&dir.join("harness.json")).unwrap_or(Value::Null);
    let fixcost = read_json(&dir.join("fixcost.json")).unwrap_or(Value::Null);
    let conntrack = read_json(&dir.join("conntrack.json")).unwrap_or(Value::Null);
    let race = read_json(&dir.join("race.json")).unwrap_or(Value::Null);
    let catalogue = read_json(&dir.join("catalogue.json")).unwrap_or(Value::Null);
    let get = |g: &str, f: &str| est.get(&(g.to_string(), f.to_string())).copied();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mut md = String::new();
    let _ = writeln!(md, "# faultlab benchmarks\n");
    let _ = writeln!(
        md,
        "- date: {}\n- kernel: {kernel}, {cpus} CPUs (shared with other work: ratios are measured side by side in one run)\n- reproduce (root): `scripts/bench.sh`\n",
        utc_date(now)
    );

    let _ = writeln!(
        md,
        "## Harness: build + teardown of each template topology\n"
    );
    let _ = writeln!(
        md,
        "Mean time of one build + teardown (criterion, 95% CI in brackets). Same plan for every column \
         (the benchmark first checks that all four build identical labs: links, masters, addresses, \
         routes, rulesets). Goal: faultlab >= 10x faster than one process per step, >= 3x faster \
         than the batched form.\n"
    );
    let _ = writeln!(
        md,
        "| topology | faultlab | ip per step (processes) | speed-up | ip -batch (processes) | speed-up | kernel limit | faultlab / limit |\n|---|---|---|---|---|---|---|---|"
    );
    for topo in ["docker", "openstack-qbr", "calico"] {
        let g = format!("build/{topo}");
        let (Some(f), Some(a), Some(b), Some(k)) = (
            get(&g, "faultlab"),
            get(&g, "ip-per-step"),
            get(&g, "ip-batch"),
            get(&g, "kernel-limit"),
        ) else {
            let _ = writeln!(md, "| {topo} | not measured | | | | | | |");
            continue;
        };
        let lim = &harness["limits"][topo];
        let _ = writeln!(
            md,
            "| {topo} | {} [{:.1}-{:.1}] | {} ({}) | **{:.1}x** | {} ({}) | **{:.1}x** | {} | {:.1}x |",
            ms(f.0),
            f.1 / 1e6,
            f.2 / 1e6,
            ms(a.0),
            lim["processes_per_step"],
            a.0 / f.0,
            ms(b.0),
            lim["processes_batched"],
            b.0 / f.0,
            ms(k.0),
            f.0 / k.0
        );
    }
    let _ = writeln!(
        md,
        "\nThe kernel limit bounds what any userspace can reach: the largest possible speed-up over \
         one process per step is (ip per step) / limit = {}, over ip -batch {}. The goals \
         (10x, 3x) are above that ceiling on this kernel: most of the time is the kernel's own \
         (nftables commits, veth/netns creation). faultlab itself comes within the factor in \
         the last column of the limit.\n",
        ["docker", "openstack-qbr", "calico"]
            .iter()
            .filter_map(|t| {
                let g = format!("build/{t}");
                Some(format!("{:.1}x ({t})", get(&g, "ip-per-step")?.0 / get(&g, "kernel-limit")?.0))
            })
            .collect::<Vec<_>>()
            .join(", "),
        ["docker", "openstack-qbr", "calico"]
            .iter()
            .filter_map(|t| {
                let g = format!("build/{t}");
                Some(format!("{:.1}x ({t})", get(&g, "ip-batch")?.0 / get(&g, "kernel-limit")?.0))
            })
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(
        md,
        "Not in the shell columns: waiting until every link runs, which `Lab::build` includes. \
         Measured after the shell builds (mean of 3): {}. That wait is linkwatch's: an \
         operstate change that is not \"urgent\" is processed at most once a second, host-wide.\n",
        ["docker", "openstack-qbr", "calico"]
            .iter()
            .filter_map(|t| {
                let l = &harness["limits"][*t];
                Some(format!(
                    "{t} {:.0} ms after ip per step, {:.0} ms after ip -batch",
                    l["carrier_wait_ms_after_ip_per_step"].as_f64()?,
                    l["carrier_wait_ms_after_ip_batch"].as_f64()?
                ))
            })
            .collect::<Vec<_>>()
            .join("; ")
    );
    let _ = writeln!(
        md,
        "\nKernel limit per part (mean microseconds per build + teardown):\n\n| topology | netns create | rtnetlink (requests) | sysctl | nftables batches | netns delete | total |\n|---|---|---|---|---|---|---|"
    );
    for topo in ["docker", "openstack-qbr", "calico"] {
        let p = &harness["limits"][topo]["limit_parts_us"];
        if p.is_null() {
            continue;
        }
        let _ = writeln!(
            md,
            "| {topo} | {} | {} ({}) | {} | {} | {} | {} |",
            p["netns_create"],
            p["rtnetlink"],
            p["rtnetlink_requests"],
            p["sysctl"],
            p["nftables"],
            p["netns_delete"],
            p["total"]
        );
    }
    let _ = writeln!(
        md,
        "\nMethod for the limit: the plan's operations are replayed in-process on raw netlink \
         sockets with every request serialised before the clock starts (same rtnetlink builders \
         as faultlab); only the syscalls that do the work are timed: `send`+`recv` of each \
         rtnetlink request and its ack (the kernel handles a request synchronously inside \
         `sendmsg`), `open`+`unshare`+`mount` per namespace, `umount2`+`unlink` to delete it, \
         `open`+`write` per sysctl, and one `send` per nfnetlink batch that the real \
         `iptables-nft-restore`/`nft` sends (captured once with `strace -e write=all` in a \
         scratch namespace and replayed byte for byte; the loader's own cache dumps are not \
         counted). Thread creation, setns, ifindex lookups, socket opening and waiting for \
         carrier are not counted. The kernel's asynchronous netns cleanup is outside every \
         column.\n"
    );

    let pps_table = |md: &mut String, group: &str, variants: &[&str], base: &str| {
        let _ = writeln!(
            md,
            "| variant | kpps (median of rounds) | min-max | vs {base} | delivered / sent |\n|---|---|---|---|---|"
        );
        let base_pps = fixcost[group][base]["median_pps"].as_f64();
        for v in variants {
            let d = &fixcost[group][v];
            let Some(p) = d["median_pps"].as_f64() else {
                let _ = writeln!(md, "| {v} | not measured | | | |");
                continue;
            };
            let frac = d["delivered"].as_f64().unwrap_or(0.0) / d["sent"].as_f64().unwrap_or(1.0);
            let _ = writeln!(
                md,
                "| {v} | {:.0} | {:.0}-{:.0} | {:.2}x | {:.3} |",
                p / 1e3,
                d["min_pps"].as_f64().unwrap_or(0.0) / 1e3,
                d["max_pps"].as_f64().unwrap_or(0.0) / 1e3,
                base_pps.map(|b| p / b).unwrap_or(f64::NAN),
                frac
            );
        }
    };
    let _ = writeln!(
        md,
        "\n## Fix cost 1: NOTRACK vs conntrack in a NAT namespace\n\nUDP, 18-byte payloads \
         (64-byte frames), 256 flows, tight `sendmmsg` sender; the namespace forwards and \
         MASQUERADEs, the sink drops in prerouting.\n"
    );
    pps_table(
        &mut md,
        "nat",
        &["no-netfilter", "conntrack", "notrack"],
        "conntrack",
    );
    let _ = writeln!(
        md,
        "\n## Fix cost 2: bridge-nf-call-iptables 0 vs 1\n\nThe same traffic bridged \
         (br0 with two veth ports) in a namespace whose FORWARD chain holds Neutron-like \
         stateful rules (physdev, state RELATED,ESTABLISHED / INVALID, source accept).\n"
    );
    pps_table(
        &mut md,
        "bridge",
        &["call-iptables-0", "call-iptables-1"],
        "call-iptables-1",
    );

    let _ = writeln!(md, "\n## Fix cost 3 (seed 003): conntrack chain length\n");
    let sweep = &conntrack["sweep"];
    if let Some(points) = sweep["points"].as_array() {
        let entries = sweep["entries"].as_u64().unwrap_or(0);
        let _ = std::fs::write(dir.join("conntrack.svg"), svg(points, entries));
        let _ = writeln!(
            md,
            "![conntrack plot](conntrack.svg)\n\n{entries} UDP flows fill the table of a forwarding \
             namespace (nf_conntrack_max = {} so the garbage collector's near-full eviction \
             stays off; nf_conntrack_udp_timeout 3600 s); nf_conntrack_buckets = entries / ratio. \
             \"existing\": the flows that got an entry, again, in random order (each packet is one hash lookup \
             that walks on average half a chain); \"new\": {} never-seen flows per pass (a lookup \
             that walks a whole chain, then an insert). Two passes per ratio (ascending, then \
             descending), mean of the medians.\n",
            sweep["nf_conntrack_max"],
            sweep["new_per_pass"]
        );
        let _ = writeln!(
            md,
            "| entries / buckets (target) | buckets | entries reached | avg chain reached | inserts refused (fill / new) | existing flows kpps | vs ratio 1 | new flows offered/s (k) | accepted | new conn accepted/s (k) | vs ratio 1 | ns per packet added vs ratio 1 (existing) |\n|---|---|---|---|---|---|---|---|---|---|---|---|"
        );
        let acc = |p: &Value| {
            p["new_per_s"].as_f64().unwrap_or(f64::NAN)
                * p["new_delivered_fraction"].as_f64().unwrap_or(f64::NAN)
        };
        let h1 = points[0]["hit_pps"].as_f64().unwrap_or(f64::NAN);
        let n1 = acc(&points[0]);
        for p in points {
            let h = p["hit_pps"].as_f64().unwrap_or(f64::NAN);
            let n = acc(p);
            let _ = writeln!(
                md,
                "| {} | {} | {} | {:.1} | {:.0} / {:.0} | {:.0} | {:.2}x | {:.0} | {:.3} | {:.1} | {:.3}x | {:+.0} |",
                p["ratio"],
                p["buckets"],
                p["entries"],
                p["avg_chain"].as_f64().unwrap_or(f64::NAN),
                p["refused_fill"].as_f64().unwrap_or(0.0),
                p["refused_new"].as_f64().unwrap_or(0.0),
                h / 1e3,
                h / h1,
                p["new_per_s"].as_f64().unwrap_or(f64::NAN) / 1e3,
                p["new_delivered_fraction"].as_f64().unwrap_or(f64::NAN),
                n / 1e3,
                n / n1,
                1e9 / h - 1e9 / h1
            );
        }
        let _ = writeln!(
            md,
            "\n\"inserts refused\": the `chainlength` column of /proc/net/stat/nf_conntrack. \
             This kernel drops a packet whose new entry would go into a hash chain that is \
             already longer than a bound (the fill stalls at an average chain of about 40, \
             whatever nf_conntrack_max says), so a table with few buckets cannot be filled: \
             the O(n) chains the seed worries about are capped, and the price is paid in \
             dropped new connections (the last row) instead of slow lookups."
        );
    } else {
        let _ = writeln!(md, "not measured");
    }
    race_section(&mut md, &race["race"]);
    catalogue_section(&mut md, &catalogue["catalogue"]);
    parallel_kernels_section(&mut md, &catalogue["catalogue"]);
    let _ = std::fs::write(dir.join("summary.md"), &md);
    print!("{md}");
}
