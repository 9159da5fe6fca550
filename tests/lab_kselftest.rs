//! `faultlab kselftest-export` under the kernel's own runner
//! (tools/testing/selftests/kselftest/runner.sh, what `make run_tests` and
//! run_kselftest.sh use). Nothing is vendored: runner.sh comes from
//! /var/cache/faultlab/ktap/selftests, else from Debian's linux-source tarball
//! (/usr/src/linux-source-*.tar.xz, `apt-get install linux-source`, extracted there
//! once), else the test skips with a printed reason. Also real runs' exit codes:
//! kselftest's (2 for a trigger that did not fire, read `# XFAIL`) and `--bisect`'s.
//! Needs root.
#![cfg(feature = "lab")]

mod support_reports;

use std::path::{Path, PathBuf};
use std::process::Command;

const CACHE: &str = "/var/cache/faultlab/ktap/selftests";

/// The selftests directory holding kselftest/runner.sh, or why there is none.
fn find_runner() -> Result<PathBuf, String> {
    let cache = Path::new(CACHE);
    if cache.join("kselftest/runner.sh").is_file() {
        return Ok(cache.to_owned());
    }
    let tarball = std::fs::read_dir("/usr/src")
        .map_err(|e| format!("/usr/src: {e}"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("linux-source-") && n.ends_with(".tar.xz"))
        })
        .ok_or("no kselftest runner: /usr/src/linux-source-*.tar.xz is missing (apt-get install linux-source)")?;
    let top = tarball
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(".tar.xz"))
        .unwrap()
        .to_owned();
    std::fs::create_dir_all(cache).map_err(|e| format!("{CACHE}: {e}"))?;
    let members: Vec<String> = ["kselftest/runner.sh", "kselftest/prefix.pl"]
        .iter()
        .map(|m| format!("{top}/tools/testing/selftests/{m}"))
        .collect();
    let out = Command::new("tar")
        .arg("-xJf")
        .arg(&tarball)
        .args(["--strip-components=4", "-C", CACHE])
        .args(&members)
        .output()
        .map_err(|e| format!("tar: {e}"))?;
    if !out.status.success() || !cache.join("kselftest/runner.sh").is_file() {
        return Err(format!(
            "extracting runner.sh from {}: {}",
            tarball.display(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(cache.to_owned())
}

/// A directory removed on drop.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// BASE/kselftest/{runner.sh,prefix.pl} and BASE/faultlab/ (the export), the
/// layout of tools/testing/selftests/, with `settings` timeout=`timeout`.
fn base_with_export(runner: &Path, tag: &str, scenarios: &[&str], timeout: u64) -> Scratch {
    let base = std::env::temp_dir().join(format!("faultlab-ksft-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(base.join("kselftest")).unwrap();
    for f in ["runner.sh", "prefix.pl"] {
        let src = runner.join("kselftest").join(f);
        if src.is_file() {
            std::fs::copy(&src, base.join("kselftest").join(f)).unwrap();
        }
    }
    let scratch = Scratch(base.clone());
    let mut args = vec![
        "kselftest-export".to_string(),
        base.join("faultlab").display().to_string(),
        "--timeout".into(),
        timeout.to_string(),
    ];
    args.extend(scenarios.iter().map(|s| s.to_string()));
    let out = Command::new(env!("CARGO_BIN_EXE_faultlab"))
        .args(&args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    scratch
}

/// lib.mk's RUN_TESTS: source runner.sh with BASE_DIR set, run_many in the target.
fn run_many(base: &Path, programs: &[&str], env: &[(&str, &str)]) -> String {
    let script = format!(
        "BASE_DIR='{}'; . \"$BASE_DIR/kselftest/runner.sh\"; cd \"$BASE_DIR/faultlab\" && run_many {}",
        base.display(),
        programs
            .iter()
            .map(|p| format!("./{p}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let out = Command::new("sh")
        .args(["-c", &script])
        .envs(env.iter().copied())
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn skip_reason() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("not root".into());
    }
    None
}

#[test]
fn an_exported_scenario_runs_under_the_kernels_runner() {
    if let Some(why) = skip_reason() {
        eprintln!("SKIP kselftest runner test: {why}");
        return;
    }
    let runner = match find_runner() {
        Ok(r) => r,
        Err(why) => {
            eprintln!("SKIP kselftest runner test: {why}");
            return;
        }
    };
    let base = base_with_export(&runner, "run", &["scenarios/selftests/xt_string.toml"], 300);
    let out = run_many(&base.0, &["selftest-xt-string.sh"], &[]);
    assert!(
        out.contains("\nok 1 selftests: faultlab: selftest-xt-string.sh\n"),
        "{out}"
    );
    // The program's own KTAP, as runner.sh prefixes it: one test per cell.
    let inner: String = out
        .lines()
        .filter_map(|l| l.strip_prefix("# "))
        .skip_while(|l| *l != "TAP version 13")
        .map(|l| format!("{l}\n"))
        .collect();
    let tests = support_reports::check_kselftest_tap(&inner);
    assert_eq!(tests.len(), 1, "{inner}");
    assert!(tests[0].ok && tests[0].directive.is_none(), "{inner}");
}

#[test]
fn the_exported_settings_timeout_is_the_runners() {
    if let Some(why) = skip_reason() {
        eprintln!("SKIP kselftest runner test: {why}");
        return;
    }
    let runner = match find_runner() {
        Ok(r) => r,
        Err(why) => {
            eprintln!("SKIP kselftest runner test: {why}");
            return;
        }
    };
    // bridge-netfilter takes about 3 s here: runner.sh must stop it after 1 s and
    // say TIMEOUT. Its two nested `timeout`s send SIGTERM three times within
    // microseconds: one request, so faultlab still tears its lab down.
    let run_id = format!("flksft{}", std::process::id() % 100_000);
    let base = base_with_export(&runner, "timeout", &["bridge-netfilter"], 1);
    let started = std::time::Instant::now();
    let out = run_many(
        &base.0,
        &["bridge-netfilter.sh"],
        &[("FAULTLAB_RUN_ID", run_id.as_str())],
    );
    assert!(
        out.contains("not ok 1 selftests: faultlab: bridge-netfilter.sh # TIMEOUT 1 seconds"),
        "{out}"
    );
    assert!(out.contains(&format!("faultlab run {run_id}")), "{out}");
    assert!(started.elapsed().as_secs() < 20, "{out}");
    let netns = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let left: Vec<String> = String::from_utf8_lossy(&netns.stdout)
        .lines()
        .filter(|l| l.starts_with(&format!("{run_id}-")))
        .map(str::to_owned)
        .collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}\n{out}");
    let state = Path::new("/run/faultlab").join(format!("{run_id}.json"));
    assert!(!state.exists(), "{} left behind\n{out}", state.display());
}

const MINI: &str = r#"name = "mini"
about = "two namespaces on a veth"

[nodes.a]
[nodes.b]

[[links]]
a = "a:eth0 192.0.2.1/24"
b = "b:eth0 192.0.2.2/24"

[[traffic]]
kind = "ping"
from = "a"
to = "192.0.2.2"
count = 3
interval_ms = 20

[[cells]]
name = "reachable"
expect = ["ping.received == ping.sent"]

[[cells]]
name = "race-not-fired"
trigger = "ping.received > 1000"
expect = ["ping.received == ping.sent"]

[[cells]]
name = "wrong"
expect = ["ping.received == 0"]
"#;

#[test]
fn real_runs_exit_with_kselftests_and_git_bisects_codes() {
    if let Some(why) = skip_reason() {
        eprintln!("SKIP exit code test: {why}");
        return;
    }
    let dir = Scratch(std::env::temp_dir().join(format!("faultlab-codes-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let file = dir.0.join("mini.toml");
    std::fs::write(&file, MINI).unwrap();
    let file = file.display().to_string();
    let run = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_faultlab"))
            .args(["run", &file, "--no-results", "--format", "ktap"])
            .args(extra)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    // (cell, extra flags, exit code)
    let table: &[(&str, &[&str], i32)] = &[
        ("reachable", &[], 0),
        ("race-not-fired", &[], 2),
        ("wrong", &[], 1),
        ("reachable", &["--bisect"], 0),
        ("race-not-fired", &["--bisect"], 125),
        ("wrong", &["--bisect"], 1),
        // Three fails are not the four --bad-threshold asks for, nor enough decisive runs.
        (
            "wrong",
            &["--bisect", "--repeat", "3", "--bad-threshold", "4"],
            125,
        ),
        (
            "reachable",
            &["--bisect", "--repeat", "2", "--bad-threshold", "2"],
            0,
        ),
    ];
    for (cell, extra, code) in table {
        let mut args = vec!["--cell", cell];
        args.extend_from_slice(extra);
        let (got, ktap) = run(&args);
        assert_eq!(got, Some(*code), "{cell} {extra:?}\n{ktap}");
        let tests = support_reports::check_faultlab_ktap(&ktap);
        if *cell == "race-not-fired" {
            let c = &tests[0].subtests[0];
            assert!(c.ok && c.directive.as_deref() == Some("XFAIL"), "{ktap}");
            assert!(c.diagnostic.contains("ping.received > 1000"), "{ktap}");
        }
    }
}
