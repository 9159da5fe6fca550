//! `faultlab vm`: obtain each kernel, build its initramfs, pick the accelerator,
//! boot it once and run the command inside; report boot and run times.

use super::boot::{self, BootReport, Echo, GuestOutcome, Limits, EXIT_INFRA, EXIT_TIMEOUT};
use super::guest::{GuestPlan, Share};
use super::kernel::{self, Kernel};
use super::modules::ModuleIndex;
use super::qemu::{self, Accel, QemuConfig, ShareSource};
use super::record::{self, VmRecord};
use super::spec::KernelSpec;
use super::{initramfs, preload, virtiofsd};
use crate::runner::progress::{Event, Progress, Silent};
use anyhow::{bail, Context, Result};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccelChoice {
    Auto,
    Tcg,
    Kvm,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShareChoice {
    Auto,
    Virtiofs,
    NineP,
}

#[derive(Debug, Clone)]
pub struct VmOptions {
    pub kernels: Vec<KernelSpec>,
    pub modules: Option<PathBuf>,
    pub accel: AccelChoice,
    pub share: ShareChoice,
    /// Launch → command exit.
    pub timeout: Duration,
    /// Launch → command start.
    pub boot_timeout: Duration,
    pub smp: u32,
    /// Guests booted at once (one per kernel, at most this many).
    pub parallel: usize,
    pub memory_mb: u32,
    pub cache: PathBuf,
    pub refresh: bool,
    /// Results root for an inner `run` without its own --results.
    pub results: PathBuf,
    /// Timing multiplier for an inner `run` (default: 10 under TCG, 1 under KVM).
    pub slow: Option<f64>,
    /// Modules loaded before the command (autoloading covers the rest).
    pub preload: Preload,
    /// `args` is a program and its arguments, not a faultlab command.
    pub exec: bool,
    pub verbose: bool,
    pub args: Vec<String>,
}

/// Modules a catalogue run expects present; the host has them built in, and
/// nothing autoloads br_netfilter or conntrack's sysctls.
pub const DEFAULT_PRELOAD: &[&str] = &["br_netfilter", "nf_conntrack"];

/// Which modules a guest loads before its command (lab/vm/preload.rs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preload {
    /// `--preload` (default [`DEFAULT_PRELOAD`]).
    pub given: Vec<String>,
    /// Also what the last boot of the kernel release had loaded (off with
    /// `--no-preload-learned`).
    pub learned: bool,
}

pub fn default_cache() -> PathBuf {
    std::env::var_os("FAULTLAB_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/faultlab"))
}

fn qemu_bin() -> String {
    std::env::var("FAULTLAB_QEMU").unwrap_or_else(|_| "qemu-system-x86_64".into())
}

/// Usage errors, found before anything is downloaded or booted.
pub fn validate(opts: &VmOptions) -> Result<()> {
    if opts.kernels.is_empty() {
        bail!("no --kernel given (e.g. --kernel debian:cloud/bookworm)");
    }
    if opts.args.is_empty() {
        if opts.exec {
            bail!("--exec needs a program after `--`, e.g. `-- uname -r`");
        }
        bail!("nothing to run in the guest: add a faultlab command after `--`, e.g. `-- run scenarios/bridge-netfilter.toml`");
    }
    if opts.modules.is_some()
        && opts
            .kernels
            .iter()
            .all(|k| !matches!(k, KernelSpec::File(_)))
    {
        bail!("--modules goes with --kernel PATH; Debian packages bring their own modules");
    }
    Ok(())
}

/// Run the command under every kernel, `opts.parallel` guests at once; the exit code
/// is the worst: infrastructure (125) over timeout (124) over the command's own status.
/// Guests booted at once print each one's output whole when it ends (in the order they
/// end), and report their progress as plain lines tagged with the kernel.
pub fn run(opts: &VmOptions, progress: &dyn Progress) -> i32 {
    let parallel = opts.parallel.clamp(1, opts.kernels.len().max(1));
    if parallel == 1 {
        return opts.kernels.iter().fold(0, |worst, spec| {
            combine(worst, run_kernel(opts, spec, progress, None))
        });
    }
    let next = AtomicUsize::new(0);
    let worst = Mutex::new(0);
    std::thread::scope(|s| {
        for _ in 0..parallel {
            s.spawn(|| loop {
                let k = next.fetch_add(1, Ordering::SeqCst);
                let Some(spec) = opts.kernels.get(k) else {
                    break;
                };
                let out = Arc::new(Mutex::new(String::new()));
                let lines = Tagged::new(spec.label());
                let code = run_kernel(opts, spec, &lines, Some(out.clone()));
                let mut w = worst.lock().unwrap_or_else(|e| e.into_inner());
                *w = combine(*w, code);
                let text = std::mem::take(&mut *out.lock().unwrap_or_else(|e| e.into_inner()));
                let mut stdout = std::io::stdout().lock();
                let _ = stdout
                    .write_all(text.as_bytes())
                    .and_then(|()| stdout.flush());
            });
        }
    });
    worst.into_inner().unwrap_or_else(|e| e.into_inner())
}

/// One kernel: boot, run, and for an inner KTAP run that never printed its verdicts,
/// the test line a CI parser still needs.
fn run_kernel(
    opts: &VmOptions,
    spec: &KernelSpec,
    progress: &dyn Progress,
    into: Option<Arc<Mutex<String>>>,
) -> i32 {
    let started = std::time::Instant::now();
    let code = match run_one(opts, spec, progress, into.clone()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("vm: {}: {e:#}", spec.label());
            EXIT_INFRA
        }
    };
    // An inner KTAP run that never printed its verdicts still leaves a test line
    // for the CI parser (runner.sh's `# TIMEOUT`; `# ERROR` for a broken guest).
    // Under --bisect, 125 is the guest's own "cannot tell".
    if let Some(how) = aborted_ktap(&opts.args, code) {
        let reason = match how {
            crate::report::Aborted::Timeout => {
                format!("{} seconds", opts.timeout.as_secs())
            }
            crate::report::Aborted::Error => {
                "infrastructure failure, not a scenario result (see stderr)".into()
            }
        };
        let line = crate::report::ktap_aborted(
            &format!("vm {}", spec.label()),
            how,
            &reason,
            started.elapsed().as_millis() as u64,
        );
        match into {
            Some(b) => b.lock().unwrap_or_else(|e| e.into_inner()).push_str(&line),
            None => print!("{line}"),
        }
    }
    code
}

/// Progress of one of several guests running at once, as plain stderr lines tagged
/// with its kernel: its phases, cells that did not pass, and every 16th cell.
struct Tagged {
    label: String,
    planned: AtomicUsize,
    done: AtomicUsize,
}

impl Tagged {
    fn new(label: String) -> Tagged {
        Tagged {
            label,
            planned: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
        }
    }
}

impl Progress for Tagged {
    fn event(&self, e: &Event) {
        match e {
            Event::Phase { what } => eprintln!("[{}] {what}", self.label),
            Event::Planned { cells } => self.planned.store(*cells, Ordering::SeqCst),
            Event::CellFinished { id, outcome, .. } => {
                let n = self.done.fetch_add(1, Ordering::SeqCst) + 1;
                let of = self.planned.load(Ordering::SeqCst);
                let passed = matches!(outcome, Some(crate::verdict::Outcome::Pass) | None);
                if !passed || n % 16 == 0 || n == of {
                    let what = outcome.map_or("done", |o| o.as_str());
                    eprintln!("[{}] {n}/{of} {id} {what}", self.label);
                }
            }
            _ => {}
        }
    }
}

/// Whether the inner command is a `run` printing KTAP that the exit code says it
/// never finished.
pub fn aborted_ktap(args: &[String], code: i32) -> Option<crate::report::Aborted> {
    let formats = ["ktap", "kselftest"];
    let ktap = args.first().is_some_and(|c| c == "run")
        && (args
            .windows(2)
            .any(|w| w[0] == "--format" && formats.contains(&w[1].as_str()))
            || args.iter().any(|a| {
                a.strip_prefix("--format=")
                    .is_some_and(|f| formats.contains(&f))
            }));
    let bisect = args.iter().any(|a| a == "--bisect");
    match code {
        _ if !ktap => None,
        EXIT_TIMEOUT => Some(crate::report::Aborted::Timeout),
        EXIT_INFRA if !bisect => Some(crate::report::Aborted::Error),
        _ => None,
    }
}

pub fn combine(a: i32, b: i32) -> i32 {
    let rank = |c: i32| match c {
        EXIT_INFRA => (3, c),
        EXIT_TIMEOUT => (2, c),
        0 => (0, c),
        _ => (1, c),
    };
    if rank(b) > rank(a) {
        b
    } else {
        a
    }
}

fn run_one(
    opts: &VmOptions,
    spec: &KernelSpec,
    progress: &dyn Progress,
    into: Option<Arc<Mutex<String>>>,
) -> Result<i32> {
    std::fs::create_dir_all(&opts.cache).with_context(|| {
        format!(
            "creating the cache {} (set --cache or FAULTLAB_CACHE)",
            opts.cache.display()
        )
    })?;
    progress.event(&Event::Phase {
        what: match spec {
            KernelSpec::Debian { .. } => {
                format!(
                    "vm: fetching {} (downloaded once, then cached)",
                    spec.label()
                )
            }
            KernelSpec::File(_) => format!("vm: reading {}", spec.label()),
        },
    });
    let kernel = kernel::obtain(spec, opts.modules.as_deref(), &opts.cache, opts.refresh)?;
    let index = kernel.index()?;
    let share = choose_share(opts.share, &index, kernel.modules.is_some())?;
    let accel = choose_accel(opts, &kernel, &index, share, progress)?;
    let slow = opts
        .slow
        .unwrap_or(if accel == Accel::Tcg { 10.0 } else { 1.0 });
    let cwd = std::env::current_dir().context("reading the current directory")?;
    let (argv, writable) = if opts.exec {
        if opts.args.is_empty() {
            bail!("--exec needs a program: faultlab vm --exec --kernel ... -- uname -r");
        }
        (opts.args.clone(), None)
    } else {
        let exe = std::env::current_exe().context("locating the faultlab binary")?;
        let (args, results) = inner_args(&opts.args, &opts.results, slow)?;
        let results = results.map(|r| cwd.join(r));
        if let Some(r) = &results {
            std::fs::create_dir_all(r).with_context(|| format!("creating {}", r.display()))?;
        }
        let mut argv = vec![exe.display().to_string()];
        argv.extend(args);
        (argv, results)
    };
    // A vm.json left from an earlier boot is no scenario result: keep it out of
    // the inner run's summary (it is rewritten below).
    if let (Some(root), Some(rel)) = (&writable, &kernel.release) {
        let _ = std::fs::remove_file(record::path(root, rel));
    }
    let started_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    progress.event(&Event::Phase {
        what: format!(
            "vm: booting {} ({}) under {}, {} share, {} CPUs, {} MiB",
            kernel.release.as_deref().unwrap_or("?"),
            kernel.spec,
            accel.as_str(),
            share.as_str(),
            opts.smp,
            opts.memory_mb
        ),
    });
    let learned = kernel
        .release
        .as_deref()
        .and_then(|r| preload::learned_path(&opts.cache, r));
    let seen = match (&learned, opts.preload.learned) {
        (Some(path), true) => preload::read_learned(path),
        _ => Vec::new(),
    };
    let preload = preload::plan(&opts.preload.given, &seen, &index);
    let boot = || {
        boot_guest(
            &kernel,
            &index,
            share,
            accel,
            &opts.cache,
            GuestRun {
                argv: argv.clone(),
                writable: writable.clone(),
                preload: preload.clone(),
                cwd: cwd.clone(),
                limits: Limits {
                    boot: opts.boot_timeout,
                    total: opts.timeout,
                },
                echo: Echo {
                    command: true,
                    boot: opts.verbose,
                    into: into.clone(),
                },
                smp: opts.smp,
                memory_mb: opts.memory_mb,
            },
            progress,
        )
    };
    let mut report = boot()?;
    // A guest that never reached our init ran nothing: under TCG an early-boot stall
    // of the emulated machine (seen here: SeaBIOS, then no kernel output at all for
    // the whole boot timeout) is the emulator's, so the boot is tried once more.
    if matches!(report.outcome, GuestOutcome::Infra(_))
        && report.release.is_none()
        && report.run.is_none()
    {
        if let GuestOutcome::Infra(why) = &report.outcome {
            eprintln!("vm: {why}; booting once more (the guest ran nothing)");
        }
        report = boot()?;
    }
    if let (Some(path), GuestOutcome::Exited(_), false) =
        (&learned, &report.outcome, report.modules.is_empty())
    {
        if let Err(e) = preload::write_learned(path, &report.modules) {
            eprintln!(
                "warning: cannot record the guest's modules in {}: {e}",
                path.display()
            );
        }
    }
    // The inner run ends its own bar; one cut short (timeout, crash) is ended here.
    progress.event(&Event::Finished);
    let release = report
        .release
        .clone()
        .or(kernel.release.clone())
        .unwrap_or_else(|| "unknown".into());
    let code = report.outcome.exit_code();
    eprintln!("vm: {}", summary_line(&release, accel, share, &report));
    if let GuestOutcome::Infra(why) = &report.outcome {
        eprintln!("vm: infrastructure failure (not a scenario result): {why}");
        if !opts.verbose && !report.console_tail.is_empty() {
            eprintln!("vm: last console lines:");
            for l in &report.console_tail {
                eprintln!("  | {l}");
            }
        }
    }
    if let Some(root) = writable {
        let rec = VmRecord {
            kernel_release: release.clone(),
            kernel: kernel.spec.clone(),
            packages: kernel.packages.clone(),
            accel: accel.as_str().into(),
            share: share.as_str().into(),
            smp: opts.smp,
            memory_mb: opts.memory_mb,
            slow,
            command: argv.iter().skip(1).cloned().collect(),
            exit_code: code,
            outcome: match report.outcome {
                GuestOutcome::Exited(_) => "exited",
                GuestOutcome::TimedOut => "timeout",
                GuestOutcome::Infra(_) => "infra",
            }
            .into(),
            infra_reason: match &report.outcome {
                GuestOutcome::Infra(w) => Some(w.clone()),
                _ => None,
            },
            boot_ms: report.boot.map(|d| d.as_millis() as u64),
            run_ms: report.run.map(|d| d.as_millis() as u64),
            total_ms: report.total.as_millis() as u64,
            started_at,
            host_kernel: crate::runner::kernel::release(),
            qemu: qemu_version(),
        };
        match record::write(&root, &rec) {
            Ok(p) => eprintln!("vm: wrote {}", p.display()),
            Err(e) => eprintln!("warning: {e:#}"),
        }
    }
    Ok(code)
}

pub fn summary_line(release: &str, accel: Accel, share: Share, r: &BootReport) -> String {
    let secs = |d: Option<Duration>| {
        d.map(|d| format!("{:.1} s", d.as_secs_f64()))
            .unwrap_or_else(|| "-".into())
    };
    let status = match &r.outcome {
        GuestOutcome::Exited(c) => format!("exit {c}"),
        GuestOutcome::TimedOut => format!("timed out (exit {EXIT_TIMEOUT})"),
        GuestOutcome::Infra(_) => format!("infrastructure failure (exit {EXIT_INFRA})"),
    };
    format!(
        "{release} [{}, {}]: boot {}, run {}, total {:.1} s, {status}",
        accel.as_str(),
        share.as_str(),
        secs(r.boot),
        secs(r.run),
        r.total.as_secs_f64()
    )
}

/// The inner faultlab arguments: an inner `run` gets `--results` (so results land
/// in the writable share) and `--slow` unless given. Returns the results directory
/// the guest writes to, if any.
pub fn inner_args(
    args: &[String],
    results: &Path,
    slow: f64,
) -> Result<(Vec<String>, Option<PathBuf>)> {
    let Some(first) = args.first() else {
        bail!("nothing to run in the guest: add a faultlab command, e.g. `-- run scenarios/bridge-netfilter.toml`");
    };
    let mut out = args.to_vec();
    if first != "run" {
        return Ok((out, None));
    }
    let value_of = |flag: &str| {
        args.iter().enumerate().find_map(|(i, a)| {
            if a == flag {
                args.get(i + 1).cloned()
            } else {
                a.strip_prefix(&format!("{flag}=")).map(str::to_owned)
            }
        })
    };
    let dir = if args.iter().any(|a| a == "--no-results") {
        None
    } else if let Some(r) = value_of("--results") {
        Some(PathBuf::from(r))
    } else {
        out.push("--results".into());
        out.push(results.display().to_string());
        Some(results.to_owned())
    };
    if value_of("--slow").is_none() && slow != 1.0 {
        out.push("--slow".into());
        out.push(format!("{slow}"));
    }
    Ok((out, dir))
}

pub fn choose_share(choice: ShareChoice, index: &ModuleIndex, have_modules: bool) -> Result<Share> {
    let has_virtiofs = !have_modules || index.has("virtiofs");
    let has_9p = have_modules && index.has("9p") && index.has("9pnet_virtio");
    let daemon = virtiofsd::find().is_some();
    match choice {
        ShareChoice::Virtiofs => {
            if !daemon {
                bail!("no virtiofsd: {}", virtiofsd::INSTALL_HINT);
            }
            Ok(Share::Virtiofs)
        }
        ShareChoice::NineP => Ok(Share::NineP),
        ShareChoice::Auto if has_virtiofs && daemon => Ok(Share::Virtiofs),
        ShareChoice::Auto if has_9p => Ok(Share::NineP),
        ShareChoice::Auto if has_virtiofs => bail!(
            "this kernel has no 9p, so it needs virtio-fs, and there is no virtiofsd: {}",
            virtiofsd::INSTALL_HINT
        ),
        ShareChoice::Auto => {
            bail!("this kernel has neither virtiofs nor 9p: it cannot mount the host root")
        }
    }
}

/// `--accel auto`: KVM if a short probe boot under it works (cached per kernel),
/// else TCG. Stock kernels abort or hang under this machine's nested KVM.
fn choose_accel(
    opts: &VmOptions,
    kernel: &Kernel,
    index: &ModuleIndex,
    share: Share,
    progress: &dyn Progress,
) -> Result<Accel> {
    let kvm = Path::new("/dev/kvm");
    match opts.accel {
        AccelChoice::Tcg => return Ok(Accel::Tcg),
        AccelChoice::Kvm if !kvm.exists() => {
            bail!("--accel kvm: /dev/kvm is missing (use --accel tcg)")
        }
        AccelChoice::Kvm => return Ok(Accel::Kvm),
        AccelChoice::Auto if !kvm.exists() => return Ok(Accel::Tcg),
        AccelChoice::Auto => {}
    }
    let key = cache_key(kernel);
    let cached = opts.cache.join("accel").join(&key);
    if let Ok(v) = std::fs::read_to_string(&cached) {
        return Ok(if v.trim() == "kvm" {
            Accel::Kvm
        } else {
            Accel::Tcg
        });
    }
    progress.event(&Event::Phase {
        what: format!("vm: probing KVM with a short boot of {}", kernel.spec),
    });
    let report = boot_guest(
        kernel,
        index,
        share,
        Accel::Kvm,
        &opts.cache,
        GuestRun {
            argv: vec!["/bin/true".into()],
            writable: None,
            preload: Vec::new(),
            cwd: "/".into(),
            limits: Limits {
                boot: Duration::from_secs(15),
                total: Duration::from_secs(20),
            },
            echo: Echo {
                command: false,
                boot: opts.verbose,
                into: None,
            },
            smp: 1,
            memory_mb: opts.memory_mb,
        },
        &Silent,
    )?;
    let accel = match &report.outcome {
        GuestOutcome::Exited(0) => Accel::Kvm,
        other => {
            let why = match other {
                GuestOutcome::Infra(w) => w.lines().next().unwrap_or_default().to_owned(),
                GuestOutcome::TimedOut => "timed out".into(),
                GuestOutcome::Exited(c) => format!("probe exited {c}"),
            };
            progress.event(&Event::Phase {
                what: format!(
                    "vm: KVM does not boot this kernel here ({why}); using TCG (software emulation)"
                ),
            });
            Accel::Tcg
        }
    };
    if let Some(dir) = cached.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let _ = std::fs::write(&cached, accel.as_str());
    Ok(accel)
}

/// A file-name-safe key for per-kernel cache entries.
fn cache_key(kernel: &Kernel) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    kernel.image.hash(&mut h);
    if let Ok(m) = std::fs::metadata(&kernel.image) {
        m.len().hash(&mut h);
        m.modified().ok().hash(&mut h);
    }
    format!(
        "{}-{:016x}",
        kernel.release.as_deref().unwrap_or("own"),
        h.finish()
    )
}

struct GuestRun {
    argv: Vec<String>,
    writable: Option<PathBuf>,
    preload: Vec<String>,
    cwd: PathBuf,
    limits: Limits,
    echo: Echo,
    smp: u32,
    memory_mb: u32,
}

/// One boot: per-run initramfs, share daemons, QEMU; everything removed afterwards.
fn boot_guest(
    kernel: &Kernel,
    index: &ModuleIndex,
    share: Share,
    accel: Accel,
    cache: &Path,
    run: GuestRun,
    progress: &dyn Progress,
) -> Result<BootReport> {
    let (base, modules) = initramfs::base(cache, &cache_key(kernel), index, share)?;
    // Guests booted at once by one process differ in the sequence number.
    static BOOTS: AtomicUsize = AtomicUsize::new(0);
    let nonce = format!(
        "{:x}{:x}{:x}",
        std::process::id(),
        BOOTS.fetch_add(1, Ordering::SeqCst),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
    );
    let dir = RunDir::create(&cache.join("runs").join(&nonce))?;
    let plan = GuestPlan {
        nonce: nonce.clone(),
        share,
        initramfs_modules: modules,
        kernel_modules: kernel.modules.clone(),
        writable: run.writable.clone(),
        preload: run.preload,
        cwd: run.cwd,
        argv: run.argv,
        tty: run.echo.command && run.echo.into.is_none() && std::io::stdout().is_terminal(),
    };
    let initrd = dir.0.join("initrd.cpio");
    initramfs::for_run(&base, &plan, &initrd)?;
    let mut daemons = Vec::new();
    let shares = match share {
        Share::Virtiofs => {
            let bin = virtiofsd::find().context(virtiofsd::INSTALL_HINT)?;
            let root_socket = dir.0.join("root.sock");
            daemons.push(virtiofsd::Virtiofsd::start(
                &bin,
                Path::new("/"),
                &root_socket,
                true,
            )?);
            let out_socket = match &run.writable {
                Some(w) => {
                    let s = dir.0.join("out.sock");
                    daemons.push(virtiofsd::Virtiofsd::start(&bin, w, &s, false)?);
                    Some(s)
                }
                None => None,
            };
            ShareSource::Virtiofs {
                root_socket,
                out_socket,
            }
        }
        Share::NineP => ShareSource::NineP {
            root: "/".into(),
            out: run.writable.clone(),
        },
    };
    let cfg = QemuConfig {
        accel,
        smp: run.smp,
        memory_mb: run.memory_mb,
        kernel: kernel.image.clone(),
        initrd,
        shares,
        append: std::env::var("FAULTLAB_VM_APPEND").unwrap_or_default(),
    };
    let mut cmd = Command::new(qemu_bin());
    cmd.args(qemu::args(&cfg));
    let report = boot::boot(cmd, &nonce, &run.limits, &run.echo, progress);
    drop(daemons);
    drop(dir);
    report
}

/// `<cache>/runs/<nonce>/`, removed on drop.
struct RunDir(PathBuf);

impl RunDir {
    fn create(p: &Path) -> Result<RunDir> {
        std::fs::create_dir_all(p).with_context(|| format!("creating {}", p.display()))?;
        Ok(RunDir(p.to_owned()))
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn qemu_version() -> String {
    Command::new(qemu_bin())
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(str::to_owned))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn inner_run_gets_results_and_slow() {
        let (args, dir) = inner_args(
            &s(&["run", "scenarios/a.toml"]),
            Path::new("/w/results"),
            10.0,
        )
        .unwrap();
        assert_eq!(
            args,
            s(&[
                "run",
                "scenarios/a.toml",
                "--results",
                "/w/results",
                "--slow",
                "10"
            ])
        );
        assert_eq!(dir, Some(PathBuf::from("/w/results")));
    }

    #[test]
    fn inner_run_keeps_its_own_flags() {
        let (args, dir) = inner_args(
            &s(&["run", "--results=out", "--slow", "3"]),
            Path::new("/w/results"),
            10.0,
        )
        .unwrap();
        assert_eq!(args, s(&["run", "--results=out", "--slow", "3"]));
        assert_eq!(dir, Some(PathBuf::from("out")));
        let (_, dir) = inner_args(&s(&["run", "--no-results"]), Path::new("/r"), 1.0).unwrap();
        assert_eq!(dir, None);
    }

    #[test]
    fn other_commands_pass_through() {
        let (args, dir) = inner_args(&s(&["list"]), Path::new("/r"), 10.0).unwrap();
        assert_eq!(args, s(&["list"]));
        assert_eq!(dir, None);
        assert!(inner_args(&[], Path::new("/r"), 1.0).is_err());
    }

    #[test]
    fn an_unfinished_ktap_run_gets_a_timeout_or_error_line() {
        use crate::report::Aborted;
        let ktap = s(&["run", "--format", "ktap", "scenarios/"]);
        assert_eq!(aborted_ktap(&ktap, EXIT_TIMEOUT), Some(Aborted::Timeout));
        assert_eq!(aborted_ktap(&ktap, EXIT_INFRA), Some(Aborted::Error));
        assert_eq!(aborted_ktap(&ktap, 1), None);
        let table = s(&["run", "scenarios/"]);
        assert_eq!(aborted_ktap(&table, EXIT_TIMEOUT), None);
        let bisect = s(&["run", "--format=kselftest", "--bisect"]);
        assert_eq!(aborted_ktap(&bisect, EXIT_INFRA), None);
        assert_eq!(aborted_ktap(&bisect, EXIT_TIMEOUT), Some(Aborted::Timeout));
    }

    #[test]
    fn worst_exit_code_wins() {
        assert_eq!(combine(0, 1), 1);
        assert_eq!(combine(1, EXIT_TIMEOUT), EXIT_TIMEOUT);
        assert_eq!(combine(EXIT_INFRA, EXIT_TIMEOUT), EXIT_INFRA);
        assert_eq!(combine(4, 0), 4);
    }

    #[test]
    fn share_choice_follows_the_kernel() {
        let cloud = ModuleIndex::parse("kernel/fs/fuse/virtiofs.ko:\n", "");
        let generic =
            ModuleIndex::parse("kernel/fs/9p/9p.ko:\nkernel/net/9p/9pnet_virtio.ko:\n", "");
        assert_eq!(
            choose_share(ShareChoice::Auto, &generic, true).unwrap(),
            Share::NineP
        );
        if virtiofsd::find().is_some() {
            assert_eq!(
                choose_share(ShareChoice::Auto, &cloud, true).unwrap(),
                Share::Virtiofs
            );
        } else {
            assert!(choose_share(ShareChoice::Auto, &cloud, true).is_err());
        }
    }
}
