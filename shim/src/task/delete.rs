//! `Delete`: of an exec, it leaves the table at once; of a container, `runc delete --force`
//! (which kills an init that was created but never started), then the container's stdio, OOM
//! watch and rootfs go and `TaskDelete` is published.

use super::call::Then;
use super::exec::exec_spec_path;
use super::{encode, find, not_found, Ctx, Flow, Service};
use crate::error::{Result, ShimError};
use protobuf::MessageField;
use tether_protocol::api::events::TaskDelete;
use tether_protocol::api::task::{DeleteRequest, DeleteResponse};
use tether_protocol::time::{now_nanos, to_timestamp};
use tether_protocol::topics;

pub fn delete_response(pid: u32, status: u32, at: i64) -> DeleteResponse {
    DeleteResponse {
        pid,
        exit_status: status,
        exited_at: MessageField::some(to_timestamp(at)),
        ..Default::default()
    }
}

impl Service {
    pub(super) fn delete(&mut self, req: DeleteRequest, ctx: Ctx) -> Flow {
        let begun = (|| -> Result<Flow> {
            Self::check_exec_id(&req.exec_id)?;
            if !req.exec_id.is_empty() {
                return self
                    .delete_exec(&req.id, &req.exec_id)
                    .map(|r| Flow::Done(Ok(r)));
            }
            let c = find(&mut self.containers, &req.id)?;
            c.init.check_delete()?;
            if c.restore_from.is_some() {
                // Never restored: the runtime has no such container.
                return Ok(Flow::Done(self.finish_delete(&req.id)));
            }
            if !c.init.is_stopped() {
                // Created, never started: the runtime kills the init (its exit is real, and no
                // other process can have joined it).
                c.kill_all_on_exit = false;
                let call = c.runtime.delete(&c.id, true)?;
                return Ok(self.park(ctx, call, Then::DeleteCreated { id: req.id }));
            }
            let call = c.runtime.delete(&c.id, true)?;
            Ok(self.park(ctx, call, Then::Delete { id: req.id }))
        })();
        begun.unwrap_or_else(|e| Flow::Done(Err(e)))
    }

    fn delete_exec(&mut self, id: &str, exec_id: &str) -> Result<Vec<u8>> {
        let c = find(&mut self.containers, id)?;
        c.process(exec_id)?.check_delete()?;
        let Some(mut p) = c.execs.remove(exec_id) else {
            return Err(ShimError::NotFound(format!(
                "container {id}: no exec {exec_id:?}"
            )));
        };
        let _ = std::fs::remove_file(exec_spec_path(&c.bundle, exec_id));
        let _ = std::fs::remove_file(c.exit_file(exec_id));
        self.pumps.close(&mut p.io);
        let (status, at) = p.exit().unwrap_or((0, 0));
        encode(&delete_response(p.wire_pid(), status, at))
    }

    /// `runc delete --force` of a stopped container exited.
    pub(super) fn deleted(&mut self, id: &str, result: Result<String>) -> Result<Vec<u8>> {
        if let Err(e) = result {
            log::warn!("container {id}: {e}");
        }
        self.finish_delete(id)
    }

    /// `runc delete --force` of a created, never started, container exited.
    pub(super) fn deleted_created(&mut self, id: &str, result: Result<String>) -> Result<Vec<u8>> {
        result?;
        // The runtime waited for the init to die, which our reaper made happen: its exit is
        // normally in by now. If it is not, it was SIGKILLed.
        let stopped = self.containers.get(id).is_none_or(|c| c.init.is_stopped());
        if !stopped {
            self.on_exit(id, "", 128 + libc::SIGKILL as u32, now_nanos());
        }
        self.finish_delete(id)
    }

    /// Drops an exited container nobody will delete (its bundle is gone), as `Delete` would.
    pub(super) fn forget_container(&mut self, id: &str) -> Result<()> {
        self.finish_delete(id).map(|_| ())
    }

    /// The container's last step: its stdio, OOM watch and rootfs go, then `/tasks/delete`.
    fn finish_delete(&mut self, id: &str) -> Result<Vec<u8>> {
        if self.containers.get(id).is_some_and(|c| c.init_exit_held) {
            // Never lose an exit: one still held (an exec that would not die) goes out now.
            if let Some(c) = self.containers.get_mut(id) {
                c.init_exit_held = false;
                c.killing_all = false;
            }
            self.publish_exit(id, "");
        }
        let Some(mut c) = self.containers.remove(id) else {
            return Err(not_found(id));
        };
        self.unwatch_oom(&c.id);
        self.pumps.close(&mut c.init.io);
        for p in c.execs.values_mut() {
            self.pumps.close(&mut p.io);
        }
        if c.rootfs_mounted {
            crate::mount::unmount_all(&c.rootfs())?;
        }
        let (status, at) = c.init.exit().unwrap_or((0, 0));
        let pid = c.init.wire_pid();
        self.publisher.publish(
            &self.registry,
            topics::TASK_DELETE,
            &TaskDelete {
                container_id: c.id.clone(),
                pid,
                exit_status: status,
                exited_at: MessageField::some(to_timestamp(at)),
                id: c.id.clone(),
                ..Default::default()
            },
        );
        log::info!("container {}: deleted (exit status {status})", c.id);
        encode(&delete_response(pid, status, at))
    }
}
