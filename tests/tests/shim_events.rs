//! Our shim's events as `ctr events` sees them, and its `delete` action's exit status (the real
//! one, where containerd's own shim always answers 137).

use protobuf::Message;
use std::time::Duration;
use tether_protocol::api::task::DeleteResponse;
use tether_tests::events::Event;
use tether_tests::shimtest::tether_run;
use tether_tests::shimtest::Scene;
use tether_tests::{procs, shim, unique_id, wait_until, Containerd};

const T: Duration = Duration::from_secs(20);

/// A numeric field of an event body; Go's JSON leaves out zero values.
fn field(e: &Event, name: &str) -> u64 {
    let body = e
        .json()
        .unwrap_or_else(|| panic!("{} body is JSON: {:?}", e.topic, e.event));
    body.get(name).and_then(|v| v.as_u64()).unwrap_or(0)
}

#[test]
fn events_show_create_start_exit_delete_in_order_with_the_exit_status() {
    let Scene { cd, ns, ctr } = Scene::start();
    let events = ctr.events();
    for code in [0u64, 7, 42] {
        let id = unique_id("c");
        let script = format!("exit {code}");
        let out = tether_run(&ctr, &id)
            .rm()
            .args(&["/bin/sh", "-c", &script])
            .output();
        assert_eq!(out.code as u64, code, "{out}\n{}", cd.log_excerpt());
        let delete = events.wait_for_topic(&id, "/tasks/delete", T);
        let tasks: Vec<Event> = events
            .for_container(&id)
            .into_iter()
            .filter(|e| e.topic.starts_with("/tasks/"))
            .collect();
        let topics: Vec<&str> = tasks.iter().map(|e| e.topic.as_str()).collect();
        assert_eq!(
            topics,
            [
                "/tasks/create",
                "/tasks/start",
                "/tasks/exit",
                "/tasks/delete"
            ],
            "container {id} (exit {code})"
        );
        assert!(tasks.iter().all(|e| e.namespace == ns), "{tasks:#?}");
        let (create, start, exit) = (&tasks[0], &tasks[1], &tasks[2]);
        let pid = field(create, "pid");
        assert!(pid > 0, "TaskCreate carries the init pid: {}", create.event);
        assert_eq!(field(start, "pid"), pid, "{}", start.event);
        assert_eq!(field(exit, "pid"), pid, "{}", exit.event);
        assert_eq!(field(exit, "exit_status"), code, "{}", exit.event);
        let exit_body = exit.json().expect("TaskExit is JSON");
        assert_eq!(exit_body["id"], id.as_str(), "{}", exit.event);
        assert!(exit_body.get("exited_at").is_some(), "{}", exit.event);
        assert_eq!(field(&delete, "pid"), pid, "{}", delete.event);
        assert_eq!(field(&delete, "exit_status"), code, "{}", delete.event);
    }
    drop(events);
    assert!(wait_until(T, || cd.shim_pids().is_empty()));
    let check = cd.leak_check();
    let report = cd.shutdown();
    assert!(report.problems.is_empty(), "{report:#?}");
    check.assert_clean();
}

fn decode_delete(out: &shim::DeleteOutput) -> DeleteResponse {
    assert_eq!(out.code, 0, "the delete action failed: {out:?}");
    assert_eq!(out.stderr, "", "nothing on stderr");
    DeleteResponse::parse_from_bytes(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is a DeleteResponse: {e}: {out:?}"))
}

#[test]
fn delete_action_after_shim_death_reports_the_real_exit_status_and_is_idempotent() {
    let mut cd = Containerd::start();
    let ns = unique_id("ns");
    let ctr = cd.ctr(&ns);
    let events = ctr.events();
    let id = unique_id("c");
    tether_run(&ctr, &id)
        .detach()
        .args(&["/bin/sh", "-c", "exit 42"])
        .success();
    let exit = events.wait_for_topic(&id, "/tasks/exit", T);
    assert_eq!(field(&exit, "exit_status"), 42, "{}", exit.event);
    let pid = field(&exit, "pid") as u32;
    drop(events);

    // containerd goes away first, so that it does not clean up after the shim's death itself
    // while we look; then the shim dies, as in a crash.
    let bundle = cd.bundle(&ns, &id);
    let sock = shim::socket_path(&bundle).expect("the bundle has an address file");
    let shim_pid = shim::shim_pid(&cd, &ns, &id).expect("the shim is running");
    let shim_args = procs::cmdline(shim_pid).expect("shim cmdline");
    cd.kill_daemon(libc::SIGKILL);
    assert!(procs::signal(shim_pid, libc::SIGKILL));
    assert!(
        shim::wait_reaped(shim_pid, &shim_args, T),
        "{}",
        procs::describe(shim_pid)
    );

    let first = decode_delete(&shim::run_delete_action(&cd, &ns, &id, &bundle));
    assert_eq!(first.exit_status, 42, "the real status, not 137: {first:?}");
    assert_eq!(first.pid, pid, "{first:?}");
    assert!(first.exited_at.is_some(), "{first:?}");
    assert!(
        std::fs::symlink_metadata(&sock).is_err(),
        "the dead shim's socket {} is removed",
        sock.display()
    );
    assert!(!shim::runc_list(&ns).contains(&id));
    assert!(!shim::runc_state_dir(&ns, &id).exists());

    let second = decode_delete(&shim::run_delete_action(&cd, &ns, &id, &bundle));
    assert_eq!(second.exit_status, 42, "{second:?}");
    assert_eq!(second.pid, pid, "{second:?}");
    assert_eq!(
        second.exited_at, first.exited_at,
        "the same recorded exit, twice"
    );

    // containerd comes back, finds the shim dead, runs `delete` once more and forgets the task.
    cd.restart();
    assert!(
        wait_until(T, || ctr.task(&id).is_none()),
        "containerd dropped the dead task: {:?}\n{}",
        ctr.task(&id),
        cd.log_excerpt()
    );
    assert!(cd.shim_pids().is_empty(), "{:?}", cd.shim_pids());
    let rm = ctr.container_delete(&id);
    assert!(rm.success(), "{rm}");
    tether_tests::shimtest::finish(cd, &[]);
}

#[test]
fn containerd_reports_the_real_exit_status_when_the_shim_dies_after_the_exit() {
    let Scene { cd, ns, ctr } = Scene::start();
    let events = ctr.events();
    let id = unique_id("c");
    tether_run(&ctr, &id)
        .detach()
        .args(&["/bin/sh", "-c", "exit 42"])
        .success();
    events.wait_for_topic(&id, "/tasks/exit", T);
    let shim_pid = shim::shim_pid(&cd, &ns, &id).expect("the shim is running");
    let shim_args = procs::cmdline(shim_pid).expect("shim cmdline");
    assert!(procs::signal(shim_pid, libc::SIGKILL));
    // containerd sees the connection drop, runs our `delete` action and publishes a second
    // /tasks/exit with the status that action answered.
    let exits = || -> Vec<Event> {
        events
            .for_container(&id)
            .into_iter()
            .filter(|e| e.topic == "/tasks/exit")
            .collect()
    };
    assert!(
        wait_until(T, || exits().len() >= 2),
        "no second /tasks/exit: {:#?}\n{}",
        events.for_container(&id),
        cd.log_excerpt()
    );
    let exits = exits();
    assert_eq!(exits.len(), 2, "{exits:#?}");
    assert_eq!(
        field(&exits[1], "exit_status"),
        42,
        "the delete action's status, published by containerd: {}\n{}",
        exits[1].event,
        cd.log_excerpt()
    );
    assert!(shim::wait_reaped(shim_pid, &shim_args, T));
    assert!(
        wait_until(T, || ctr.task(&id).is_none()),
        "containerd dropped the dead task: {:?}",
        ctr.task(&id)
    );
    assert!(ctr.container_delete(&id).success());
    drop(events);
    let check = cd.leak_check();
    let report = cd.shutdown();
    assert!(report.problems.is_empty(), "{report:#?}");
    check.assert_clean();
}

#[test]
fn shim_killed_while_its_container_runs_is_cleaned_up_by_the_delete_action() {
    let Scene { cd, ns, ctr } = Scene::start();
    let events = ctr.events();
    let id = unique_id("c");
    tether_run(&ctr, &id)
        .detach()
        .args(&["/bin/sleep", "1000"])
        .success();
    let row = ctr.task(&id).expect("the task is listed");
    let pid = row.pid as i32;
    assert!(
        procs::wait_cmdline(pid, &["/bin/sleep", "1000"], T),
        "the container process runs"
    );
    let init_args = procs::cmdline(pid).expect("the container process runs");
    let shim_pid = shim::shim_pid(&cd, &ns, &id).expect("the shim is running");
    let shim_args = procs::cmdline(shim_pid).expect("shim cmdline");
    assert!(procs::signal(shim_pid, libc::SIGKILL));
    // containerd runs our `delete` action: runc kills and removes the orphaned container, and
    // with no exit recorded the status is 137.
    let exit = events.wait_for_topic(&id, "/tasks/exit", T);
    assert_eq!(field(&exit, "exit_status"), 137, "{}", exit.event);
    assert_eq!(field(&exit, "pid"), pid as u64, "{}", exit.event);
    assert!(shim::wait_reaped(shim_pid, &shim_args, T));
    assert!(
        shim::wait_reaped(pid, &init_args, T),
        "the orphaned container process was killed: {}",
        procs::describe(pid)
    );
    assert!(
        wait_until(T, || ctr.task(&id).is_none()),
        "containerd dropped the dead task: {:?}",
        ctr.task(&id)
    );
    assert!(!shim::runc_list(&ns).contains(&id));
    assert!(ctr.container_delete(&id).success());
    drop(events);
    tether_tests::shimtest::finish(cd, &[]);
}
