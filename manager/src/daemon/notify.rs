//! Readiness for a service manager: `tether daemon` as a `Type=notify` systemd unit sends
//! `READY=1` once it serves its socket, and `STOPPING=1` when it stops, over the datagram socket
//! systemd named in `NOTIFY_SOCKET` (taken out of the environment at start, so that no shim or
//! runtime inherits it).

use std::ffi::OsString;
use std::os::unix::net::UnixDatagram;

/// Where to send the daemon's state, if a service manager asked for it.
pub struct Notifier {
    socket: Option<OsString>,
}

impl Notifier {
    pub fn new(socket: Option<OsString>) -> Notifier {
        Notifier { socket }
    }

    /// Sends `state` (`READY=1`, ...). Not being able to is logged, never fatal: the daemon
    /// serves either way, and systemd reports a unit that never became ready.
    pub fn send(&self, state: &str) {
        let Some(socket) = &self.socket else { return };
        if let Err(e) = send_to(socket, state) {
            log::warn!("cannot notify the service manager at {socket:?}: {e}");
        }
    }
}

fn send_to(socket: &OsString, state: &str) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = socket.as_bytes();
    let sock = UnixDatagram::unbound()?;
    match bytes.strip_prefix(b"@") {
        // systemd may name an abstract socket; it is the service manager's, not one of ours.
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            sock.send_to_addr(state.as_bytes(), &addr)?;
        }
        None if bytes.starts_with(b"/") => {
            sock.send_to(state.as_bytes(), std::path::Path::new(socket))?;
        }
        None => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "NOTIFY_SOCKET is neither a path nor an abstract name",
            ))
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_the_state_to_the_named_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let rx = UnixDatagram::bind(&path).unwrap();
        Notifier::new(Some(path.clone().into_os_string())).send("READY=1");
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
    }

    #[test]
    fn a_missing_socket_is_not_fatal() {
        Notifier::new(Some("/nonexistent/notify".into())).send("READY=1");
        Notifier::new(Some("relative".into())).send("READY=1");
        Notifier::new(None).send("READY=1");
    }
}
