//! The task service under both of its names.
//!
//! containerd 1.6/1.7 call `containerd.task.v2.Task`, containerd 2.x `containerd.task.v3.Task`;
//! the messages are the same on the wire. Servers answer under both names; clients call whichever
//! name the shim answers, v2 first (what containerd-shim-runc-v2 1.6 serves).

use crate::api::shim_ttrpc::{create_task, Task};
use crate::api::ttrpc::{self, Code};
use crate::wire;
use protobuf::Message;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
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

/// How much longer than the deadline it gives a shim a one-call-per-connection caller waits for
/// the answer: the shim's own bookkeeping after its deadline (killing the runtime, replying).
pub const REPLY_MARGIN: Duration = Duration::from_secs(5);

/// The one task API client: calls a shim under whichever service name it answers (learned once,
/// at `Connect`, v2 first), over a ttrpc client connection or one connection per call.
#[derive(Clone)]
pub struct TaskCaller {
    via: Via,
    service: &'static str,
}

/// How calls reach the shim.
#[derive(Clone)]
enum Via {
    /// One long-lived connection of the `ttrpc` crate's client (tests, the bench).
    Client(ttrpc::Client),
    /// A fresh connection per call over `wire::call_with_deadline`: no client and no client
    /// thread kept per shim (the daemon).
    Socket(PathBuf),
}

impl std::fmt::Debug for TaskCaller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let via = match &self.via {
            Via::Client(_) => "ttrpc client".to_string(),
            Via::Socket(p) => p.display().to_string(),
        };
        write!(f, "TaskCaller({via}, {})", self.service)
    }
}

impl TaskCaller {
    /// Connects a ttrpc client to a shim at a ttrpc address (`unix:///path`) and learns which
    /// name it answers by calling `Connect`. Returns the caller and the `Connect` answer.
    pub fn connect(
        address: &str,
        timeout: Duration,
    ) -> ttrpc::Result<(Self, crate::api::task::ConnectResponse)> {
        let client = ttrpc::Client::connect(address)?;
        Self::learn_service(Via::Client(client), timeout)
    }

    /// Like [`TaskCaller::connect`], for a caller that opens one connection per call
    /// (`address`: `unix:///path` or a path).
    pub fn connect_per_call(
        address: &str,
        timeout: Duration,
    ) -> ttrpc::Result<(Self, crate::api::task::ConnectResponse)> {
        let socket = crate::socket::from_address(address).ok_or_else(|| {
            ttrpc::Error::Others(format!("{address:?} is not a unix socket address"))
        })?;
        Self::learn_service(Via::Socket(socket), timeout)
    }

    /// `Connect`, and `State` of the task `id`, written together on one fresh connection
    /// (`address`: `unix:///path` or a path), under the v2 name, else v3: what a daemon asks
    /// every shim it finds on a restart, for one connection and one wake-up of the shim.
    /// Neither runs the runtime, so the answer is waited for `timeout` and no longer.
    pub fn connect_and_state(
        address: &str,
        id: &str,
        timeout: Duration,
    ) -> ttrpc::Result<(
        Self,
        crate::api::task::ConnectResponse,
        ttrpc::Result<crate::api::task::StateResponse>,
    )> {
        let socket = crate::socket::from_address(address).ok_or_else(|| {
            ttrpc::Error::Others(format!("{address:?} is not a unix socket address"))
        })?;
        let encode = |m: &dyn protobuf::MessageDyn, method: &str| {
            m.write_to_bytes_dyn()
                .map_err(|e| ttrpc::Error::Others(format!("encode {method} request: {e}")))
        };
        let connect = encode(&crate::api::task::ConnectRequest::default(), "Connect")?;
        let state = encode(
            &crate::api::task::StateRequest {
                id: id.to_string(),
                ..Default::default()
            },
            "State",
        )?;
        let mut last = None;
        for service in [TASK_SERVICE_V2, TASK_SERVICE_V3] {
            let calls = vec![("Connect", connect.clone()), ("State", state.clone())];
            let mut answers =
                wire::call_pipelined(&socket, service, calls, timeout, timeout)?.into_iter();
            let (Some(c), Some(st)) = (answers.next(), answers.next()) else {
                return Err(ttrpc::Error::Others("no answer to Connect".into()));
            };
            let connected = match c {
                Ok(c) => c,
                Err(e) if is_unknown_service(&e) => {
                    last = Some(e);
                    continue;
                }
                Err(e) => return Err(e),
            };
            let connected = crate::api::task::ConnectResponse::parse_from_bytes(&connected)
                .map_err(|e| ttrpc::Error::Others(format!("decode Connect response: {e}")))?;
            let state = st.and_then(|b| {
                crate::api::task::StateResponse::parse_from_bytes(&b)
                    .map_err(|e| ttrpc::Error::Others(format!("decode State response: {e}")))
            });
            let caller = TaskCaller {
                via: Via::Socket(socket),
                service,
            };
            return Ok((caller, connected, state));
        }
        Err(last.unwrap_or_else(|| ttrpc::Error::Others("no task service answered".into())))
    }

    /// `Connect` under the v2 name, else v3.
    fn learn_service(
        via: Via,
        timeout: Duration,
    ) -> ttrpc::Result<(Self, crate::api::task::ConnectResponse)> {
        let mut caller = TaskCaller {
            via,
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
        TaskCaller {
            via: Via::Client(client),
            service,
        }
    }

    /// A one-call-per-connection caller of the shim at `socket`, calling `service`.
    pub fn per_call(socket: &Path, service: &'static str) -> Self {
        TaskCaller {
            via: Via::Socket(socket.to_path_buf()),
            service,
        }
    }

    pub fn service(&self) -> &'static str {
        self.service
    }

    /// The shim's socket, for a one-call-per-connection caller.
    pub fn socket(&self) -> Option<&Path> {
        match &self.via {
            Via::Socket(p) => Some(p),
            Via::Client(_) => None,
        }
    }

    /// Calls `method` with `timeout` as the shim's deadline (`timeout_nano`, which both our
    /// shim and containerd's honour: a runtime call past it is killed and answered
    /// `DeadlineExceeded`). A one-call-per-connection caller waits [`REPLY_MARGIN`] longer for
    /// the answer, so it never reports as failed what the shim then does. A zero timeout waits
    /// for ever (as `Wait` must).
    pub fn call<Req: Message, Resp: Message>(
        &self,
        method: &str,
        req: &Req,
        timeout: Duration,
    ) -> ttrpc::Result<Resp> {
        let payload = req
            .write_to_bytes()
            .map_err(|e| ttrpc::Error::Others(format!("encode {method} request: {e}")))?;
        let answer = match &self.via {
            Via::Client(client) => {
                client
                    .request(wire::request(self.service, method, payload, timeout))?
                    .payload
            }
            Via::Socket(socket) => {
                let wait = if timeout.is_zero() {
                    Duration::ZERO
                } else {
                    timeout + REPLY_MARGIN
                };
                wire::call_with_deadline(socket, self.service, method, payload, timeout, wait)?
            }
        };
        Resp::parse_from_bytes(&answer)
            .map_err(|e| ttrpc::Error::Others(format!("decode {method} response: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::task::{ConnectResponse, StateRequest};
    use std::io::{Read, Write};
    use std::os::unix::net::UnixListener;
    use ttrpc::proto::{MessageHeader, MESSAGE_HEADER_LENGTH};

    /// One request frame from a client: its stream id and the decoded request.
    fn read_request(conn: &mut std::os::unix::net::UnixStream) -> (u32, ttrpc::Request) {
        let mut header = [0u8; MESSAGE_HEADER_LENGTH];
        conn.read_exact(&mut header).expect("header");
        let h = MessageHeader::from(&header[..]);
        let mut body = vec![0u8; h.length as usize];
        conn.read_exact(&mut body).expect("body");
        let req = ttrpc::Request::parse_from_bytes(&body).expect("request");
        (h.stream_id, req)
    }

    /// An OK response carrying `payload` on `stream_id`.
    fn reply(conn: &mut std::os::unix::net::UnixStream, stream_id: u32, payload: Vec<u8>) {
        let bytes = wire::response(Ok(payload))
            .write_to_bytes()
            .expect("encode response");
        conn.write_all(&wire::encode(
            stream_id,
            wire::MESSAGE_TYPE_RESPONSE,
            &bytes,
        ))
        .expect("reply");
    }

    /// A shim that takes the whole deadline it was given before answering (as one whose runtime
    /// call ran until killed at the deadline would): a one-call-per-connection caller still gets
    /// its answer, and the shim was told the caller's deadline.
    #[test]
    fn the_answer_at_the_shims_deadline_still_reaches_the_caller() {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("shim.sock");
        let listener = UnixListener::bind(&socket).expect("bind");
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().expect("accept");
            let (stream_id, req) = read_request(&mut conn);
            let told = Duration::from_nanos(u64::try_from(req.timeout_nano).unwrap_or(0));
            // Past the deadline the shim was given (the client waits a margin longer).
            std::thread::sleep(told + Duration::from_millis(300));
            let payload = ConnectResponse::default().write_to_bytes().expect("encode");
            reply(&mut conn, stream_id, payload);
            told
        });
        let caller = TaskCaller::per_call(&socket, TASK_SERVICE_V2);
        let deadline = Duration::from_millis(200);
        let r: ttrpc::Result<ConnectResponse> =
            caller.call("State", &StateRequest::default(), deadline);
        let told = server.join().expect("server");
        assert_eq!(told, deadline, "the shim is told the caller's deadline");
        assert!(
            r.is_ok(),
            "the caller gave up before the shim answered: {r:?}"
        );
    }

    /// A restart's probe writes `Connect` and `State` together on one connection; a shim may
    /// answer them in any order, and each answer reaches its call.
    #[test]
    fn connect_and_state_pair_each_answer_with_its_request() {
        use crate::api::task::StateResponse;
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("shim.sock");
        let listener = UnixListener::bind(&socket).expect("bind");
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().expect("accept");
            let mut asked = Vec::new();
            for _ in 0..2 {
                let (stream_id, req) = read_request(&mut conn);
                asked.push((stream_id, req.method));
            }
            // The second request's answer first.
            for (stream_id, method) in asked.iter().rev() {
                let payload = match method.as_str() {
                    "Connect" => ConnectResponse {
                        shim_pid: 41,
                        ..Default::default()
                    }
                    .write_to_bytes(),
                    _ => StateResponse {
                        pid: 42,
                        ..Default::default()
                    }
                    .write_to_bytes(),
                }
                .expect("encode");
                reply(&mut conn, *stream_id, payload);
            }
            asked.into_iter().map(|(_, m)| m).collect::<Vec<_>>()
        });
        let address = format!("unix://{}", socket.display());
        let (caller, connected, state) =
            TaskCaller::connect_and_state(&address, "c1", Duration::from_secs(5)).expect("probe");
        assert_eq!(server.join().expect("server"), vec!["Connect", "State"]);
        assert_eq!(connected.shim_pid, 41);
        assert_eq!(state.expect("state").pid, 42);
        assert_eq!(caller.service(), TASK_SERVICE_V2);
    }
}
