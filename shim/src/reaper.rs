//! The one place the shim waits for children.
//!
//! The shim is a child subreaper, so every descendant's exit comes here: the container's
//! processes (reparented when `runc create`/`exec` exit) and the runtime commands the shim runs
//! itself. Nothing else calls `waitpid`: the service takes the exits in the order they were
//! reaped and hands each to its owner (a runtime call, a container process), so none is lost or
//! taken twice, and nothing ever waits for one.

use crate::error::{Result, ShimError};
use crate::pid::Pid;
use crate::signals::Signals;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use std::os::fd::RawFd;
use tether_protocol::time::now_nanos;

/// A reaped process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    pub pid: Pid,
    /// The exit code, or 128+N for death by signal N.
    pub status: u32,
    /// When it was reaped, in nanoseconds since the epoch.
    pub at: i64,
}

pub struct Reaper {
    /// SIGCHLD, blocked and read from a signalfd.
    sigchld: Signals,
    pending: Vec<Exit>,
}

impl Reaper {
    /// Makes this process a child subreaper and starts catching SIGCHLD.
    pub fn new() -> Result<Self> {
        nix::sys::prctl::set_child_subreaper(true)
            .map_err(ShimError::nix("prctl(PR_SET_CHILD_SUBREAPER)"))?;
        Ok(Reaper {
            sigchld: Signals::catch(&[Signal::SIGCHLD])?,
            pending: Vec::new(),
        })
    }

    /// The fd the event loop watches: readable after a SIGCHLD.
    pub fn fd(&self) -> RawFd {
        self.sigchld.fd()
    }

    /// Reaps every child that has exited, into `pending`.
    pub fn reap(&mut self) {
        // Pending SIGCHLDs merge into one: the loop below reaps every child that exited.
        self.sigchld.pending();
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => self.push(pid, code as u32),
                Ok(WaitStatus::Signaled(pid, sig, _)) => self.push(pid, 128 + sig as u32),
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => continue,
            }
        }
    }

    fn push(&mut self, pid: nix::unistd::Pid, status: u32) {
        let Some(pid) = Pid::from_nix(pid) else {
            return;
        };
        self.pending.push(Exit {
            pid,
            status,
            at: now_nanos(),
        });
    }

    /// Takes the exits reaped so far, oldest first.
    pub fn take_exits(&mut self) -> Vec<Exit> {
        std::mem::take(&mut self.pending)
    }
}
