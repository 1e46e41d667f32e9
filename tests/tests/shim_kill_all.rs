//! A container that does not own its PID namespace (here: the host's) must not leave processes
//! behind when its init exits: the shim kills them before it reports the exit, as containerd's
//! shim does. Leftovers would keep the container's output pipes open, and containerd 1.7/2.x
//! then never finish the task (pods that cannot be removed).

use std::time::Duration;
use tether_tests::manager::{Daemon, RUNC_RUNTIME, TETHER_RUNTIME};
use tether_tests::{busybox_rootfs, cmd, procs, unique_id};

const T: Duration = Duration::from_secs(30);

/// An OCI bundle from `runc spec` whose process starts a `sleep` in the background, prints its
/// pid and exits 3; with `host_pid` the spec has no PID namespace (the host's).
fn bundle(host_pid: bool) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = cmd::run(
        std::process::Command::new("runc")
            .args(["spec", "--bundle"])
            .arg(dir.path()),
        None,
        T,
    );
    assert!(out.success(), "runc spec: {out}");
    std::os::unix::fs::symlink(busybox_rootfs(), dir.path().join("rootfs")).expect("rootfs");
    let path = dir.path().join("config.json");
    let mut spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("read spec")).expect("spec JSON");
    spec["process"]["terminal"] = false.into();
    spec["process"]["args"] = serde_json::json!(["/bin/sh", "-c", "sleep 1000 & echo $!; exit 3"]);
    if host_pid {
        let ns = spec["linux"]["namespaces"]
            .as_array_mut()
            .expect("namespaces");
        ns.retain(|n| n["type"] != "pid");
    }
    std::fs::write(&path, serde_json::to_vec_pretty(&spec).expect("encode")).expect("write");
    dir
}

/// Runs the bundle to its exit; returns the background sleep's pid as the host sees it.
fn run_and_get_leftover(runtime: &str) -> i32 {
    let d = Daemon::start();
    let b = bundle(true);
    let id = unique_id("hostpid");
    let path = b.path().display().to_string();
    let out = d.run(&["run", "--rm", "--runtime", runtime, "--bundle", &path, &id]);
    let pid: i32 = out.stdout.trim().parse().unwrap_or_else(|_| {
        panic!(
            "the container printed its sleep's host pid: {out}\n{}",
            d.log()
        )
    });
    assert_eq!(out.code, 3, "{out}");
    pid
}

fn leftover_is_gone(runtime: &str) {
    let pid = run_and_get_leftover(runtime);
    // SIGKILL is delivered before the exit is reported; dying takes a moment on a busy machine.
    let left = procs::wait_gone(&[pid], Duration::from_secs(5));
    let cmdline = procs::cmdline(pid).unwrap_or_default().join(" ");
    if !left.is_empty() && cmdline.contains("sleep") {
        procs::signal(pid, libc::SIGKILL);
        panic!("{runtime}: the container's background sleep (pid {pid}) outlived its exit");
    }
}

#[test]
fn host_pid_container_leaves_no_process_after_its_exit_with_our_shim() {
    leftover_is_gone(TETHER_RUNTIME);
}

#[test]
fn host_pid_container_leaves_no_process_after_its_exit_with_containerds_shim() {
    leftover_is_gone(RUNC_RUNTIME);
}
