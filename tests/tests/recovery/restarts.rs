//! A daemon restart after exits, killed shims and stopped shims.

use super::*;

/// A container that exits while the daemon is down is reported after the restart, once, with
/// its real exit status and time.
#[test]
pub fn exit_while_the_daemon_is_down_is_reported_after_the_restart() {
    procs::become_subreaper();
    let mut d = Daemon::start();
    let ns = unique_id("ns");
    let id = unique_id("c");
    let out = d.run_cmd().ns(&ns).flag("-d").ok(
        &id,
        &[
            "sh",
            "-c",
            "trap 'exit 42' TERM; while true; do sleep 0.1; done",
        ],
    );
    let pid: i32 = out.stdout.trim().parse().expect("pid");
    d.kill9();
    let before = now_nanos();
    assert!(procs::signal(pid, libc::SIGTERM));
    assert!(
        procs::wait_gone(&[pid], T).is_empty(),
        "the container exits"
    );
    // The shim stamps the exit when it reaps the process, which is also when the pid leaves
    // /proc: a moment after `wait_gone` can see it gone (seen: 98 us under load). The bound is
    // the restart, a second later: the time must be the exit's, not the recovery's.
    thread::sleep(Duration::from_secs(1));
    let after = now_nanos();
    d.restart();
    let w = d.run(&["--namespace", &ns, "wait", &id]);
    assert_eq!(w.code, 42, "{w}\n{}", d.log());
    let v = state_json(&d.socket(), &ns, &id).expect("state");
    assert_eq!(v["status"], "EXITED", "{v}");
    // The exit is journaled once, marked recovered, with the time the shim saw; the shim's own
    // event, retried now that the daemon is back, is not reported again.
    thread::sleep(Duration::from_secs(6));
    let exits = journaled_exits(&d.journal(), &ns);
    assert_eq!(exits.len(), 1, "{exits:?}\n{}", d.log());
    let (cid, status, at, recovered, _) = exits[0].clone();
    assert_eq!((cid.as_str(), status), (id.as_str(), 42));
    assert!(recovered, "{exits:?}");
    assert!(
        before <= at && at <= after,
        "exited_at {at} in [{before}, {after}]"
    );
    d.ok(&["--namespace", &ns, "delete", &id]);
    d.finish();
}

/// A shim and the daemon SIGKILLed together: the restart finds the shim gone at once (the
/// container is never RUNNING again), its delete action kills and removes the container, and
/// the exit is reported with a reason.
pub fn shim_and_daemon_killed(runtime: &str) {
    procs::become_subreaper();
    let mut d = Daemon::start();
    let ns = unique_id("ns");
    let id = unique_id("c");
    let pid = d.run_detached(&ns, runtime, &id, &["sleep", "300"]);
    let shims = d.shim_pids();
    assert_eq!(shims.len(), 1, "{shims:?}");
    let sockets = shim_sockets(&d, &ns);
    procs::signal(shims[0], libc::SIGKILL);
    d.kill9();
    assert!(procs::wait_gone(&shims, T).is_empty());
    procs::reap_orphans();
    d.restart();
    assert_dead_shims_container_ends(&d, &ns, &id);
    let v = state_json(&d.socket(), &ns, &id).expect("state");
    assert_eq!(v["reason"], "shim died while the daemon was down", "{v}");
    assert!(
        procs::wait_gone(&[pid], T).is_empty(),
        "the container is killed"
    );
    let exits = journaled_exits(&d.journal(), &ns);
    assert_eq!(exits.len(), 1, "{exits:?}");
    assert!(exits[0].3, "marked recovered: {exits:?}");
    d.ok(&["--namespace", &ns, "delete", &id]);
    assert_no_leftovers(&d, &ns, sockets);
    d.finish();
}

/// Right after a restart a dead shim's container is UNKNOWN (its clean-up runs in the
/// background) or already EXITED, never RUNNING; `wait` returns the exit its clean-up found
/// (137: the container was killed), and the state then says EXITED.
fn assert_dead_shims_container_ends(d: &Daemon, ns: &str, id: &str) {
    let v = state_json(&d.socket(), ns, id).expect("state");
    assert!(
        v["status"] == "UNKNOWN" || v["status"] == "EXITED",
        "{v}\n{}",
        d.log()
    );
    let w = d.run(&["--namespace", ns, "wait", id]);
    assert_eq!(w.code, 137, "{w}\n{}", d.log());
    let v = state_json(&d.socket(), ns, id).expect("state");
    assert_eq!(v["status"], "EXITED", "{v}\n{}", d.log());
    assert_eq!(v["exit_status"], 137, "{v}");
}

#[test]
pub fn shim_and_daemon_killed_together_with_our_shim() {
    shim_and_daemon_killed(TETHER_RUNTIME);
}

#[test]
pub fn shim_and_daemon_killed_together_with_containerds_go_shim() {
    shim_and_daemon_killed(RUNC_RUNTIME);
}

/// A shim that is there but does not answer (SIGSTOPped) while the daemon restarts is declared
/// dead after the probe's deadline: the daemon kills it (found by its `-namespace`/`-id` and its
/// bundle as working directory), its delete action cleans up, and the exit is reported. Once
/// continued, no shim lives on to serve a container that no longer exists.
pub fn stopped_shim_at_restart(runtime: &str) {
    procs::become_subreaper();
    let mut d = Daemon::start();
    let ns = unique_id("ns");
    let id = unique_id("c");
    let pid = d.run_detached(&ns, runtime, &id, &["sleep", "300"]);
    let shim = shim_of(&d, &id).expect("the container's shim");
    let sockets = shim_sockets(&d, &ns);
    d.kill9();
    procs::signal(shim, libc::SIGSTOP);
    procs::reap_orphans();
    d.restart();
    assert_dead_shims_container_ends(&d, &ns, &id);
    // SIGCONT: a shim merely stopped would run on now; a killed one is gone.
    procs::signal(shim, libc::SIGCONT);
    let left = procs::wait_gone(&[shim, pid], T);
    procs::reap_orphans();
    assert!(
        left.is_empty(),
        "still alive after the restart declared them dead: {left:?}\n{}",
        d.log()
    );
    d.ok(&["--namespace", &ns, "delete", &id]);
    assert_no_leftovers(&d, &ns, sockets);
    d.finish();
}

#[test]
pub fn stopped_shim_is_killed_at_restart_with_our_shim() {
    stopped_shim_at_restart(TETHER_RUNTIME);
}

#[test]
pub fn stopped_shim_is_killed_at_restart_with_containerds_go_shim() {
    stopped_shim_at_restart(RUNC_RUNTIME);
}

/// A killed shim is reported at once (its pidfd), cleaned up, and the daemon serves on; its
/// threads do not grow with the containers it watches.
#[test]
pub fn killed_shim_is_reported_and_daemon_threads_stay_constant() {
    procs::become_subreaper();
    let d = Daemon::start();
    let ns = unique_id("ns");
    let daemon = d.pid().expect("pid");
    let run = |id: &str| d.run_cmd().ns(&ns).flag("-d").ok(id, &["sleep", "300"]);
    run("c0");
    let one = procs::thread_count(daemon).expect("threads");
    for i in 1..50 {
        run(&format!("c{i}"));
    }
    // A CLI connection's server thread ends a moment after its client exits: count once those
    // are gone (a thread per container would never settle).
    let mut fifty = 0;
    let settled = wait_until(T, || {
        fifty = procs::thread_count(daemon).expect("threads");
        fifty <= one + 2
    });
    println!("daemon threads: {one} with 1 container, {fifty} with 50");
    assert!(settled, "threads grow with containers: {one} -> {fifty}");
    let shim = *d.shim_pids().first().expect("a shim");
    procs::signal(shim, libc::SIGKILL);
    let reported = wait_until(T, || {
        let out = d.ok(&["--namespace", &ns, "ps", "--json"]);
        let rows: Vec<Value> = serde_json::from_str(&out.stdout).unwrap_or_default();
        rows.iter().any(|r| r["reason"] == "shim died")
    });
    assert!(reported, "{}", d.log());
    for i in 0..50 {
        d.ok(&["--namespace", &ns, "delete", "-f", &format!("c{i}")]);
    }
    assert!(wait_until(T, || d.shim_pids().is_empty()));
    assert_no_leftovers(&d, &ns, Vec::new());
    d.finish();
}

/// An exit a shim forwards while the restarted daemon is between asking its State (RUNNING)
/// and adopting it (held there by the daemon's test hook): the table learns it once the
/// container is adopted, without anyone calling Wait.
#[test]
pub fn an_exit_between_the_probe_and_the_adoption_reaches_the_table() {
    procs::become_subreaper();
    let mut d = Daemon::start();
    let ns = unique_id("ns");
    let id = unique_id("c");
    let pid = d.run_detached(&ns, TETHER_RUNTIME, &id, &["sleep", "300"]);
    d.kill9();
    let hold = d.dir().join("hold");
    std::fs::create_dir(&hold).expect("mkdir hold");
    d.set_env("TETHER_TEST_PAUSE_ADOPT", &hold.display().to_string());
    let journal = d.journal();
    let killer = {
        let (hold, ns, id) = (hold.clone(), ns.clone(), id.clone());
        thread::spawn(move || {
            let paused = wait_until(T, || hold.join(format!("adopt-paused-{id}")).exists());
            if paused {
                procs::signal(pid, libc::SIGKILL);
                // The shim forwards the exit to the restarted daemon, which journals it.
                wait_until(T, || {
                    journaled_exits(&journal, &ns).iter().any(|e| e.0 == id)
                });
            }
            let _ = std::fs::write(hold.join("adopt-go"), b"");
            paused
        })
    };
    d.restart();
    assert!(
        killer.join().expect("the killer thread"),
        "recovery never paused\n{}",
        d.log()
    );
    let exited = wait_until(Duration::from_secs(10), || {
        state_json(&d.socket(), &ns, &id).is_ok_and(|v| v["status"] == "EXITED")
    });
    assert!(
        exited,
        "the table still says {:?}\n{}",
        state_json(&d.socket(), &ns, &id).map(|v| v["status"].clone()),
        d.log()
    );
    let w = d.run(&["--namespace", &ns, "wait", &id]);
    assert_eq!(w.code, 137, "{w}");
    d.ok(&["--namespace", &ns, "delete", &id]);
    d.finish();
}
