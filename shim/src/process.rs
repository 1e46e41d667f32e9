//! The life cycle of one process (a container's init or an exec), as a state machine.
//!
//! Each transition is a method that returns the error for an illegal move, so a request can
//! never, say, start a stopped process or pause an exec.

use crate::error::{Result, ShimError};
use crate::pid::Pid;
use crate::stdio::{ProcessIo, StdioPaths};
use tether_protocol::api::task::Status;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Created by the runtime (init) or added (exec), not started.
    Created,
    Running,
    Paused,
    Stopped {
        status: u32,
        at: i64,
    },
}

#[derive(Debug)]
pub struct Process {
    /// Empty for the init process.
    pub exec_id: String,
    /// Known once the runtime created it (init) or started it (exec); never a placeholder.
    pub pid: Option<Pid>,
    pub state: State,
    pub stdio: StdioPaths,
    pub io: ProcessIo,
    /// The pty master, for a process with a terminal.
    pub console: Option<std::os::fd::OwnedFd>,
}

impl Process {
    pub fn new(exec_id: &str, stdio: StdioPaths) -> Self {
        Process {
            exec_id: exec_id.to_string(),
            pid: None,
            state: State::Created,
            stdio,
            io: ProcessIo::default(),
            console: None,
        }
    }

    fn name(&self) -> String {
        if self.exec_id.is_empty() {
            "init process".to_string()
        } else {
            format!("exec {:?}", self.exec_id)
        }
    }

    fn refuse(&self, action: &str) -> ShimError {
        let state = match self.state {
            State::Created => "created",
            State::Running => "running",
            State::Paused => "paused",
            State::Stopped { .. } => "stopped",
        };
        ShimError::FailedPrecondition(format!("cannot {action} {}: it is {state}", self.name()))
    }

    /// containerd's view of the state.
    pub fn status(&self) -> Status {
        match self.state {
            State::Created => Status::CREATED,
            State::Running => Status::RUNNING,
            State::Paused => Status::PAUSED,
            State::Stopped { .. } => Status::STOPPED,
        }
    }

    pub fn check_start(&self) -> Result<()> {
        match self.state {
            State::Created => Ok(()),
            _ => Err(self.refuse("start")),
        }
    }

    pub fn started(&mut self, pid: Pid) -> Result<()> {
        self.check_start()?;
        self.pid = Some(pid);
        self.state = State::Running;
        Ok(())
    }

    /// Records the exit. Returns false if the process had already exited (never twice).
    pub fn exited(&mut self, status: u32, at: i64) -> bool {
        match self.state {
            State::Stopped { .. } => false,
            _ => {
                self.state = State::Stopped { status, at };
                true
            }
        }
    }

    pub fn exit(&self) -> Option<(u32, i64)> {
        match self.state {
            State::Stopped { status, at } => Some((status, at)),
            _ => None,
        }
    }

    pub fn is_stopped(&self) -> bool {
        self.exit().is_some()
    }

    pub fn check_pause(&self) -> Result<()> {
        match self.state {
            State::Running => Ok(()),
            _ => Err(self.refuse("pause")),
        }
    }

    pub fn paused(&mut self) -> Result<()> {
        self.check_pause()?;
        self.state = State::Paused;
        Ok(())
    }

    pub fn check_resume(&self) -> Result<()> {
        match self.state {
            State::Paused => Ok(()),
            _ => Err(self.refuse("resume")),
        }
    }

    pub fn resumed(&mut self) -> Result<()> {
        self.check_resume()?;
        self.state = State::Running;
        Ok(())
    }

    /// A process can be deleted once it has exited, or before it was ever started.
    pub fn check_delete(&self) -> Result<()> {
        match self.state {
            State::Stopped { .. } | State::Created => Ok(()),
            _ => Err(self.refuse("delete")),
        }
    }

    /// Signals can reach a process that runs (or is paused, or created by the runtime: runc can
    /// kill those), never one that has no pid yet.
    pub fn check_kill(&self) -> Result<Pid> {
        match self.state {
            State::Stopped { .. } => Err(ShimError::NotFound(format!(
                "{} has already exited",
                self.name()
            ))),
            _ => self.require_pid("signal"),
        }
    }

    /// The pid, or FailedPrecondition for a process that has not been started.
    pub fn require_pid(&self, action: &str) -> Result<Pid> {
        self.pid.ok_or_else(|| {
            ShimError::FailedPrecondition(format!(
                "cannot {action} {}: it has not been started",
                self.name()
            ))
        })
    }

    /// The wire form of the pid (0 before the process exists).
    pub fn wire_pid(&self) -> u32 {
        crate::pid::wire(self.pid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions_are_checked() {
        let mut p = Process::new("", StdioPaths::default());
        assert_eq!(p.status(), Status::CREATED);
        assert!(p.paused().is_err());
        assert!(p.check_kill().is_err(), "no pid, no signal");
        let pid = |n| Pid::new(n).unwrap();
        p.started(pid(10)).unwrap();
        assert_eq!(p.check_kill().unwrap(), pid(10));
        assert!(p.started(pid(11)).is_err());
        assert!(p.check_delete().is_err());
        p.paused().unwrap();
        assert_eq!(p.status(), Status::PAUSED);
        p.resumed().unwrap();
        assert!(p.exited(137, 5));
        assert!(!p.exited(0, 6), "an exit is recorded once");
        assert_eq!(p.exit(), Some((137, 5)));
        assert!(p.check_kill().is_err());
        p.check_delete().unwrap();
        let e = p.resumed().unwrap_err().to_string();
        assert_eq!(e, "cannot resume init process: it is stopped");
    }
}
