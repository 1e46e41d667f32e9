//! The install steps of the Makefile and scripts/: every `apt-get` that touches the system's
//! package state waits for the dpkg lock (another apt run holding it made `make test` fail on
//! a fresh machine). A stand-in `apt-get` first on PATH records how it is called.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_path_buf()
}

/// A directory holding a stand-in `apt-get` that appends its arguments to `calls` and succeeds.
fn fake_apt(dir: &Path) -> PathBuf {
    let calls = dir.join("calls");
    let bin = dir.join("bin");
    std::fs::create_dir(&bin).expect("mkdir");
    let script = bin.join("apt-get");
    tether_tests::cmd::write_executable(
        &script,
        format!("#!/bin/sh\necho \"$*\" >> '{}'\n", calls.display()),
    );
    bin
}

fn path_with(bin: &Path) -> String {
    format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// The stand-in's calls; each must be an update or an install that waits for the lock.
fn check_calls(dir: &Path, what: &str) {
    let calls = std::fs::read_to_string(dir.join("calls"))
        .unwrap_or_else(|e| panic!("{what}: apt-get was not called ({e})"));
    let lines: Vec<&str> = calls.lines().collect();
    assert!(
        lines.iter().any(|l| l.contains("install")) && lines.iter().any(|l| l.contains("update")),
        "{what}: {calls}"
    );
    for l in &lines {
        assert!(
            l.contains("DPkg::Lock::Timeout="),
            "{what}: apt-get {l:?} does not wait for the dpkg lock"
        );
    }
}

#[test]
fn make_deps_waits_for_the_dpkg_lock() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bin = fake_apt(dir.path());
    let out = Command::new("make")
        .current_dir(repo())
        .args(["-s", "deps", "PACKAGES=tether-test-no-such-package"])
        .env("PATH", path_with(&bin))
        .output()
        .expect("run make");
    assert!(out.status.success(), "make deps: {out:?}");
    check_calls(dir.path(), "make deps");
}

#[test]
fn criu_build_dependencies_wait_for_the_dpkg_lock() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bin = fake_apt(dir.path());
    let out = Command::new("bash")
        .arg(repo().join("scripts/install-deps.sh"))
        .arg("tether-test-no-such-package")
        .env("PATH", path_with(&bin))
        .output()
        .expect("run install-deps.sh");
    assert!(out.status.success(), "install-deps.sh: {out:?}");
    check_calls(dir.path(), "install-deps.sh");
    let criu = std::fs::read_to_string(repo().join("scripts/criu.sh")).expect("criu.sh");
    assert!(
        !criu
            .lines()
            .any(|l| l.trim_start().starts_with("apt-get update")
                || l.trim_start().starts_with("apt-get install")),
        "criu.sh installs with its own apt-get rather than install-deps.sh"
    );
}
