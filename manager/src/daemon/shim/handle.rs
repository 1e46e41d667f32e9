//! A shim as the daemon sees it besides its task service (which it calls through
//! `tether_protocol::task_service::TaskCaller`, one connection per call): its process, held by a
//! pidfd, and the socket a dead one leaves behind.

use std::path::Path;
use std::time::Duration;

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
            fd: crate::daemon::monitor::pidfd_open(pid)?,
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
