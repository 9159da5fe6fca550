//! `faultlab`: run packet-loss scenarios in network namespaces and judge them
//! with the kernel's own counters.

use clap::Parser;
use faultlab::cli::{Cli, Command, Format, HostFormat, VmAccel, VmArgs, VmShare};
use faultlab::runner::progress::{self, Event, Progress};
use faultlab::runner::{self, RunOptions};
use faultlab::verdict::{bisect_exit_code, exit_code, ScenarioResult};
use faultlab::{report, scenario};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Exit code for usage and input errors (bad scenario file, unknown name): 64
/// (EX_USAGE), clear of kselftest's 0/1/2/4.
const EXIT_USAGE: u8 = faultlab::verdict::EXIT_USAGE as u8;

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
                    history: results.clone(),
                    results: (!no_results).then_some(results),
                    slow: slow
                        .or_else(faultlab::export::kselftest::machine_slow)
                        .unwrap_or(1.0),
                    bisect: bisect.then_some(bad_threshold),
                    all_observations,
                    jobs: jobs.map_or_else(runner::schedule::default_jobs, |j| j as usize),
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
        Command::MutantsSummary {
            patches,
            runs,
            host,
            kernel_config,
            out,
        } => {
            let args = faultlab::mutants::Args {
                patches,
                runs,
                host,
                kernel_config,
                scenarios: PathBuf::from("scenarios"),
            };
            match faultlab::mutants::summarise(&args)
                .and_then(|md| Ok(std::fs::write(&out, &md).map(|()| md)?))
            {
                Ok(md) => {
                    print!("{md}");
                    eprintln!("wrote {}", out.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: mutants-summary: {e:#}");
                    ExitCode::from(EXIT_USAGE)
                }
            }
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
    /// The results root read for the cells' last durations (also with --no-results).
    history: PathBuf,
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
        history,
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
    let run_id = faultlab::setup::run_id_from_env();
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
    // One drop tracer for the whole run, not one load per cell.
    let _tracer = faultlab::evidence::bpf::KeepLoaded::new();
    // --jobs N: every cell first (overlapping), then results are written as below.
    let mut ran = if jobs > 1 {
        // Longest cells first, as long as they took last time on this kernel.
        let last_ms = runner::results::last_durations(&history, &kernel);
        let how = runner::schedule::How {
            jobs,
            overrides: &overrides,
            last_ms: &last_ms,
        };
        runner::schedule::run_all(&scenarios, &opts, &run_id, &how, &*progress).into_iter()
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
        // Not divided by --parallel: the race cells need two CPUs in the guest
        // (`requires.cpus`), and with one each they skip.
        smp: a.smp.unwrap_or(cpus.min(4)),
        parallel: a.parallel,
        memory_mb: a.memory,
        cache: a.cache.unwrap_or_else(faultlab::vm::run::default_cache),
        refresh: a.refresh,
        results: a.results,
        slow: a.slow,
        preload: {
            let given: Vec<String> = a.preload.map_or_else(
                || {
                    faultlab::vm::run::DEFAULT_PRELOAD
                        .iter()
                        .map(|s| s.to_string())
                        .collect()
                },
                |g| g.into_iter().filter(|m| !m.is_empty()).collect(),
            );
            faultlab::vm::run::Preload {
                given,
                learned: !a.no_preload_learned,
            }
        },
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
