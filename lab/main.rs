//! `faultlab`: run packet-loss scenarios in network namespaces and judge them
//! with the kernel's own counters.

use clap::{Parser, Subcommand, ValueEnum};
use faultlab::runner::{self, RunOptions};
use faultlab::verdict::{exit_code, ScenarioResult};
use faultlab::{report, scenario};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Exit code for usage and input errors (bad scenario file, unknown name).
const EXIT_USAGE: u8 = 2;

#[derive(Parser)]
#[command(name = "faultlab", version, about)]
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
    Junit,
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
        /// Timing multiplier (e.g. 10 under software emulation).
        #[arg(long, default_value_t = 1.0)]
        slow: f64,
        /// Keep every observation in the results (default: those the expectations
        /// read, and nonzero values).
        #[arg(long)]
        all_observations: bool,
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
    /// Judge the mutant kernels scripts/mutants.sh ran; writes results/mutants/summary.md.
    MutantsSummary {
        #[arg(long, default_value = "kernel-mutants")]
        patches: PathBuf,
        /// Where scripts/mutants.sh left the runs (NAME/, unmutated/, host/).
        #[arg(long, default_value = "/var/cache/faultlab/mutants")]
        runs: PathBuf,
        /// The host's results (default RUNS/host).
        #[arg(long)]
        host: Option<PathBuf>,
        /// The unmutated build's .config, to explain differences by missing options.
        #[arg(long)]
        kernel_config: Option<PathBuf>,
        #[arg(long, default_value = "results/mutants/summary.md")]
        out: PathBuf,
    },
    /// Helper servers run inside lab nodes (used by scenario processes).
    #[command(hide = true)]
    Serve {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
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
            all_observations,
        } => run(
            &paths,
            RunFlags {
                cell,
                repeat,
                format,
                results: (!no_results).then_some(results),
                slow,
                all_observations,
            },
        ),
        Command::Compact { paths } => compact(&paths),
        Command::Show { files, format } => show(&files, format),
        Command::Plan { file, cell } => plan(&file, cell),
        Command::Clean => clean(),
        Command::Vm(args) => vm(args),
        Command::Diff { paths, all } => diff(&paths, all),
        Command::KernelConfig { file } => {
            ExitCode::from(faultlab::kconfig::main(file.as_deref()) as u8)
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
    all_observations: bool,
}

fn run(paths: &[String], flags: RunFlags) -> ExitCode {
    let RunFlags {
        cell,
        repeat,
        format,
        results,
        slow,
        all_observations,
    } = flags;
    let scenarios = match load_all(paths) {
        Ok(s) => s,
        Err(code) => return code,
    };
    if let Some(name) = &cell {
        if !scenarios
            .iter()
            .any(|s| s.cells.iter().any(|c| &c.name == name))
        {
            eprintln!("error: no scenario has a cell named `{name}` (see `faultlab list`)");
            return ExitCode::from(EXIT_USAGE);
        }
    }
    if let Err(e) = faultlab::build::signals::install() {
        eprintln!("warning: cannot install the SIGINT/SIGTERM handler: {e:#}");
    }
    // Not root: every cell skips (runner::prereq) and there is nothing we could sweep.
    if nix::unistd::geteuid().is_root() {
        match faultlab::build::state::sweep_dead() {
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
        .unwrap_or_else(faultlab::build::new_run_id);
    eprintln!("faultlab run {run_id}");
    // Without results, pcaps go to a directory of this run only (concurrent runs must
    // not write the same files), removed at the end.
    let scratch = results.is_none().then(faultlab::build::state::scratch_dir);
    let opts = RunOptions {
        cell,
        repeat,
        artifacts: match (&results, &scratch) {
            (Some(root), _) => runner::results::kernel_dir(root, &kernel).join("artifacts"),
            (None, Some(dir)) => dir.clone(),
            (None, None) => unreachable!("scratch is set without results"),
        },
        slow,
        progress: true,
    };
    let mut all = Vec::new();
    for s in &scenarios {
        let mut r = runner::run_scenario(s, &opts, &run_id);
        if !all_observations {
            runner::results::keep_what_matters(&mut r);
        }
        // An interrupted scenario's results are partial: results/ keeps the last whole run.
        if let Some(root) = results
            .as_ref()
            .filter(|_| !faultlab::build::signals::interrupted())
        {
            if opts.cell.is_none() {
                if let Err(e) = runner::results::write(root, &r) {
                    eprintln!("warning: {e:#}");
                }
            }
        }
        all.push(r);
        if faultlab::build::signals::interrupted() {
            eprintln!("interrupted: the lab was torn down");
            break;
        }
    }
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
    if faultlab::build::signals::interrupted() {
        return ExitCode::from(130);
    }
    let outcomes: Vec<_> = all
        .iter()
        .flat_map(|r| r.cells.iter().map(|c| c.outcome))
        .collect();
    ExitCode::from(exit_code(&outcomes) as u8)
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
    match faultlab::build::state::sweep_dead() {
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
    use faultlab::vm::{AccelChoice, KernelSpec, ShareChoice, VmOptions};
    let mut kernels = Vec::new();
    for k in &a.kernel {
        match KernelSpec::parse(k) {
            Ok(s) => kernels.push(s),
            Err(e) => {
                eprintln!("error: --kernel {e:#}");
                return ExitCode::from(EXIT_USAGE);
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
        return ExitCode::from(EXIT_USAGE);
    }
    ExitCode::from(faultlab::vm::run(&opts) as u8)
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
