//! Walks a cell's timeline. Every step kind implements [`StepKind`]; the walker
//! itself knows nothing of kinds: it runs a step in the foreground or on a scoped
//! thread (`background = true`), samples live observations beside it when asked,
//! and prefixes what the step returns with the step's name.
//!
//! Observation names a timeline adds:
//!   `<step>.<metric>`                       what a step measured
//!   `at.<checkpoint>.<observation>`         every live observation at a checkpoint
//!   `<step>.sample.{min,max,last}.<name>`   sampled while the step ran

use super::live::{ct_queries, Live};
use crate::model::ct_filter::{CtFilter, CtTerm};
use crate::model::steps::{Action, ConntrackPlan, CtOp, OnTimeout, Step, WaitPlan};
use crate::traffic::TrafficContext;
use crate::verdict::{Observations, Outcome};
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::thread::ScopedJoinHandle;
use std::time::{Duration, Instant};

/// A verdict a step reaches by itself (a `wait` that timed out).
#[derive(Debug)]
pub struct StepVerdict {
    pub outcome: Outcome,
    pub reason: String,
}

impl std::fmt::Display for StepVerdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for StepVerdict {}

/// What every step kind does: run to its end and return what it measured (names
/// without the step's prefix). Parameters were validated when the file loaded.
pub trait StepKind: Sync {
    fn run(&self, cx: &StepCx) -> Result<Observations>;
}

impl<T: StepKind> StepKind for &T {
    fn run(&self, cx: &StepCx) -> Result<Observations> {
        (**self).run(cx)
    }
}

/// What a step may use while it runs.
#[derive(Clone, Copy)]
pub struct StepCx<'a> {
    pub traffic: &'a TrafficContext<'a>,
    pub live: &'a Live<'a>,
    /// Observations so far: finished steps' metrics and checkpoints.
    pub so_far: &'a Mutex<Observations>,
    /// Evidence collectors' live readings.
    pub collectors: &'a (dyn Fn() -> Observations + Sync),
    /// Names read by any expression of the cell (to know which `ct.` queries to read).
    pub referenced: &'a [String],
}

/// A running background step: its name, whether it mostly waits, what tells it to
/// stop, its thread.
type Background<'s> = (
    String,
    bool,
    &'s AtomicBool,
    ScopedJoinHandle<'s, Result<Observations>>,
);

impl StepCx<'_> {
    fn netns(&self, node: &str) -> Result<&str> {
        crate::setup::netns_for(self.live.plan, node)
    }

    /// Every live observation the names ask for: conntrack queries, and node counters
    /// when a name is not already known from steps, checkpoints or collectors.
    pub fn observe(&self, names: &[String]) -> Result<Observations> {
        // Only what the names read: this runs on every poll and every sample, and the
        // observations so far hold every checkpoint's snapshot.
        let mut obs: Observations = {
            let so_far = self.so_far.lock().unwrap();
            let mut picked = Observations::new();
            for n in names {
                if n.contains('*') {
                    picked.extend(
                        so_far
                            .iter()
                            .filter(|(k, _)| crate::judge::glob_matches(n, k))
                            .map(|(k, v)| (k.clone(), *v)),
                    );
                } else if let Some(v) = so_far.get(n) {
                    picked.insert(n.clone(), *v);
                }
            }
            picked
        };
        obs.extend((self.collectors)());
        let queries = ct_queries(names);
        obs.extend(self.live.conntrack(&queries)?);
        let unknown = names.iter().any(|n| {
            !n.starts_with("ct.")
                && !n.contains('*')
                && !obs.contains_key(n)
                && !n.starts_with("at.")
        });
        let globbed = names
            .iter()
            .any(|n| n.contains('*') && !n.starts_with("at."));
        // A name without a glob names its node: only those nodes are read.
        let counters = if globbed {
            Some(self.live.counters()?)
        } else if unknown {
            Some(self.live.counters_for(names)?)
        } else {
            None
        };
        for (k, v) in counters.into_iter().flatten() {
            obs.entry(k).or_insert(v);
        }
        Ok(obs)
    }
}

/// The step kind that runs an action; `None` for a `join`, which is part of the
/// timeline's structure (it waits for the walker's background threads).
fn kind_of(action: &Action) -> Option<Box<dyn StepKind + '_>> {
    Some(match action {
        Action::Traffic(t) => Box::new(t),
        Action::Configure(c) => Box::new(c),
        Action::Conntrack(c) => Box::new(c),
        Action::Wait(w) => Box::new(w),
        Action::Checkpoint => Box::new(Checkpoint),
        Action::Sleep { ms } => Box::new(Sleep(*ms)),
        Action::Exec(e) => Box::new(e),
        Action::Join { .. } => return None,
    })
}

impl StepKind for crate::model::steps::TrafficSpec {
    fn run(&self, cx: &StepCx) -> Result<Observations> {
        crate::traffic::run(self, cx.traffic)
    }
}

impl StepKind for crate::model::steps::ConfigurePlan {
    fn run(&self, cx: &StepCx) -> Result<Observations> {
        let t0 = Instant::now();
        super::configure::apply(cx.netns(&self.node)?, self)?;
        Ok(Observations::from([(
            "ms".to_string(),
            t0.elapsed().as_secs_f64() * 1e3,
        )]))
    }
}

impl StepKind for ConntrackPlan {
    fn run(&self, cx: &StepCx) -> Result<Observations> {
        let netns = cx.netns(&self.node)?;
        let ct = crate::netns::ctnetlink::count;
        let mut obs = Observations::new();
        let before = ct(netns)?;
        match &self.op {
            CtOp::Flush { filter: None } => crate::netns::ctnetlink::flush(netns)?,
            CtOp::Flush { filter: Some(f) } => match kernel_flush_filter(f) {
                // The kernel filters the flush itself: its own code path is tested.
                Some((zone, mark)) => {
                    crate::netns::ctnetlink::flush_filtered(netns, zone, mark)?;
                    let after = ct(netns)?;
                    obs.insert("deleted".into(), before.saturating_sub(after) as f64);
                }
                None => {
                    let n = crate::netns::ctnetlink::delete(netns, f)?;
                    obs.insert("deleted".into(), n as f64);
                }
            },
            CtOp::Delete { filter: f } => {
                let n = crate::netns::ctnetlink::delete(netns, f)?;
                obs.insert("deleted".into(), n as f64);
            }
            CtOp::Insert { entry } => crate::netns::ctnetlink::insert(netns, entry)?,
        }
        obs.insert("entries_before".into(), before as f64);
        obs.insert("entries_after".into(), ct(netns)? as f64);
        Ok(obs)
    }
}

/// The zone and (mark, mask) of a flush the kernel filters itself.
type KernelFlush = (Option<u16>, Option<(u32, u32)>);

/// A filter the kernel can apply to a flush by itself: only `zone=` and `mark=` terms.
fn kernel_flush_filter(f: &CtFilter) -> Option<KernelFlush> {
    let (mut zone, mut mark) = (None, None);
    for t in &f.terms {
        match t {
            CtTerm::Zone(z) => zone = Some(*z),
            CtTerm::Mark { value, mask } => mark = Some((*value, *mask)),
            _ => return None,
        }
    }
    (zone.is_some() || mark.is_some()).then_some((zone, mark))
}

/// Polls its condition with a doubling interval (capped at 200 ms) until it holds, its
/// `give_up` condition holds, or the timeout passes. An observation that does not
/// exist yet means "not yet" (for `give_up` too).
impl StepKind for WaitPlan {
    fn run(&self, cx: &StepCx) -> Result<Observations> {
        let t0 = Instant::now();
        let mut names = self.until.names();
        if let Some(g) = &self.give_up {
            names.extend(g.names());
            names.sort();
            names.dedup();
        }
        let deadline = t0 + cx.traffic.slow_ms(self.timeout_ms);
        let mut every = Duration::from_millis(self.every_ms);
        let mut polls = 0u32;
        loop {
            polls += 1;
            let obs = cx.observe(&names)?;
            let last = match self.until.eval(&obs) {
                Ok((true, _)) => return Ok(wait_metrics(t0, polls, true, false)),
                Ok((false, detail)) => detail,
                Err(e) => e.to_string(),
            };
            let gave_up = self
                .give_up
                .as_ref()
                .is_some_and(|g| matches!(g.eval(&obs), Ok((true, _))));
            if gave_up || Instant::now() >= deadline || (cx.traffic.interrupted)() {
                let outcome = match self.on_timeout {
                    OnTimeout::Fail => Outcome::Fail,
                    OnTimeout::Inconclusive => Outcome::Inconclusive,
                    OnTimeout::Record => return Ok(wait_metrics(t0, polls, false, gave_up)),
                };
                let why = match &self.give_up {
                    Some(g) if gave_up => {
                        format!("gave up after {} ms: `{g}` held", t0.elapsed().as_millis())
                    }
                    _ => format!("did not hold within {} ms", self.timeout_ms),
                };
                return Err(StepVerdict {
                    outcome,
                    reason: format!("`{}` {why} (last: {last})", self.until),
                }
                .into());
            }
            std::thread::sleep(every.min(deadline.saturating_duration_since(Instant::now())));
            every = (every * 2).min(Duration::from_millis(200));
        }
    }
}

/// A wait's metrics: `held` is 1 when the condition held before the timeout,
/// `gave_up` 1 when its `give_up` condition ended it.
fn wait_metrics(t0: Instant, polls: u32, held: bool, gave_up: bool) -> Observations {
    let flag = |b: bool| if b { 1.0 } else { 0.0 };
    Observations::from([
        ("waited_ms".to_string(), t0.elapsed().as_secs_f64() * 1e3),
        ("polls".to_string(), polls as f64),
        ("held".to_string(), flag(held)),
        ("gave_up".to_string(), flag(gave_up)),
    ])
}

/// Runs the program in the node; metrics `exit_code` (-1: killed at the timeout), `ms`,
/// `stdout_lines` (non-empty lines) and `value` when the whole output is one number
/// (a counter the format does not read, through `sh -c '... | sed ...'`).
impl StepKind for crate::model::steps::ExecPlan {
    fn run(&self, cx: &StepCx) -> Result<Observations> {
        let argv = crate::setup::process::resolve_argv(&self.argv)?;
        let timeout = cx.traffic.slow_ms(self.timeout_ms);
        let done = crate::netns::exec::run_bounded(cx.netns(&self.node)?, &argv, timeout)?;
        let code = done.status.map(|s| s.code().unwrap_or(-1)).unwrap_or(-1);
        let mut obs = Observations::from([
            ("exit_code".to_string(), f64::from(code)),
            ("ms".to_string(), done.elapsed.as_secs_f64() * 1e3),
            (
                "stdout_lines".to_string(),
                done.stdout.lines().filter(|l| !l.trim().is_empty()).count() as f64,
            ),
        ]);
        if let Ok(v) = done.stdout.trim().parse::<f64>() {
            obs.insert("value".into(), v);
        }
        let command = crate::model::CommandPlan {
            argv: self.argv.clone(),
        };
        let failed = match done.status {
            None => Some(format!(
                "did not exit within {} ms and was killed",
                timeout.as_millis()
            )),
            Some(_) if code != self.expect_exit => {
                let said = crate::netns::exec::said(&done.stderr, &done.stdout);
                let said = said.lines().take(3).collect::<Vec<_>>().join(" / ");
                Some(format!("exited {code}, not {}: {said}", self.expect_exit))
            }
            Some(_) => None,
        };
        let outcome = match (failed, self.on_failure) {
            (None, _) | (Some(_), OnTimeout::Record) => return Ok(obs),
            (Some(why), OnTimeout::Fail) => (Outcome::Fail, why),
            (Some(why), OnTimeout::Inconclusive) => (Outcome::Inconclusive, why),
        };
        Err(StepVerdict {
            outcome: outcome.0,
            reason: format!("`{command}` in node `{}` {}", self.node, outcome.1),
        }
        .into())
    }
}

/// Every live observation now; the walker prefixes them with `at.<name>.`.
struct Checkpoint;

impl StepKind for Checkpoint {
    fn run(&self, cx: &StepCx) -> Result<Observations> {
        // The conntrack queries any expression reads at a checkpoint (`at.CP.ct...`).
        let wanted: Vec<String> = cx
            .referenced
            .iter()
            .filter_map(|n| n.strip_prefix("at."))
            .filter_map(|n| n.split_once('.').map(|(_, rest)| rest.to_string()))
            .collect();
        let mut obs = cx.live.counters()?;
        obs.extend(
            cx.so_far
                .lock()
                .unwrap()
                .iter()
                .filter(|(k, _)| !k.starts_with("at."))
                .map(|(k, v)| (k.clone(), *v)),
        );
        obs.extend((cx.collectors)());
        obs.extend(cx.live.conntrack(&ct_queries(&wanted))?);
        Ok(obs)
    }
}

struct Sleep(u64);

impl StepKind for Sleep {
    fn run(&self, cx: &StepCx) -> Result<Observations> {
        // Not stretched by --slow: a sleep outwaits a kernel timer, which runs in real time.
        let until = Instant::now() + Duration::from_millis(self.0);
        while Instant::now() < until && !(cx.traffic.interrupted)() {
            std::thread::sleep(Duration::from_millis(10).min(until - Instant::now()));
        }
        Ok(Observations::new())
    }
}

/// Runs the timeline; returns every observation it made.
pub fn walk(
    steps: &[Step],
    traffic: &TrafficContext,
    live: &Live,
    collectors: &(dyn Fn() -> Observations + Sync),
    referenced: &[String],
) -> Result<Observations> {
    let so_far = Mutex::new(Observations::new());
    let cx = StepCx {
        traffic,
        live,
        so_far: &so_far,
        collectors,
        referenced,
    };
    let cx = &cx;
    // Per step: set by a `join` with `stop`, read by the step as its `enough`.
    let stops: Vec<AtomicBool> = steps.iter().map(|_| AtomicBool::new(false)).collect();
    let stops = &stops;
    std::thread::scope(|scope| -> Result<()> {
        let mut background: Vec<Background> = Vec::new();
        let result = (|| -> Result<()> {
            let mut i = 0;
            while i < steps.len() {
                if crate::setup::signals::interrupted() {
                    bail!("interrupted");
                }
                if let Some((merged, n)) = nft_load_run(&steps[i..]) {
                    // One nft transaction for the whole run; each step's `ms` is the batch's.
                    let obs = run_step(cx, &merged)?;
                    for step in &steps[i..i + n] {
                        record(cx, step, obs.clone());
                    }
                    i += n;
                    continue;
                }
                let (step, index) = (&steps[i], i);
                i += 1;
                // Only waiting, beside steps that only wait: a quiet cell may run now.
                let waits = (step.action.only_waits() || step.action.mostly_waits())
                    && background
                        .iter()
                        .all(|(_, mostly_waits, _, _)| *mostly_waits);
                match &step.action {
                    Action::Join { steps: names, stop } => {
                        if *stop {
                            tell_to_stop(&background, names);
                        }
                        if waits {
                            super::gate::idle(|| join(cx, &mut background, names))?
                        } else {
                            join(cx, &mut background, names)?
                        }
                    }
                    _ if step.background => {
                        let told = &stops[index];
                        let handle = scope.spawn(move || {
                            let enough = || told.load(Ordering::SeqCst);
                            with_enough(cx, &enough, |cx| run_step(cx, step))
                        });
                        let mostly_waits = step.action.mostly_waits();
                        background.push((step.name.clone(), mostly_waits, told, handle));
                    }
                    _ if waits => {
                        let obs = super::gate::idle(|| run_step(cx, step))?;
                        record(cx, step, obs);
                    }
                    _ => {
                        let obs = run_step(cx, step)?;
                        record(cx, step, obs);
                    }
                }
            }
            Ok(())
        })();
        // The cell's end waits for every background step, also after an error.
        let joined = join(cx, &mut background, &[]);
        result.and(joined)
    })?;
    Ok(so_far.into_inner().unwrap())
}

/// The longest run (at least two) of foreground, unsampled `configure` steps at the start
/// of `steps` that only load nft rulesets into one node, merged into one step, and its
/// length. (The kernel's nft_zones_many.sh pipes its 500 `add element` lines into one
/// `nft -f` too.)
fn nft_load_run(steps: &[Step]) -> Option<(Step, usize)> {
    fn plain_configure(s: &Step) -> Option<&crate::model::steps::ConfigurePlan> {
        match &s.action {
            Action::Configure(c) if !s.background && s.sample.is_none() => Some(c),
            _ => None,
        }
    }
    let plans: Vec<_> = steps.iter().map_while(plain_configure).collect();
    super::configure::merge_nft_loads(&plans).map(|(merged, n)| {
        let step = Step {
            name: steps[0].name.clone(),
            background: false,
            sample: None,
            until: None,
            action: Action::Configure(merged),
        };
        (step, n)
    })
}

fn record(cx: &StepCx, step: &Step, obs: Observations) {
    let prefix = match step.action {
        Action::Checkpoint => format!("at.{}", step.name),
        _ => step.name.clone(),
    };
    cx.so_far
        .lock()
        .unwrap()
        .extend(obs.into_iter().map(|(k, v)| (format!("{prefix}.{k}"), v)));
}

/// Runs `f` with `cx`, its traffic's `enough` replaced.
fn with_enough<T>(
    cx: &StepCx,
    enough: &(dyn Fn() -> bool + Sync),
    f: impl FnOnce(&StepCx) -> T,
) -> T {
    let traffic = TrafficContext {
        enough,
        ..*cx.traffic
    };
    f(&StepCx {
        traffic: &traffic,
        ..*cx
    })
}

/// Tells the background steps a `join` names (every one when none) to stop.
fn tell_to_stop(background: &[Background], names: &[String]) {
    for (name, _, told, _) in background {
        if names.is_empty() || names.contains(name) {
            told.store(true, Ordering::SeqCst);
        }
    }
}

/// Waits for background steps: those named, or every one still running.
fn join(cx: &StepCx, background: &mut Vec<Background>, names: &[String]) -> Result<()> {
    let (handles, keep): (Vec<_>, Vec<_>) = background
        .drain(..)
        .partition(|(n, _, _, _)| names.is_empty() || names.contains(n));
    *background = keep;
    let mut first_err = None;
    for (name, _, _, h) in handles {
        let r = h.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
        match r {
            Ok(obs) => {
                let prefixed = obs.into_iter().map(|(k, v)| (format!("{name}.{k}"), v));
                cx.so_far.lock().unwrap().extend(prefixed);
            }
            Err(e) => {
                first_err.get_or_insert(e.context(format!("background step `{name}`")));
            }
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// Runs one step, with its `until` read at the step's own decision points.
fn run_step(cx: &StepCx, step: &Step) -> Result<Observations> {
    let Some(stop) = &step.until else {
        return run_sampled(cx, step);
    };
    let names = stop.until.names();
    let every = Duration::from_millis(stop.every_ms);
    // (next read, held): once it held it stays held. Reads are at least `every` apart
    // and take at most a tenth of the step's time: a read that took 50 ms (a slow
    // guest) puts the next one 450 ms later.
    let state: Mutex<(Option<Instant>, bool)> = Mutex::new((None, false));
    let outer = cx.traffic.enough;
    let enough = || {
        if outer() {
            return true;
        }
        let mut st = state.lock().unwrap();
        if !st.1 && st.0.is_none_or(|next| Instant::now() >= next) {
            let t0 = Instant::now();
            st.1 = cx
                .observe(&names)
                .ok()
                .and_then(|obs| stop.until.eval(&obs).ok())
                .is_some_and(|(held, _)| held);
            st.0 = Some(Instant::now() + every.max(t0.elapsed() * 9));
        }
        st.1
    };
    let mut obs = with_enough(cx, &enough, |cx| run_sampled(cx, step))?;
    let held = state.into_inner().unwrap().1;
    obs.insert("until_held".into(), if held { 1.0 } else { 0.0 });
    Ok(obs)
}

/// Runs one step, with a sampler beside it when the step asks for one.
fn run_sampled(cx: &StepCx, step: &Step) -> Result<Observations> {
    let Some(kind) = kind_of(&step.action) else {
        return Ok(Observations::new());
    };
    let Some(sampling) = &step.sample else {
        return kind
            .run(cx)
            .with_context(|| format!("step `{}` ({})", step.name, step.action.kind()));
    };
    let done = AtomicBool::new(false);
    let (result, samples) = std::thread::scope(|s| {
        let sampler = s.spawn(|| sample(cx, &sampling.observe, sampling.every_ms, &done));
        let r = kind.run(cx);
        done.store(true, Ordering::Relaxed);
        (
            r,
            sampler
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p)),
        )
    });
    let mut obs =
        result.with_context(|| format!("step `{}` ({})", step.name, step.action.kind()))?;
    obs.extend(samples?);
    Ok(obs)
}

/// min / max / last of each name, every `every_ms`, until `done`; at least one sample.
fn sample(cx: &StepCx, names: &[String], every_ms: u64, done: &AtomicBool) -> Result<Observations> {
    let mut acc: BTreeMap<String, (f64, f64, f64)> = BTreeMap::new();
    let mut count = 0u32;
    loop {
        let t0 = Instant::now();
        let obs = cx.observe(names)?;
        count += 1;
        for n in names {
            if let Some(&v) = obs.get(n) {
                let e = acc.entry(n.clone()).or_insert((v, v, v));
                e.0 = e.0.min(v);
                e.1 = e.1.max(v);
                e.2 = v;
            }
        }
        if done.load(Ordering::Relaxed) {
            break;
        }
        let gap = Duration::from_millis(every_ms).saturating_sub(t0.elapsed());
        let until = Instant::now() + gap;
        while Instant::now() < until && !done.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(2).min(until - Instant::now()));
        }
    }
    let mut out = Observations::from([("sample.count".to_string(), count as f64)]);
    for (n, (min, max, last)) in acc {
        out.insert(format!("sample.min.{n}"), min);
        out.insert(format!("sample.max.{n}"), max);
        out.insert(format!("sample.last.{n}"), last);
    }
    Ok(out)
}
