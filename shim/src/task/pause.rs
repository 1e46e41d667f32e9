//! `Pause` and `Resume`, one the mirror of the other: checked against the init's state, `runc
//! pause`/`resume`, then the state changes and `TaskPaused`/`TaskResumed` is published.

use super::call::Then;
use super::{encode, find, Ctx, Flow, Service};
use crate::error::Result;
use crate::process::Process;
use crate::runtime::{Runtime, RuntimeCall};
use tether_protocol::api::events::{TaskPaused, TaskResumed};
use tether_protocol::api::task::{PauseRequest, ResumeRequest};
use tether_protocol::api::Empty;
use tether_protocol::topics;

/// Which way a container's processes are frozen.
#[derive(Clone, Copy)]
pub(super) enum Freeze {
    Pause,
    Resume,
}

impl Freeze {
    fn check(self, init: &Process) -> Result<()> {
        match self {
            Freeze::Pause => init.check_pause(),
            Freeze::Resume => init.check_resume(),
        }
    }

    fn call(self, runtime: &Runtime, id: &str) -> Result<RuntimeCall> {
        match self {
            Freeze::Pause => runtime.pause(id),
            Freeze::Resume => runtime.resume(id),
        }
    }

    fn apply(self, init: &mut Process) -> Result<()> {
        match self {
            Freeze::Pause => init.paused(),
            Freeze::Resume => init.resumed(),
        }
    }
}

impl Service {
    pub(super) fn pause(&mut self, req: PauseRequest, ctx: Ctx) -> Flow {
        self.freeze(&req.id, Freeze::Pause, ctx)
    }

    pub(super) fn resume(&mut self, req: ResumeRequest, ctx: Ctx) -> Flow {
        self.freeze(&req.id, Freeze::Resume, ctx)
    }

    fn freeze(&mut self, id: &str, how: Freeze, ctx: Ctx) -> Flow {
        let begun = (|| -> Result<Flow> {
            let c = find(&mut self.containers, id)?;
            how.check(&c.init)?;
            let call = how.call(&c.runtime, &c.id)?;
            let id = id.to_string();
            Ok(self.park(ctx, call, Then::Freeze { id, how }))
        })();
        begun.unwrap_or_else(|e| Flow::Done(Err(e)))
    }

    pub(super) fn frozen(
        &mut self,
        id: &str,
        how: Freeze,
        result: Result<String>,
    ) -> Result<Vec<u8>> {
        result?;
        how.apply(&mut find(&mut self.containers, id)?.init)?;
        let container_id = id.to_string();
        match how {
            Freeze::Pause => self.publisher.publish(
                &self.registry,
                topics::TASK_PAUSED,
                &TaskPaused {
                    container_id,
                    ..Default::default()
                },
            ),
            Freeze::Resume => self.publisher.publish(
                &self.registry,
                topics::TASK_RESUMED,
                &TaskResumed {
                    container_id,
                    ..Default::default()
                },
            ),
        }
        encode(&Empty::new())
    }
}
