//! Reading a machine's network settings, never changing them: kernel release,
//! sysctls, the default route's device and the live rulesets. [`HostSource`] is
//! the one way in, so tests point it at a namespace ([`LiveHost::netns`]) or at
//! fixture files ([`FixtureHost`]) and never read the CI machine's own rules.
//!
//! nft rulesets are read as `nft list ruleset` text, not `nft -j`: the text is what
//! `nft -f` loads back into the lab and what the scenarios' rule globs read, and
//! the JSON of iptables-nft's tables (`xt` expressions) cannot be loaded anyway.
//! Legacy iptables is read only when /proc/net/ip{,6}_tables_names lists a table:
//! running `iptables-legacy-save` on a machine without x_tables loaded would make
//! the kernel autoload ip_tables, which is a change.

use crate::model::RulesetKind;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A value read from the machine, or why there is none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Reading {
    Value(String),
    /// Not there or not readable, with the reason.
    Absent(String),
}

impl Reading {
    pub fn value(&self) -> Option<&str> {
        match self {
            Reading::Value(v) => Some(v),
            Reading::Absent(_) => None,
        }
    }
}

/// Where a machine's settings come from.
pub trait HostSource {
    /// "this machine", "netns fl-x", "fixture tests/fixtures/hostcheck/docker".
    fn describe(&self) -> String;
    fn kernel_release(&self) -> String;
    fn sysctl(&self, key: &str) -> Reading;
    /// The ruleset of one kind as its save/list text (`""`: none loaded).
    fn ruleset(&self, kind: RulesetKind) -> Reading;
    /// The device of the IPv4 default route (what `@uplink` stands for).
    fn uplink(&self) -> Reading;
}

/// The running kernel's root namespace (`netns: None`) or a named namespace.
pub struct LiveHost {
    pub netns: Option<String>,
}

impl LiveHost {
    pub fn root() -> Self {
        LiveHost { netns: None }
    }

    fn run(&self, argv: &[&str]) -> Reading {
        let out = match &self.netns {
            Some(ns) => crate::netns::exec::output_in(ns, argv, None).map_err(|e| match e {
                crate::netns::exec::ExecError::NotInstalled { program, .. } => {
                    format!("`{program}` is not installed")
                }
                e => e.to_string(),
            }),
            None => match Command::new(argv[0]).args(&argv[1..]).output() {
                Ok(o) if o.status.success() => Ok(o),
                Ok(o) => Err(format!(
                    "`{}` failed ({}): {}",
                    argv.join(" "),
                    o.status,
                    String::from_utf8_lossy(&o.stderr).trim()
                )),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    Err(format!("`{}` is not installed", argv[0]))
                }
                Err(e) => Err(format!("`{}`: {e}", argv.join(" "))),
            },
        };
        match out {
            Ok(o) => Reading::Value(String::from_utf8_lossy(&o.stdout).into_owned()),
            Err(e) => Reading::Absent(e),
        }
    }

    fn read_file(&self, path: &'static str) -> Option<String> {
        match &self.netns {
            None => std::fs::read_to_string(path).ok(),
            Some(ns) => crate::netns::run_in(ns, || Ok(std::fs::read_to_string(path)?)).ok(),
        }
    }
}

impl HostSource for LiveHost {
    fn describe(&self) -> String {
        match &self.netns {
            None => "this machine (root network namespace)".into(),
            Some(ns) => format!("network namespace {ns}"),
        }
    }

    fn kernel_release(&self) -> String {
        crate::runner::kernel::release()
    }

    fn sysctl(&self, key: &str) -> Reading {
        let r = match &self.netns {
            None => crate::netns::sysctl::read_here(key),
            Some(ns) => crate::netns::sysctl::sysctl_read(ns, key),
        };
        match r {
            Ok(v) => Reading::Value(v),
            Err(e) => Reading::Absent(format!("{e:#}")),
        }
    }

    fn ruleset(&self, kind: RulesetKind) -> Reading {
        let legacy_names = match kind {
            // thread-self: /proc/net is the thread group leader's namespace, and
            // run_in reads from a thread that entered another one.
            RulesetKind::IptablesLegacy => Some("/proc/thread-self/net/ip_tables_names"),
            RulesetKind::Ip6tablesLegacy => Some("/proc/thread-self/net/ip6_tables_names"),
            _ => None,
        };
        if let Some(names) = legacy_names {
            match self.read_file(names) {
                Some(t) if !t.trim().is_empty() => {}
                Some(_) => return Reading::Value(String::new()),
                None => return Reading::Value(String::new()), // x_tables not loaded: no legacy tables
            }
        }
        match kind {
            RulesetKind::Nft => self.run(&["nft", "list", "ruleset"]),
            k => self.run(&[k.dumper().0]),
        }
    }

    fn uplink(&self) -> Reading {
        match self.run(&["ip", "-4", "-o", "route", "show", "default"]) {
            Reading::Value(text) => parse_uplink(&text),
            a => a,
        }
    }
}

/// The device of the first `default ... dev X` line.
pub fn parse_uplink(route_text: &str) -> Reading {
    let dev = route_text.lines().find_map(|l| {
        let w: Vec<&str> = l.split_whitespace().collect();
        w.windows(2)
            .find(|p| p[0] == "dev")
            .map(|p| p[1].to_string())
    });
    match dev {
        Some(d) => Reading::Value(d),
        None => Reading::Absent("no IPv4 default route".into()),
    }
}

/// A node described by files: `node.toml` (`uplink`, `[sysctls]`) and the rulesets
/// as `nft.ruleset`, `iptables-nft.save`, `ip6tables-nft.save`,
/// `iptables-legacy.save`, `ip6tables-legacy.save` (a missing file: none loaded).
pub struct FixtureHost {
    pub dir: PathBuf,
    node: FixtureNode,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixtureNode {
    pub about: String,
    pub uplink: String,
    #[serde(default)]
    pub sysctls: BTreeMap<String, toml::Value>,
    /// The verdict the catalogue gives this node, per scenario (tests compare).
    #[serde(default)]
    pub expect: BTreeMap<String, String>,
}

impl FixtureHost {
    pub fn open(dir: &Path) -> anyhow::Result<FixtureHost> {
        let file = dir.join("node.toml");
        let text = std::fs::read_to_string(&file).map_err(|e| {
            anyhow::anyhow!("{}: {e} (a fixture node needs node.toml)", file.display())
        })?;
        let node: FixtureNode = toml::from_str(&text).map_err(|e| {
            anyhow::anyhow!(
                "{}: {} (fields: about, uplink, sysctls, expect)",
                file.display(),
                e.message()
            )
        })?;
        Ok(FixtureHost {
            dir: dir.to_path_buf(),
            node,
        })
    }

    pub fn node(&self) -> &FixtureNode {
        &self.node
    }

    /// The fixture's sysctls as strings, in key order.
    pub fn sysctls(&self) -> Vec<(String, String)> {
        self.node
            .sysctls
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    toml::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (k.clone(), v)
            })
            .collect()
    }

    pub fn file_of(kind: RulesetKind) -> &'static str {
        match kind {
            RulesetKind::Nft => "nft.ruleset",
            RulesetKind::Iptables => "iptables-nft.save",
            RulesetKind::Ip6tables => "ip6tables-nft.save",
            RulesetKind::IptablesLegacy => "iptables-legacy.save",
            RulesetKind::Ip6tablesLegacy => "ip6tables-legacy.save",
        }
    }
}

impl HostSource for FixtureHost {
    fn describe(&self) -> String {
        format!("fixture {}", self.dir.display())
    }

    fn kernel_release(&self) -> String {
        crate::runner::kernel::release()
    }

    fn sysctl(&self, key: &str) -> Reading {
        match self.sysctls().into_iter().find(|(k, _)| k == key) {
            Some((_, v)) => Reading::Value(v),
            None => Reading::Absent(format!("not in {}/node.toml", self.dir.display())),
        }
    }

    fn ruleset(&self, kind: RulesetKind) -> Reading {
        let path = self.dir.join(Self::file_of(kind));
        match std::fs::read_to_string(&path) {
            Ok(t) => Reading::Value(t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Reading::Value(String::new()),
            Err(e) => Reading::Absent(format!("{}: {e}", path.display())),
        }
    }

    fn uplink(&self) -> Reading {
        Reading::Value(self.node.uplink.clone())
    }
}

/// Everything check-host reads from a machine, read once.
#[derive(Debug, Clone, Serialize)]
pub struct HostReading {
    pub source: String,
    pub kernel: String,
    pub uplink: Reading,
    /// Machine sysctl key (with `@uplink` resolved) → value.
    pub sysctls: BTreeMap<String, Reading>,
    /// Ruleset kind (`nft`, `iptables`, ...) → text.
    pub rulesets: BTreeMap<String, Reading>,
}

/// Sysctls every report shows, whatever the scenarios take: what the catalogue's
/// phenomena depend on (SCENARIOS.md).
pub const REPORTED_SYSCTLS: &[&str] = &[
    "net.netfilter.nf_conntrack_tcp_be_liberal",
    "net.netfilter.nf_conntrack_tcp_ignore_invalid_rst",
    "net.netfilter.nf_conntrack_tcp_timeout_established",
    "net.netfilter.nf_conntrack_tcp_timeout_time_wait",
    "net.netfilter.nf_conntrack_max",
    "net.netfilter.nf_conntrack_buckets",
    "net.netfilter.nf_conntrack_count",
    "net.bridge.bridge-nf-call-iptables",
    "net.bridge.bridge-nf-call-ip6tables",
    "net.bridge.bridge-nf-call-arptables",
    "net.ipv4.conf.all.send_redirects",
    "net.ipv4.conf.all.accept_redirects",
    "net.ipv4.conf.all.rp_filter",
    "net.ipv4.fib_multipath_hash_policy",
    "net.ipv4.fib_multipath_hash_seed",
];

impl HostReading {
    /// Reads the reported sysctls, `extra` keys (`@uplink` resolved) and every ruleset kind.
    pub fn read(src: &dyn HostSource, extra: &[String]) -> HostReading {
        let uplink = src.uplink();
        let mut sysctls = BTreeMap::new();
        for key in REPORTED_SYSCTLS
            .iter()
            .map(|k| k.to_string())
            .chain(extra.iter().cloned())
        {
            let key = super::mapping::resolve_uplink(&key, uplink.value());
            sysctls
                .entry(key.clone())
                .or_insert_with(|| src.sysctl(&key));
        }
        let rulesets = RulesetKind::ALL
            .into_iter()
            .map(|k| (k.key().to_string(), src.ruleset(k)))
            .collect();
        HostReading {
            source: src.describe(),
            kernel: src.kernel_release(),
            uplink,
            sysctls,
            rulesets,
        }
    }
}
