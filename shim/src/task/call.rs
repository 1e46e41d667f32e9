//! Runtime commands in flight. An operation starts a command and parks (`Flow::Parked`) with
//! what it needs to finish (`Then`); when the reaper hands over the command's exit,
//! [`Service::on_call_exit`] runs the operation's second half, in its own module. A request's
//! deadline kills a command that runs too long (`queue.rs`); the command's exit still finishes
//! the step, so clean-up is never skipped.

use super::checkpoint::Checkpointed;
use super::create::Creating;
use super::exec::StartingExec;
use super::pause::Freeze;
use super::{Ctx, Flow, Service};
use crate::console::ConsoleSocket;
use crate::container::read_pid_file;
use crate::error::{Result, ShimError};
use crate::pid::Pid;
use crate::runtime::{ProcessStdio, RuntimeCall, RuntimeConfig};
use crate::stdio::{ProcessIo, Pumps, StdioPaths, Who};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long clean-up commands the shim runs on its own may take (no request's deadline).
pub(super) const CLEANUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Runtime commands in flight that do not hold a container's queue (Kill, Pids, clean-ups).
const MAX_UNQUEUED_CALLS: usize = 64;

/// A runtime command in flight and the operation waiting for it.
pub(super) struct Parked {
    pub(super) ctx: Ctx,
    pub(super) call: RuntimeCall,
    then: Then,
    /// Its deadline passed: killed and answered already.
    pub(super) expired: bool,
}

/// What to do when the runtime command exits.
pub(super) enum Then {
    Create(Box<Creating>),
    /// `runc delete --force` after a failed create; then the create's error is the reply.
    UndoCreate {
        id: String,
        error: ShimError,
    },
    Start {
        id: String,
    },
    /// `runc restore` of a container created from a checkpoint.
    Restore {
        id: String,
        console: Option<ConsoleSocket>,
    },
    StartExec(Box<StartingExec>),
    Kill,
    /// The container's other processes were killed after its init exited.
    KillAllOnExit {
        id: String,
    },
    /// The runtime killed a created, never started, init.
    DeleteCreated {
        id: String,
    },
    /// The runtime removed a stopped container.
    Delete {
        id: String,
    },
    Freeze {
        id: String,
        how: Freeze,
    },
    Update {
        path: PathBuf,
    },
    Checkpoint(Checkpointed),
    Pids {
        id: String,
    },
}

impl Then {
    /// Whether this step may give a process its pid (so an exit reaped meanwhile may be its).
    pub(super) fn may_claim_pid(&self) -> bool {
        matches!(
            self,
            Then::Create(_) | Then::Start { .. } | Then::StartExec(_)
        )
    }
}

impl Service {
    /// Parks `then` on `call`.
    pub(super) fn park(&mut self, ctx: Ctx, call: RuntimeCall, then: Then) -> Flow {
        self.calls.insert(
            call.pid,
            Parked {
                ctx,
                call,
                then,
                expired: false,
            },
        );
        Flow::Parked
    }

    /// Room for a runtime command that holds no container queue (a bound on what a peer can
    /// make the shim run at once).
    pub(super) fn unqueued_room(&self) -> Result<()> {
        let n = self
            .calls
            .values()
            .filter(|p| p.ctx.holds.is_none())
            .count();
        if n >= MAX_UNQUEUED_CALLS {
            return Err(ShimError::ResourceExhausted(format!(
                "{n} runtime commands are already running"
            )));
        }
        Ok(())
    }

    /// Whether a runtime command in flight may still give a process its pid.
    pub(super) fn may_claim_pid(&self) -> bool {
        self.calls.values().any(|p| p.then.may_claim_pid())
    }

    /// The runtime command `pid` of an operation, if it is one: its parked operation.
    pub(super) fn take_call(&mut self, pid: Pid) -> Option<Parked> {
        self.calls.remove(&pid)
    }

    /// A runtime command exited: the operation's next step.
    pub(super) fn on_call_exit(&mut self, p: Parked, status: u32) {
        let Parked {
            ctx, call, then, ..
        } = p;
        let (reply, holds) = (ctx.reply, ctx.holds.clone());
        let result = call.finish(status);
        let flow = match then {
            Then::Create(creating) => self.created(*creating, result, ctx),
            Then::UndoCreate { id, error } => Flow::Done(self.create_undone(&id, error, result)),
            Then::Start { id } => Flow::Done(self.started(&id, result)),
            Then::Restore { id, console } => Flow::Done(self.restored(&id, console, result)),
            Then::StartExec(s) => Flow::Done(self.exec_started(*s, result)),
            Then::Kill => Flow::Done(self.killed(result)),
            Then::KillAllOnExit { id } => Flow::Done(self.killed_all(&id, result)),
            Then::DeleteCreated { id } => Flow::Done(self.deleted_created(&id, result)),
            Then::Delete { id } => Flow::Done(self.deleted(&id, result)),
            Then::Freeze { id, how } => Flow::Done(self.frozen(&id, how, result)),
            Then::Update { path } => Flow::Done(self.updated(&path, result)),
            Then::Checkpoint(c) => Flow::Done(self.checkpointed(c, result)),
            Then::Pids { id } => Flow::Done(self.listed(&id, result)),
        };
        if let Flow::Done(r) = flow {
            self.answer(reply, r);
            if let Some(id) = &holds {
                self.release(id);
            }
        }
    }
}

/// Opens a process's stdio (pipes and FIFOs, or a console socket for a terminal) and starts
/// the runtime command that makes the process (create, restore, exec). On failure nothing is
/// left open.
pub(super) fn launch(
    pumps: &mut Pumps,
    stdio: &StdioPaths,
    who: &Who,
    run: impl FnOnce(Option<&Path>, ProcessStdio) -> Result<RuntimeCall>,
) -> Result<(ProcessIo, Option<ConsoleSocket>, RuntimeCall)> {
    if stdio.terminal {
        let socket = ConsoleSocket::new()?;
        let call = run(Some(&socket.path), ProcessStdio::default())?;
        // The pumps open once the runtime sent the terminal's master.
        return Ok((ProcessIo::default(), Some(socket), call));
    }
    let (mut io, runtime_stdio) = pumps.open(stdio, who)?;
    match run(None, runtime_stdio) {
        Ok(call) => Ok((io, None, call)),
        Err(e) => {
            pumps.close(&mut io);
            Err(e)
        }
    }
}

/// The runtime command `launch` started exited: the process's terminal master (when it has
/// one, its pumps replace `io`) and its pid from `pid_file`. On failure `io` is closed.
pub(super) fn launched(
    pumps: &mut Pumps,
    result: Result<String>,
    console: Option<&ConsoleSocket>,
    stdio: &StdioPaths,
    pid_file: &Path,
    io: &mut ProcessIo,
    who: &Who,
) -> Result<(Pid, Option<OwnedFd>)> {
    let made = result.and_then(|_| {
        let master = match console {
            Some(socket) => {
                let master = socket.receive_master()?;
                *io = pumps.open_terminal(stdio, &master, who)?;
                Some(master)
            }
            None => None,
        };
        Ok((read_pid_file(pid_file)?, master))
    });
    if made.is_err() {
        pumps.close(io);
    }
    made
}

/// Who owns a process's stdio: the `IoUid`/`IoGid` runtime options, none when both are 0
/// (root keeps the pipes).
pub(super) fn who<'a>(namespace: &'a str, id: &'a str, config: &RuntimeConfig) -> Who<'a> {
    Who {
        namespace,
        id,
        owner: stdio_owner(config),
    }
}

/// The `IoUid`/`IoGid` owner of a process's stdio, none when both are 0.
pub(super) fn stdio_owner(config: &RuntimeConfig) -> Option<(u32, u32)> {
    (config.io_uid != 0 || config.io_gid != 0).then_some((config.io_uid, config.io_gid))
}
