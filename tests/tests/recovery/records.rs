//! Corrupt records, interrupted creates and hanging delete actions.

use super::*;

/// Corrupt and half-written records are reported and skipped; they never stop the daemon.
#[test]
pub fn corrupt_records_are_reported_and_skipped() {
    procs::become_subreaper();
    let mut d = Daemon::start();
    let ns = unique_id("ns");
    let id = unique_id("c");
    d.run_cmd().ns(&ns).flag("-d").ok(&id, &["sleep", "300"]);
    d.kill9();
    let bad = d.state().join(&ns).join("bad");
    std::fs::create_dir_all(&bad).expect("mkdir");
    std::fs::write(bad.join("record.json"), b"{\"version\":\"v1\",\"id\":").expect("write");
    let future = d.state().join(&ns).join("future");
    std::fs::create_dir_all(&future).expect("mkdir");
    std::fs::write(future.join("record.json"), b"{\"version\":\"v9\"}").expect("write");
    // A journal record cut off mid-write.
    let mut j = std::fs::OpenOptions::new()
        .append(true)
        .open(d.journal())
        .expect("journal");
    std::io::Write::write_all(&mut j, b"{\"version\":\"v1\",\"seq\":99").expect("write");
    drop(j);
    d.restart();
    // The journal is read beside the restart's probes (the daemon may answer first): its
    // warning comes when it is read.
    wait_until(T, || d.log().contains("torn"));
    let log = d.log();
    assert!(
        log.contains(&bad.join("record.json").display().to_string()) && log.contains("corrupt"),
        "{log}"
    );
    assert!(log.contains("unknown record version \"v9\""), "{log}");
    assert!(log.contains("torn"), "{log}");
    let v = state_json(&d.socket(), &ns, &id).expect("state");
    assert_eq!(v["status"], "RUNNING", "{v}");
    d.ok(&["--namespace", &ns, "delete", "-f", &id]);
    std::fs::remove_dir_all(&bad).expect("rm");
    std::fs::remove_dir_all(&future).expect("rm");
    d.finish();
}

/// A create the daemon never acknowledged (SIGKILLed before it recorded it) is undone after the
/// restart without a trace: its init's exit is not reported, its shim is gone before the daemon
/// serves (so a new create of the same id cannot land in it), and the new container's exit is
/// the only one journaled.
#[test]
pub fn interrupted_create_is_undone_silently_and_leaves_no_shim() {
    procs::become_subreaper();
    let mut d = Daemon::start();
    let ns = unique_id("ns");
    let id = unique_id("c");
    let rootfs = rootfs();
    let create = |d: &Daemon, verb: &str, script: &str| {
        let mut args = vec!["--namespace", &ns, verb];
        if verb == "run" {
            args.push("-d");
        }
        args.extend([
            "--runtime",
            TETHER_RUNTIME,
            "--rootfs",
            &rootfs,
            &id,
            "--",
            "sh",
            "-c",
            script,
        ]);
        d.ok(&args);
    };
    create(&d, "create", "exit 5");
    let sockets = shim_sockets(&d, &ns);
    d.kill9();
    // As if the daemon died before recording the create: the shim holds a created init.
    let record = d.state().join(&ns).join(&id).join("record.json");
    let mut v: Value =
        serde_json::from_slice(&std::fs::read(&record).expect("read record")).expect("JSON");
    v["created_at"] = Value::from(0);
    std::fs::write(&record, serde_json::to_vec(&v).expect("encode")).expect("write record");
    d.restart();
    assert!(
        d.log().contains("finishing an interrupted create"),
        "{}",
        d.log()
    );
    assert_eq!(d.shim_pids(), Vec::<i32>::new(), "{}", d.log());
    let out = d.run(&["--namespace", &ns, "state", &id]);
    assert!(out.stderr.contains("not found"), "{out}");
    create(&d, "run", "exit 7");
    let w = d.run(&["--namespace", &ns, "wait", &id]);
    assert_eq!(w.code, 7, "{w}\n{}", d.log());
    // Anything the old shim still had to say would have arrived by now.
    thread::sleep(Duration::from_secs(4));
    let exits: Vec<(String, u32, u32)> = journaled_exits(&d.journal(), &ns)
        .into_iter()
        .map(|e| (e.0, e.1, e.4))
        .collect();
    assert_eq!(exits.len(), 1, "{exits:?}\n{}", d.log());
    assert_eq!((exits[0].0.as_str(), exits[0].1), (id.as_str(), 7));
    d.ok(&["--namespace", &ns, "delete", &id]);
    assert_no_leftovers(&d, &ns, sockets);
    d.finish();
}

/// Dead shims are cleaned up in parallel and each clean-up is bounded in time. Runtime
/// `io.containerd.hang.v2` is our shim behind a script whose `delete` action does its work and
/// then hangs (as a stuck runtime would): past the deadline the daemon kills it and reports the
/// container exited with that reason, and meanwhile another dead shim's clean-up goes through.
#[test]
pub fn a_hanging_delete_action_is_killed_and_holds_up_no_other_cleanup() {
    procs::become_subreaper();
    let bin = tempfile::Builder::new()
        .prefix("tether-hang-")
        .tempdir()
        .expect("tempdir");
    let script = bin.path().join("containerd-shim-hang-v2");
    tether_tests::cmd::write_executable(
        &script,
        format!(
            "#!/bin/sh\n\
             # The action is the last argument; -id ID comes before it.\n\
             id=; prev=; for a; do [ \"$prev\" = -id ] && id=$a; prev=$a; done\n\
             if [ \"$prev\" = delete ]; then\n\
             \x20 {shim} \"$@\" || exit\n\
             \x20 echo $$ > {dir}/$id.hang\n\
             \x20 exec sleep 1000\n\
             fi\n\
             exec {shim} \"$@\"\n",
            shim = tether_tests::shim_binary().display(),
            dir = bin.path().display(),
        ),
    );
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // Far longer than a clean-up takes, so "meanwhile" is not a race.
    let d = Daemon::start_env(
        &[],
        &[("PATH", &path), ("TETHER_SHIM_DELETE_TIMEOUT_MS", "15000")],
    );
    let ns = unique_id("ns");
    let (hung, other) = (unique_id("hung"), unique_id("other"));
    for (id, runtime) in [(&hung, "io.containerd.hang.v2"), (&other, TETHER_RUNTIME)] {
        d.run_cmd()
            .ns(&ns)
            .flag("-d")
            .runtime(runtime)
            .ok(id, &["sleep", "300"]);
    }
    let sockets = shim_sockets(&d, &ns);
    let status = |id: &str| state_json(&d.socket(), &ns, id).unwrap_or_default();

    // The first death: its clean-up starts and hangs.
    let shim = shim_of(&d, &hung).expect("the hanging runtime's shim");
    procs::signal(shim, libc::SIGKILL);
    let pidfile = bin.path().join(format!("{hung}.hang"));
    let hanging = wait_until(T, || {
        std::fs::read_to_string(&pidfile).is_ok_and(|s| s.trim().parse::<i32>().is_ok())
    });
    assert!(hanging, "the delete action never ran:\n{}", d.log());
    let hang_pid: i32 = std::fs::read_to_string(&pidfile)
        .expect("pidfile")
        .trim()
        .parse()
        .expect("pid");

    // The second death is cleaned up while the first still hangs.
    let shim = shim_of(&d, &other).expect("the other shim");
    procs::signal(shim, libc::SIGKILL);
    let cleaned = wait_until(T, || status(&other)["status"] == "EXITED");
    assert!(cleaned, "{}\n{}", status(&other), d.log());
    assert_eq!(status(&other)["reason"], "shim died");
    assert!(
        procs::is_alive(hang_pid),
        "the other clean-up waited behind the hanging one:\n{}",
        d.log()
    );

    // The hanging one is killed at its deadline and reported.
    let reported = wait_until(T, || status(&hung)["status"] == "EXITED");
    assert!(reported, "{}\n{}", status(&hung), d.log());
    let v = status(&hung);
    assert_eq!(v["exit_status"], 137, "{v}");
    let reason = v["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("shim died; its cleanup failed:")
            && reason.contains("did not finish in 15000 ms: killed"),
        "{v}"
    );
    assert!(
        procs::wait_gone(&[hang_pid], T).is_empty(),
        "the hung action lives on"
    );
    for id in [&hung, &other] {
        d.ok(&["--namespace", &ns, "delete", id]);
    }
    assert_no_leftovers(&d, &ns, sockets);
    d.finish();
}
