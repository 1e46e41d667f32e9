//! `tether checkpoint --export` and `tether restore --import` end to end: a real daemon, our
//! shim, runc and the CRIU that works here (`TETHER_CRIU`, see `tether_tests::criu`).

use serde_json::Value;
use std::path::Path;
use std::time::Duration;
use tether_tests::criu::working_criu;
use tether_tests::manager::Daemon;
use tether_tests::{cmd, unique_id, wait_until};

const T: Duration = Duration::from_secs(60);
const COUNTER: &str = "i=0; while true; do i=$((i+1)); echo $i; sleep 0.1; done";

fn daemon() -> Daemon {
    let criu = working_criu().display().to_string();
    Daemon::start_with(&["--criu", &criu])
}

fn run_counter(d: &Daemon, ns: &str, id: &str) {
    d.run_cmd()
        .ns(ns)
        .flag("-d")
        .ok(id, &["/bin/sh", "-c", COUNTER]);
}

/// The numbers the container printed so far.
fn counts(d: &Daemon, ns: &str, id: &str) -> Vec<u64> {
    let out = d.ok(&["--namespace", ns, "logs", id]);
    out.stdout
        .lines()
        .map(|l| {
            l.trim()
                .parse()
                .unwrap_or_else(|_| panic!("not a count: {l:?}"))
        })
        .collect()
}

fn status(d: &Daemon, ns: &str, id: &str) -> String {
    let out = d.ok(&["--namespace", ns, "state", id, "--json"]);
    let v: Value = serde_json::from_str(&out.stdout).expect("state --json");
    v["status"].as_str().unwrap_or_default().to_string()
}

fn assert_clear_error(out: &cmd::CmdOutput, want: &[&str]) {
    assert!(!out.success(), "expected failure:\n{out}");
    let err = out.stderr.trim();
    assert_eq!(err.lines().count(), 1, "one line:\n{out}");
    for w in want {
        assert!(err.contains(w), "wanted {w:?}:\n{out}");
    }
}

fn archive_path(d: &Daemon, name: &str) -> String {
    d.dir().join(name).display().to_string()
}

#[test]
fn an_exported_container_restored_under_a_new_id_counts_on() {
    let d = daemon();
    let ns = unique_id("ns");
    let (a, b) = (unique_id("cp-a"), unique_id("cp-b"));
    run_counter(&d, &ns, &a);
    assert!(
        wait_until(T, || counts(&d, &ns, &a).len() >= 5),
        "the counter never counted"
    );
    let file = archive_path(&d, "a.tar");
    d.ok(&["--namespace", &ns, "checkpoint", "--export", &file, &a]);
    assert!(
        wait_until(T, || status(&d, &ns, &a) == "EXITED"),
        "without --leave-running the container stops: {}",
        status(&d, &ns, &a)
    );
    let before = counts(&d, &ns, &a);
    let last = *before.last().expect("counted");
    assert_eq!(before, (1..=last).collect::<Vec<_>>(), "counted in order");
    d.ok(&["--namespace", &ns, "delete", &a]);

    // The archive has CRI's layout.
    let mut names: Vec<String> = tar::Archive::new(std::fs::File::open(&file).expect("archive"))
        .entries()
        .expect("a tar")
        .map(|e| {
            let e = e.expect("entry");
            e.path().expect("path").display().to_string()
        })
        .collect();
    names.sort();
    for want in ["config.dump", "spec.dump", "rootfs-diff.tar", "status.dump"] {
        assert!(names.iter().any(|n| n == want), "{want} in {names:?}");
    }
    assert!(
        names
            .iter()
            .any(|n| n.starts_with("checkpoint/") && n.ends_with(".img")),
        "CRIU images under checkpoint/: {names:?}"
    );

    let out = d.ok(&["--namespace", &ns, "restore", "--import", &file, "-d", &b]);
    let pid: u32 = out
        .stdout
        .trim()
        .parse()
        .expect("restore -d prints the pid");
    assert!(pid > 0);
    assert!(
        wait_until(T, || counts(&d, &ns, &b).len() >= 5),
        "the restored counter never counted"
    );
    let after = counts(&d, &ns, &b);
    // A number being printed at the dump may be printed again by the restored process.
    assert!(
        after[0] == last + 1 || after[0] == last,
        "the restored container counts on from {last}: {after:?}"
    );
    assert_eq!(
        after,
        (after[0]..after[0] + after.len() as u64).collect::<Vec<_>>(),
        "counted on in order"
    );
    assert_eq!(status(&d, &ns, &b), "RUNNING");
    d.ok(&["--namespace", &ns, "delete", "-f", &b]);
    d.finish();
}

#[test]
fn leave_running_keeps_the_container_counting() {
    let d = daemon();
    let ns = unique_id("ns");
    let id = unique_id("cp-lr");
    run_counter(&d, &ns, &id);
    assert!(wait_until(T, || counts(&d, &ns, &id).len() >= 3));
    let file = archive_path(&d, "lr.tar");
    d.ok(&[
        "--namespace",
        &ns,
        "checkpoint",
        "--leave-running",
        "--export",
        &file,
        &id,
    ]);
    assert!(Path::new(&file).is_file(), "the archive was written");
    let n = counts(&d, &ns, &id).len();
    assert!(
        wait_until(T, || counts(&d, &ns, &id).len() >= n + 3),
        "the container kept counting"
    );
    assert_eq!(status(&d, &ns, &id), "RUNNING");
    d.ok(&["--namespace", &ns, "delete", "-f", &id]);
    d.finish();
}

#[test]
fn unknown_containers_missing_criu_and_hostile_archives_are_clear_errors() {
    let d = daemon();
    let ns = unique_id("ns");
    let ghost = unique_id("ghost");
    let file = archive_path(&d, "ghost.tar");
    let out = d.run(&["--namespace", &ns, "checkpoint", "--export", &file, &ghost]);
    assert_clear_error(&out, &[&ghost, "not found"]);
    assert!(
        !Path::new(&file).exists(),
        "no archive for an unknown container"
    );

    // A hostile archive: refused naming the entry, nothing created.
    let evil = archive_path(&d, "evil.tar");
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_old();
    h.as_old_mut().name[..8].copy_from_slice(b"../owned");
    h.set_size(1);
    h.set_mode(0o644);
    h.set_cksum();
    b.append(&h, &b"x"[..]).expect("append");
    std::fs::write(&evil, b.into_inner().expect("tar")).expect("write");
    let id = unique_id("evil");
    let out = d.run(&["--namespace", &ns, "restore", "--import", &evil, "-d", &id]);
    assert_clear_error(&out, &["../owned", "refused"]);
    let out = d.ok(&["--namespace", &ns, "ps", "--json"]);
    assert_eq!(out.stdout.trim(), "[]", "no container was created");
    let out = d.run(&[
        "--namespace",
        &ns,
        "restore",
        "--import",
        "/nonexistent/x.tar",
        &id,
    ]);
    assert_clear_error(&out, &["/nonexistent/x.tar"]);

    // A daemon without a CRIU says so and leaves the container running.
    let d2 = Daemon::start_with(&["--criu", "/nonexistent/criu"]);
    let id = unique_id("nocriu");
    run_counter(&d2, &ns, &id);
    let file = archive_path(&d2, "n.tar");
    let out = d2.run(&["--namespace", &ns, "checkpoint", "--export", &file, &id]);
    assert_clear_error(&out, &["CRIU not found", "/nonexistent/criu"]);
    assert_eq!(status(&d2, &ns, &id), "RUNNING");
    assert!(!Path::new(&file).exists());
    d2.ok(&["--namespace", &ns, "delete", "-f", &id]);
    d.finish();
}

/// `checkpoint --export` to a target that fills up (a 64 KiB tmpfs): the command fails saying
/// so, and the container runs on: it is stopped only once its archive is complete.
#[test]
fn an_export_that_cannot_be_written_leaves_the_container_running() {
    let d = daemon();
    let ns = unique_id("ns");
    let id = unique_id("full");
    run_counter(&d, &ns, &id);
    assert!(
        wait_until(T, || counts(&d, &ns, &id).len() >= 3),
        "the counter never counted"
    );
    let small = d.dir().join("small");
    std::fs::create_dir(&small).expect("mkdir");
    nix::mount::mount(
        Some("tmpfs"),
        &small,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=64k,mode=0700"),
    )
    .expect("mount a 64 KiB tmpfs");
    let file = small.join("a.tar").display().to_string();
    let out = d.run(&["--namespace", &ns, "checkpoint", "--export", &file, &id]);
    let _ = nix::mount::umount2(&small, nix::mount::MntFlags::MNT_DETACH);
    assert_clear_error(&out, &["No space left on device"]);
    assert_eq!(status(&d, &ns, &id), "RUNNING", "{out}");
    let before = counts(&d, &ns, &id).len();
    assert!(
        wait_until(T, || counts(&d, &ns, &id).len() > before),
        "the container stopped counting"
    );
    d.ok(&["--namespace", &ns, "delete", "-f", &id]);
    d.finish();
}

/// Ctrl-C during `checkpoint --export` (here while CRIU's dump is held by a wrapper): the
/// command's scratch directory (the image, the container's memory) is removed, the container
/// it froze for the dump runs on, and the command exits 130.
#[test]
fn an_interrupted_export_leaves_no_image_and_the_container_running() {
    let hold = tempfile::tempdir().expect("tempdir");
    let real = working_criu();
    // runc asks CRIU's version over `criu swrk`, then dumps over a second one: that one waits.
    let wrapper = hold.path().join("criu");
    tether_tests::cmd::write_executable(
        &wrapper,
        format!(
            "#!/bin/sh\nd={d}\nif [ \"$1\" = swrk ]; then\n  echo x >> $d/swrk\n  \
             if [ $(wc -l < $d/swrk) -eq 2 ]; then\n    touch $d/held\n    \
             i=0; while [ ! -e $d/go ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done\n  \
             fi\nfi\nexec {real} \"$@\"\n",
            d = hold.path().display(),
            real = real.display()
        ),
    );
    let d = Daemon::start_with(&["--criu", &wrapper.display().to_string()]);
    let ns = unique_id("ns");
    let id = unique_id("int");
    run_counter(&d, &ns, &id);
    let tmp = d.dir().join("cli-tmp");
    std::fs::create_dir(&tmp).expect("mkdir");
    let file = archive_path(&d, "int.tar");
    let mut cli = d
        .tether()
        .args(["--namespace", &ns, "checkpoint", "--export", &file, &id])
        .env("TMPDIR", &tmp)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start tether checkpoint");
    let held = wait_until(T, || hold.path().join("held").exists());
    let scratch_before = std::fs::read_dir(&tmp).map(|d| d.count()).unwrap_or(0);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(cli.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("SIGINT the CLI");
    let emptied = wait_until(T, || {
        std::fs::read_dir(&tmp).map(|d| d.count()).unwrap_or(0) == 0
    });
    std::fs::write(hold.path().join("go"), b"").expect("let CRIU go on");
    let (exit, killed) = cmd::wait_deadline(&mut cli, std::time::Instant::now() + T, "tether");
    assert!(held, "the dump never reached CRIU\n{}", d.log());
    assert!(!killed, "the interrupted CLI did not end");
    assert_eq!(scratch_before, 1, "the CLI's scratch directory");
    assert!(emptied, "the scratch directory outlived the interrupt");
    assert_eq!(exit.code(), Some(130), "{exit:?}");
    assert!(!Path::new(&file).exists(), "no archive");
    assert!(
        wait_until(T, || status(&d, &ns, &id) == "RUNNING"),
        "the container was left {}",
        status(&d, &ns, &id)
    );
    let before = counts(&d, &ns, &id).len();
    assert!(
        wait_until(T, || counts(&d, &ns, &id).len() > before),
        "the container stopped counting"
    );
    d.ok(&["--namespace", &ns, "delete", "-f", &id]);
    d.finish();
}
