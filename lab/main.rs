//! `faultlab`: run packet-loss scenarios in network namespaces and judge them
//! with the kernel's own counters.

use clap::{Parser, Subcommand, ValueEnum};
use faultlab::runner::progress::{self, Event, Progress};
use faultlab::runner::{self, RunOptions};
use faultlab::verdict::{bisect_exit_code, exit_code, ScenarioResult};
use faultlab::{report, scenario};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Exit code for usage and input errors (bad scenario file, unknown name): 64
/// (EX_USAGE), clear of kselftest's 0/1/2/4.
const EXIT_USAGE: u8 = faultlab::verdict::EXIT_USAGE as u8;

const EXIT_CODES: &str = "Exit codes (kselftest's): 0 all pass, 1 any fail, 2 any inconclusive \
(XFAIL: a race that did not fire), 4 only skips, 64 usage or scenario-file error, 130 \
interrupted. `run --bisect`: 0 good, 1 bad, 125 cannot tell, 128 usage error. `vm`: 124 \
timeout, 125 infrastructure failure.";

#[derive(Parser)]
#[command(name = "faultlab", version, about, after_help = EXIT_CODES)]
struct Cli {
    /// Where templates are looked for after the scenario's own topologies/ directory
    /// (before the built-in ones); may be repeated.
    #[arg(long, global = true, value_name = "DIR")]
    templates: Vec<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum Format {
    Table,
    Json,
    Ktap,
    /// One kselftest program's output: TAP version 13, one test per cell.
    Kselftest,
    Junit,
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum HostFormat {
    Table,
    Json,
    Markdown,
}

#[derive(Subcommand)]
enum Command {
    /// List scenarios and their cells.
    List {
        /// Scenario files, directories or names (default: scenarios/).
        paths: Vec<String>,
    },
    /// Run scenarios and print the verdict table.
    Run {
        /// Scenario files, directories or names (default: scenarios/).
        paths: Vec<String>,
        /// Run only the cell with this name.
        #[arg(long)]
        cell: Option<String>,
        /// Repeat each cell N times (multiplies the file's own `repeat`).
        #[arg(long, default_value_t = 1)]
        repeat: u32,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// Results root; results/<kernel-release>/ is written below it.
        #[arg(long, default_value = "results")]
        results: PathBuf,
        /// Do not write results files.
        #[arg(long)]
        no_results: bool,
        /// Timing multiplier (e.g. 10 under software emulation; default 1, or 10
        /// when KSFT_MACHINE_SLOW=yes).
        #[arg(long)]
        slow: Option<f64>,
        /// Exit for `git bisect run`: 0 good, 1 bad, 125 cannot tell (inconclusive,
        /// skip); see --bad-threshold.
        #[arg(long)]
        bisect: bool,
        /// With --bisect: a cell is bad when at least K of its repetitions fail, good
        /// when fewer fail and at least K passed or failed, else it cannot tell.
        #[arg(long, value_name = "K", default_value_t = 1, requires = "bisect")]
        bad_threshold: u32,
        /// Keep every observation in the results (default: those the expectations
        /// read, and nonzero values).
        #[arg(long)]
        all_observations: bool,
        /// Cells run at once; cells that change host-global sysctls or are
        /// timing-sensitive still run alone (see `--schedule`).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
        jobs: u32,
        /// TOML file overriding which cells run alone: `alone = ["scenario::cell"]`,
        /// `shared = ["scenario::*"]`.
        #[arg(long)]
        schedule: Option<PathBuf>,
    },
    /// Rewrite results JSON files (or every one in a results directory) keeping only
    /// the observations that matter, as `run` writes them; summaries are regenerated.
    Compact { paths: Vec<PathBuf> },
    /// Print the verdict table of earlier runs.
    Show {
        files: Vec<PathBuf>,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Print the expanded plan of one cell (what would be built), as JSON.
    Plan {
        file: String,
        #[arg(long)]
        cell: Option<String>,
    },
    /// Remove leftovers of interrupted runs and restore host-global sysctls.
    Clean,
    /// Run a faultlab command under other kernels in QEMU (e.g. `vm --kernel debian:cloud/trixie -- run scenarios/`).
    Vm(VmArgs),
    /// Compare verdicts of two kernels (results dirs or JSON files); `--all DIR` writes DIR/kernels.md.
    Diff {
        /// Two results/<kernel>/ directories or two result JSON files.
        paths: Vec<PathBuf>,
        /// Cross-kernel matrix of every results/<kernel>/ under this directory.
        #[arg(long, value_name = "RESULTS")]
        all: Option<PathBuf>,
    },
    /// Which options of the catalogue's kernel config fragment (`config`) a kernel lacks,
    /// and which cells cannot run because of it (default /proc/config.gz, else /boot/config-RELEASE).
    KernelConfig {
        /// A kernel .config (plain or gzip-compressed).
        file: Option<PathBuf>,
    },
    /// Print the JSON Schema of scenario files (for taplo / Even Better TOML; README "Editors").
    Schema,
    /// Does this machine have the catalogue's phenomena? Runs each scenario's
    /// `[host_check]` cell with this machine's sysctls and rules: affected / not
    /// affected / cannot tell, and proves the root namespace did not change.
    CheckHost {
        /// Scenario files, directories or names (default: scenarios/).
        paths: Vec<String>,
        #[arg(long, value_enum, default_value_t = HostFormat::Table)]
        format: HostFormat,
        /// Read the node from fixture files (node.toml, *.save, nft.ruleset) instead.
        #[arg(long, value_name = "DIR", conflicts_with = "netns")]
        fixture: Option<PathBuf>,
        /// Read the node from this network namespace instead of the root one.
        #[arg(long, value_name = "NAME")]
        netns: Option<String>,
    },
    /// Write a kselftest target (Makefile, config, settings, one program per scenario
    /// printing KTAP) that the kernel's runner and CI fleets run.
    KselftestExport(faultlab::export::kselftest::ExportArgs),
    /// Helper servers for scenario processes: `serve udp-echo|tcp-echo|tcp-sink|dns
    /// [--port N] [--bind ADDR] [--seconds S]` (ports 9000, 8080, 8080, 53; bind ::;
    /// 3600 s).
    Serve {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => 0,
                _ if std::env::args().any(|a| a == "--bisect") => {
                    faultlab::verdict::BISECT_ABORT as u8
                }
                _ => EXIT_USAGE,
            });
        }
    };
    faultlab::scenario::template::set_template_dirs(cli.templates.clone());
    match cli.command {
        Command::List { paths } => list(&paths),
        Command::Run {
            paths,
            cell,
            repeat,
            format,
            results,
            no_results,
            slow,
            bisect,
            bad_threshold,
            all_observations,
            jobs,
            schedule,
        } => {
            let code = run(
                &paths,
                RunFlags {
                    cell,
                    repeat,
                    format,
                    results: (!no_results).then_some(results),
                    slow: slow
                        .or_else(faultlab::export::kselftest::machine_slow)
                        .unwrap_or(1.0),
                    bisect: bisect.then_some(bad_threshold),
                    all_observations,
                    jobs: jobs as usize,
                    schedule,
                },
            );
            ExitCode::from(code as u8)
        }
        Command::Compact { paths } => compact(&paths),
        Command::Show { files, format } => show(&files, format),
        Command::Plan { file, cell } => plan(&file, cell),
        Command::Clean => clean(),
        Command::Vm(args) => vm(args),
        Command::Diff { paths, all } => diff(&paths, all),
        Command::KernelConfig { file } => {
            ExitCode::from(faultlab::kconfig::main(file.as_deref()) as u8)
        }
        Command::Schema => {
            print!("{}", scenario::json_schema::scenario_schema_text());
            ExitCode::SUCCESS
        }
        Command::CheckHost {
            paths,
            format,
            fixture,
            netns,
        } => check_host(&paths, format, fixture, netns),
        Command::KselftestExport(args) => {
            ExitCode::from(faultlab::export::kselftest::main(&args) as u8)
        }
        Command::Serve { args } => match faultlab::traffic::serve_main(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("faultlab serve: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn compact(paths: &[PathBuf]) -> ExitCode {
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut in_dir: Vec<PathBuf> = std::fs::read_dir(p)
                .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
                .unwrap_or_default();
            in_dir.retain(|f| {
                f.extension().is_some_and(|x| x == "json")
                    && f.file_name().is_some_and(|n| n != "vm.json")
            });
            in_dir.sort();
            files.extend(in_dir);
        } else {
            files.push(p.clone());
        }
    }
    if files.is_empty() {
        eprintln!(
            "error: no results JSON in {paths:?}: give results/<kernel> directories or files"
        );
        return ExitCode::from(EXIT_USAGE);
    }
    let mut dirs = std::collections::BTreeSet::new();
    for f in &files {
        if let Err(e) = runner::results::compact_file(f) {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
        if let Some(d) = f.parent() {
            dirs.insert(d.to_path_buf());
        }
    }
    for d in dirs {
        let (Some(root), Some(kernel)) = (d.parent(), d.file_name()) else {
            continue;
        };
        if let Err(e) = runner::results::write_summary(root, &kernel.to_string_lossy()) {
            eprintln!("warning: summary of {}: {e:#}", d.display());
        }
    }
    eprintln!("compacted {} results files", files.len());
    ExitCode::SUCCESS
}

fn check_host(
    paths: &[String],
    format: HostFormat,
    fixture: Option<PathBuf>,
    netns: Option<String>,
) -> ExitCode {
    use faultlab::hostcheck::{self, reader};
    let scenarios = match load_all(paths) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let src: Box<dyn reader::HostSource> = match fixture {
        Some(dir) => match reader::FixtureHost::open(&dir) {
            Ok(f) => Box::new(f),
            Err(e) => {
                eprintln!("error: {e:#}");
                return ExitCode::from(EXIT_USAGE);
            }
        },
        None => Box::new(reader::LiveHost { netns }),
    };
    if let Err(e) = faultlab::setup::signals::install() {
        eprintln!("warning: cannot install the SIGINT/SIGTERM handler: {e:#}");
    }
    let r = hostcheck::run::check_host(&scenarios, src.as_ref(), true);
    print!(
        "{}",
        match format {
            HostFormat::Table => hostcheck::report::table(&r),
            HostFormat::Json => hostcheck::report::json(&r),
            HostFormat::Markdown => hostcheck::report::markdown(&r),
        }
    );
    if faultlab::setup::signals::interrupted() {
        return ExitCode::from(130);
    }
    ExitCode::from(hostcheck::exit_code(&r) as u8)
}

fn scenarios_dir() -> PathBuf {
    std::env::var_os("FAULTLAB_SCENARIOS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("scenarios"))
}

/// Load every scenario named on the command line; the first error ends the program.
fn load_all(paths: &[String]) -> Result<Vec<scenario::Scenario>, ExitCode> {
    let files = scenario::discover(paths, &scenarios_dir()).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(EXIT_USAGE)
    })?;
    if files.is_empty() {
        eprintln!("error: no scenario files found");
        return Err(ExitCode::from(EXIT_USAGE));
    }
    let mut out = Vec::new();
    let mut failed = false;
    for f in files {
        match scenario::load(&f) {
            Ok(s) => out.push(s),
            Err(e) => {
                eprintln!("error: {e}");
                failed = true;
            }
        }
    }
    if failed {
        return Err(ExitCode::from(EXIT_USAGE));
    }
    Ok(out)
}

fn list(paths: &[String]) -> ExitCode {
    let scenarios = match load_all(paths) {
        Ok(s) => s,
        Err(code) => return code,
    };
    for s in scenarios {
        println!("{}  ({})", s.name, s.file);
        for c in &s.cells {
            println!("  {:<32} {}", c.name, c.about);
        }
    }
    ExitCode::SUCCESS
}

struct RunFlags {
    cell: Option<String>,
    repeat: u32,
    format: Format,
    results: Option<PathBuf>,
    slow: f64,
    /// `--bisect` with its bad threshold.
    bisect: Option<u32>,
    all_observations: bool,
    jobs: usize,
    schedule: Option<PathBuf>,
}

fn run(paths: &[String], flags: RunFlags) -> i32 {
    let RunFlags {
        cell,
        repeat,
        format,
        results,
        slow,
        bisect,
        all_observations,
        jobs,
        schedule,
    } = flags;
    let usage = if bisect.is_some() {
        faultlab::verdict::BISECT_ABORT
    } else {
        EXIT_USAGE as i32
    };
    let overrides = match schedule.as_deref().map(runner::schedule::Overrides::load) {
        None => Default::default(),
        Some(Ok(o)) => o,
        Some(Err(e)) => {
            eprintln!("error: {e:#}");
            return usage;
        }
    };
    let Ok(scenarios) = load_all(paths) else {
        return usage;
    };
    if let Some(name) = &cell {
        if !scenarios
            .iter()
            .any(|s| s.cells.iter().any(|c| &c.name == name))
        {
            eprintln!("error: no scenario has a cell named `{name}` (see `faultlab list`)");
            return usage;
        }
    }
    if let Err(e) = faultlab::setup::signals::install() {
        eprintln!("warning: cannot install the SIGINT/SIGTERM handler: {e:#}");
    }
    // Not root: every cell skips (runner::prereq) and there is nothing we could sweep.
    if nix::unistd::geteuid().is_root() {
        match faultlab::setup::state::sweep_dead() {
            Ok(cleaned) => {
                for c in cleaned {
                    eprintln!("cleaned leftover of an interrupted run: {c}");
                }
            }
            Err(e) => eprintln!("warning: could not sweep leftovers of earlier runs: {e:#}"),
        }
    }
    let kernel = runner::kernel::release();
    // FAULTLAB_RUN_ID fixes the run id (tests that look for what a run left behind).
    let run_id = std::env::var("FAULTLAB_RUN_ID")
        .ok()
        .filter(|id| {
            (1..=12).contains(&id.len())
                && id
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        })
        .unwrap_or_else(faultlab::setup::new_run_id);
    eprintln!("faultlab run {run_id}");
    // Without results, pcaps go to a directory of this run only (concurrent runs must
    // not write the same files), removed at the end.
    let scratch = results.is_none().then(faultlab::setup::state::scratch_dir);
    let opts = RunOptions {
        cell,
        repeat,
        artifacts: match (&results, &scratch) {
            (Some(root), _) => runner::results::kernel_dir(root, &kernel).join("artifacts"),
            (None, Some(dir)) => dir.clone(),
            (None, None) => unreachable!("scratch is set without results"),
        },
        slow,
    };
    let progress = progress_reporter("cells");
    let planned = scenarios.iter().map(|s| runner::selected(s, &opts).len());
    progress.event(&Event::Planned {
        cells: planned.sum(),
    });
    let mut all = Vec::new();
    // --jobs N: every cell first (overlapping), then results are written as below.
    let mut ran = if jobs > 1 {
        runner::schedule::run_all(&scenarios, &opts, &run_id, jobs, &overrides, &*progress)
            .into_iter()
    } else {
        Vec::new().into_iter()
    };
    for s in &scenarios {
        let mut r = if jobs > 1 {
            match ran.next() {
                Some(r) => r,
                None => break,
            }
        } else {
            runner::run_scenario_reporting(s, &opts, &run_id, &*progress)
        };
        if !all_observations {
            runner::results::keep_what_matters(&mut r);
        }
        // An interrupted scenario's results are partial: results/ keeps the last whole run.
        if let Some(root) = results
            .as_ref()
            .filter(|_| !faultlab::setup::signals::interrupted())
        {
            if opts.cell.is_none() {
                if let Err(e) = runner::results::write(root, &r) {
                    eprintln!("warning: {e:#}");
                }
            }
        }
        all.push(r);
        if faultlab::setup::signals::interrupted() {
            eprintln!("interrupted: the lab was torn down");
            break;
        }
    }
    progress.event(&Event::Finished);
    drop(progress);
    if let Some(root) = &results {
        if opts.cell.is_none() {
            match runner::results::write_summary(root, &kernel) {
                Ok(p) => eprintln!(
                    "results: {}",
                    p.parent().unwrap_or(Path::new(".")).display()
                ),
                Err(e) => eprintln!("warning: writing the summary: {e:#}"),
            }
        }
    }
    if let Some(dir) = scratch.filter(|d| d.exists()) {
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            eprintln!("warning: remove {}: {e}", dir.display());
        }
    }
    print_results(&all, format);
    if faultlab::setup::signals::interrupted() {
        return 130;
    }
    let cells = all.iter().flat_map(|r| r.cells.iter());
    match bisect {
        Some(k) => bisect_exit_code(cells, k),
        None => exit_code(cells.map(|c| &c.outcome)),
    }
}

/// Inside a `faultlab vm` guest, progress goes to the host as console markers;
/// elsewhere a bar on a terminal, plain lines otherwise.
fn progress_reporter(unit: &str) -> Box<dyn Progress> {
    match std::env::var(progress::MARKER_ENV) {
        Ok(prefix) if !prefix.is_empty() => {
            Box::new(progress::Markers::new(&prefix, std::io::stderr()))
        }
        _ => report::progress::for_stderr(unit),
    }
}

fn print_results(all: &[ScenarioResult], format: Format) {
    use std::io::{IsTerminal, Write};
    let text = match format {
        Format::Table => report::table(all, std::io::stdout().is_terminal()),
        Format::Json => all
            .iter()
            .map(|r| report::json(r).expect("results serialize") + "\n")
            .collect(),
        Format::Ktap => report::ktap(all),
        Format::Kselftest => report::kselftest(all),
        Format::Junit => report::junit(all),
    };
    // A closed pipe (`faultlab run | head`) is not worth a panic.
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

fn show(files: &[PathBuf], format: Format) -> ExitCode {
    let mut all = Vec::new();
    for f in files {
        match report::read_json(f) {
            Ok(r) => all.push(r),
            Err(e) => {
                eprintln!("error: {}: {e:#}", f.display());
                return ExitCode::from(EXIT_USAGE);
            }
        }
    }
    print_results(&all, format);
    let outcomes: Vec<_> = all
        .iter()
        .flat_map(|r| r.cells.iter().map(|c| c.outcome))
        .collect();
    ExitCode::from(exit_code(&outcomes) as u8)
}

fn plan(file: &str, cell: Option<String>) -> ExitCode {
    let scenarios = match load_all(&[file.to_string()]) {
        Ok(s) => s,
        Err(code) => return code,
    };
    for s in &scenarios {
        for c in s
            .cells
            .iter()
            .filter(|c| cell.as_ref().is_none_or(|n| n == &c.name))
        {
            println!(
                "{}",
                serde_json::to_string_pretty(c).expect("plans serialize")
            );
        }
    }
    ExitCode::SUCCESS
}

fn clean() -> ExitCode {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skip: not root: `faultlab clean` deletes namespaces and writes host sysctls");
        return ExitCode::from(4);
    }
    match faultlab::setup::state::sweep_dead() {
        Ok(cleaned) if cleaned.is_empty() => {
            println!("nothing to clean");
            ExitCode::SUCCESS
        }
        Ok(cleaned) => {
            for c in cleaned {
                println!("cleaned: {c}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[derive(clap::Args)]
struct VmArgs {
    /// Kernel to boot: debian:PACKAGE[/SUITE] (e.g. debian:cloud/bookworm,
    /// debian:linux-image-amd64/trixie-backports), a bzImage/vmlinux path, or a kernel
    /// build tree (a directory with arch/x86/boot/bzImage, as scripts/kernel-build.sh
    /// makes). Repeatable.
    #[arg(long, required = true)]
    kernel: Vec<String>,
    /// lib/modules/VERSION for a --kernel PATH.
    #[arg(long)]
    modules: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = VmAccel::Auto)]
    accel: VmAccel,
    /// How the host root reaches the guest (auto: virtiofs if available, else 9p).
    #[arg(long, value_enum, default_value_t = VmShare::Auto)]
    share: VmShare,
    /// Seconds from launch until the command must have exited (then exit 124).
    #[arg(long, default_value_t = 1800)]
    timeout: u64,
    /// Seconds from launch until the command must have started (then exit 125).
    #[arg(long, default_value_t = 180)]
    boot_timeout: u64,
    /// Guest CPUs (default: the host's, at most 4).
    #[arg(long)]
    smp: Option<u32>,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 2048)]
    memory: u32,
    /// Timing multiplier for an inner `run` (default: 10 under TCG, 1 under KVM).
    #[arg(long)]
    slow: Option<f64>,
    /// Modules to load before the command, comma-separated ("" for none).
    #[arg(long, value_delimiter = ',', default_values_t = faultlab::vm::run::DEFAULT_PRELOAD.iter().map(|s| s.to_string()))]
    preload: Vec<String>,
    /// Download and unpack cache (default: $FAULTLAB_CACHE or /var/cache/faultlab).
    #[arg(long)]
    cache: Option<PathBuf>,
    /// Refresh the private package lists even if they are recent.
    #[arg(long)]
    refresh: bool,
    /// Results root for an inner `run` (results/<guest-kernel>/ and vm.json go below it).
    #[arg(long, default_value = "results")]
    results: PathBuf,
    /// Print the guest's boot console.
    #[arg(long, short)]
    verbose: bool,
    /// Run a program instead of a faultlab command (e.g. `--exec -- uname -r`).
    #[arg(long, hide = true)]
    exec: bool,
    /// The faultlab command to run in the guest, after `--`.
    #[arg(last = true)]
    args: Vec<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum VmAccel {
    Auto,
    Tcg,
    Kvm,
}

#[derive(Clone, Copy, ValueEnum)]
enum VmShare {
    Auto,
    Virtiofs,
    #[value(name = "9p")]
    NineP,
}

fn vm(a: VmArgs) -> ExitCode {
    // `vm … -- run --bisect`: what the vm adds (timeout, broken boot) is "skip".
    let bisect =
        a.args.first().is_some_and(|c| c == "run") && a.args.iter().any(|x| x == "--bisect");
    let code = vm_code(a);
    ExitCode::from(if bisect {
        faultlab::verdict::bisect_vm_code(code)
    } else {
        code
    } as u8)
}

fn vm_code(a: VmArgs) -> i32 {
    use faultlab::vm::{AccelChoice, KernelSpec, ShareChoice, VmOptions};
    const EXIT_USAGE: i32 = faultlab::verdict::EXIT_USAGE;
    let mut kernels = Vec::new();
    for k in &a.kernel {
        match KernelSpec::parse(k) {
            Ok(s) => kernels.push(s),
            Err(e) => {
                eprintln!("error: --kernel {e:#}");
                return EXIT_USAGE;
            }
        }
    }
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1);
    let opts = VmOptions {
        kernels,
        modules: a.modules,
        accel: match a.accel {
            VmAccel::Auto => AccelChoice::Auto,
            VmAccel::Tcg => AccelChoice::Tcg,
            VmAccel::Kvm => AccelChoice::Kvm,
        },
        share: match a.share {
            VmShare::Auto => ShareChoice::Auto,
            VmShare::Virtiofs => ShareChoice::Virtiofs,
            VmShare::NineP => ShareChoice::NineP,
        },
        timeout: std::time::Duration::from_secs(a.timeout),
        boot_timeout: std::time::Duration::from_secs(a.boot_timeout),
        smp: a.smp.unwrap_or(cpus.min(4)),
        memory_mb: a.memory,
        cache: a.cache.unwrap_or_else(faultlab::vm::run::default_cache),
        refresh: a.refresh,
        results: a.results,
        slow: a.slow,
        preload: a.preload.into_iter().filter(|m| !m.is_empty()).collect(),
        exec: a.exec,
        verbose: a.verbose,
        args: a.args,
    };
    if let Err(e) = faultlab::vm::run::validate(&opts) {
        eprintln!("error: {e:#}");
        return EXIT_USAGE;
    }
    faultlab::vm::run(&opts, &*progress_reporter("cells"))
}

fn diff(paths: &[PathBuf], all: Option<PathBuf>) -> ExitCode {
    use faultlab::vm::diff;
    if let Some(root) = all {
        if !paths.is_empty() {
            eprintln!("error: give either --all RESULTS or two result paths, not both");
            return ExitCode::from(EXIT_USAGE);
        }
        let kernels = match diff::load_all(&root) {
            Ok(k) => k,
            Err(e) => {
                eprintln!("error: {e:#}");
                return ExitCode::from(EXIT_USAGE);
            }
        };
        let (md, changed) = diff::matrix_markdown(&kernels);
        let out = root.join("kernels.md");
        if let Err(e) = std::fs::write(&out, &md) {
            eprintln!("error: writing {}: {e}", out.display());
            return ExitCode::FAILURE;
        }
        print!("{md}");
        eprintln!("wrote {}", out.display());
        return ExitCode::from(changed as u8);
    }
    let [a, b] = paths else {
        eprintln!(
            "error: diff takes two results/<kernel>/ directories or JSON files (or --all RESULTS)"
        );
        return ExitCode::from(EXIT_USAGE);
    };
    let (a, b) = match (diff::Side::load(a), diff::Side::load(b)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let cmp = diff::compare(&a, &b);
    print!("{}", diff::table(&a, &b, &cmp));
    ExitCode::from(!cmp.changes.is_empty() as u8)
}
