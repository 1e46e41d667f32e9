//! The dual registration answers a real ttrpc client under both service names over a real unix
//! socket, and the caller finds the name a server answers.

use std::sync::Arc;
use std::time::Duration;
use tether_protocol::api::task::{StateRequest, StateResponse};
use tether_protocol::api::{shim_ttrpc, ttrpc};
use tether_protocol::task_service::{task_methods, TaskCaller, TASK_SERVICE_V2, TASK_SERVICE_V3};

struct Echo;

impl shim_ttrpc::Task for Echo {
    fn state(&self, _: &ttrpc::TtrpcContext, req: StateRequest) -> ttrpc::Result<StateResponse> {
        Ok(StateResponse {
            id: req.id,
            pid: 4242,
            ..Default::default()
        })
    }
}

fn serve(dir: &std::path::Path, both: bool) -> (ttrpc::Server, String) {
    let addr = format!("unix://{}", dir.join("task.sock").display());
    let service: Arc<dyn shim_ttrpc::Task + Send + Sync> = Arc::new(Echo);
    let methods = if both {
        task_methods(service)
    } else {
        shim_ttrpc::create_task(service)
    };
    let mut server = ttrpc::Server::new()
        .bind(&addr)
        .unwrap()
        .register_service(methods);
    server.start().unwrap();
    (server, addr)
}

fn state_via(addr: &str, service: &'static str) -> ttrpc::Result<StateResponse> {
    let client = ttrpc::Client::connect(addr)?;
    let req = StateRequest {
        id: "c1".into(),
        ..Default::default()
    };
    TaskCaller::with_service(client, service).call("State", &req, Duration::from_secs(5))
}

#[test]
fn answers_under_both_names() {
    let dir = tempfile::tempdir().unwrap();
    let (server, addr) = serve(dir.path(), true);
    for name in [TASK_SERVICE_V2, TASK_SERVICE_V3] {
        let r = state_via(&addr, name).unwrap();
        assert_eq!((r.id.as_str(), r.pid), ("c1", 4242), "{name}");
    }
    // The crate's own generated client (v3) works too.
    let client = shim_ttrpc::TaskClient::new(ttrpc::Client::connect(&addr).unwrap());
    let r = client
        .state(
            ttrpc::context::with_timeout(5_000_000_000),
            &StateRequest::default(),
        )
        .unwrap();
    assert_eq!(r.pid, 4242);
    server.shutdown();
}

#[test]
fn a_v3_only_server_refuses_v2_and_the_caller_falls_back() {
    let dir = tempfile::tempdir().unwrap();
    let (server, addr) = serve(dir.path(), false);
    assert!(state_via(&addr, TASK_SERVICE_V2).is_err());
    // Connect is not implemented by Echo, so the fallback reports Connect's own error under v3,
    // which proves it moved on from v2.
    let err = TaskCaller::connect(&addr, Duration::from_secs(5))
        .expect_err("Echo does not implement Connect");
    let text = format!("{err:?}");
    assert!(text.contains("containerd.task.v3.Task/Connect"), "{text}");
    server.shutdown();
}
