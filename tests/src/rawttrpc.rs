//! ttrpc below any client library, for tests that feed a shim what no client would send: frames
//! written by hand (any declared length, any type), responses read by hand, statuses taken
//! apart, and the exec process spec containerd sends.

use protobuf::Message;
use std::io::Read;
use std::os::unix::net::UnixStream;
use std::time::Duration;
use tether_protocol::api::ttrpc;

/// A ttrpc frame type: a request (client to server).
pub const REQUEST: u8 = 1;
/// A ttrpc frame type: a response (server to client).
pub const RESPONSE: u8 = 2;

/// One ttrpc frame: 10-byte header (declared length, stream id, type, flags), then `payload`,
/// whatever its real length.
pub fn frame(stream_id: u32, kind: u8, declared_len: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(10 + payload.len());
    v.extend_from_slice(&declared_len.to_be_bytes());
    v.extend_from_slice(&stream_id.to_be_bytes());
    v.extend_from_slice(&[kind, 0]);
    v.extend_from_slice(payload);
    v
}

/// A whole request frame calling `service`/`method` with `payload` (the encoded request
/// message, or anything else), with a ttrpc deadline of `timeout`.
pub fn request_frame(
    stream_id: u32,
    service: &str,
    method: &str,
    payload: Vec<u8>,
    timeout: Duration,
) -> Vec<u8> {
    let req = ttrpc::Request {
        service: service.into(),
        method: method.into(),
        payload,
        timeout_nano: timeout.as_nanos().min(i64::MAX as u128) as i64,
        ..Default::default()
    };
    let bytes = req.write_to_bytes().expect("encode a ttrpc Request");
    frame(stream_id, REQUEST, bytes.len() as u32, &bytes)
}

/// A raw connection to the ttrpc server at `address` (`unix:///path`), reads timing out after
/// `read_timeout`.
pub fn connect(address: &str, read_timeout: Duration) -> UnixStream {
    let path = tether_protocol::socket::from_address(address).expect("a unix:// address");
    let s =
        UnixStream::connect(&path).unwrap_or_else(|e| panic!("connect to {}: {e}", path.display()));
    s.set_read_timeout(Some(read_timeout))
        .expect("read timeout");
    s
}

/// Reads one response frame: its stream id and decoded `Response`, or what went wrong (the
/// peer closed, no answer within the read timeout, not a response).
pub fn try_read_response(s: &mut UnixStream) -> Result<(u32, ttrpc::Response), String> {
    let mut header = [0u8; 10];
    s.read_exact(&mut header)
        .map_err(|e| format!("no response header: {e}"))?;
    let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let stream_id = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
    if header[8] != RESPONSE {
        return Err(format!("frame type {} is not a response", header[8]));
    }
    if len > 4 << 20 {
        return Err(format!(
            "response frame of {len} bytes, over the 4 MiB limit"
        ));
    }
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload)
        .map_err(|e| format!("response payload cut short: {e}"))?;
    let res = ttrpc::Response::parse_from_bytes(&payload)
        .map_err(|e| format!("not a ttrpc Response: {e}"))?;
    Ok((stream_id, res))
}

/// Reads one response frame; panics if there is none.
pub fn read_response(s: &mut UnixStream) -> (u32, ttrpc::Response) {
    try_read_response(s).unwrap_or_else(|e| panic!("{e}"))
}

/// Whether the server closed the connection (EOF or reset) within the read timeout, skipping
/// any reply it sent first.
pub fn is_closed(s: &mut UnixStream) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

/// Panics unless the server closes the connection (see [`is_closed`]).
pub fn assert_closed(s: &mut UnixStream, what: &str) {
    assert!(
        is_closed(s),
        "{what}: the shim neither closed the connection nor answered"
    );
}

/// The ttrpc status of a call that must fail; panics if it succeeded or got no status.
pub fn rpc_status<M: std::fmt::Debug>(what: &str, r: ttrpc::Result<M>) -> ttrpc::Status {
    match r {
        Err(ttrpc::Error::RpcStatus(s)) => s,
        Err(other) => panic!("{what}: not a ttrpc status: {other:?}"),
        Ok(m) => panic!("{what}: succeeded: {m:?}"),
    }
}

/// An exec process spec (`specs.Process` JSON) in an `Any`, as containerd sends it.
pub fn process_spec(args: &[&str], terminal: bool) -> tether_protocol::api::Any {
    let spec = serde_json::json!({
        "args": args,
        "cwd": "/",
        "env": ["PATH=/bin"],
        "user": {"uid": 0, "gid": 0},
        "terminal": terminal,
    });
    tether_protocol::api::Any {
        type_url: "types.containerd.io/opencontainers/runtime-spec/1/Process".into(),
        value: serde_json::to_vec(&spec).expect("encode process spec"),
        ..Default::default()
    }
}
