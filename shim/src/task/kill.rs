//! `Kill`: an exec is signalled directly (its pid is ours); the init through `runc kill` (with
//! `--all`, every process of the container). Also the shim's own `kill --all` when the init of
//! a container sharing a PID namespace exits (its other processes must not outlive it).

use super::call::{Then, CLEANUP_TIMEOUT};
use super::{encode, find, Ctx, Flow, Service};
use crate::error::{Result, ShimError};
use std::time::Instant;
use tether_protocol::api::task::KillRequest;
use tether_protocol::api::Empty;

impl Service {
    pub(super) fn kill(&mut self, req: KillRequest, ctx: Ctx) -> Flow {
        let begun = (|| -> Result<Flow> {
            Self::check_exec_id(&req.exec_id)?;
            if req.signal == 0 || req.signal > 64 {
                return Err(ShimError::InvalidArgument(format!(
                    "container {}: invalid signal {}",
                    req.id, req.signal
                )));
            }
            let sig = nix::sys::signal::Signal::try_from(req.signal as i32).ok();
            self.unqueued_room()?;
            let c = find(&mut self.containers, &req.id)?;
            let p = c.process(&req.exec_id)?;
            if !req.exec_id.is_empty() {
                let pid = p.check_kill()?;
                let sig = sig.ok_or_else(|| {
                    ShimError::InvalidArgument(format!(
                        "container {}: signal {} cannot be sent to an exec",
                        req.id, req.signal
                    ))
                })?;
                pid.signal(sig)
                    .map_err(ShimError::nix(format!(
                        "container {}: kill exec {} (pid {pid})",
                        req.id, req.exec_id
                    )))
                    .map_err(already_gone)?;
                return Ok(Flow::Done(encode(&Empty::new())));
            }
            // After the init exited, `all` still reaches the processes left in the container
            // (until it is deleted), as with containerd's shim.
            if !(req.all && p.is_stopped()) {
                p.check_kill()?;
            }
            let call = c.runtime.kill(&c.id, req.signal, req.all)?;
            Ok(self.park(ctx, call, Then::Kill))
        })();
        begun.unwrap_or_else(|e| Flow::Done(Err(e)))
    }

    /// `runc kill` exited.
    pub(super) fn killed(&mut self, result: Result<String>) -> Result<Vec<u8>> {
        result.map_err(already_gone)?;
        encode(&Empty::new())
    }

    /// The init exited in a container that shares its PID namespace: its other processes are
    /// killed (`kill --all`) before the exit is published. False if that cannot be started.
    pub(super) fn kill_all_after_exit(&mut self, id: &str) -> bool {
        if self.unqueued_room().is_err() {
            log::warn!("container {id}: too many runtime commands to kill its processes");
            return false;
        }
        let Some(c) = self.containers.get_mut(id) else {
            return false;
        };
        match c.runtime.kill(id, libc::SIGKILL as u32, true) {
            Ok(call) => {
                c.killing_all = true;
                let ctx = Ctx {
                    reply: None,
                    deadline: Instant::now() + CLEANUP_TIMEOUT,
                    holds: None,
                };
                self.park(ctx, call, Then::KillAllOnExit { id: id.to_string() });
                true
            }
            Err(e) => {
                log::warn!("container {id}: cannot kill its processes after its init exited: {e}");
                false
            }
        }
    }

    /// That `kill --all` exited: the init's exit can go out.
    pub(super) fn killed_all(&mut self, id: &str, result: Result<String>) -> Result<Vec<u8>> {
        if let Err(e) = result {
            log::warn!("container {id}: killing its processes after its init exited: {e}");
        }
        self.after_init_exit(id);
        Ok(Vec::new())
    }
}

/// A kill that found its process already gone is `NotFound`, as containerd's shim reports it
/// (`checkKillError`): containerd's CRI then takes the container as stopped, where any other
/// error fails StopContainer/StopPodSandbox. The init can exit between our state check and the
/// runtime's, and runc then says "container not running".
pub(super) fn already_gone(e: ShimError) -> ShimError {
    let gone = |m: &str| {
        m.contains("container not running")
            || m.contains("process already finished")
            || m.to_lowercase().contains("no such process")
            || m.contains("does not exist")
    };
    match e {
        ShimError::Runtime(m) if gone(&m) => {
            ShimError::NotFound(format!("process already finished: {m}"))
        }
        ShimError::Io { context, source } if source.raw_os_error() == Some(libc::ESRCH) => {
            ShimError::NotFound(format!("process already finished: {context}: {source}"))
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_runtimes_words_for_a_gone_process_are_not_found() {
        for m in [
            "runc kill failed: container not running",
            "kill: No such process",
            "container \"c1\" does not exist",
            "os: process already finished",
        ] {
            let e = already_gone(ShimError::Runtime(m.into()));
            assert!(matches!(e, ShimError::NotFound(_)), "{m}: {e:?}");
            assert!(e.to_string().contains(m), "{e}");
        }
        let esrch = ShimError::nix("kill exec e1 (pid 42)")(nix::Error::ESRCH);
        assert!(matches!(already_gone(esrch), ShimError::NotFound(_)));
        for e in [
            ShimError::Runtime("permission denied".into()),
            ShimError::nix("kill")(nix::Error::EPERM),
            ShimError::InvalidArgument("container not running".into()),
        ] {
            let code = e.code();
            assert_eq!(already_gone(e).code(), code, "left as it was");
        }
    }
}
