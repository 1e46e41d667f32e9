//! `Start`: `runc start` of a created container's init (an exec's start is in `exec.rs`, a
//! checkpointed container's in `restore.rs`); when it exits, the init runs and `TaskStart` is
//! published. The init's exit, if it comes first, waits for that event (`Container::starting`).

use super::call::Then;
use super::{encode, find, Ctx, Flow, Service};
use crate::error::Result;
use crate::pid::Pid;
use tether_protocol::api::events::TaskStart;
use tether_protocol::api::task::{StartRequest, StartResponse};
use tether_protocol::topics;

impl Service {
    pub(super) fn start(&mut self, req: StartRequest, ctx: Ctx) -> Flow {
        let begun = (|| -> Result<Flow> {
            Self::check_exec_id(&req.exec_id)?;
            if !req.exec_id.is_empty() {
                return self.begin_start_exec(req, ctx);
            }
            let c = find(&mut self.containers, &req.id)?;
            c.init.check_start()?;
            if c.restore_from.is_some() {
                return self.begin_restore(&req.id, ctx);
            }
            let call = c.runtime.start(&c.id)?;
            c.starting = true;
            Ok(self.park(ctx, call, Then::Start { id: req.id }))
        })();
        begun.unwrap_or_else(|e| Flow::Done(Err(e)))
    }

    pub(super) fn started(&mut self, id: &str, result: Result<String>) -> Result<Vec<u8>> {
        let c = find(&mut self.containers, id)?;
        c.starting = false;
        result?;
        let pid = c.init.require_pid("start")?;
        c.init.started(pid)?;
        self.publish_start(id, pid)
    }

    /// `TaskStart` of the init, and the reply to its `Start` (after a start or a restore).
    pub(super) fn publish_start(&mut self, id: &str, pid: Pid) -> Result<Vec<u8>> {
        self.publisher.publish(
            &self.registry,
            topics::TASK_START,
            &TaskStart {
                container_id: id.to_string(),
                pid: pid.as_u32(),
                ..Default::default()
            },
        );
        encode(&StartResponse {
            pid: pid.as_u32(),
            ..Default::default()
        })
    }
}
