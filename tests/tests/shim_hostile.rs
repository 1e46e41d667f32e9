//! The hostile-input table: raw ttrpc calls straight to a real shim's socket (started by a real
//! containerd), each against a container in a given state. Every row is a name, the state it
//! needs, the call, and the answers that are right (containerd's Go shim and ttrpc, or what the
//! shim's design says where those are wrong). After each row the shim process is alive (by
//! pid), it answers `State`, and the container runs on (or stays exited).
//!
//! Rows that cannot change a container share one per table; a row that changes state, or might
//! kill the shim when the shim is wrong, gets a fresh container. Every row runs even when an
//! earlier one failed; the test fails at the end listing every row that went wrong.

use protobuf::Message;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;
use tether_protocol::api::runc_options::Options;
use tether_protocol::api::task::*;
use tether_protocol::api::ttrpc::Code;
use tether_protocol::api::{pack_any, Any};
use tether_protocol::task_service::TASK_SERVICE_V2;
use tether_tests::rawttrpc::{self, process_spec, request_frame};
use tether_tests::{busybox_rootfs, procs, shim, unique_id, Containerd, Ctr, TETHER_RUNTIME};

/// The deadline of one call or wait.
const T: Duration = Duration::from_secs(20);
/// The exec every exec row is about.
const EXEC: &str = "e1";

/// What a row's call came to.
#[derive(Debug, Clone, PartialEq)]
enum Got {
    /// A ttrpc response with this status.
    Code(Code),
    /// The shim closed the connection (after any reply).
    Closed,
    /// Anything else: no answer, a broken reply, a check inside the row that failed.
    Failed(String),
}

use Got::Closed;
const OK: Got = Got::Code(Code::OK);
const NOT_FOUND: Got = Got::Code(Code::NOT_FOUND);
const INVALID: Got = Got::Code(Code::INVALID_ARGUMENT);
const PRECONDITION: Got = Got::Code(Code::FAILED_PRECONDITION);
const EXISTS: Got = Got::Code(Code::ALREADY_EXISTS);
const UNIMPLEMENTED: Got = Got::Code(Code::UNIMPLEMENTED);
const DEADLINE: Got = Got::Code(Code::DEADLINE_EXCEEDED);

/// The state a row's container is put in first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Setup {
    /// A running container shared by the rows of one table that cannot change it.
    Shared,
    /// A running container of its own.
    Running,
    /// Running, with exec `e1` added and never started.
    ExecAdded,
    /// Running, with exec `e1` added and its `Start` failed (its binary does not exist).
    ExecStartFailed,
    /// Running, with exec `e1` running (`sleep`).
    ExecRunning,
    /// Running, with exec `e1` started and exited (status 3), not deleted.
    ExecExited,
    /// The init process killed and exited; the task not deleted.
    InitExited,
}

/// One container under our shim, and how to reach the shim.
struct Target {
    ns: String,
    id: String,
    /// The init process (host pid).
    pid: u32,
    shim_pid: i32,
    address: String,
    bundle: PathBuf,
}

struct Row {
    name: &'static str,
    setup: Setup,
    call: fn(&Target) -> Got,
    /// The right answers (more than one only where a clean refusal is as right as an answer).
    expect: &'static [Got],
}

/// One raw request on a fresh connection: its status, or what went wrong.
fn raw(t: &Target, service: &str, method: &str, payload: Vec<u8>, deadline: Duration) -> Got {
    let mut s = rawttrpc::connect(&t.address, T);
    if let Err(e) = s.write_all(&request_frame(1, service, method, payload, deadline)) {
        return Got::Failed(format!("write the request: {e}"));
    }
    match rawttrpc::try_read_response(&mut s) {
        Ok((1, res)) => match res.status.as_ref() {
            Some(status) => Got::Code(status.code()),
            None => Got::Failed("a response without a status".into()),
        },
        Ok((other, _)) => Got::Failed(format!("a response on stream {other}, not 1")),
        Err(e) => Got::Failed(e),
    }
}

/// A task API call under the v2 service name (what containerd 1.6 calls).
fn rpc<M: Message>(t: &Target, method: &str, req: &M) -> Got {
    let payload = req.write_to_bytes().expect("encode the request");
    raw(t, TASK_SERVICE_V2, method, payload, T)
}

/// A task API call that must succeed, for setting a container up; returns the response.
fn must<M: Message, R: Message>(t: &Target, method: &str, req: &M) -> R {
    let socket = tether_protocol::socket::from_address(&t.address).expect("a unix:// address");
    let payload = req.write_to_bytes().expect("encode the request");
    let bytes = tether_protocol::wire::call(&socket, TASK_SERVICE_V2, method, payload, T)
        .unwrap_or_else(|e| panic!("setting up {}: {method}: {e:?}", t.id));
    R::parse_from_bytes(&bytes).unwrap_or_else(|e| panic!("decode the {method} response: {e}"))
}

fn state_req(id: &str, exec_id: &str) -> StateRequest {
    StateRequest {
        id: id.into(),
        exec_id: exec_id.into(),
        ..Default::default()
    }
}

fn kill_req(id: &str, exec_id: &str) -> KillRequest {
    KillRequest {
        id: id.into(),
        exec_id: exec_id.into(),
        signal: 9,
        ..Default::default()
    }
}

fn start_req(id: &str, exec_id: &str) -> StartRequest {
    StartRequest {
        id: id.into(),
        exec_id: exec_id.into(),
        ..Default::default()
    }
}

fn delete_req(id: &str, exec_id: &str) -> DeleteRequest {
    DeleteRequest {
        id: id.into(),
        exec_id: exec_id.into(),
        ..Default::default()
    }
}

fn resize_req(id: &str, exec_id: &str) -> ResizePtyRequest {
    ResizePtyRequest {
        id: id.into(),
        exec_id: exec_id.into(),
        width: 80,
        height: 25,
        ..Default::default()
    }
}

fn close_io_req(id: &str, exec_id: &str) -> CloseIORequest {
    CloseIORequest {
        id: id.into(),
        exec_id: exec_id.into(),
        stdin: true,
        ..Default::default()
    }
}

fn wait_req(id: &str, exec_id: &str) -> WaitRequest {
    WaitRequest {
        id: id.into(),
        exec_id: exec_id.into(),
        ..Default::default()
    }
}

fn exec_req(id: &str, exec_id: &str, spec: Option<Any>) -> ExecProcessRequest {
    ExecProcessRequest {
        id: id.into(),
        exec_id: exec_id.into(),
        spec: spec.into(),
        ..Default::default()
    }
}

fn sleeper() -> Option<Any> {
    Some(process_spec(&["/bin/sleep", "1000"], false))
}

fn update_req(id: &str, resources: Option<&[u8]>) -> UpdateTaskRequest {
    UpdateTaskRequest {
        id: id.into(),
        resources: resources
            .map(|json| Any {
                type_url: "opencontainers/runtime-spec/1/LinuxResources".into(),
                value: json.to_vec(),
                ..Default::default()
            })
            .into(),
        ..Default::default()
    }
}

/// A bundle with a `rootfs/` and a `config.json`, so that what a Create refuses is the rest.
fn bundle_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp bundle");
    std::fs::create_dir(dir.path().join("rootfs")).expect("mkdir rootfs");
    std::fs::write(dir.path().join("config.json"), b"{}").expect("write config.json");
    dir
}

fn create_req(id: &str, bundle: &tempfile::TempDir, options: Option<Any>) -> CreateTaskRequest {
    CreateTaskRequest {
        id: id.into(),
        bundle: bundle.path().display().to_string(),
        options: options.into(),
        ..Default::default()
    }
}

fn unknown() -> String {
    unique_id("nope")
}

/// Rows about ids, payloads and methods: none can change a container, so they share one.
fn ids_and_payloads() -> Vec<Row> {
    use Setup::Shared as S;
    let row = |name, call, expect| Row {
        name,
        setup: S,
        call,
        expect,
    };
    vec![
        // Unknown container ids, every method that takes one.
        row(
            "State of an unknown id",
            |t| rpc(t, "State", &state_req(&unknown(), "")),
            &[NOT_FOUND],
        ),
        row(
            "Kill of an unknown id",
            |t| rpc(t, "Kill", &kill_req(&unknown(), "")),
            &[NOT_FOUND],
        ),
        row(
            "Start of an unknown id",
            |t| rpc(t, "Start", &start_req(&unknown(), "")),
            &[NOT_FOUND],
        ),
        row(
            "Delete of an unknown id",
            |t| rpc(t, "Delete", &delete_req(&unknown(), "")),
            &[NOT_FOUND],
        ),
        row(
            "ResizePty of an unknown id",
            |t| rpc(t, "ResizePty", &resize_req(&unknown(), "")),
            &[NOT_FOUND],
        ),
        row(
            "CloseIO of an unknown id",
            |t| rpc(t, "CloseIO", &close_io_req(&unknown(), "")),
            &[NOT_FOUND],
        ),
        row(
            "Wait of an unknown id",
            |t| rpc(t, "Wait", &wait_req(&unknown(), "")),
            &[NOT_FOUND],
        ),
        row(
            "Exec into an unknown id",
            |t| rpc(t, "Exec", &exec_req(&unknown(), EXEC, sleeper())),
            &[NOT_FOUND],
        ),
        row(
            "Pids of an unknown id",
            |t| {
                rpc(
                    t,
                    "Pids",
                    &PidsRequest {
                        id: unknown(),
                        ..Default::default()
                    },
                )
            },
            &[NOT_FOUND],
        ),
        row(
            "Pause of an unknown id",
            |t| {
                rpc(
                    t,
                    "Pause",
                    &PauseRequest {
                        id: unknown(),
                        ..Default::default()
                    },
                )
            },
            &[NOT_FOUND],
        ),
        row(
            "Resume of an unknown id",
            |t| {
                rpc(
                    t,
                    "Resume",
                    &ResumeRequest {
                        id: unknown(),
                        ..Default::default()
                    },
                )
            },
            &[NOT_FOUND],
        ),
        row(
            "Stats of an unknown id",
            |t| {
                rpc(
                    t,
                    "Stats",
                    &StatsRequest {
                        id: unknown(),
                        ..Default::default()
                    },
                )
            },
            &[NOT_FOUND],
        ),
        row(
            "Update of an unknown id",
            |t| {
                rpc(
                    t,
                    "Update",
                    &update_req(&unknown(), Some(br#"{"pids":{"limit":50}}"#)),
                )
            },
            &[NOT_FOUND],
        ),
        row(
            "Checkpoint of an unknown id",
            |t| {
                let req = CheckpointTaskRequest {
                    id: unknown(),
                    path: std::env::temp_dir().join(unknown()).display().to_string(),
                    ..Default::default()
                };
                rpc(t, "Checkpoint", &req)
            },
            &[NOT_FOUND],
        ),
        // Ids that are not ids.
        row(
            "State of id ../x",
            |t| rpc(t, "State", &state_req("../x", "")),
            &[INVALID],
        ),
        row(
            "Kill of an empty id",
            |t| rpc(t, "Kill", &kill_req("", "")),
            &[INVALID],
        ),
        row(
            "Delete of a 300-character id",
            |t| rpc(t, "Delete", &delete_req(&"a".repeat(300), "")),
            &[INVALID],
        ),
        row(
            "Start of id a/b",
            |t| rpc(t, "Start", &start_req("a/b", "")),
            &[INVALID],
        ),
        row(
            "State of exec id ../x",
            |t| rpc(t, "State", &state_req(&t.id, "../x")),
            &[INVALID],
        ),
        row(
            "Exec with an empty exec id",
            |t| rpc(t, "Exec", &exec_req(&t.id, "", sleeper())),
            &[INVALID],
        ),
        // Unknown exec ids of a real container.
        row(
            "State of an unknown exec",
            |t| rpc(t, "State", &state_req(&t.id, &unknown())),
            &[NOT_FOUND],
        ),
        row(
            "Kill of an unknown exec",
            |t| rpc(t, "Kill", &kill_req(&t.id, &unknown())),
            &[NOT_FOUND],
        ),
        row(
            "Start of an unknown exec",
            |t| rpc(t, "Start", &start_req(&t.id, &unknown())),
            &[NOT_FOUND],
        ),
        row(
            "Delete of an unknown exec",
            |t| rpc(t, "Delete", &delete_req(&t.id, &unknown())),
            &[NOT_FOUND],
        ),
        row(
            "ResizePty of an unknown exec",
            |t| rpc(t, "ResizePty", &resize_req(&t.id, &unknown())),
            &[NOT_FOUND],
        ),
        row(
            "CloseIO of an unknown exec",
            |t| rpc(t, "CloseIO", &close_io_req(&t.id, &unknown())),
            &[NOT_FOUND],
        ),
        row(
            "Wait of an unknown exec",
            |t| rpc(t, "Wait", &wait_req(&t.id, &unknown())),
            &[NOT_FOUND],
        ),
        // Malformed protobuf, JSON and Any.
        row(
            "Create with a garbage payload",
            |t| raw(t, TASK_SERVICE_V2, "Create", vec![0xff; 32], T),
            &[INVALID],
        ),
        row(
            "Kill with a garbage payload",
            |t| {
                raw(
                    t,
                    TASK_SERVICE_V2,
                    "Kill",
                    vec![0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
                    T,
                )
            },
            &[INVALID],
        ),
        row(
            "State with a truncated payload",
            |t| {
                let mut p = state_req(&t.id, "").write_to_bytes().expect("encode");
                p.truncate(p.len() / 2);
                raw(t, TASK_SERVICE_V2, "State", p, T)
            },
            &[INVALID],
        ),
        row(
            "Exec whose spec is not JSON",
            |t| {
                let spec = Any {
                    type_url: "types.containerd.io/opencontainers/runtime-spec/1/Process".into(),
                    value: b"{\"args\": [".to_vec(),
                    ..Default::default()
                };
                rpc(t, "Exec", &exec_req(&t.id, &unknown(), Some(spec)))
            },
            &[INVALID],
        ),
        row(
            "Exec whose spec is JSON but no process",
            |t| {
                let spec = Any {
                    type_url: "types.containerd.io/opencontainers/runtime-spec/1/Process".into(),
                    value: b"[1, 2]".to_vec(),
                    ..Default::default()
                };
                rpc(t, "Exec", &exec_req(&t.id, &unknown(), Some(spec)))
            },
            &[INVALID],
        ),
        row(
            "Exec without a spec",
            |t| rpc(t, "Exec", &exec_req(&t.id, &unknown(), None)),
            &[INVALID],
        ),
        row(
            "Update whose resources are not JSON",
            |t| rpc(t, "Update", &update_req(&t.id, Some(b"not json"))),
            &[INVALID],
        ),
        row(
            "Update without resources",
            |t| rpc(t, "Update", &update_req(&t.id, None)),
            &[INVALID],
        ),
        row(
            "Create with options of a wrong type URL",
            |t| {
                let opts = Any {
                    type_url: "containerd.runc.v1.CheckpointOptions".into(),
                    value: Vec::new(),
                    ..Default::default()
                };
                rpc(
                    t,
                    "Create",
                    &create_req(&unknown(), &bundle_dir(), Some(opts)),
                )
            },
            &[INVALID],
        ),
        row(
            "Create with runc options that do not parse",
            |t| {
                let opts = Any {
                    type_url: "containerd.runc.v1.Options".into(),
                    value: vec![0xff; 16],
                    ..Default::default()
                };
                rpc(
                    t,
                    "Create",
                    &create_req(&unknown(), &bundle_dir(), Some(opts)),
                )
            },
            &[INVALID],
        ),
        row(
            "Checkpoint with options of a wrong type URL",
            |t| {
                let req = CheckpointTaskRequest {
                    id: t.id.clone(),
                    path: std::env::temp_dir().join(unknown()).display().to_string(),
                    options: Some(pack_any(&Options::default()).expect("pack")).into(),
                    ..Default::default()
                };
                rpc(t, "Checkpoint", &req)
            },
            &[INVALID],
        ),
        row(
            "Create of an id that exists",
            |t| rpc(t, "Create", &create_req(&t.id, &bundle_dir(), None)),
            &[EXISTS],
        ),
        // Methods and services nobody serves (Go's ttrpc: Unimplemented; Rust's says NotFound).
        row(
            "an unknown method",
            |t| raw(t, TASK_SERVICE_V2, "NoSuchMethod", Vec::new(), T),
            &[UNIMPLEMENTED],
        ),
        row(
            "an unknown service",
            |t| raw(t, "containerd.task.v9.Nope", "State", Vec::new(), T),
            &[UNIMPLEMENTED],
        ),
        // Wrong states of the running init that change nothing when refused.
        row(
            "Resume of a running container",
            |t| {
                rpc(
                    t,
                    "Resume",
                    &ResumeRequest {
                        id: t.id.clone(),
                        ..Default::default()
                    },
                )
            },
            &[PRECONDITION],
        ),
        row(
            "Start of a running init",
            |t| rpc(t, "Start", &start_req(&t.id, "")),
            &[PRECONDITION],
        ),
        // containerd's Go shim answers OK for a process without a terminal.
        row(
            "ResizePty of an init without a terminal",
            |t| rpc(t, "ResizePty", &resize_req(&t.id, "")),
            &[OK],
        ),
    ]
}

/// Rows about processes in the wrong state: each gets a container of its own.
fn wrong_states() -> Vec<Row> {
    use Setup::*;
    let row = |name, setup, call, expect| Row {
        name,
        setup,
        call,
        expect,
    };
    vec![
        // An exec added and never started has no pid: a signal to "pid 0" would reach the
        // shim's own process group.
        row(
            "Kill of an exec never started",
            ExecAdded,
            |t| rpc(t, "Kill", &kill_req(&t.id, EXEC)),
            &[PRECONDITION],
        ),
        row(
            "ResizePty of an exec never started",
            ExecAdded,
            |t| rpc(t, "ResizePty", &resize_req(&t.id, EXEC)),
            &[PRECONDITION],
        ),
        row(
            "CloseIO of an exec never started",
            ExecAdded,
            |t| rpc(t, "CloseIO", &close_io_req(&t.id, EXEC)),
            &[PRECONDITION],
        ),
        row(
            "Exec of an exec id added before",
            ExecAdded,
            |t| rpc(t, "Exec", &exec_req(&t.id, EXEC, sleeper())),
            &[EXISTS],
        ),
        row(
            "Delete of an exec never started",
            ExecAdded,
            |t| rpc(t, "Delete", &delete_req(&t.id, EXEC)),
            &[OK],
        ),
        row(
            "Kill of an exec whose Start failed",
            ExecStartFailed,
            |t| rpc(t, "Kill", &kill_req(&t.id, EXEC)),
            &[PRECONDITION],
        ),
        row(
            "ResizePty of an exec whose Start failed",
            ExecStartFailed,
            |t| rpc(t, "ResizePty", &resize_req(&t.id, EXEC)),
            &[PRECONDITION],
        ),
        row(
            "CloseIO of an exec whose Start failed",
            ExecStartFailed,
            |t| rpc(t, "CloseIO", &close_io_req(&t.id, EXEC)),
            &[PRECONDITION],
        ),
        row(
            "Start of a running exec",
            ExecRunning,
            |t| rpc(t, "Start", &start_req(&t.id, EXEC)),
            &[PRECONDITION],
        ),
        row(
            "Delete of a running exec",
            ExecRunning,
            |t| rpc(t, "Delete", &delete_req(&t.id, EXEC)),
            &[PRECONDITION],
        ),
        row(
            "Exec of a running exec's id",
            ExecRunning,
            |t| rpc(t, "Exec", &exec_req(&t.id, EXEC, sleeper())),
            &[EXISTS],
        ),
        row(
            "Kill of an exited exec",
            ExecExited,
            |t| rpc(t, "Kill", &kill_req(&t.id, EXEC)),
            &[NOT_FOUND],
        ),
        row(
            "Start of an exited exec",
            ExecExited,
            |t| rpc(t, "Start", &start_req(&t.id, EXEC)),
            &[PRECONDITION],
        ),
        row(
            "ResizePty of an exited exec",
            ExecExited,
            |t| rpc(t, "ResizePty", &resize_req(&t.id, EXEC)),
            &[PRECONDITION],
        ),
        row(
            "Exec of an exited exec's id",
            ExecExited,
            |t| rpc(t, "Exec", &exec_req(&t.id, EXEC, sleeper())),
            &[EXISTS],
        ),
        row(
            "Delete of an exited exec",
            ExecExited,
            |t| rpc(t, "Delete", &delete_req(&t.id, EXEC)),
            &[OK],
        ),
        row(
            "Exec after the init exited",
            InitExited,
            |t| rpc(t, "Exec", &exec_req(&t.id, EXEC, sleeper())),
            &[PRECONDITION],
        ),
        row(
            "Start of an exited init",
            InitExited,
            |t| rpc(t, "Start", &start_req(&t.id, "")),
            &[PRECONDITION],
        ),
        row(
            "Kill of an exited init",
            InitExited,
            |t| rpc(t, "Kill", &kill_req(&t.id, "")),
            &[NOT_FOUND],
        ),
        row(
            "Pause of an exited init",
            InitExited,
            |t| {
                rpc(
                    t,
                    "Pause",
                    &PauseRequest {
                        id: t.id.clone(),
                        ..Default::default()
                    },
                )
            },
            &[PRECONDITION],
        ),
        row(
            "Delete of a running init",
            Running,
            |t| rpc(t, "Delete", &delete_req(&t.id, "")),
            &[PRECONDITION],
        ),
    ]
}

/// Writes `bytes` on a fresh connection, half-closes it if `hang_up`, and reports whether the
/// shim closed it.
fn send_and_watch(t: &Target, bytes: &[u8], hang_up: bool) -> Got {
    let mut s = rawttrpc::connect(&t.address, T);
    // The shim may close before taking it all; what it does then is the point.
    let _ = s.write_all(bytes);
    if hang_up {
        let _ = s.shutdown(std::net::Shutdown::Write);
    }
    if rawttrpc::is_closed(&mut s) {
        Closed
    } else {
        Got::Failed(format!("the connection stayed open for {T:?}"))
    }
}

/// Rows about frames and connections.
fn frames_and_connections() -> Vec<Row> {
    use Setup::*;
    let row = |name, setup, call, expect| Row {
        name,
        setup,
        call,
        expect,
    };
    vec![
        row(
            "a frame whose payload is not a ttrpc Request",
            Shared,
            |t| {
                let mut s = rawttrpc::connect(&t.address, T);
                let _ = s.write_all(&rawttrpc::frame(1, rawttrpc::REQUEST, 32, &[0xff; 32]));
                match rawttrpc::try_read_response(&mut s) {
                    Ok((_, res)) => Got::Code(res.status.code()),
                    Err(e) => Got::Failed(e),
                }
            },
            &[INVALID],
        ),
        // Go's ttrpc refuses even stream ids: client streams are odd.
        row(
            "a request on an even stream id",
            Shared,
            |t| {
                let mut s = rawttrpc::connect(&t.address, T);
                let payload = state_req(&t.id, "").write_to_bytes().expect("encode");
                let _ = s.write_all(&request_frame(2, TASK_SERVICE_V2, "State", payload, T));
                match rawttrpc::try_read_response(&mut s) {
                    Ok((2, res)) => Got::Code(res.status.code()),
                    Ok((n, _)) => Got::Failed(format!("answered on stream {n}")),
                    Err(e) => Got::Failed(e),
                }
            },
            &[INVALID],
        ),
        row(
            "a frame cut short, then hang up",
            Shared,
            |t| {
                send_and_watch(
                    t,
                    &rawttrpc::frame(1, rawttrpc::REQUEST, 100, &[0u8; 10]),
                    true,
                )
            },
            &[Closed],
        ),
        row(
            "half a header, then hang up",
            Shared,
            |t| send_and_watch(t, &[0, 0, 0], true),
            &[Closed],
        ),
        row(
            "a frame declaring more than 4 MiB",
            Shared,
            |t| {
                send_and_watch(
                    t,
                    &rawttrpc::frame(5, rawttrpc::REQUEST, 0xffff_fff0, &[0u8; 64]),
                    false,
                )
            },
            &[Closed],
        ),
        row(
            "a frame declaring 4 MiB + 1",
            Shared,
            |t| {
                send_and_watch(
                    t,
                    &rawttrpc::frame(5, rawttrpc::REQUEST, (4 << 20) + 1, &[0u8; 64]),
                    false,
                )
            },
            &[Closed],
        ),
        row(
            "4 KiB of noise, then hang up",
            Shared,
            |t| {
                let noise: Vec<u8> = (0..4096u32)
                    .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
                    .collect();
                send_and_watch(t, &noise, true)
            },
            &[Closed],
        ),
        row(
            "a stray response frame, then a State on the same connection",
            Shared,
            |t| {
                let mut s = rawttrpc::connect(&t.address, T);
                let _ = s.write_all(&rawttrpc::frame(7, rawttrpc::RESPONSE, 4, &[1, 2, 3, 4]));
                let payload = state_req(&t.id, "").write_to_bytes().expect("encode");
                let _ = s.write_all(&request_frame(9, TASK_SERVICE_V2, "State", payload, T));
                match rawttrpc::try_read_response(&mut s) {
                    Ok((9, res)) => Got::Code(res.status.code()),
                    Ok((n, _)) => Got::Failed(format!("answered on stream {n}")),
                    Err(e) => Got::Failed(e),
                }
            },
            &[OK],
        ),
        row(
            "a client that sends 10,000 requests and never reads",
            Running,
            flood,
            &[OK],
        ),
        row(
            "1,000 idle connections, then a State",
            Running,
            idle_connections,
            &[OK, Closed],
        ),
    ]
}

/// The shim's resident set, in KiB.
fn vm_rss_kib(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// How much a shim may grow while a peer never reads its replies.
const FLOOD_GROWTH_KIB: u64 = 64 * 1024;

/// 10,000 State requests on one connection that is never read: meanwhile another client's
/// State answers, and the shim's memory stays bounded. `OK` when both hold.
fn flood(t: &Target) -> Got {
    let before = vm_rss_kib(t.shim_pid).unwrap_or(0);
    let mut s = rawttrpc::connect(&t.address, T);
    s.set_write_timeout(Some(T)).expect("write timeout");
    let payload = state_req(&t.id, "").write_to_bytes().expect("encode");
    let one = request_frame(1, TASK_SERVICE_V2, "State", payload.clone(), T);
    let mut sent = 0u32;
    for i in 0..10_000u32 {
        let mut f = one.clone();
        f[4..8].copy_from_slice(&(2 * i + 1).to_be_bytes());
        // The shim may stop reading (backpressure) or drop us (an output bound): both are fine.
        if s.write_all(&f).is_err() {
            break;
        }
        sent += 1;
    }
    let other = raw(t, TASK_SERVICE_V2, "State", payload, T);
    let after = vm_rss_kib(t.shim_pid).unwrap_or(u64::MAX);
    drop(s);
    if other != OK {
        return Got::Failed(format!(
            "State on another connection, after {sent} unread requests: {other:?}"
        ));
    }
    let grew = after.saturating_sub(before);
    if grew >= FLOOD_GROWTH_KIB {
        return Got::Failed(format!(
            "VmRSS grew from {before} to {after} KiB over {sent} unread requests"
        ));
    }
    eprintln!("flood: {sent} requests sent, shim VmRSS {before} -> {after} KiB");
    OK
}

/// 1,000 connections that say nothing; then State on the 1,001st answers (`OK`), or the shim
/// refuses that connection cleanly (`Closed`, at its connection bound).
fn idle_connections(t: &Target) -> Got {
    // Room for 1,000 sockets (the soft limit may be lower than the hard one).
    if let Ok((_, hard)) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
    {
        let _ =
            nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard);
    }
    let path = tether_protocol::socket::from_address(&t.address).expect("a unix:// address");
    let mut idle = Vec::with_capacity(1000);
    for i in 0..1000 {
        match UnixStream::connect(&path) {
            Ok(s) => idle.push(s),
            Err(e) => return Got::Failed(format!("idle connection {i}: {e}")),
        }
    }
    let payload = state_req(&t.id, "").write_to_bytes().expect("encode");
    let mut s = match UnixStream::connect(&path) {
        Ok(s) => s,
        Err(e)
            if e.raw_os_error() == Some(libc::ECONNREFUSED)
                || e.raw_os_error() == Some(libc::EAGAIN) =>
        {
            return Closed
        }
        Err(e) => return Got::Failed(format!("connection 1,001: {e}")),
    };
    s.set_read_timeout(Some(T)).expect("read timeout");
    let got = match s.write_all(&request_frame(1, TASK_SERVICE_V2, "State", payload, T)) {
        Err(_) => Closed,
        Ok(()) => match rawttrpc::try_read_response(&mut s) {
            Ok((1, res)) => Got::Code(res.status.code()),
            Ok((n, _)) => Got::Failed(format!("answered on stream {n}")),
            Err(e) if rawttrpc::is_closed(&mut s) => {
                eprintln!("connection 1,001 refused: {e}");
                Closed
            }
            Err(e) => Got::Failed(e),
        },
    };
    drop(idle);
    got
}

/// A fake runtime: runc for every verb but `pause`, where it records its pid in `pid_file` and
/// sleeps 600 s.
fn hanging_runtime_script(dir: &std::path::Path, pid_file: &std::path::Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let runc = tether_tests::cmd::which("runc").expect("runc on PATH");
    let script = dir.join("hanging-runc");
    let text = format!(
        "#!/bin/sh\nfor a in \"$@\"; do\n  if [ \"$a\" = pause ]; then echo $$ > '{}'; exec sleep 600; fi\ndone\nexec '{}' \"$@\"\n",
        pid_file.display(),
        runc.display()
    );
    std::fs::write(&script, text).expect("write the fake runtime");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    script
}

/// A second container in `t`'s shim, created through a runtime whose `pause` hangs. A Pause
/// with a 2 s ttrpc deadline: meanwhile State answers; then DeadlineExceeded; the container runs
/// on. Returns the Pause's answer (or what else went wrong).
fn hanging_runtime(t: &Target) -> Got {
    let dir = tempfile::tempdir().expect("temp dir");
    let pid_file = dir.path().join("hung.pid");
    let script = hanging_runtime_script(dir.path(), &pid_file);
    let id = unique_id("hang");
    let bundle = dir.path().join("bundle");
    std::fs::create_dir(&bundle).expect("mkdir bundle");
    let config_path = t.bundle.join("config.json");
    let mut config: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&config_path)
            .unwrap_or_else(|e| panic!("read {}: {e}", config_path.display())),
    )
    .expect("config.json is JSON");
    config["root"] = serde_json::json!({"path": busybox_rootfs(), "readonly": true});
    config["process"]["args"] = serde_json::json!(["/bin/sleep", "1000"]);
    config["process"]["terminal"] = false.into();
    config["hostname"] = id.clone().into();
    config["linux"]["cgroupsPath"] = format!("/{}/{id}", t.ns).into();
    std::fs::write(bundle.join("config.json"), config.to_string()).expect("write config.json");
    let opts = Options {
        binary_name: script.display().to_string(),
        ..Default::default()
    };
    let create = CreateTaskRequest {
        id: id.clone(),
        bundle: bundle.display().to_string(),
        options: Some(pack_any(&opts).expect("pack options")).into(),
        ..Default::default()
    };
    let created: CreateTaskResponse = must(t, "Create", &create);
    let _: StartResponse = must(t, "Start", &start_req(&id, ""));
    let b = Target {
        ns: t.ns.clone(),
        id: id.clone(),
        pid: created.pid,
        shim_pid: t.shim_pid,
        address: t.address.clone(),
        bundle: bundle.clone(),
    };

    let mut s = rawttrpc::connect(&t.address, T);
    let pause = PauseRequest {
        id: id.clone(),
        ..Default::default()
    }
    .write_to_bytes()
    .expect("encode");
    s.write_all(&request_frame(
        1,
        TASK_SERVICE_V2,
        "Pause",
        pause,
        Duration::from_secs(2),
    ))
    .expect("send Pause");
    // While the runtime hangs, the shim serves: State of both containers.
    let mut problems = Vec::new();
    for who in [&b, t] {
        if let Err(e) = check_after(who, Setup::Running) {
            problems.push(format!("while Pause hung, container {}: {e}", who.id));
        }
    }
    let got = match rawttrpc::try_read_response(&mut s) {
        Ok((1, res)) => Got::Code(res.status.code()),
        Ok((n, _)) => Got::Failed(format!("answered on stream {n}")),
        Err(e) => Got::Failed(format!("Pause: {e}")),
    };
    if let Err(e) = check_after(&b, Setup::Running) {
        problems.push(format!("after the deadline, container {id}: {e}"));
    }

    // Clean up: the sleeping runtime (if the shim left it), then the container.
    if let Some(pid) = std::fs::read_to_string(&pid_file)
        .ok()
        .and_then(|p| p.trim().parse::<i32>().ok())
    {
        if procs::cmdline(pid).is_some_and(|a| a.iter().any(|x| x == "sleep")) {
            problems.push(format!("the hung runtime (pid {pid}) was left running"));
            procs::signal(pid, libc::SIGKILL);
        }
    }
    for (method, payload) in [
        ("Kill", kill_req(&id, "").write_to_bytes()),
        ("Wait", wait_req(&id, "").write_to_bytes()),
        ("Delete", delete_req(&id, "").write_to_bytes()),
    ] {
        let r = raw(t, TASK_SERVICE_V2, method, payload.expect("encode"), T);
        if r != OK {
            problems.push(format!("cleaning up {id}: {method}: {r:?}"));
        }
    }
    match (got, problems.is_empty()) {
        (got, true) => got,
        (got, false) => Got::Failed(format!("{got:?}; {}", problems.join("; "))),
    }
}

/// After a row: the shim lives (by pid) and answers State; a running container still runs.
fn check_after(t: &Target, setup: Setup) -> Result<(), String> {
    // A dead shim may linger as a zombie (PID 1 here does not reap): that is dead too.
    let alive = matches!(procs::stat(t.shim_pid), Some(s) if s.state != 'Z');
    if !alive {
        return Err(format!("the shim (pid {}) died", t.shim_pid));
    }
    let socket = tether_protocol::socket::from_address(&t.address).expect("a unix:// address");
    let payload = state_req(&t.id, "").write_to_bytes().expect("encode");
    let bytes = tether_protocol::wire::call(&socket, TASK_SERVICE_V2, "State", payload, T)
        .map_err(|e| format!("State: {e:?}"))?;
    let state = StateResponse::parse_from_bytes(&bytes).map_err(|e| format!("State: {e}"))?;
    let want = if setup == Setup::InitExited {
        Status::STOPPED
    } else {
        Status::RUNNING
    };
    if state.status.enum_value() != Ok(want) {
        return Err(format!("State says {:?}, not {want:?}", state.status));
    }
    if want == Status::RUNNING && (state.pid != t.pid || !procs::is_alive(t.pid as i32)) {
        return Err(format!(
            "the container's init (pid {}) is not running: State says pid {}",
            t.pid, state.pid
        ));
    }
    Ok(())
}

/// One containerd and namespace for a table; containers made to order.
struct Table {
    cd: Containerd,
    ns: String,
    ctr: Ctr,
    shared: Option<Target>,
}

impl Table {
    fn new() -> Table {
        tether_tests::shim_binary();
        // A shim that a row kills is adopted here and reaped, not left a zombie of PID 1.
        procs::become_subreaper();
        let cd = Containerd::start();
        let ns = unique_id("ns");
        let ctr = cd.ctr(&ns);
        Table {
            cd,
            ns,
            ctr,
            shared: None,
        }
    }

    /// A running `sleep` container under our shim, put in `setup`'s state.
    fn container(&self, setup: Setup) -> Target {
        let id = unique_id("c");
        self.ctr
            .run(&id)
            .runtime(TETHER_RUNTIME)
            .rootfs(busybox_rootfs())
            .flag("--read-only")
            .detach()
            .args(&["/bin/sleep", "1000"])
            .success();
        let task = self.ctr.task(&id).expect("the task is listed");
        assert_eq!(task.status, "RUNNING", "{task:?}");
        let bundle = self.cd.bundle(&self.ns, &id);
        let t = Target {
            ns: self.ns.clone(),
            address: shim::address(&bundle).expect("the bundle has an address file"),
            shim_pid: shim::shim_pid(&self.cd, &self.ns, &id).expect("the shim runs"),
            id,
            pid: task.pid,
            bundle,
        };
        let exec = |args: &[&str]| {
            let spec = Some(process_spec(args, false));
            let _: tether_protocol::api::Empty = must(&t, "Exec", &exec_req(&t.id, EXEC, spec));
        };
        match setup {
            Setup::Shared | Setup::Running => {}
            Setup::ExecAdded => exec(&["/bin/sleep", "1000"]),
            Setup::ExecStartFailed => {
                exec(&["/no/such/binary"]);
                let r = rpc(&t, "Start", &start_req(&t.id, EXEC));
                assert!(
                    matches!(&r, Got::Code(c) if *c != Code::OK),
                    "Start of an exec whose binary does not exist: {r:?}"
                );
            }
            Setup::ExecRunning => {
                exec(&["/bin/sleep", "1000"]);
                let _: StartResponse = must(&t, "Start", &start_req(&t.id, EXEC));
            }
            Setup::ExecExited => {
                exec(&["/bin/sh", "-c", "exit 3"]);
                let _: StartResponse = must(&t, "Start", &start_req(&t.id, EXEC));
                let w: WaitResponse = must(&t, "Wait", &wait_req(&t.id, EXEC));
                assert_eq!(w.exit_status, 3, "{w:?}");
            }
            Setup::InitExited => {
                let _: tether_protocol::api::Empty = must(&t, "Kill", &kill_req(&t.id, ""));
                let w: WaitResponse = must(&t, "Wait", &wait_req(&t.id, ""));
                assert_eq!(w.exit_status, 137, "{w:?}");
            }
        }
        t
    }

    /// Deletes the task and the container through containerd (whatever state the row left).
    fn remove(&self, t: &Target) {
        let _ = self.ctr.task_delete_force(&t.id);
        let _ = self.ctr.container_delete(&t.id);
    }

    /// Runs every row; panics at the end listing the rows that went wrong.
    fn run(mut self, rows: Vec<Row>) {
        let mut failures = Vec::new();
        let mut lines = Vec::new();
        for row in &rows {
            let t = match row.setup {
                Setup::Shared => self
                    .shared
                    .take()
                    .unwrap_or_else(|| self.container(Setup::Shared)),
                setup => self.container(setup),
            };
            let got = (row.call)(&t);
            let after = check_after(&t, row.setup);
            let right = row.expect.contains(&got);
            lines.push(format!(
                "{} {:<62} want {:<40} got {:?}{}",
                if right && after.is_ok() {
                    "ok  "
                } else {
                    "FAIL"
                },
                row.name,
                format!("{:?}", row.expect),
                got,
                after
                    .as_ref()
                    .err()
                    .map(|e| format!("; after: {e}"))
                    .unwrap_or_default()
            ));
            if !right {
                failures.push(format!(
                    "{}: want one of {:?}, got {got:?}",
                    row.name, row.expect
                ));
            }
            if let Err(e) = &after {
                failures.push(format!("{}: after the call: {e}", row.name));
            }
            // A shared container that is no longer as it was is replaced.
            if row.setup == Setup::Shared && after.is_ok() {
                self.shared = Some(t);
            } else {
                self.remove(&t);
            }
        }
        if let Some(t) = self.shared.take() {
            self.remove(&t);
        }
        eprintln!("{}", lines.join("\n"));
        let check = self.cd.leak_check();
        let report = self.cd.shutdown();
        if !report.problems.is_empty() || !report.killed.is_empty() {
            failures.push(format!("containerd's cleanup: {report:#?}"));
        }
        procs::reap_orphans();
        let left = check.leftovers();
        if !left.is_empty() {
            failures.push(format!("left behind: {left:#?}"));
        }
        assert!(
            failures.is_empty(),
            "{} of {} rows went wrong:\n{}",
            failures.len(),
            rows.len(),
            failures.join("\n")
        );
    }
}

#[test]
fn ids_payloads_and_methods_get_the_right_codes() {
    Table::new().run(ids_and_payloads());
}

#[test]
fn processes_in_the_wrong_state_get_the_right_codes() {
    Table::new().run(wrong_states());
}

#[test]
fn bad_frames_and_connections_leave_the_shim_serving() {
    Table::new().run(frames_and_connections());
}

#[test]
fn a_runtime_call_past_its_deadline_gets_deadline_exceeded() {
    Table::new().run(vec![Row {
        name: "Pause through a runtime that hangs, 2 s deadline",
        setup: Setup::Running,
        call: hanging_runtime,
        expect: &[DEADLINE],
    }]);
}

/// The table is as large as the issue asks (at least 40 raw calls).
#[test]
fn the_table_has_at_least_40_rows() {
    let n = ids_and_payloads().len() + wrong_states().len() + frames_and_connections().len() + 1;
    assert!(n >= 40, "{n} rows");
}
