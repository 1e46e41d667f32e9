//! A `Kill` that races the init's exit: the process is gone by the time the runtime looks, and
//! runc says "container not running". containerd's shim answers NotFound there, which its CRI
//! takes as "already stopped"; any other error fails StopPodSandbox and kubelet retries the
//! pod's deletion. Played here by killing the init from outside right before the shim's `Kill`.

use std::time::Duration;
use tether_protocol::api::task::{KillRequest, WaitRequest, WaitResponse};
use tether_protocol::api::Empty;
use tether_tests::shimtest::{
    finish, runtime_wrapper, shim_client, sleeper, sleeper_with_options, Scene,
};

const T: Duration = Duration::from_secs(20);
const ROUNDS: usize = 12;

#[test]
fn a_kill_that_races_the_inits_exit_is_ok_or_not_found() {
    let Scene { cd, ns, ctr } = Scene::start();
    let mut codes = Vec::new();
    for round in 0..ROUNDS {
        let id = sleeper(&ctr);
        let shim = shim_client(&cd, &ns, &id);
        let pid = ctr.task(&id).expect("the task").pid as i32;
        // Odd rounds give the shim a moment to see the exit first (its own NotFound), even
        // rounds none (the runtime's "container not running").
        assert!(
            tether_tests::procs::signal(pid, libc::SIGKILL),
            "kill {pid}"
        );
        if round % 2 == 1 {
            std::thread::sleep(Duration::from_millis(20));
        }
        let req = KillRequest {
            id: id.clone(),
            signal: libc::SIGKILL as u32,
            all: round % 4 < 2,
            ..Default::default()
        };
        let r: ttrpc::Result<Empty> = shim.call("Kill", &req, T);
        let code = match r {
            Ok(_) => ttrpc::Code::OK,
            Err(ttrpc::Error::RpcStatus(s)) => s.code(),
            Err(e) => panic!("Kill of {id}: {e:?}"),
        };
        assert!(
            matches!(code, ttrpc::Code::OK | ttrpc::Code::NOT_FOUND),
            "round {round}: Kill of {id} whose init just died answered {code:?}, not OK or NotFound"
        );
        codes.push(code);
        let w: WaitResponse = shim
            .call(
                "Wait",
                &WaitRequest {
                    id: id.clone(),
                    ..Default::default()
                },
                T,
            )
            .expect("Wait");
        assert_eq!(w.exit_status, 137, "{id} died of SIGKILL");
        drop(shim);
        // Through containerd, which then shuts the shim down.
        let out = ctr.call(&["task", "delete", &id]);
        assert!(out.success(), "{out}");
        ctr.call(&["container", "delete", &id]);
    }
    eprintln!("Kill answers: {codes:?}");
    finish(cd, &[]);
}

/// A runtime whose `kill` first kills the container's init and waits until the shim reaped it,
/// then runs runc's: the init exits right as the runtime is asked to signal it, every time.
const LATE_KILL: &str = r#"#!/bin/sh
root= prev= id= last= kill=
for a in "$@"; do
  [ "$prev" = --root ] && root=$a
  [ "$a" = kill ] && kill=1
  id=$last; last=$a; prev=$a
done
if [ -n "$kill" ]; then
  pid=$(RUNC --root "$root" state "$id" | sed -n 's/.*"pid": *\([0-9]*\).*/\1/p')
  if [ -n "$pid" ] && [ "$pid" -gt 1 ]; then
    kill -9 "$pid"
    n=0
    while [ -e "/proc/$pid" ] && [ $n -lt 1000 ]; do sleep 0.01; n=$((n + 1)); done
  fi
fi
exec RUNC "$@"
"#;

#[test]
fn runc_saying_container_not_running_after_a_kill_is_not_found() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = runtime_wrapper(dir.path(), "late-kill-runc", LATE_KILL);
    let Scene { cd, ns, ctr } = Scene::start();
    for _ in 0..3 {
        let id = sleeper_with_options(&ctr, &config);
        let shim = shim_client(&cd, &ns, &id);
        let req = KillRequest {
            id: id.clone(),
            signal: libc::SIGTERM as u32,
            ..Default::default()
        };
        let r: ttrpc::Result<Empty> = shim.call("Kill", &req, T);
        match r {
            Err(ttrpc::Error::RpcStatus(s)) => assert_eq!(
                s.code(),
                ttrpc::Code::NOT_FOUND,
                "runc's \"container not running\" is NotFound: {s:?}"
            ),
            other => panic!("the init was gone before runc's kill: want NotFound, got {other:?}"),
        }
        drop(shim);
        assert!(tether_tests::wait_until(T, || ctr
            .task(&id)
            .is_some_and(|t| t.status == "STOPPED")));
        assert!(ctr.call(&["task", "delete", &id]).success());
        ctr.call(&["container", "delete", &id]);
    }
    finish(cd, &[]);
}

/// runc, except that `kill` holds on for 2 s after runc's own has signalled the container.
const SLOW_KILL: &str = r#"#!/bin/sh
k=
for x in "$@"; do [ "$x" = kill ] && k=1; done
[ -z "$k" ] && exec RUNC "$@"
RUNC "$@"
status=$?
sleep 2
exit $status
"#;

/// `ctr task kill` and the container's death let `ctr run --rm` (here: `ctr task delete`)
/// delete the task and shut the shim down while the `Kill`'s runtime command still runs. The
/// `Kill` is answered, not cut off with "ttrpc: closed" by the shim's exit (or by containerd
/// closing its connection once `Shutdown` answered): `Shutdown` is answered after it.
#[test]
fn a_kill_still_running_when_its_task_is_deleted_and_the_shim_shut_down_is_answered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = runtime_wrapper(dir.path(), "slow-kill-runc", SLOW_KILL);
    let Scene { cd, ns: _, ctr } = Scene::start();
    let id = sleeper_with_options(&ctr, &config);
    std::thread::scope(|s| {
        let kill = s.spawn(|| ctr.task_kill(&id, "SIGKILL"));
        assert!(
            tether_tests::wait_until(T, || ctr.task(&id).is_some_and(|t| t.status == "STOPPED")),
            "the container died of the kill"
        );
        assert_eq!(ctr.task_delete_status(&id), 137, "{}", cd.log_excerpt());
        let kill = kill.join().expect("the kill thread did not panic");
        assert!(
            kill.success(),
            "the Kill in flight was answered: {kill}\n{}",
            cd.log_excerpt()
        );
    });
    assert!(ctr.call(&["container", "delete", &id]).success());
    finish(cd, &[&id]);
}
