//! A cell is a timeline: an ordered list of steps. Traffic steps measure; the other
//! kinds change the lab (`configure`, `conntrack`), wait for a condition (`wait`,
//! `sleep`, `join`) or take a named snapshot of every observation (`checkpoint`).
//! Any traffic step may run in the background, and any may sample live observations
//! while it runs.

use super::TrafficSpec;
use crate::model::ct_filter::{CtFilter, CtInsert};
use crate::model::expr::Expectation;
use crate::model::ip_rule::IpRulePlan;
use crate::model::lab::{DevicePlan, NeighbourPlan, RoutePlan, RulesetKind, RulesetPlan, Sysctl};
use serde::Serialize;

/// One step of a cell's timeline, resolved against the lab.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Step {
    /// Observation prefix of what the step measures (`name` if given, else the kind).
    pub name: String,
    /// Runs concurrently with the steps after it, until it ends or a `join` (or the
    /// cell's end) waits for it.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub background: bool,
    /// Live observations read periodically while the step runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sample: Option<Sampling>,
    /// Ends a traffic step as soon as this holds (its count becomes a cap).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<StopWhen>,
    pub action: Action,
}

/// `until = "EXPR"` on a traffic step: the step starts no new iteration (race),
/// connection (churn) or packet (udp, ping) once `until` holds, read live at those
/// points at most every `every_ms`. What was already sent is still waited for; the
/// step's metrics count what it did (`race.iterations` the iterations run).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StopWhen {
    pub until: Expectation,
    pub every_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Action {
    Configure(ConfigurePlan),
    Conntrack(ConntrackPlan),
    Wait(WaitPlan),
    Checkpoint,
    /// Waits for these background steps (all running ones when empty).
    Join {
        steps: Vec<String>,
        /// First tells them to stop: a connection's hold ends, a sender starts nothing
        /// new (`sleep 10 | socat` in a selftest keeps a connection up while the rest runs).
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        stop: bool,
    },
    Sleep {
        ms: u64,
    },
    /// A command run to completion inside a node (`tc`, `ipset`, `bridge`, `ip xfrm`,
    /// what the format has no field for).
    Exec(ExecPlan),
    /// Serialized as the traffic spec itself (it carries its own `kind`).
    #[serde(untagged)]
    Traffic(TrafficSpec),
}

impl Action {
    /// A foreground step that only waits (for a condition, a time, background steps).
    pub fn only_waits(&self) -> bool {
        matches!(
            self,
            Action::Wait(_) | Action::Sleep { .. } | Action::Join { .. }
        )
    }

    /// A step that mostly waits once started: a few small TCP connections, held open
    /// or retried by the kernel (`conntrack_tcp_unreplied`, `nf_nat_edemux`), or a few
    /// echo requests, most of whose time is their reply timeout when one is lost
    /// (`conntrack_icmp_related`'s "must fail" pings).
    pub fn mostly_waits(&self) -> bool {
        const SMALL: u64 = 64 * 1024;
        const FEW_PINGS: u32 = 10;
        match self {
            Action::Traffic(TrafficSpec::Tcp(p)) => {
                u64::from(p.connections).saturating_mul(p.bytes) <= SMALL
            }
            Action::Traffic(TrafficSpec::Ping(p)) => p.count <= FEW_PINGS,
            _ => false,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Action::Traffic(t) => t.kind(),
            Action::Configure(_) => "configure",
            Action::Conntrack(_) => "conntrack",
            Action::Wait(_) => "wait",
            Action::Checkpoint => "checkpoint",
            Action::Join { .. } => "join",
            Action::Sleep { .. } => "sleep",
            Action::Exec(_) => "exec",
        }
    }
}

/// The step kinds that are not traffic, as written in `kind = "..."`.
pub const CONTROL_KINDS: [&str; 7] = [
    "configure",
    "conntrack",
    "wait",
    "checkpoint",
    "join",
    "sleep",
    "exec",
];

/// `kind = "exec"`: one program, run to completion in a node's namespace.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExecPlan {
    pub node: String,
    /// The argv (a first word of `faultlab` is this executable, as for processes).
    pub argv: Vec<String>,
    /// The exit status that counts as success.
    pub expect_exit: i32,
    /// Killed after this long (scaled by `--slow`): a failure like a wrong status.
    pub timeout_ms: u64,
    /// What a wrong status or a timeout does: fail the cell (default), make it
    /// inconclusive, or record it (`exit_code`) for the expectations to judge.
    pub on_failure: OnTimeout,
}

/// min / max / last of live observations, every `every_ms`, while a step runs:
/// observations `<step>.sample.{min,max,last}.<observation>` and
/// `<step>.sample.count` (samples taken).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sampling {
    pub every_ms: u64,
    /// Live observation names: `ct.NODE.count(...)`, `ct.NODE.entry(...).FIELD`, node
    /// counters (`conntrack.NODE.insert`, `link.NODE.DEV.rx_packets`, ... as deltas
    /// from the cell's start) and capture counters.
    pub observe: Vec<String>,
}

/// Changes to one node, applied in this order: devices added, links changed,
/// sysctls, rulesets flushed then loaded, routes, ip rules, neighbours, devices deleted.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct ConfigurePlan {
    pub node: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub add_devices: Vec<DevicePlan>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<LinkChange>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sysctls: Vec<Sysctl>,
    /// Ruleset kinds emptied before `load` (a `replace` is a flush plus a load).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub flush: Vec<RulesetKind>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub load: Vec<RulesetPlan>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Change<RoutePlan>>,
    /// `Add` or `Delete` (`ip rule` has no replace).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ip_rules: Vec<Change<IpRulePlan>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub neighbours: Vec<Change<NeighbourPlan>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub delete_devices: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Add,
    Replace,
    Delete,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change<T> {
    pub op: Op,
    pub what: T,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LinkChange {
    pub dev: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub up: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConntrackPlan {
    pub node: String,
    pub op: CtOp,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum CtOp {
    /// Every entry (no filter), or those the filter matches. Metric `deleted` when
    /// filtered.
    Flush {
        filter: Option<CtFilter>,
    },
    /// Entries the filter matches; metric `deleted`.
    Delete {
        filter: CtFilter,
    },
    Insert {
        entry: CtInsert,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnTimeout {
    /// The cell fails: the condition is part of what the kernel must do.
    #[default]
    Fail,
    /// The cell is inconclusive: the condition was a precondition of the test.
    Inconclusive,
    /// The timeline goes on and the step records `held = 0`: the cell's expectations
    /// judge it (a kernel where the condition is a known bug, `expect_by_kernel`).
    Record,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WaitPlan {
    pub until: Expectation,
    /// Ends the wait as on a timeout as soon as it holds (and `until` does not).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub give_up: Option<Expectation>,
    pub timeout_ms: u64,
    /// First poll interval; it doubles up to 200 ms.
    pub every_ms: u64,
    pub on_timeout: OnTimeout,
}
