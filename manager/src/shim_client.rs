//! Calls from the daemon to a shim's task service: one connection per call over our own
//! framing (`tether_protocol::wire::call`), so the daemon keeps no client, and no client
//! thread, per container. The shim answers under `containerd.task.v2.Task` or `v3`; which one
//! is learned once, at `Connect`.

use protobuf::Message;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tether_protocol::api::task::{ConnectRequest, ConnectResponse};
use tether_protocol::api::ttrpc::{self, Code};
use tether_protocol::task_service::{TASK_SERVICE_V2, TASK_SERVICE_V3};
use tether_protocol::wire;

/// How much longer than the deadline it gives a shim the daemon waits for the answer: the
/// shim's own bookkeeping after its deadline (killing the runtime, replying).
pub const REPLY_MARGIN: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct ShimClient {
    socket: PathBuf,
    service: &'static str,
}

/// Go's ttrpc answers an unknown service `Unimplemented`, Rust's `InvalidArgument "... does not
/// exist"`.
fn is_unknown_service(e: &ttrpc::Error) -> bool {
    match e {
        ttrpc::Error::RpcStatus(s) => {
            s.code() == Code::UNIMPLEMENTED
                || (s.code() == Code::INVALID_ARGUMENT && s.message().ends_with("does not exist"))
        }
        _ => false,
    }
}

impl ShimClient {
    /// Calls `Connect` on the shim at `address` (`unix:///path` or a path), v2 first.
    pub fn connect(address: &str, timeout: Duration) -> ttrpc::Result<(Self, ConnectResponse)> {
        let socket = tether_protocol::socket::from_address(address).ok_or_else(|| {
            ttrpc::Error::Others(format!("{address:?} is not a unix socket address"))
        })?;
        let mut client = ShimClient {
            socket,
            service: TASK_SERVICE_V2,
        };
        let req = ConnectRequest::default();
        match client.call("Connect", &req, timeout) {
            Ok(resp) => Ok((client, resp)),
            Err(e) if is_unknown_service(&e) => {
                client.service = TASK_SERVICE_V3;
                let resp = client.call("Connect", &req, timeout)?;
                Ok((client, resp))
            }
            Err(e) => Err(e),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Calls `method` with `timeout` as the shim's deadline (`timeout_nano`, which both our
    /// shim and containerd's honour: a runtime call past it is killed and answered
    /// `DeadlineExceeded`), waiting [`REPLY_MARGIN`] longer for the answer, so the daemon
    /// never reports as failed what the shim then does. A zero timeout waits for ever (as
    /// `Wait` must).
    pub fn call<Req: Message, Resp: Message>(
        &self,
        method: &str,
        req: &Req,
        timeout: Duration,
    ) -> ttrpc::Result<Resp> {
        let payload = req
            .write_to_bytes()
            .map_err(|e| ttrpc::Error::Others(format!("encode {method} request: {e}")))?;
        let wait = if timeout.is_zero() {
            Duration::ZERO
        } else {
            timeout + REPLY_MARGIN
        };
        let answer =
            wire::call_with_deadline(&self.socket, self.service, method, payload, timeout, wait)?;
        Resp::parse_from_bytes(&answer)
            .map_err(|e| ttrpc::Error::Others(format!("decode {method} response: {e}")))
    }
}

/// Removes a dead shim's socket file (containerd's Go shim leaves it behind when it is
/// killed): only if nothing listens on it any more.
pub fn remove_dead_socket(socket: &Path) {
    if let Err(e) = std::os::unix::net::UnixStream::connect(socket) {
        if e.kind() == std::io::ErrorKind::ConnectionRefused {
            match std::fs::remove_file(socket) {
                Ok(()) => log::debug!("removed dead shim socket {}", socket.display()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => log::warn!("remove dead shim socket {}: {e}", socket.display()),
            }
        }
    }
}

/// A shim process, held by a pidfd: it can be waited for and killed without racing a reuse of
/// its pid.
pub struct ShimProcess {
    pid: u32,
    fd: std::os::fd::OwnedFd,
}

impl ShimProcess {
    pub fn open(pid: u32) -> std::io::Result<ShimProcess> {
        Ok(ShimProcess {
            pid,
            fd: crate::monitor::pidfd_open(pid)?,
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether the process exited within `timeout` (a zombie counts as exited).
    pub fn wait_exit(&self, timeout: Duration) -> bool {
        use std::os::fd::AsRawFd;
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let mut pfd = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = left.as_millis().min(i32::MAX as u128) as i32;
            // SAFETY: one valid pollfd for the duration of the call.
            let n = unsafe { libc::poll(&mut pfd, 1, ms) };
            if n > 0 {
                return true;
            }
            if n == 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
                return n > 0;
            }
        }
    }

    /// SIGKILLs the process (a no-op if it is gone).
    pub fn kill(&self) {
        use std::os::fd::AsRawFd;
        // SAFETY: a plain system call on a pidfd we own.
        let r = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.fd.as_raw_fd(),
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if r < 0 {
            log::debug!(
                "kill shim {}: {}",
                self.pid,
                std::io::Error::last_os_error()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixListener;
    use tether_protocol::api::task::StateRequest;
    use ttrpc::proto::{MessageHeader, MESSAGE_HEADER_LENGTH};

    /// A shim that takes the whole deadline it was given before answering (as one whose runtime
    /// call ran until killed at the deadline would): the daemon still gets its answer, and the
    /// shim was told the daemon's deadline.
    #[test]
    fn the_answer_at_the_shims_deadline_still_reaches_the_daemon() {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("shim.sock");
        let listener = UnixListener::bind(&socket).expect("bind");
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().expect("accept");
            let mut header = [0u8; MESSAGE_HEADER_LENGTH];
            conn.read_exact(&mut header).expect("header");
            let h = MessageHeader::from(&header[..]);
            let mut body = vec![0u8; h.length as usize];
            conn.read_exact(&mut body).expect("body");
            let req = ttrpc::Request::parse_from_bytes(&body).expect("request");
            let told = Duration::from_nanos(u64::try_from(req.timeout_nano).unwrap_or(0));
            // Past the deadline the shim was given (the client waits a margin longer).
            std::thread::sleep(told + Duration::from_millis(300));
            let resp = ttrpc::Response {
                payload: ConnectResponse::default().write_to_bytes().expect("encode"),
                ..Default::default()
            };
            let bytes = resp.write_to_bytes().expect("encode response");
            conn.write_all(&wire::encode(
                h.stream_id,
                wire::MESSAGE_TYPE_RESPONSE,
                &bytes,
            ))
            .expect("reply");
            told
        });
        let client = ShimClient {
            socket: socket.clone(),
            service: TASK_SERVICE_V2,
        };
        let deadline = Duration::from_millis(200);
        let r: ttrpc::Result<ConnectResponse> =
            client.call("State", &StateRequest::default(), deadline);
        let told = server.join().expect("server");
        assert_eq!(told, deadline, "the shim is told the daemon's deadline");
        assert!(
            r.is_ok(),
            "the daemon gave up before the shim answered: {r:?}"
        );
    }
}
