//! Pause and resume through our shim: the task's status, the freezer cgroup, a counter the
//! container writes that stops and starts again, and the paused/resumed events.

use std::time::Duration;
use tether_protocol::api::task::{PauseRequest, ResumeRequest};
use tether_protocol::api::Empty;
use tether_tests::shimtest::{detached, Scene};
use tether_tests::shimtest::{finish, rpc_code, shim_client, T};
use tether_tests::{cgroups, wait_until};

/// The counter the container writes (through its root, seen from the host).
fn counter(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/root/dev/shm/n"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn proc_state(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("State:"))
        .unwrap_or("?")
        .trim()
        .to_string()
}

#[test]
fn pause_freezes_and_resume_thaws_with_events() {
    let freezer_root = cgroups::require_v1("freezer");
    let Scene { cd, ns, ctr } = Scene::start();
    let events = ctr.events();
    let id = detached(
        &ctr,
        &[
            "/bin/sh",
            "-c",
            "i=0; while :; do i=$((i+1)); echo $i > /dev/shm/n; usleep 20000; done",
        ],
    );
    let pid = ctr.task(&id).expect("task listed").pid;
    assert!(
        wait_until(T, || counter(pid).is_some_and(|n| n >= 2)),
        "the container counts: {:?}",
        counter(pid)
    );

    let out = ctr.call(&["task", "pause", &id]);
    assert!(out.success(), "{out}");
    assert_eq!(ctr.task(&id).expect("task listed").status, "PAUSED");
    let freezer = freezer_root.join(&ns).join(&id).join("freezer.state");
    let state = std::fs::read_to_string(&freezer)
        .unwrap_or_else(|e| panic!("read {}: {e}", freezer.display()));
    assert_eq!(state.trim(), "FROZEN", "{}", freezer.display());
    let frozen_at = counter(pid).expect("counter readable while frozen");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        counter(pid),
        Some(frozen_at),
        "the counter stands still while paused (process state {})",
        proc_state(pid)
    );
    events.wait_for_topic(&id, "/tasks/paused", T);

    // Pausing twice is refused, through ctr and directly; the task stays paused.
    let again = ctr.call(&["task", "pause", &id]);
    assert!(!again.success(), "pause of a paused task: {again}");
    let shim = shim_client(&cd, &ns, &id);
    let code = rpc_code(
        shim.call::<_, Empty>(
            "Pause",
            &PauseRequest {
                id: id.clone(),
                ..Default::default()
            },
            T,
        ),
        "Pause of a paused task",
    );
    assert_eq!(code, ttrpc::Code::FAILED_PRECONDITION);
    assert_eq!(ctr.task(&id).expect("task listed").status, "PAUSED");

    // No exec into a frozen container; the shim answers on and the task stays paused.
    let exec = ctr.call(&["task", "exec", "--exec-id", "frozen", &id, "/bin/true"]);
    assert!(!exec.success(), "exec into a paused task: {exec}");
    assert_eq!(ctr.task(&id).expect("task listed").status, "PAUSED");
    assert_eq!(counter(pid), Some(frozen_at));

    let out = ctr.call(&["task", "resume", &id]);
    assert!(out.success(), "{out}");
    assert_eq!(ctr.task(&id).expect("task listed").status, "RUNNING");
    let state = std::fs::read_to_string(&freezer)
        .unwrap_or_else(|e| panic!("read {}: {e}", freezer.display()));
    assert_eq!(state.trim(), "THAWED", "{}", freezer.display());
    assert!(
        wait_until(T, || counter(pid).is_some_and(|n| n > frozen_at + 1)),
        "the counter advances again after resume: {:?} (was {frozen_at})",
        counter(pid)
    );
    events.wait_for_topic(&id, "/tasks/resumed", T);
    let code = rpc_code(
        shim.call::<_, Empty>(
            "Resume",
            &ResumeRequest {
                id: id.clone(),
                ..Default::default()
            },
            T,
        ),
        "Resume of a running task",
    );
    assert_eq!(code, ttrpc::Code::FAILED_PRECONDITION);
    drop(shim);

    let topics: Vec<String> = events
        .topics_for(&id)
        .into_iter()
        .filter(|t| t == "/tasks/paused" || t == "/tasks/resumed")
        .collect();
    assert_eq!(topics, ["/tasks/paused", "/tasks/resumed"]);

    drop(events);
    finish(cd, &[&id]);
}
