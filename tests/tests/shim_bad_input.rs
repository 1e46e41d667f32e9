//! Bad input straight to a real shim's socket (started by containerd for a running container):
//! every bad request gets a ttrpc error status with a useful message, and the shim keeps serving.
//! Also: the shim answers under both task service names.

use protobuf::Message;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tether_protocol::api::pack_any;
use tether_protocol::api::runc_options::Options;
use tether_protocol::api::task::{
    CreateTaskRequest, CreateTaskResponse, StateRequest, StateResponse, Status as TaskStatus,
};
use tether_protocol::api::ttrpc::{self, Code};
use tether_protocol::task_service::{TaskCaller, TASK_SERVICE_V2, TASK_SERVICE_V3};
use tether_tests::rawttrpc::{self, assert_closed, frame, read_response, rpc_status};
use tether_tests::shimtest::sleeper;
use tether_tests::shimtest::state;
use tether_tests::shimtest::Scene;
use tether_tests::{procs, shim, unique_id, Containerd, Ctr};

const T: Duration = Duration::from_secs(20);

/// A running container under our shim, and where to reach the shim.
struct Running {
    cd: Containerd,
    ns: String,
    ctr: Ctr,
    id: String,
    pid: u32,
    address: String,
    shim_pid: i32,
}

fn start_container() -> Running {
    tether_tests::shim_binary();
    let Scene { cd, ns, ctr } = Scene::start();
    let id = sleeper(&ctr);
    let row = ctr.task(&id).expect("the task is listed");
    assert_eq!(row.status, "RUNNING");
    let bundle = cd.bundle(&ns, &id);
    let address = shim::address(&bundle).expect("the bundle has an address file");
    let shim_pid = shim::shim_pid(&cd, &ns, &id).expect("the shim runs");
    Running {
        cd,
        ns,
        ctr,
        id,
        pid: row.pid,
        address,
        shim_pid,
    }
}

impl Running {
    fn bundle(&self) -> PathBuf {
        self.cd.bundle(&self.ns, &self.id)
    }

    /// The real container still answers RUNNING with its pid, from the same shim process.
    fn assert_serving(&self, caller: &TaskCaller, after: &str) {
        let state = state(caller, &self.id, "");
        assert_eq!(
            state.status.enum_value(),
            Ok(TaskStatus::RUNNING),
            "after {after}: {state:?}"
        );
        assert_eq!(state.pid, self.pid, "after {after}: {state:?}");
        assert_eq!(state.id, self.id);
        assert!(
            procs::is_alive(self.shim_pid),
            "the shim died after {after}"
        );
    }

    /// Deletes the task through containerd and checks nothing is left.
    fn finish(self) {
        let kill = self.ctr.task_kill(&self.id, "SIGKILL");
        assert!(kill.success(), "{kill}");
        assert!(tether_tests::wait_until(T, || self
            .ctr
            .task(&self.id)
            .is_some_and(|t| t.status == "STOPPED")));
        assert_eq!(self.ctr.task_delete_status(&self.id), 137);
        assert!(self.ctr.container_delete(&self.id).success());
        tether_tests::shimtest::finish(self.cd, &[]);
    }
}

fn state_of(caller: &TaskCaller, id: &str) -> ttrpc::Result<StateResponse> {
    let req = StateRequest {
        id: id.to_string(),
        ..Default::default()
    };
    caller.call("State", &req, T)
}

/// A bundle dir with a `rootfs/` and, if given, a copy of `config`.
fn temp_bundle(config: Option<&Path>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp bundle dir");
    std::fs::create_dir(dir.path().join("rootfs")).expect("mkdir rootfs");
    if let Some(config) = config {
        std::fs::copy(config, dir.path().join("config.json")).expect("copy config.json");
    }
    dir
}

#[test]
fn bad_requests_get_error_statuses_and_the_shim_keeps_serving() {
    let r = start_container();
    let (caller, connected) = TaskCaller::connect(&r.address, T).expect("connect to the shim");
    assert_eq!(
        caller.service(),
        TASK_SERVICE_V2,
        "answers v2 first, as containerd 1.6 calls it"
    );
    assert_eq!(connected.shim_pid, r.shim_pid as u32, "{connected:?}");
    r.assert_serving(&caller, "connect");

    // State of a container this shim does not hold.
    let unknown = unique_id("nope");
    let s = rpc_status("State of an unknown id", state_of(&caller, &unknown));
    assert_eq!(s.code(), Code::NOT_FOUND, "{s:?}");
    assert!(s.message().contains(&unknown), "{s:?}");
    r.assert_serving(&caller, "State of an unknown id");

    // An id that is not a valid container id.
    let s = rpc_status("State of ../x", state_of(&caller, "../x"));
    assert_eq!(s.code(), Code::INVALID_ARGUMENT, "{s:?}");
    r.assert_serving(&caller, "State of ../x");

    // Create with a bundle that has no config.json: the error names the file.
    let empty = temp_bundle(None);
    let new_id = unique_id("c");
    let req = CreateTaskRequest {
        id: new_id.clone(),
        bundle: empty.path().display().to_string(),
        ..Default::default()
    };
    let s = rpc_status(
        "Create without config.json",
        caller.call::<_, CreateTaskResponse>("Create", &req, T),
    );
    let missing = empty.path().join("config.json").display().to_string();
    assert!(
        s.message().contains(&missing),
        "message names {missing}: {s:?}"
    );
    assert_eq!(s.code(), Code::INVALID_ARGUMENT, "{s:?}");
    r.assert_serving(&caller, "Create without config.json");

    // Create with a valid bundle but a runtime binary that does not exist.
    let bundle = temp_bundle(Some(&r.bundle().join("config.json")));
    let opts = Options {
        binary_name: "no-such-runtime".into(),
        ..Default::default()
    };
    let req = CreateTaskRequest {
        id: new_id.clone(),
        bundle: bundle.path().display().to_string(),
        options: protobuf::MessageField::some(pack_any(&opts).expect("pack runc options")),
        ..Default::default()
    };
    let s = rpc_status(
        "Create with binary_name no-such-runtime",
        caller.call::<_, CreateTaskResponse>("Create", &req, T),
    );
    assert!(s.code() != Code::OK, "{s:?}");
    assert!(
        s.message().contains("no-such-runtime"),
        "message names the runtime: {s:?}"
    );
    r.assert_serving(&caller, "Create with a missing runtime");
    // The failed create left no container behind.
    let s = rpc_status("State of the failed create", state_of(&caller, &new_id));
    assert_eq!(s.code(), Code::NOT_FOUND, "{s:?}");

    // Garbage bytes as the CreateTaskRequest.
    let client = ttrpc::Client::connect(&r.address).expect("raw ttrpc client");
    let raw = |service: &str, method: &str, payload: Vec<u8>| {
        client.request(ttrpc::Request {
            service: service.into(),
            method: method.into(),
            payload,
            timeout_nano: T.as_nanos() as i64,
            ..Default::default()
        })
    };
    let s = rpc_status(
        "Create with a garbage payload",
        raw(TASK_SERVICE_V2, "Create", vec![0xff; 32]),
    );
    assert_eq!(s.code(), Code::INVALID_ARGUMENT, "{s:?}");
    r.assert_serving(&caller, "a garbage Create payload");

    // A method or a service nobody serves.
    let s = rpc_status(
        "an unknown method",
        raw(TASK_SERVICE_V2, "NoSuchMethod", Vec::new()),
    );
    assert_eq!(s.code(), Code::UNIMPLEMENTED, "{s:?}");
    let s = rpc_status(
        "an unknown service",
        raw("containerd.task.v9.Nope", "State", Vec::new()),
    );
    assert_eq!(s.code(), Code::UNIMPLEMENTED, "{s:?}");
    r.assert_serving(&caller, "unknown methods and services");

    drop((client, caller));
    r.finish();
}

#[test]
fn garbage_frames_on_the_socket_do_not_kill_the_shim() {
    let r = start_container();
    let caller = TaskCaller::connect(&r.address, T).expect("connect").0;

    // A well-framed request whose payload is not a ttrpc Request: an error reply.
    let mut s = rawttrpc::connect(&r.address, T);
    s.write_all(&frame(1, 1, 32, &[0xff; 32]))
        .expect("write frame");
    let (stream, res) = read_response(&mut s);
    assert_eq!(stream, 1);
    let status = res.status.as_ref().expect("the response has a status");
    assert_eq!(status.code(), Code::INVALID_ARGUMENT, "{status:?}");
    // The connection still works for a real request after that.
    let state = StateRequest {
        id: r.id.clone(),
        ..Default::default()
    };
    let req = ttrpc::Request {
        service: TASK_SERVICE_V2.into(),
        method: "State".into(),
        payload: state.write_to_bytes().expect("encode State"),
        timeout_nano: T.as_nanos() as i64,
        ..Default::default()
    };
    let bytes = req.write_to_bytes().expect("encode Request");
    s.write_all(&frame(3, 1, bytes.len() as u32, &bytes))
        .expect("write frame");
    let (stream, res) = read_response(&mut s);
    assert_eq!(stream, 3);
    let status = res.status.as_ref().expect("status");
    assert_eq!(status.code(), Code::OK, "{status:?}");
    let answer = StateResponse::parse_from_bytes(&res.payload).expect("a StateResponse");
    assert_eq!(answer.pid, r.pid);
    drop(s);
    r.assert_serving(&caller, "a garbage request frame");

    // A frame declaring more than the 4 MiB limit: the shim drops the connection.
    let mut s = rawttrpc::connect(&r.address, T);
    s.write_all(&frame(5, 1, 0xffff_fff0, &[0u8; 64]))
        .expect("write frame");
    assert_closed(&mut s, "oversized frame");
    r.assert_serving(&caller, "an oversized frame");

    // Half a header, then hang up; and a response frame sent to the server.
    let mut s = rawttrpc::connect(&r.address, T);
    s.write_all(&[0, 0, 0]).expect("write");
    drop(s);
    let mut s = rawttrpc::connect(&r.address, T);
    s.write_all(&frame(7, 2, 4, &[1, 2, 3, 4]))
        .expect("write frame");
    drop(s);
    r.assert_serving(&caller, "half a header and a stray response frame");

    // Pure noise.
    let mut s = rawttrpc::connect(&r.address, T);
    let noise: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let _ = s.write_all(&noise);
    drop(s);
    r.assert_serving(&caller, "4 KiB of noise");

    drop(caller);
    r.finish();
}

#[test]
fn state_answers_under_both_task_service_names() {
    let r = start_container();
    for service in [TASK_SERVICE_V2, TASK_SERVICE_V3] {
        let client = ttrpc::Client::connect(&r.address).expect("ttrpc client");
        let caller = TaskCaller::with_service(client, service);
        let state =
            state_of(&caller, &r.id).unwrap_or_else(|e| panic!("State via {service}: {e:?}"));
        assert_eq!(
            state.status.enum_value(),
            Ok(TaskStatus::RUNNING),
            "via {service}: {state:?}"
        );
        assert_eq!(state.pid, r.pid, "via {service}");
        assert_eq!(
            state.bundle,
            r.bundle().display().to_string(),
            "via {service}"
        );
        let s = rpc_status(
            "State of an unknown id",
            state_of(&caller, &unique_id("nope")),
        );
        assert_eq!(s.code(), Code::NOT_FOUND, "via {service}: {s:?}");
    }
    r.finish();
}
