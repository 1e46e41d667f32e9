//! The task service under both of its names.
//!
//! containerd 1.6/1.7 call `containerd.task.v2.Task`, containerd 2.x `containerd.task.v3.Task`;
//! the messages are the same on the wire. Servers answer under both names; clients call whichever
//! name the shim answers, v2 first (what containerd-shim-runc-v2 1.6 serves).

use crate::api::shim_ttrpc::{create_task, Task};
use crate::api::ttrpc::{self, Code};
use protobuf::Message;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

pub const TASK_SERVICE_V2: &str = "containerd.task.v2.Task";
pub const TASK_SERVICE_V3: &str = "containerd.task.v3.Task";
/// The Events service shims publish to (containerd's `$TTRPC_ADDRESS`).
pub const EVENTS_SERVICE: &str = "containerd.services.events.ttrpc.v1.Events";

/// The task API method a request names, if its service is either task service name.
pub fn task_method<'a>(service: &str, method: &'a str) -> Option<&'a str> {
    (service == TASK_SERVICE_V2 || service == TASK_SERVICE_V3).then_some(method)
}

/// The methods of `service` keyed by both `/containerd.task.v2.Task/M` and `/...v3.Task/M`, for
/// `ttrpc::Server::register_service`.
pub fn task_methods(
    service: Arc<dyn Task + Send + Sync>,
) -> HashMap<String, Box<dyn ttrpc::MethodHandler + Send + Sync>> {
    let mut methods = create_task(service.clone());
    let v3_prefix = format!("/{TASK_SERVICE_V3}/");
    for (path, handler) in create_task(service) {
        if let Some(m) = path.strip_prefix(&v3_prefix) {
            methods.insert(format!("/{TASK_SERVICE_V2}/{m}"), handler);
        }
    }
    methods
}

/// Whether an error says the server does not serve the service that was called. Go's ttrpc
/// answers `Unimplemented "service ..."`, Rust's `InvalidArgument "... does not exist"`.
fn is_unknown_service(e: &ttrpc::Error) -> bool {
    match e {
        ttrpc::Error::RpcStatus(s) => {
            s.code() == Code::UNIMPLEMENTED
                || (s.code() == Code::INVALID_ARGUMENT && s.message().ends_with("does not exist"))
        }
        _ => false,
    }
}

/// A task API client that calls a shim under whichever service name it answers.
#[derive(Clone)]
pub struct TaskCaller {
    client: ttrpc::Client,
    service: &'static str,
}

impl TaskCaller {
    /// Connects to a shim at a ttrpc address (`unix:///path`) and learns which name it answers
    /// by calling `Connect` (v2 first). Returns the caller and the `Connect` answer.
    pub fn connect(
        address: &str,
        timeout: Duration,
    ) -> ttrpc::Result<(Self, crate::api::task::ConnectResponse)> {
        let client = ttrpc::Client::connect(address)?;
        let mut caller = TaskCaller {
            client,
            service: TASK_SERVICE_V2,
        };
        let req = crate::api::task::ConnectRequest::default();
        match caller.call("Connect", &req, timeout) {
            Ok(resp) => Ok((caller, resp)),
            Err(e) if is_unknown_service(&e) => {
                caller.service = TASK_SERVICE_V3;
                let resp = caller.call("Connect", &req, timeout)?;
                Ok((caller, resp))
            }
            Err(e) => Err(e),
        }
    }

    /// A caller over an existing client, calling `service` (one of the two names).
    pub fn with_service(client: ttrpc::Client, service: &'static str) -> Self {
        TaskCaller { client, service }
    }

    pub fn service(&self) -> &'static str {
        self.service
    }

    /// Calls `method` with `req`; a zero timeout waits for ever (as `Wait` must).
    pub fn call<Req: Message, Resp: Message>(
        &self,
        method: &str,
        req: &Req,
        timeout: Duration,
    ) -> ttrpc::Result<Resp> {
        let payload = req
            .write_to_bytes()
            .map_err(|e| ttrpc::Error::Others(format!("encode {method} request: {e}")))?;
        let creq = ttrpc::Request {
            service: self.service.to_string(),
            method: method.to_string(),
            timeout_nano: timeout.as_nanos().min(i64::MAX as u128) as i64,
            payload,
            ..Default::default()
        };
        let res = self.client.request(creq)?;
        Resp::parse_from_bytes(&res.payload)
            .map_err(|e| ttrpc::Error::Others(format!("decode {method} response: {e}")))
    }
}
