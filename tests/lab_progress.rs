//! As root: `faultlab run` of two real cells under a pseudo-terminal (util-linux
//! `script`) shows the bar between them, then both cells' lines.
#![cfg(feature = "lab")]

use std::process::Command;

#[test]
fn the_bar_shows_while_real_cells_run() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skip: not root");
        return;
    }
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/progress-two-cells.toml"
    );
    let cmd = format!(
        // One cell after the other, so the bar shows one done and the second running.
        "stty cols 160 rows 40; {} run {fixture} --no-results --jobs 1",
        env!("CARGO_BIN_EXE_faultlab")
    );
    let out = Command::new("script")
        .args(["-qfec", &cmd, "/dev/null"])
        .env_remove(faultlab::runner::progress::MARKER_ENV)
        .env("TERM", "xterm")
        .output()
        .expect("util-linux `script` runs");
    let screen = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{screen}");
    // While the second cell runs: one of two done, and its name as the current cell.
    let between = screen.split('\r').find(|frame| {
        frame.contains("1/2 cells [") && frame.contains("progress-two-cells::second")
    });
    assert!(between.is_some(), "{screen:?}");
    assert!(
        screen.contains("[1/2] progress-two-cells::first PASS"),
        "{screen:?}"
    );
    assert!(
        screen.contains("[2/2] progress-two-cells::second PASS"),
        "{screen:?}"
    );
}

/// `faultlab vm` under a pty: the host draws the boot phases, then the bar of the
/// run inside the guest (its progress arrives as console markers). Needs QEMU and
/// a kernel tree built by scripts/kernel-build.sh.
#[test]
fn vm_shows_boot_phases_then_the_guests_cells() {
    let tree = "/var/cache/faultlab/kernel/build";
    if !nix::unistd::geteuid().is_root()
        || !std::path::Path::new(tree)
            .join("arch/x86/boot/bzImage")
            .exists()
        || Command::new("qemu-system-x86_64")
            .arg("--version")
            .output()
            .is_err()
    {
        eprintln!("skip: needs root, QEMU and {tree} (sudo scripts/kernel-build.sh)");
        return;
    }
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/progress-two-cells.toml"
    );
    let cmd = format!(
        "stty cols 160 rows 40; {} vm --accel tcg --smp 1 --kernel {tree} -- run {fixture} --no-results --jobs 1",
        env!("CARGO_BIN_EXE_faultlab")
    );
    let out = Command::new("script")
        .args(["-qfec", &cmd, "/dev/null"])
        .env_remove(faultlab::runner::progress::MARKER_ENV)
        .env("TERM", "xterm")
        .output()
        .expect("util-linux `script` runs");
    let screen = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{screen}");
    let frames: Vec<&str> = screen.split('\r').collect();
    let at = |what: &str| frames.iter().position(|f| f.contains(what));
    let booting = at("vm: booting").expect("a boot phase frame");
    let up = at("is up, mounting the host root").expect("a kernel-up frame");
    let between = at("1/2 cells [").expect("the guest's bar after one cell");
    assert!(booting < up && up < between, "{screen:?}");
    assert!(frames[between..]
        .iter()
        .any(|f| f.contains("1/2 cells [") && f.contains("progress-two-cells::second")));
    assert!(
        screen.contains("[2/2] progress-two-cells::second PASS"),
        "{screen:?}"
    );
}
