//! `faultlab kernel-config` and the catalogue's kernel config fragment (`config`),
//! against fixture configs (no root, no kernel of a particular version needed).

use faultlab::kconfig::{self, CellEffect, KernelConfig};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A file in a directory of its own (tests run in parallel), both removed on drop.
struct Fixture(PathBuf);

impl Fixture {
    fn new(name: &str, text: &str) -> Fixture {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("faultlab-kconfig-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        Fixture(p)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(dir) = self.0.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A config with every option of the fragment built in, as a kernel writes it
/// (with options the fragment does not name around them).
fn full_config() -> String {
    let mut s = String::from("#\n# Automatically generated file; DO NOT EDIT.\n#\nCONFIG_64BIT=y\n# CONFIG_DUMMY is not set\nCONFIG_HZ=250\nCONFIG_LOCALVERSION=\"-test\"\n");
    for o in kconfig::fragment_options(kconfig::FRAGMENT) {
        s.push_str(&format!("{o}=y\n"));
    }
    s
}

/// `full_config` with these options switched off the way .config says it.
fn without(options: &[&str]) -> String {
    full_config()
        .lines()
        .map(|l| match l.split_once('=') {
            Some((o, _)) if options.contains(&o) => format!("# {o} is not set\n"),
            _ => format!("{l}\n"),
        })
        .collect()
}

fn kernel_config(file: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_faultlab"))
        .arg("kernel-config")
        .arg(file)
        .current_dir(repo())
        .env_remove("FAULTLAB_SCENARIOS")
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The `scenario::cell` line of the report, if the cell is listed.
fn cell_line<'a>(report: &'a str, id: &str) -> Option<&'a str> {
    report
        .lines()
        .find(|l| l.split_whitespace().next() == Some(id))
}

#[test]
fn fragment_follows_the_kselftest_convention() {
    let text = std::fs::read_to_string(repo().join("config")).unwrap();
    assert_eq!(text, kconfig::FRAGMENT);
    let mut seen = std::collections::BTreeSet::new();
    for (i, line) in text.lines().enumerate() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (opt, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("line {}: {line}", i + 1));
        assert!(
            opt.starts_with("CONFIG_")
                && opt[7..]
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'),
            "line {}: {line}",
            i + 1
        );
        assert!(matches!(value, "y" | "m"), "line {}: {line}", i + 1);
        assert!(seen.insert(opt.to_owned()), "{opt} twice");
    }
    // The options the catalogue is known to need are there.
    for o in [
        "CONFIG_NET_NS",
        "CONFIG_VETH",
        "CONFIG_BRIDGE_NETFILTER",
        "CONFIG_VXLAN",
        "CONFIG_IPV6",
        "CONFIG_IP_ROUTE_MULTIPATH",
        "CONFIG_NF_CT_NETLINK",
        "CONFIG_NFT_SYNPROXY",
        "CONFIG_NFT_NUMGEN",
        "CONFIG_NFT_COMPAT",
        "CONFIG_NETFILTER_XT_MATCH_PHYSDEV",
        "CONFIG_IP_NF_IPTABLES",
        "CONFIG_TRACING",
    ] {
        assert!(seen.contains(o), "{o} is not in config");
    }
}

#[test]
fn a_kernel_with_every_option_passes() {
    let f = Fixture::new("full.config", &full_config());
    let o = kernel_config(&f.0);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(out.contains("options are present"), "{out}");
}

#[test]
fn modules_count_as_present() {
    let text = full_config().replace("=y\n", "=m\n");
    let f = Fixture::new("modules.config", &text);
    let o = kernel_config(&f.0);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
}

#[test]
fn a_missing_option_names_the_cells_that_need_it() {
    let f = Fixture::new("no-vxlan.config", &without(&["CONFIG_VXLAN"]));
    let o = kernel_config(&f.0);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("missing 1 of"), "{out}");
    assert!(
        out.contains("CONFIG_VXLAN") && out.contains("is not set"),
        "{out}"
    );
    // Only the calico template has VXLAN devices.
    let line = cell_line(&out, "conntrack-race-calico-dnat::two-backends").expect(&out);
    assert!(
        line.contains("fail") && line.contains("CONFIG_VXLAN"),
        "{line}"
    );
    assert!(
        cell_line(&out, "bridge-netfilter::call-iptables-on").is_none(),
        "{out}"
    );
}

#[test]
fn a_missing_required_path_is_a_skip() {
    let f = Fixture::new(
        "no-multipath.config",
        &without(&["CONFIG_IP_ROUTE_MULTIPATH"]),
    );
    let o = kernel_config(&f.0);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    // ecmp-bad-path requires /proc/sys/net/ipv4/fib_multipath_hash_policy: the runner skips.
    let line = cell_line(&out, "ecmp-bad-path::l4-one-bad").expect(&out);
    assert!(line.contains("skip"), "{line}");
}

#[test]
fn without_tracing_cells_lose_their_drop_evidence() {
    let f = Fixture::new(
        "no-tracing.config",
        &without(&["CONFIG_TRACING", "CONFIG_FTRACE"]),
    );
    let o = kernel_config(&f.0);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    let line = cell_line(&out, "bridge-netfilter::call-iptables-on").expect(&out);
    assert!(line.contains("no drop evidence"), "{line}");
    assert!(
        cell_line(&out, "bridge-netfilter::call-iptables-off").is_none(),
        "{out}"
    );
}

#[test]
fn gzip_configs_are_read() {
    let f = Fixture::new("config.gz.src", &without(&["CONFIG_NFT_SYNPROXY"]));
    let gz = f.0.with_extension("gz");
    let Ok(st) = Command::new("sh")
        .arg("-c")
        .arg(format!("gzip -c '{}' > '{}'", f.0.display(), gz.display()))
        .status()
    else {
        return; // no sh/gzip: nothing to test
    };
    if !st.success() {
        return;
    }
    let o = kernel_config(&gz);
    let _ = std::fs::remove_file(&gz);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        cell_line(&out, "selftest-nft-synproxy::synproxy").is_some(),
        "{out}"
    );
    assert!(
        cell_line(&out, "selftest-nft-synproxy::without-synproxy").is_none(),
        "{out}"
    );
}

#[test]
fn unreadable_input_exits_64() {
    let o = kernel_config(Path::new("/nonexistent/faultlab/config"));
    assert_eq!(o.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot read"));
    let f = Fixture::new("not-a-config", "hello\n");
    let o = kernel_config(&f.0);
    assert_eq!(o.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a kernel config"));
}

/// The mapping from options to cells, from the catalogue's own files.
#[test]
fn options_map_to_the_cells_whose_files_use_them() {
    let cells = kconfig::catalogue(&repo().join("scenarios")).unwrap();
    assert!(cells.len() > 40);
    let ids = |opt: &str| -> Vec<String> {
        let mut v: Vec<String> = kconfig::cells_needing(opt, &cells)
            .into_iter()
            .map(|(c, _)| c.id())
            .collect();
        v.sort();
        v
    };
    // Others may join as the catalogue grows: check membership, and the cells of
    // the same file that must stay out.
    let has = |opt: &str, id: &str| ids(opt).iter().any(|c| c == id);
    assert!(has(
        "CONFIG_NFT_SYNPROXY",
        "selftest-nft-synproxy::synproxy"
    ));
    assert!(!has(
        "CONFIG_NFT_SYNPROXY",
        "selftest-nft-synproxy::without-synproxy"
    ));
    assert!(has(
        "CONFIG_NF_CT_PROTO_SCTP",
        "conntrack-race-raw::sctp-init"
    ));
    assert!(!has(
        "CONFIG_NF_CT_PROTO_SCTP",
        "conntrack-race-raw::udp-conntrack"
    ));
    assert!(has(
        "CONFIG_NF_CONNTRACK_PPTP",
        "conntrack-race-raw::gre-pptp"
    ));
    assert!(!has(
        "CONFIG_NF_CONNTRACK_PPTP",
        "conntrack-race-raw::sctp-init"
    ));
    assert!(has(
        "CONFIG_IP_NF_FILTER",
        "bridge-netfilter::iptables-legacy-drop"
    ));
    assert!(!has(
        "CONFIG_IP_NF_FILTER",
        "bridge-netfilter::call-iptables-on"
    ));
    assert!(has(
        "CONFIG_NF_TABLES_BRIDGE",
        "bridge-netfilter::nft-bridge-family-drop"
    ));
    assert!(!has(
        "CONFIG_NF_TABLES_BRIDGE",
        "bridge-netfilter::call-iptables-on"
    ));
    assert!(has(
        "CONFIG_NFT_NUMGEN",
        "conntrack-race-calico-dnat::nft-numgen"
    ));
    assert!(has(
        "CONFIG_NFT_NUMGEN",
        "conntrack-race-raw::udp-dnat-two-backends"
    ));
    assert!(!has(
        "CONFIG_NFT_NUMGEN",
        "conntrack-race-calico-dnat::two-backends"
    ));
    assert!(has(
        "CONFIG_NF_CONNTRACK_ZONES",
        "selftest-conntrack-dump-flush::dump-by-zone"
    ));
    assert!(!has(
        "CONFIG_NF_CONNTRACK_ZONES",
        "conntrack-race-raw::udp-conntrack"
    ));
    assert!(has(
        "CONFIG_NFT_OBJREF",
        "selftest-conntrack-icmp-related::icmp-related"
    ));
    assert!(ids("CONFIG_VXLAN")
        .iter()
        .all(|c| c.starts_with("conntrack-race-calico-dnat::")));
    assert!(!ids("CONFIG_VXLAN").is_empty());
    assert!(ids("CONFIG_NFT_REDIR")
        .iter()
        .all(|c| c.starts_with("selftest-conntrack-tcp-unreplied::")));
    assert!(ids("CONFIG_NETFILTER_XT_MATCH_PHYSDEV")
        .contains(&"bridge-netfilter::physdev-accept".to_owned()));
    assert!(ids("CONFIG_NF_CT_NETLINK")
        .iter()
        .any(|c| c.starts_with("selftest-conntrack-dump-flush::")));
    // Every option the catalogue asks for is needed by at least one cell.
    for opt in kconfig::fragment_options(kconfig::FRAGMENT) {
        assert!(
            !ids(&opt).is_empty(),
            "no cell needs {opt}: drop it from config"
        );
    }
    // Requires before building: ecmp cells skip without multipath.
    let ecmp: Vec<_> = kconfig::cells_needing("CONFIG_IP_ROUTE_MULTIPATH", &cells)
        .into_iter()
        .filter(|(c, _)| c.scenario == "ecmp-bad-path")
        .collect();
    assert!(!ecmp.is_empty() && ecmp.iter().all(|(_, e)| *e == CellEffect::Skip));
}

#[test]
fn the_report_without_a_catalogue_still_lists_missing_options() {
    let k = KernelConfig::parse(&without(&["CONFIG_NFT_LIMIT"]));
    let (text, code) = kconfig::report("fixture", &k, Err("scenarios/: not found".into()));
    assert_eq!(code, kconfig::EXIT_MISSING);
    assert!(
        text.contains("CONFIG_NFT_LIMIT") && text.contains("cells unknown"),
        "{text}"
    );
    let (text, code) = kconfig::report("fixture", &KernelConfig::parse(&full_config()), Ok(&[]));
    assert_eq!(code, kconfig::EXIT_OK, "{text}");
}

#[test]
fn options_later_kernels_fold_into_another_count_as_present() {
    // 6.18 has no CONFIG_NFT_OBJREF line at all: named objects are in nf_tables.
    let text: String = full_config()
        .lines()
        .filter(|l| !l.starts_with("CONFIG_NFT_OBJREF="))
        .map(|l| format!("{l}\n"))
        .collect();
    let f = Fixture::new("folded.config", &text);
    let o = kernel_config(&f.0);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    // Offered but off is missing.
    let f = Fixture::new("objref-off.config", &without(&["CONFIG_NFT_OBJREF"]));
    let o = kernel_config(&f.0);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        cell_line(&out, "selftest-conntrack-icmp-related::icmp-related").is_some(),
        "{out}"
    );
}

/// A scenario added with an iptables extension or an nft expression that needs a
/// kernel option no rule names fails here: add the option to `config` and a rule.
#[test]
fn every_extension_the_catalogue_uses_has_a_rule() {
    use kconfig::Need;
    let cells = kconfig::catalogue(&repo().join("scenarios")).unwrap();
    let ipt_rule = |words: &str| {
        kconfig::RULES.iter().any(|r| {
            r.needs
                .iter()
                .any(|n| matches!(n, Need::Ipt(_, w) if *w == words))
        })
    };
    let nft_rule = |words: &str| {
        kconfig::RULES.iter().any(|r| {
            r.needs
                .iter()
                .any(|n| matches!(n, Need::Nft(w) if *w == words))
        })
    };
    // nft statements and expressions that live in modules of their own (the rest
    // of the language is nf_tables itself).
    const NFT_MODULES: &[&str] = &[
        "ct",
        "notrack",
        "dnat",
        "snat",
        "masquerade",
        "redirect",
        "numgen",
        "limit",
        "synproxy",
        "quota",
        "log",
        "reject",
        "fib",
        "queue",
        "tproxy",
        "jhash",
        "symhash",
        "osf",
        "socket",
        "tunnel",
        "ipsec",
        "connlimit",
        "dup",
        "fwd",
        "flow",
        "exthdr",
        "last",
        "inner",
    ];
    let mut missing = std::collections::BTreeSet::new();
    for c in &cells {
        let chains: std::collections::BTreeSet<&str> = c
            .facts
            .rulesets
            .iter()
            .flat_map(|(_, t)| t.lines())
            .filter_map(|l| {
                let l = l.trim();
                l.strip_prefix(':')
                    .or_else(|| l.strip_prefix("-A "))
                    .or_else(|| l.strip_prefix("-I "))
                    .or_else(|| l.strip_prefix("-N "))
                    .and_then(|r| r.split_whitespace().next())
            })
            .collect();
        for (kind, text) in &c.facts.rulesets {
            let toks: Vec<&str> = text.split_whitespace().collect();
            if kind == "nft" {
                for t in toks.iter().filter(|t| NFT_MODULES.contains(t)) {
                    if !nft_rule(t) {
                        missing.insert(format!("nft `{t}` ({})", c.id()));
                    }
                }
                if toks.windows(2).any(|w| w == ["counter", "name"]) && !nft_rule("counter name") {
                    missing.insert(format!("nft `counter name` ({})", c.id()));
                }
                continue;
            }
            for w in toks.windows(2) {
                let words = format!("{} {}", w[0], w[1]);
                let extension = match w[0] {
                    "-m" | "--match" => true,
                    "-j" | "--jump" | "-g" | "--goto" => {
                        !matches!(w[1], "ACCEPT" | "DROP" | "RETURN") && !chains.contains(w[1])
                    }
                    _ => false,
                };
                let words = words.replace("--match", "-m").replace("--jump", "-j");
                if extension && !ipt_rule(&words) {
                    missing.insert(format!("{kind} `{words}` ({})", c.id()));
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "no kernel option rule for: {missing:#?}"
    );
}
