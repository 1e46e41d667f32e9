//! A runtime call containerd sent without a deadline (containerd's shim sets none on its own
//! runtime calls; a CRIU dump of a large container takes minutes) is not killed at a deadline
//! of ours: it runs as long as the runtime takes while the shim keeps serving, and a `Delete`
//! of the container still ends it.
//!
//! The runtime is runc behind a wrapper whose `exec` first waits (with no child process, so
//! killing the wrapper leaves nothing behind), as containerd's `runc-fp` delays its runtime.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tether_protocol::api::task::{ExecProcessRequest, StartRequest, StartResponse};
use tether_protocol::api::Empty;
use tether_tests::rawttrpc::{connect, process_spec, read_response, request_frame};
use tether_tests::shimtest::{
    finish, runtime_wrapper, shim_address, shim_client, sleeper_with_options, state, Scene, T,
};
use tether_tests::wait_until;

/// runc, except that `exec` first touches MARK and waits SECS seconds on a FIFO read.
fn slow_exec_runtime(dir: &Path, secs: u32) -> (PathBuf, PathBuf) {
    let fifo = dir.join("never");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    let mark = dir.join("exec-waiting");
    let script = format!(
        r#"#!/bin/bash
for a in "$@"; do
  if [ "$a" = exec ]; then
    touch {mark}
    exec 3<>{fifo}
    read -r -t {secs} -u 3 _ || true
    exec 3<&-
    break
  fi
done
exec RUNC "$@"
"#,
        mark = mark.display(),
        fifo = fifo.display(),
    );
    let config = runtime_wrapper(dir, "slow-exec-runc", &script);
    (config, mark)
}

/// Sends Start of exec `e1` with no deadline (`timeout_nano` 0, as containerd sends it) on a
/// connection of its own; the reply is read from it later.
fn start_exec_without_deadline(
    address: &str,
    id: &str,
    read_timeout: Duration,
) -> std::os::unix::net::UnixStream {
    let mut s = connect(address, read_timeout);
    let req = StartRequest {
        id: id.to_string(),
        exec_id: "e1".into(),
        ..Default::default()
    };
    let payload = protobuf::Message::write_to_bytes(&req).expect("encode");
    s.write_all(&request_frame(
        1,
        "containerd.task.v2.Task",
        "Start",
        payload,
        Duration::ZERO,
    ))
    .expect("send Start");
    s
}

fn add_exec(cd: &tether_tests::Containerd, ns: &str, id: &str) {
    let shim = shim_client(cd, ns, id);
    let req = ExecProcessRequest {
        id: id.to_string(),
        exec_id: "e1".into(),
        spec: Some(process_spec(&["/bin/true"], false)).into(),
        ..Default::default()
    };
    shim.call::<_, Empty>("Exec", &req, T).expect("Exec");
}

#[test]
fn an_exec_start_without_a_deadline_outlives_sixty_seconds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, mark) = slow_exec_runtime(dir.path(), 70);
    let Scene { cd, ns, ctr } = Scene::start();
    let id = sleeper_with_options(&ctr, &config);
    add_exec(&cd, &ns, &id);
    let address = shim_address(&cd, &ns, &id);
    let begun = Instant::now();
    let mut s = start_exec_without_deadline(&address, &id, Duration::from_secs(120));
    assert!(wait_until(T, || mark.exists()), "runc exec began");
    // The loop serves meanwhile.
    let shim = shim_client(&cd, &ns, &id);
    assert!(state(&shim, &id, "").pid > 0);
    let (_, res) = read_response(&mut s);
    let waited = begun.elapsed();
    let status = res.status.clone().unwrap_or_default();
    assert_eq!(
        status.code(),
        ttrpc::Code::OK,
        "{status:?} after {waited:?}"
    );
    assert!(
        waited > Duration::from_secs(60),
        "the call ran its course: {waited:?}"
    );
    let started: StartResponse = protobuf::Message::parse_from_bytes(&res.payload).expect("decode");
    assert!(started.pid > 0, "{started:?}");
    drop(shim);
    assert!(ctr.task_kill(&id, "SIGKILL").success());
    assert!(wait_until(T, || ctr
        .task(&id)
        .is_some_and(|t| t.status == "STOPPED")));
    assert!(ctr.task_delete(&id).success());
    assert!(ctr.container_delete(&id).success());
    finish(cd, &[&id]);
}

#[test]
fn delete_ends_a_runtime_call_without_a_deadline() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, mark) = slow_exec_runtime(dir.path(), 1000);
    let Scene { cd, ns, ctr } = Scene::start();
    let id = sleeper_with_options(&ctr, &config);
    add_exec(&cd, &ns, &id);
    let address = shim_address(&cd, &ns, &id);
    let mut s = start_exec_without_deadline(&address, &id, T);
    assert!(wait_until(T, || mark.exists()), "runc exec began");
    // Kill does not wait behind the hung call; the Delete that follows ends it.
    assert!(ctr.task_kill(&id, "SIGKILL").success());
    assert!(wait_until(T, || ctr
        .task(&id)
        .is_some_and(|t| t.status == "STOPPED")));
    let del = ctr.task_delete(&id);
    assert!(del.success(), "{del}");
    let (_, res) = read_response(&mut s);
    let status = res.status.clone().unwrap_or_default();
    assert_ne!(
        status.code(),
        ttrpc::Code::OK,
        "the ended exec start failed: {status:?}"
    );
    assert!(ctr.container_delete(&id).success());
    finish(cd, &[&id]);
}
