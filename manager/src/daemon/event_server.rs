//! containerd's Events service (`Events/Forward`), the endpoint shims publish to, framed by us
//! on the monitor's loop: no thread per shim connection. It listens on its own socket,
//! `<state>/events.sock` (what shims get as `TTRPC_ADDRESS`).

use crate::error::Error;
use mio::net::{UnixListener, UnixStream};
use protobuf::Message;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use tether_protocol::api::forward::ForwardRequest;
use tether_protocol::api::ttrpc::{self, Code};
use tether_protocol::api::Empty;
use tether_protocol::task_service::EVENTS_SERVICE;
use tether_protocol::wire::{self, Frame, MESSAGE_TYPE_REQUEST, MESSAGE_TYPE_RESPONSE};

pub type Conn = wire::Conn<UnixStream>;

/// What the daemon does with forwarded events: one result per request, in order. A batch is
/// all the requests that arrived in one turn of the loop, so one fsync covers them all.
pub type Sink = Box<dyn Fn(Vec<ForwardRequest>) -> Vec<Result<(), Error>> + Send>;

/// The name of the socket in the state directory.
pub const SOCKET_NAME: &str = "events.sock";

/// Binds the events socket (0600), replacing a stale one.
pub fn bind(path: &Path) -> Result<UnixListener, Error> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(format!("remove stale socket {}", path.display()))(e)),
    }
    // Under umask 077: never open to others, not even until the chmod below.
    let l = crate::daemon::peer::with_private_umask(|| UnixListener::bind(path))
        .map_err(Error::io(format!("listen on {}", path.display())))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(Error::io(format!("chmod 0600 {}", path.display())))?;
    Ok(l)
}

/// A request frame, decoded: a `Forward` to accept, or the error to answer at once.
pub enum Incoming {
    Forward(u32, ForwardRequest),
    Refuse(u32, ttrpc::Status),
    /// Not a request (a client sends only requests): ignored.
    Ignore,
}

pub fn decode(frame: &Frame) -> Incoming {
    if frame.kind != MESSAGE_TYPE_REQUEST {
        return Incoming::Ignore;
    }
    let id = frame.stream_id;
    let refuse = |code, msg: String| Incoming::Refuse(id, ttrpc::get_status(code, msg));
    let req = match ttrpc::Request::parse_from_bytes(&frame.payload) {
        Ok(r) => r,
        Err(e) => return refuse(Code::INVALID_ARGUMENT, format!("bad ttrpc request: {e}")),
    };
    if req.service != EVENTS_SERVICE || req.method != "Forward" {
        return refuse(
            Code::UNIMPLEMENTED,
            format!("/{}/{} is not served here", req.service, req.method),
        );
    }
    match ForwardRequest::parse_from_bytes(&req.payload) {
        Ok(f) if f.envelope.is_some() => Incoming::Forward(id, f),
        Ok(_) => refuse(Code::INVALID_ARGUMENT, "forward without an envelope".into()),
        Err(e) => refuse(Code::INVALID_ARGUMENT, format!("bad ForwardRequest: {e}")),
    }
}

/// Sends the answer to request `stream_id`.
pub fn reply(conn: &mut Conn, stream_id: u32, result: Result<(), ttrpc::Status>) {
    let mut resp = ttrpc::Response::new();
    match result {
        Ok(()) => resp.payload = Empty::new().write_to_bytes().unwrap_or_default(),
        Err(status) => resp.status = protobuf::MessageField::some(status),
    }
    if let Ok(bytes) = resp.write_to_bytes() {
        conn.send(stream_id, MESSAGE_TYPE_RESPONSE, &bytes);
    }
}

/// The status a failed forward answers with.
pub fn status_of(e: Error) -> ttrpc::Status {
    match ttrpc::Error::from(e) {
        ttrpc::Error::RpcStatus(s) => s,
        other => ttrpc::get_status(Code::INTERNAL, format!("{other:?}")),
    }
}
