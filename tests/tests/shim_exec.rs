//! Exec through containerd into our shim: exit statuses, stdio, the exec events and their order,
//! duplicate exec ids, execs killed when the init exits (their exits published first), and execs
//! refused once the init has exited.

use std::time::Duration;
use tether_protocol::api::task::{
    ExecProcessRequest, StartRequest, StartResponse, WaitRequest, WaitResponse,
};
use tether_protocol::api::Empty;
use tether_tests::shimtest::state;
use tether_tests::shimtest::{detached, Scene};
use tether_tests::shimtest::{finish, process_spec, rpc_code, shim_client, T};
use tether_tests::{cmd, procs, Event};

/// The process id an event is about: `exec_id` for exec-added/started, `id` for exit.
fn process_of(e: &Event) -> Option<String> {
    let v = e.json()?;
    v.get("exec_id")
        .or_else(|| v.get("id"))?
        .as_str()
        .map(String::from)
}

fn describe(events: &[Event]) -> String {
    events
        .iter()
        .map(|e| format!("{} {}", e.topic, e.event))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn exec_exit_status_stdio_and_events_in_order() {
    let Scene { cd, ns: _, ctr } = Scene::start();
    let events = ctr.events();
    let id = detached(&ctr, &["/bin/sleep", "1000"]);

    let out = ctr.call(&[
        "task",
        "exec",
        "--exec-id",
        "e1",
        &id,
        "/bin/sh",
        "-c",
        "exit 3",
    ]);
    assert_eq!(
        out.code, 3,
        "exec exit status comes back through ctr: {out}"
    );

    let out = ctr.call(&[
        "task",
        "exec",
        "--exec-id",
        "e2",
        &id,
        "/bin/sh",
        "-c",
        "echo to-stdout; echo to-stderr >&2",
    ]);
    assert!(out.success(), "{out}");
    assert_eq!(out.stdout, "to-stdout\n", "{out}");
    assert!(out.stderr.contains("to-stderr"), "{out}");

    let exit = events.wait_for(
        |e| e.is(&id, "/tasks/exit") && process_of(e).as_deref() == Some("e1"),
        T,
    );
    let exit = exit.json().expect("exit event is JSON");
    assert_eq!(exit["exit_status"], 3, "{exit}");

    let of_e1: Vec<Event> = events
        .for_container(&id)
        .into_iter()
        .filter(|e| process_of(e).as_deref() == Some("e1"))
        .collect();
    let topics: Vec<&str> = of_e1.iter().map(|e| e.topic.as_str()).collect();
    assert_eq!(
        topics,
        ["/tasks/exec-added", "/tasks/exec-started", "/tasks/exit"],
        "events of exec e1:\n{}",
        describe(&of_e1)
    );
    let started = of_e1[1].json().expect("exec-started is JSON");
    let exited = of_e1[2].json().expect("exit is JSON");
    assert!(started["pid"].as_u64().unwrap_or(0) > 0, "{started}");
    assert_eq!(
        started["pid"], exited["pid"],
        "same process started and exited"
    );

    // Execs that exit at once (possibly before `runc exec` has returned their pid) still get
    // their events in order, each exit after its start.
    for n in 0..5 {
        let exec_id = format!("quick{n}");
        let out = ctr.call(&["task", "exec", "--exec-id", &exec_id, &id, "/bin/true"]);
        assert!(out.success(), "{out}");
        events.wait_for(
            |e| e.is(&id, "/tasks/exit") && process_of(e).as_deref() == Some(exec_id.as_str()),
            T,
        );
        let of: Vec<Event> = events
            .for_container(&id)
            .into_iter()
            .filter(|e| process_of(e).as_deref() == Some(exec_id.as_str()))
            .collect();
        let topics: Vec<&str> = of.iter().map(|e| e.topic.as_str()).collect();
        assert_eq!(
            topics,
            ["/tasks/exec-added", "/tasks/exec-started", "/tasks/exit"],
            "events of exec {exec_id}:\n{}",
            describe(&of)
        );
    }

    // ctr deleted each exec when it ended: the shim holds none of their FIFOs any more.
    let shim = tether_tests::shimtest::serving_shim_pid(&cd, &id);
    let held: Vec<String> = tether_tests::shimtest::open_files(shim)
        .into_iter()
        // By file name: the init's FIFOs are `<id>-stdout`, and a random id may end in "e1".
        .filter(|f| {
            ["/e1-std", "/e2-std", "/quick"]
                .iter()
                .any(|n| f.contains(n))
        })
        .collect();
    assert!(held.is_empty(), "the shim still holds: {held:?}");

    // The init is untouched by its execs.
    let task = ctr.task(&id).expect("task listed");
    assert_eq!(task.status, "RUNNING");

    drop(events);
    finish(cd, &[&id]);
}

#[test]
fn duplicate_exec_refused_exec_killed_with_init_and_no_exec_after_init_exit() {
    let Scene { cd, ns, ctr } = Scene::start();
    let events = ctr.events();
    let id = detached(&ctr, &["/bin/sleep", "1000"]);

    // A long exec, attached through ctr in the background: ctr returns when it exits.
    let mut long_cmd = ctr.command(&[
        "task",
        "exec",
        "--exec-id",
        "long",
        &id,
        "/bin/sleep",
        "100",
    ]);
    let long = std::thread::spawn(move || cmd::run(&mut long_cmd, None, Duration::from_secs(60)));
    let started = events.wait_for(
        |e| e.is(&id, "/tasks/exec-started") && process_of(e).as_deref() == Some("long"),
        T,
    );
    let sleep_pid = started.json().expect("exec-started is JSON")["pid"]
        .as_i64()
        .expect("exec-started has a pid") as i32;
    assert!(procs::is_alive(sleep_pid));

    // The same exec id again while the first one runs: refused, through ctr and directly.
    let dup = ctr.call(&["task", "exec", "--exec-id", "long", &id, "/bin/true"]);
    assert!(!dup.success(), "a second exec `long` must fail: {dup}");
    assert!(
        dup.stderr.to_lowercase().contains("already exists"),
        "ctr names the reason: {dup}"
    );
    let shim = shim_client(&cd, &ns, &id);
    let req = ExecProcessRequest {
        id: id.clone(),
        exec_id: "long".into(),
        spec: Some(process_spec(&["/bin/true"], false)).into(),
        ..Default::default()
    };
    let code = rpc_code(shim.call::<_, Empty>("Exec", &req, T), "duplicate Exec");
    assert_eq!(code, ttrpc::Code::ALREADY_EXISTS);
    assert!(procs::is_alive(sleep_pid), "the first `long` still runs");

    // A second long exec, made directly with no stdio at all.
    let req = ExecProcessRequest {
        id: id.clone(),
        exec_id: "raw".into(),
        spec: Some(process_spec(&["/bin/sleep", "100"], false)).into(),
        ..Default::default()
    };
    shim.call::<_, Empty>("Exec", &req, T)
        .expect("Exec with no stdio");
    let start = StartRequest {
        id: id.clone(),
        exec_id: "raw".into(),
        ..Default::default()
    };
    let raw_pid = shim
        .call::<_, StartResponse>("Start", &start, T)
        .expect("Start exec raw")
        .pid as i32;
    assert!(procs::is_alive(raw_pid));

    // The init dies: the execs are killed, and their exits are published before the init's.
    let kill = ctr.task_kill(&id, "SIGKILL");
    assert!(kill.success(), "{kill}");
    let init_exit = events.wait_for(
        |e| e.is(&id, "/tasks/exit") && process_of(e).as_deref() == Some(id.as_str()),
        T,
    );
    let long_out = long.join().expect("ctr exec thread");
    assert_eq!(long_out.code, 137, "the exec died of SIGKILL: {long_out}");
    assert!(
        procs::wait_gone(&[sleep_pid, raw_pid], T).is_empty(),
        "the execs' processes are gone"
    );
    let exits: Vec<Event> = events
        .for_container(&id)
        .into_iter()
        .filter(|e| e.topic == "/tasks/exit")
        .collect();
    let mut order: Vec<String> = exits.iter().filter_map(process_of).collect();
    assert_eq!(
        order.pop().as_deref(),
        Some(id.as_str()),
        "the init's exit comes last:\n{}",
        describe(&exits)
    );
    order.sort();
    assert_eq!(order, ["long", "raw"], "{}", describe(&exits));
    for e in &exits {
        assert_eq!(e.json().expect("json")["exit_status"], 137, "{}", e.event);
    }
    assert_eq!(init_exit.json().expect("json")["exit_status"], 137);

    // After the init exited, no new exec: FailedPrecondition directly, an error through ctr.
    let req = ExecProcessRequest {
        id: id.clone(),
        exec_id: "late".into(),
        spec: Some(process_spec(&["/bin/true"], false)).into(),
        ..Default::default()
    };
    let code = rpc_code(
        shim.call::<_, Empty>("Exec", &req, T),
        "Exec after init exit",
    );
    assert_eq!(code, ttrpc::Code::FAILED_PRECONDITION);
    let late = ctr.call(&["task", "exec", "--exec-id", "late2", &id, "/bin/true"]);
    assert!(!late.success(), "exec after the init exited: {late}");
    let state = state(&shim, &id, "");
    assert_eq!(state.exit_status, 137, "{state:?}");
    drop(shim);

    let del = ctr.task_delete(&id);
    assert!(del.success(), "{del}");
    let del = ctr.container_delete(&id);
    assert!(del.success(), "{del}");
    drop(events);
    finish(cd, &[&id]);
}

/// runc, except that `kill --all` (what the shim runs when the init of a container sharing a
/// PID namespace exits) first touches MARK and waits 3 s: the init's exit stays held meanwhile.
const SLOW_KILL_ALL: &str = r#"#!/bin/sh
k= a=
for x in "$@"; do [ "$x" = kill ] && k=1; [ "$x" = --all ] && a=1; done
if [ -n "$k" ] && [ -n "$a" ]; then touch MARK; sleep 3; fi
exec RUNC "$@"
"#;

#[test]
fn an_exec_added_while_the_inits_exit_is_held_fails_at_its_start() {
    // containerd's own client suite plays this (`TestIssue10589`): an exec created while the
    // init is being killed. containerd's shim accepts the Exec (nothing runs yet) and fails its
    // Start; refusing the Exec breaks a client that creates and starts in one go.
    let dir = tempfile::tempdir().expect("tempdir");
    let mark = dir.path().join("kill-all-running");
    let script = SLOW_KILL_ALL.replace("MARK", &mark.display().to_string());
    let config = tether_tests::shimtest::runtime_wrapper(dir.path(), "slow-kill-all-runc", &script);

    let Scene { cd, ns, ctr } = Scene::start();
    let id = tether_tests::unique_id("c");
    tether_tests::shimtest::tether_run(&ctr, &id)
        .flag(&format!("--runtime-config-path={}", config.display()))
        .flag(&format!(
            "--with-ns=pid:/proc/{}/ns/pid",
            std::process::id()
        ))
        .detach()
        .args(&["/bin/sleep", "1000"])
        .success();
    let shim = shim_client(&cd, &ns, &id);
    let pid = ctr.task(&id).expect("the task").pid as i32;
    assert!(procs::signal(pid, libc::SIGKILL), "kill the init {pid}");
    assert!(
        tether_tests::wait_until(T, || mark.exists()),
        "the shim ran kill --all after the init's exit"
    );
    let req = ExecProcessRequest {
        id: id.clone(),
        exec_id: "late".into(),
        spec: Some(process_spec(&["/bin/true"], false)).into(),
        ..Default::default()
    };
    shim.call::<_, Empty>("Exec", &req, T)
        .expect("Exec while the init's exit is held is accepted");
    let start = StartRequest {
        id: id.clone(),
        exec_id: "late".into(),
        ..Default::default()
    };
    let code = rpc_code(
        shim.call::<_, StartResponse>("Start", &start, T),
        "Start of an exec whose init exited",
    );
    assert_eq!(code, ttrpc::Code::FAILED_PRECONDITION);
    // The init's exit goes out once kill --all is done.
    let w: WaitResponse = shim
        .call(
            "Wait",
            &WaitRequest {
                id: id.clone(),
                ..Default::default()
            },
            T,
        )
        .expect("Wait for the init");
    assert_eq!(w.exit_status, 137);
    drop(shim);
    assert!(ctr.task_delete(&id).success());
    assert!(ctr.container_delete(&id).success());
    finish(cd, &[&id]);
}
