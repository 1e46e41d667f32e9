//! Exits from the reaper, in order: a runtime command's ends its operation (`call.rs`); a
//! container process's is recorded, persisted and published, and answers its `Wait`s; one
//! nobody owns yet is kept while an operation that may claim it (create, start, exec) is in
//! flight. The init's exit is published last: after its OOM, after the container's other
//! processes are gone, and after its execs' exits.

use super::Service;
use crate::pid::Pid;
use protobuf::MessageField;
use tether_protocol::api::events::TaskExit;
use tether_protocol::time::to_timestamp;
use tether_protocol::topics;

/// Exits nobody has claimed yet, kept while a create, start or exec may still claim them.
const MAX_UNCLAIMED: usize = 4096;

impl Service {
    /// Handles every exit the reaper collected.
    pub fn handle_exits(&mut self) {
        let fresh = self.reaper.take_exits();
        if fresh.is_empty() && self.unclaimed.is_empty() {
            return;
        }
        for e in fresh {
            if self.check_exited(&e) {
                continue;
            }
            if let Some(p) = self.take_call(e.pid) {
                self.on_call_exit(p, e.status);
                continue;
            }
            self.unclaimed.push(e);
        }
        // Operations that ended above may have claimed pids (a pid file read, a start done).
        for e in std::mem::take(&mut self.unclaimed) {
            match self.owner(e.pid) {
                Some(Ok((id, exec_id))) => self.on_exit(&id, &exec_id, e.status, e.at),
                Some(Err(())) => self.unclaimed.push(e),
                None if self.may_claim_pid() => self.unclaimed.push(e),
                None => log::debug!(
                    "reaped pid {} (status {}): not a task process",
                    e.pid,
                    e.status
                ),
            }
        }
        if self.unclaimed.len() > MAX_UNCLAIMED {
            let drop = self.unclaimed.len() - MAX_UNCLAIMED;
            log::warn!("{drop} unclaimed exits dropped (bound {MAX_UNCLAIMED})");
            self.unclaimed.drain(..drop);
        }
    }

    /// Which container process `pid` is: `Err` while its container's start is in flight (its
    /// exit is published after the start event).
    fn owner(&self, pid: Pid) -> Option<std::result::Result<(String, String), ()>> {
        self.containers.iter().find_map(|(id, c)| {
            c.exec_id_of(pid).map(|e| {
                if e.is_empty() && c.starting {
                    Err(())
                } else {
                    Ok((id.clone(), e))
                }
            })
        })
    }

    /// A container process exited: recorded, persisted, then published (the init's after its
    /// OOM, after the container's other processes are gone, and after its execs' exits).
    pub(super) fn on_exit(&mut self, id: &str, exec_id: &str, status: u32, at: i64) {
        let Some(c) = self.containers.get_mut(id) else {
            return;
        };
        let Ok(p) = c.process_mut(exec_id) else {
            return;
        };
        if !p.exited(status, at) {
            return;
        }
        self.pumps.flush(&p.io);
        if let Err(e) = c.persist_exit(exec_id) {
            log::error!("container {id}: cannot persist the exit of {exec_id:?}: {e}");
        }
        if !exec_id.is_empty() {
            self.publish_exit(id, exec_id);
            self.release_held_init_exit(id);
            return;
        }
        // The OOM that killed it is published before its exit.
        self.check_oom(id);
        let Some(c) = self.containers.get_mut(id) else {
            return;
        };
        c.init_exit_held = true;
        if c.kill_all_on_exit && self.kill_all_after_exit(id) {
            return;
        }
        self.after_init_exit(id);
    }

    /// The init is gone and so are the container's other processes (or it owns its PID
    /// namespace): execs do not outlive the init; their exits are published before its own.
    pub(super) fn after_init_exit(&mut self, id: &str) {
        let Some(c) = self.containers.get_mut(id) else {
            return;
        };
        c.killing_all = false;
        for p in c.running_execs() {
            if let Some(pid) = p.pid {
                let _ = pid.signal(nix::sys::signal::Signal::SIGKILL);
            }
        }
        self.release_held_init_exit(id);
    }

    fn release_held_init_exit(&mut self, id: &str) {
        let Some(c) = self.containers.get_mut(id) else {
            return;
        };
        if c.init_exit_held && !c.killing_all && c.running_execs().next().is_none() {
            c.init_exit_held = false;
            self.publish_exit(id, "");
        }
    }

    /// `TaskExit` of a process, and the answer to its `Wait`s.
    pub(super) fn publish_exit(&mut self, id: &str, exec_id: &str) {
        let Some(c) = self.containers.get(id) else {
            return;
        };
        let Ok(p) = c.process(exec_id) else {
            return;
        };
        let Some((status, at)) = p.exit() else {
            return;
        };
        let ev = TaskExit {
            container_id: id.to_string(),
            id: if exec_id.is_empty() {
                id.to_string()
            } else {
                exec_id.to_string()
            },
            pid: p.wire_pid(),
            exit_status: status,
            exited_at: MessageField::some(to_timestamp(at)),
            ..Default::default()
        };
        log::info!(
            "container {id}: process {} (pid {}) exited with {status}",
            ev.id,
            ev.pid
        );
        self.publisher
            .publish(&self.registry, topics::TASK_EXIT, &ev);
        self.answer_waiters(id, exec_id, status, at);
    }
}
