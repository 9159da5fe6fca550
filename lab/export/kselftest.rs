//! `faultlab kselftest-export DIR`: the catalogue as a kselftest target, for the
//! kernel's own runner (tools/testing/selftests/kselftest/runner.sh, which `make
//! run_tests` and run_kselftest.sh use) and the fleets built on it (NIPA, KernelCI,
//! LAVA). The directory is self-contained, so it can be copied to another machine
//! or into tools/testing/selftests/faultlab/ of a kernel tree:
//!
//! - `Makefile`: `TEST_PROGS` (one program per scenario), `TEST_FILES` (the
//!   binary and the scenarios, for `make install`), `include ../lib.mk`;
//! - `config`: the catalogue's kernel config fragment;
//! - `settings`: `timeout=` per program (runner.sh kills it after that, `# TIMEOUT`);
//! - `faultlab`: a copy of this binary (or, with `--link`, none: the programs call
//!   this binary by its absolute path);
//! - `scenarios/`: the scenario files, with the `topologies/` templates next to them;
//! - `NAME.sh`: runs one scenario, prints KTAP (`run --format kselftest`) and exits
//!   with kselftest's codes (0 pass, 1 fail, 2 xfail, 4 skip).

use crate::scenario;
use anyhow::{bail, Context, Result};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// What `KSFT_MACHINE_SLOW=yes` multiplies timings by: the factor `faultlab vm`
/// gives an inner run under TCG (vm::run), the slow machines kselftest means.
pub const MACHINE_SLOW_FACTOR: f64 = 10.0;

/// `--slow` implied by the environment: kselftest's `KSFT_MACHINE_SLOW=yes`
/// (tools/testing/selftests/net/lib.sh and netfilter's tests stretch their
/// timeouts by it).
pub fn machine_slow() -> Option<f64> {
    machine_slow_from(std::env::var("KSFT_MACHINE_SLOW").ok().as_deref())
}

pub fn machine_slow_from(value: Option<&str>) -> Option<f64> {
    (value == Some("yes")).then_some(MACHINE_SLOW_FACTOR)
}

#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// The directory to write (created; must be empty if it exists).
    pub dir: PathBuf,
    /// Scenario files, directories or names (default: scenarios/).
    pub paths: Vec<String>,
    /// Seconds runner.sh gives each scenario program (`settings`).
    #[arg(long, default_value_t = 900)]
    pub timeout: u64,
    /// Do not copy the binary: the programs call this faultlab by its absolute path
    /// (smaller, but the directory then works on this machine only).
    #[arg(long)]
    pub link: bool,
    /// The faultlab binary to copy (default: the running one).
    #[arg(long, value_name = "PATH")]
    pub binary: Option<PathBuf>,
}

/// One file of the exported target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportFile {
    /// Relative to the target directory.
    pub path: PathBuf,
    pub content: Content,
    pub executable: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    Text(String),
    /// A copy of this file.
    Copy(PathBuf),
}

/// A scenario to export: its file, its name, and where it goes under `scenarios/`.
#[derive(Debug, Clone)]
pub struct ScenarioEntry {
    pub file: PathBuf,
    pub name: String,
    pub about: String,
    pub rel: PathBuf,
}

/// How the programs reach faultlab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Binary {
    /// Copied into the target as `faultlab`.
    Copy(PathBuf),
    /// Called by this absolute path.
    Link(PathBuf),
}

/// The exported file set (pure: nothing is read or written but the `topologies/`
/// listings passed in). `templates` are the template files to carry, relative
/// to `scenarios/`, with their source.
pub fn plan(
    scenarios: &[ScenarioEntry],
    templates: &[(PathBuf, PathBuf)],
    binary: &Binary,
    timeout: u64,
) -> Result<Vec<ExportFile>> {
    let mut files = Vec::new();
    let mut programs = Vec::new();
    let mut seen = BTreeSet::new();
    let faultlab = match binary {
        Binary::Copy(src) => {
            files.push(ExportFile {
                path: "faultlab".into(),
                content: Content::Copy(src.clone()),
                executable: true,
            });
            "\"$here/faultlab\"".to_string()
        }
        Binary::Link(abs) => shell_quote(&abs.display().to_string()),
    };
    for s in scenarios {
        let program = format!("{}.sh", crate::report::test_name(&s.name));
        if !seen.insert(program.clone()) {
            bail!(
                "{}: scenario name `{}` gives the program {program}, as another scenario's does: \
                 export them separately or rename one (`name =` in the file)",
                s.file.display(),
                s.name
            );
        }
        let rel = Path::new("scenarios").join(&s.rel);
        files.push(ExportFile {
            path: rel.clone(),
            content: Content::Copy(s.file.clone()),
            executable: false,
        });
        files.push(ExportFile {
            path: program.clone().into(),
            content: Content::Text(program_text(s, &rel, &faultlab)),
            executable: true,
        });
        programs.push(program);
    }
    for (rel, src) in templates {
        files.push(ExportFile {
            path: Path::new("scenarios").join(rel),
            content: Content::Copy(src.clone()),
            executable: false,
        });
    }
    let test_files = match binary {
        Binary::Copy(_) => "faultlab scenarios",
        Binary::Link(_) => "scenarios",
    };
    files.push(ExportFile {
        path: "Makefile".into(),
        content: Content::Text(format!(
            "# SPDX-License-Identifier: GPL-2.0\n\
             # The faultlab scenario catalogue as a kselftest target (written by\n\
             # `faultlab kselftest-export`). In a kernel tree, as\n\
             # tools/testing/selftests/faultlab/:\n\
             #   make -C tools/testing/selftests TARGETS=faultlab run_tests\n\
             # Needs root; KSFT_MACHINE_SLOW=yes stretches every timing {MACHINE_SLOW_FACTOR}x.\n\n\
             TEST_PROGS := {}\n\n\
             TEST_FILES := {test_files}\n\n\
             include ../lib.mk\n",
            programs.join(" \\\n\t")
        )),
        executable: false,
    });
    files.push(ExportFile {
        path: "settings".into(),
        content: Content::Text(format!("timeout={timeout}\n")),
        executable: false,
    });
    files.push(ExportFile {
        path: "config".into(),
        content: Content::Text(crate::kconfig::FRAGMENT.to_string()),
        executable: false,
    });
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn program_text(s: &ScenarioEntry, rel: &Path, faultlab: &str) -> String {
    let about = s.about.lines().next().unwrap_or("").trim();
    format!(
        "#!/bin/sh\n\
         # SPDX-License-Identifier: GPL-2.0\n\
         # faultlab scenario {name}: {about}\n\
         # Prints KTAP, one test per cell; exits 0 pass, 1 fail, 2 xfail (a race that\n\
         # did not fire), 4 skip. Extra arguments go to `faultlab run` (runner.sh passes\n\
         # $KSELFTEST_{var}_SH_ARGS), e.g. `--cell NAME`. FAULTLAB_RESULTS=DIR keeps the\n\
         # results (results/<kernel>/) there.\n\
         here=$(cd \"$(dirname \"$0\")\" && pwd)\n\
         if [ -n \"$FAULTLAB_RESULTS\" ]; then\n\
         \tset -- --results \"$FAULTLAB_RESULTS\" \"$@\"\n\
         else\n\
         \tset -- --no-results \"$@\"\n\
         fi\n\
         exec {faultlab} run --format kselftest \"$here/{rel}\" \"$@\"\n",
        name = s.name,
        var = crate::report::test_name(&s.name)
            .to_ascii_uppercase()
            .replace('-', "_"),
        rel = rel.display(),
    )
}

/// The scenario files named on the command line, loaded (so a broken file stops
/// the export), with their place under `scenarios/`: relative to `root` (the
/// scenarios directory) when inside it, else their file name.
pub fn entries(paths: &[String], root: &Path) -> Result<Vec<ScenarioEntry>> {
    let files = scenario::discover(paths, root).map_err(anyhow::Error::msg)?;
    if files.is_empty() {
        bail!("no scenario files found in {paths:?}");
    }
    let root = root.canonicalize().ok();
    let mut out = Vec::new();
    for f in files {
        let s = scenario::load(&f).map_err(|e| anyhow::anyhow!("{e}"))?;
        let abs = f
            .canonicalize()
            .with_context(|| format!("resolving {}", f.display()))?;
        let rel = root
            .as_ref()
            .and_then(|r| abs.strip_prefix(r).ok())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| abs.file_name().map(PathBuf::from).unwrap_or_default());
        out.push(ScenarioEntry {
            file: abs,
            name: s.name,
            about: s.about,
            rel,
        });
    }
    Ok(out)
}

/// The `topologies/*.toml` next to each exported scenario (templates are looked up
/// there first), relative to `scenarios/`.
pub fn templates(scenarios: &[ScenarioEntry]) -> Result<Vec<(PathBuf, PathBuf)>> {
    let mut out = BTreeSet::new();
    for s in scenarios {
        let (Some(src_dir), Some(rel_dir)) = (s.file.parent(), s.rel.parent()) else {
            continue;
        };
        let topo = src_dir.join("topologies");
        let Ok(listing) = std::fs::read_dir(&topo) else {
            continue;
        };
        for e in listing {
            let p = e
                .with_context(|| format!("listing {}", topo.display()))?
                .path();
            if p.extension().is_some_and(|x| x == "toml") {
                if let Some(name) = p.file_name() {
                    out.insert((rel_dir.join("topologies").join(name), p.clone()));
                }
            }
        }
    }
    Ok(out.into_iter().collect())
}

/// Writes the planned files below `dir` (which must not exist or be empty).
pub fn write(dir: &Path, files: &[ExportFile]) -> Result<()> {
    if dir.exists()
        && std::fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .next()
            .is_some()
    {
        bail!(
            "{} is not empty: give a new directory (an export is never merged into an old one)",
            dir.display()
        );
    }
    for f in files {
        let to = dir.join(&f.path);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        match &f.content {
            Content::Text(t) => {
                std::fs::write(&to, t).with_context(|| format!("writing {}", to.display()))?
            }
            Content::Copy(src) => {
                std::fs::copy(src, &to)
                    .with_context(|| format!("copying {} to {}", src.display(), to.display()))?;
            }
        }
        if f.executable {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755))
                .with_context(|| format!("chmod 755 {}", to.display()))?;
        }
    }
    Ok(())
}

/// The subcommand: 0 written, 64 usage or scenario-file error, 1 I/O failure.
pub fn main(args: &ExportArgs) -> i32 {
    let root = std::env::var_os("FAULTLAB_SCENARIOS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("scenarios"));
    let usage = |e: anyhow::Error| {
        eprintln!("error: {e:#}");
        crate::verdict::EXIT_USAGE
    };
    let scenarios = match entries(&args.paths, &root) {
        Ok(s) => s,
        Err(e) => return usage(e),
    };
    let binary = match (&args.binary, args.link) {
        (Some(b), true) => Binary::Link(b.clone()),
        (Some(b), false) => Binary::Copy(b.clone()),
        (None, link) => match std::env::current_exe() {
            Ok(exe) if link => Binary::Link(exe),
            Ok(exe) => Binary::Copy(exe),
            Err(e) => {
                eprintln!("error: locating the faultlab binary: {e} (give --binary PATH)");
                return 1;
            }
        },
    };
    let result = templates(&scenarios)
        .and_then(|t| plan(&scenarios, &t, &binary, args.timeout))
        .and_then(|files| write(&args.dir, &files).map(|()| files));
    match result {
        Ok(files) => {
            let programs = files.iter().filter(|f| f.executable).count();
            eprintln!(
                "wrote {} ({} files, {} scenario programs); run it with the kernel's runner: \
                 see README \"Run it on a fleet\"",
                args.dir.display(),
                files.len(),
                programs - usize::from(matches!(binary, Binary::Copy(_)))
            );
            0
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, rel: &str) -> ScenarioEntry {
        ScenarioEntry {
            file: Path::new("/src/scenarios").join(rel),
            name: name.into(),
            about: "about it\nsecond line".into(),
            rel: rel.into(),
        }
    }

    /// The file set as text: each path, its kind, and the text files in full
    /// (the config fragment only by its first line: it has its own tests).
    fn render(files: &[ExportFile]) -> String {
        let mut out = String::new();
        for f in files {
            let mode = if f.executable { "755" } else { "644" };
            match &f.content {
                Content::Copy(src) => out.push_str(&format!(
                    "{} {mode} copy of {}\n",
                    f.path.display(),
                    src.display()
                )),
                Content::Text(t) if f.path == Path::new("config") => out.push_str(&format!(
                    "{} {mode} the config fragment ({} lines)\n",
                    f.path.display(),
                    t.lines().count()
                )),
                Content::Text(t) => {
                    out.push_str(&format!("{} {mode}\n", f.path.display()));
                    for l in t.lines() {
                        out.push_str(&format!("  | {l}\n"));
                    }
                }
            }
        }
        out
    }

    #[test]
    fn exported_file_set() {
        let scenarios = [
            entry("bridge-netfilter", "bridge-netfilter.toml"),
            entry(
                "conntrack_dump_flush",
                "selftests/conntrack_dump_flush.toml",
            ),
        ];
        let templates = [(
            PathBuf::from("topologies/docker.toml"),
            PathBuf::from("/src/scenarios/topologies/docker.toml"),
        )];
        let files = plan(
            &scenarios,
            &templates,
            &Binary::Copy("/build/faultlab".into()),
            900,
        )
        .unwrap();
        insta::assert_snapshot!(render(&files));
        assert_eq!(
            files
                .iter()
                .find(|f| f.path == Path::new("config"))
                .unwrap()
                .content,
            Content::Text(crate::kconfig::FRAGMENT.into())
        );
    }

    #[test]
    fn a_linked_binary_is_called_by_its_path() {
        let files = plan(
            &[entry("mini", "mini.toml")],
            &[],
            &Binary::Link("/opt/fault lab/faultlab".into()),
            60,
        )
        .unwrap();
        assert!(files.iter().all(|f| f.path != Path::new("faultlab")));
        let Content::Text(prog) = &files
            .iter()
            .find(|f| f.path == Path::new("mini.sh"))
            .unwrap()
            .content
        else {
            panic!()
        };
        assert!(
            prog.contains("exec '/opt/fault lab/faultlab' run --format kselftest"),
            "{prog}"
        );
        let Content::Text(make) = &files
            .iter()
            .find(|f| f.path == Path::new("Makefile"))
            .unwrap()
            .content
        else {
            panic!()
        };
        assert!(make.contains("TEST_FILES := scenarios\n"), "{make}");
    }

    #[test]
    fn two_scenarios_with_one_program_name_are_refused() {
        let e = plan(
            &[entry("a.b", "x.toml"), entry("a_b", "y.toml")],
            &[],
            &Binary::Link("/f".into()),
            60,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("a_b.sh") && e.contains("/src/scenarios/y.toml"),
            "{e}"
        );
    }

    #[test]
    fn machine_slow_is_only_yes() {
        assert_eq!(machine_slow_from(Some("yes")), Some(MACHINE_SLOW_FACTOR));
        assert_eq!(machine_slow_from(Some("no")), None);
        assert_eq!(machine_slow_from(Some("1")), None);
        assert_eq!(machine_slow_from(None), None);
    }
}
