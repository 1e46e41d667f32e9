//! The one place the shim waits for children.
//!
//! The shim is a child subreaper, so every descendant's exit comes here: the container's
//! processes (reparented when `runc create`/`exec` exit) and the runtime commands the shim runs
//! itself. A command's exit is taken from the same `waitpid(-1)` loop; exits of other pids met
//! meanwhile are kept in `pending` and handled in order afterwards, so none is ever lost or taken
//! twice.

use crate::error::{Result, ShimError};
use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{pipe2, read, Pid};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::process::Command;
use std::time::{Duration, Instant};
use tether_protocol::time::now_nanos;

/// A reaped process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    pub pid: i32,
    /// The exit code, or 128+N for death by signal N.
    pub status: u32,
    /// When it was reaped, in nanoseconds since the epoch.
    pub at: i64,
}

pub struct Reaper {
    /// Read end of the SIGCHLD self-pipe; signal-hook writes a byte per signal.
    sigchld: OwnedFd,
    pending: Vec<Exit>,
}

impl Reaper {
    /// Makes this process a child subreaper and starts catching SIGCHLD.
    pub fn new() -> Result<Self> {
        nix::sys::prctl::set_child_subreaper(true)
            .map_err(ShimError::nix("prctl(PR_SET_CHILD_SUBREAPER)"))?;
        let (r, w) = pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)
            .map_err(ShimError::nix("pipe2 for SIGCHLD"))?;
        signal_hook::low_level::pipe::register(signal_hook::consts::SIGCHLD, w)
            .map_err(ShimError::io("register SIGCHLD handler"))?;
        Ok(Reaper {
            sigchld: r,
            pending: Vec::new(),
        })
    }

    /// The fd the event loop watches: readable after a SIGCHLD.
    pub fn fd(&self) -> RawFd {
        self.sigchld.as_raw_fd()
    }

    /// Reaps every child that has exited, into `pending`.
    pub fn reap(&mut self) {
        let mut buf = [0u8; 64];
        while matches!(read(&self.sigchld, &mut buf), Ok(n) if n > 0) {}
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => self.push(pid, code as u32),
                Ok(WaitStatus::Signaled(pid, sig, _)) => self.push(pid, 128 + sig as u32),
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => continue,
            }
        }
    }

    fn push(&mut self, pid: Pid, status: u32) {
        self.pending.push(Exit {
            pid: pid.as_raw(),
            status,
            at: now_nanos(),
        });
    }

    /// Takes the exits reaped so far, oldest first.
    pub fn take_exits(&mut self) -> Vec<Exit> {
        std::mem::take(&mut self.pending)
    }

    /// Spawns `cmd` and waits for its exit through the reaper. Returns the exit status.
    pub fn run(&mut self, cmd: &mut Command, what: &str, timeout: Duration) -> Result<u32> {
        let child = cmd.spawn().map_err(|e| ShimError::Io {
            context: format!("{what}: cannot execute {:?}", cmd.get_program()),
            source: e,
        })?;
        self.wait_pid(child.id() as i32, what, timeout)
    }

    /// Waits for `pid` (a child) to exit, killing it at the deadline.
    pub fn wait_pid(&mut self, pid: i32, what: &str, timeout: Duration) -> Result<u32> {
        let deadline = Instant::now() + timeout;
        loop {
            self.reap();
            if let Some(i) = self.pending.iter().position(|e| e.pid == pid) {
                return Ok(self.pending.remove(i).status);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                return Err(ShimError::Runtime(format!(
                    "{what}: timed out after {timeout:?}; killed pid {pid}"
                )));
            }
            self.poll_sigchld(left.min(Duration::from_secs(1)));
        }
    }

    /// Sleeps until a SIGCHLD arrives or `timeout` passes.
    pub fn poll_sigchld(&self, timeout: Duration) {
        let ms = timeout.as_millis().clamp(1, 60_000) as u16;
        let mut fds = [PollFd::new(self.sigchld.as_fd(), PollFlags::POLLIN)];
        let _ = poll(&mut fds, PollTimeout::from(ms));
    }
}
