//! The command line, as clap parses it: in the library so the argument grammar can be
//! fuzzed in-process (tests/fuzz_cli.rs) without running any command.

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

pub const EXIT_CODES: &str =
    "Exit codes (kselftest's): 0 all pass, 1 any fail, 2 any inconclusive \
(XFAIL: a race that did not fire), 4 only skips, 64 usage or scenario-file error, 130 \
interrupted. `run --bisect`: 0 good, 1 bad, 125 cannot tell, 128 usage error. `vm`: 124 \
timeout, 125 infrastructure failure.";

#[derive(Parser)]
#[command(name = "faultlab", version, about, after_help = EXIT_CODES)]
pub struct Cli {
    /// Where templates are looked for after the scenario's own topologies/ directory
    /// (before the built-in ones); may be repeated.
    #[arg(long, global = true, value_name = "DIR")]
    pub templates: Vec<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
pub enum Format {
    Table,
    Json,
    Ktap,
    /// One kselftest program's output: TAP version 13, one test per cell.
    Kselftest,
    Junit,
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
pub enum HostFormat {
    Table,
    Json,
    Markdown,
}

#[derive(Subcommand)]
pub enum Command {
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
        /// Multiplier of the caps (timeouts, grace and quiet periods, holds), never of
        /// rates or sleeps (e.g. 10 under software emulation; default 1, or 10 when
        /// KSFT_MACHINE_SLOW=yes).
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
        /// Cells run at once (default: twice the CPUs, at most 8); cells that change
        /// host-global sysctls or are timing-sensitive still run alone (see `--schedule`).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=64))]
        jobs: Option<u32>,
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
    KselftestExport(crate::export::kselftest::ExportArgs),
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
    /// Helper servers for scenario processes: `serve udp-echo|tcp-echo|tcp-sink|dns
    /// [--port N] [--bind ADDR] [--seconds S]` (ports 9000, 8080, 8080, 53; bind ::;
    /// 3600 s).
    Serve {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[derive(clap::Args)]
pub struct VmArgs {
    /// Kernel to boot: debian:PACKAGE[/SUITE] (e.g. debian:cloud/bookworm,
    /// debian:linux-image-amd64/trixie-backports), a bzImage/vmlinux path, or a kernel
    /// build tree (a directory with arch/x86/boot/bzImage, as scripts/kernel-build.sh
    /// makes). Repeatable.
    #[arg(long, required = true)]
    pub kernel: Vec<String>,
    /// lib/modules/VERSION for a --kernel PATH.
    #[arg(long)]
    pub modules: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = VmAccel::Auto)]
    pub accel: VmAccel,
    /// How the host root reaches the guest (auto: virtiofs if available, else 9p).
    #[arg(long, value_enum, default_value_t = VmShare::Auto)]
    pub share: VmShare,
    /// Seconds from launch until the command must have exited (then exit 124).
    #[arg(long, default_value_t = 1800)]
    pub timeout: u64,
    /// Seconds from launch until the command must have started (then exit 125).
    #[arg(long, default_value_t = 180)]
    pub boot_timeout: u64,
    /// Guest CPUs (default: the host's, at most 4, also with --parallel).
    #[arg(long)]
    pub smp: Option<u32>,
    /// Kernels booted at once, one guest each (default 1: one after another).
    #[arg(long, default_value_t = 1)]
    pub parallel: usize,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 2048)]
    pub memory: u32,
    /// Timing multiplier for an inner `run` (default: 10 under TCG, 1 under KVM).
    #[arg(long)]
    pub slow: Option<f64>,
    /// Modules to load before the command, comma-separated ("" for none; default
    /// br_netfilter,nf_conntrack).
    #[arg(long, value_delimiter = ',')]
    pub preload: Option<Vec<String>>,
    /// Load only the --preload modules, not also every module the last boot of the
    /// same kernel release ended with loaded (remembered in the cache; the default,
    /// faster under TCG, where each autoload is a process).
    #[arg(long)]
    pub no_preload_learned: bool,
    /// The default now (the learned preload was opt-in while a TCG guest crash was
    /// not understood); accepted for scripts that pass it.
    #[arg(long, hide = true, conflicts_with = "no_preload_learned")]
    pub preload_learned: bool,
    /// Download and unpack cache (default: $FAULTLAB_CACHE or /var/cache/faultlab).
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// Refresh the private package lists even if they are recent.
    #[arg(long)]
    pub refresh: bool,
    /// Results root for an inner `run` (results/<guest-kernel>/ and vm.json go below it).
    #[arg(long, default_value = "results")]
    pub results: PathBuf,
    /// Print the guest's boot console.
    #[arg(long, short)]
    pub verbose: bool,
    /// Run a program instead of a faultlab command (e.g. `--exec -- uname -r`; no
    /// results share, no `--slow`): reproducers and tracing around a run, such as
    /// scripts/jump-label-census.sh.
    #[arg(long)]
    pub exec: bool,
    /// The faultlab command to run in the guest, after `--`.
    #[arg(last = true)]
    pub args: Vec<String>,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum VmAccel {
    Auto,
    Tcg,
    Kvm,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum VmShare {
    Auto,
    Virtiofs,
    #[value(name = "9p")]
    NineP,
}
