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
    },
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
    /// Helper servers run inside lab nodes (used by scenario processes).
    #[command(hide = true)]
    Serve {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
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
        } => run(
            &paths,
            cell,
            repeat,
            format,
            (!no_results).then_some(results),
            slow,
        ),
        Command::Show { files, format } => show(&files, format),
        Command::Plan { file, cell } => plan(&file, cell),
        Command::Clean => clean(),
        Command::Serve { args } => match faultlab::traffic::serve_main(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("faultlab serve: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
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

fn run(
    paths: &[String],
    cell: Option<String>,
    repeat: u32,
    format: Format,
    results: Option<PathBuf>,
    slow: f64,
) -> ExitCode {
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
    match faultlab::build::state::sweep_dead() {
        Ok(cleaned) => {
            for c in cleaned {
                eprintln!("cleaned leftover of an interrupted run: {c}");
            }
        }
        Err(e) => eprintln!("warning: could not sweep leftovers of earlier runs: {e:#}"),
    }
    let kernel = runner::kernel::release();
    let root = results.clone().unwrap_or_else(std::env::temp_dir);
    let opts = RunOptions {
        cell,
        repeat,
        artifacts: runner::results::kernel_dir(&root, &kernel).join("artifacts"),
        slow,
        progress: true,
    };
    let run_id = faultlab::build::new_run_id();
    let mut all = Vec::new();
    for s in &scenarios {
        let r = runner::run_scenario(s, &opts, &run_id);
        if let Some(root) = &results {
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
    use std::io::IsTerminal;
    match format {
        Format::Table => print!("{}", report::table(all, std::io::stdout().is_terminal())),
        Format::Json => {
            for r in all {
                println!("{}", report::json(r).expect("results serialize"));
            }
        }
        Format::Ktap => print!("{}", report::ktap(all)),
        Format::Junit => print!("{}", report::junit(all)),
    }
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
