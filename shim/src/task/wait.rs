//! `Wait`: answered at once for a process that has exited (an init whose exit event is held
//! still waits), else parked until `exits.rs` publishes the exit.

use super::{encode, Ctx, Flow, ReplyTo, Service};
use crate::error::{Result, ShimError};
use protobuf::MessageField;
use tether_protocol::api::task::{WaitRequest, WaitResponse};
use tether_protocol::time::to_timestamp;

/// Parked `Wait`s across all clients.
pub const MAX_WAITERS: usize = 4096;

pub(super) struct Waiter {
    pub(super) to: ReplyTo,
    pub(super) container: String,
    pub(super) exec_id: String,
}

fn wait_response(status: u32, at: i64) -> Result<Vec<u8>> {
    encode(&WaitResponse {
        exit_status: status,
        exited_at: MessageField::some(to_timestamp(at)),
        ..Default::default()
    })
}

impl Service {
    pub(super) fn wait(&mut self, req: WaitRequest, ctx: Ctx) -> Flow {
        match self.try_wait(req, ctx) {
            Ok(Some(bytes)) => Flow::Done(Ok(bytes)),
            Ok(None) => Flow::Parked,
            Err(e) => Flow::Done(Err(e)),
        }
    }

    fn try_wait(&mut self, req: WaitRequest, ctx: Ctx) -> Result<Option<Vec<u8>>> {
        Self::check_exec_id(&req.exec_id)?;
        let c = self.container(&req.id)?;
        let p = c.process(&req.exec_id)?;
        match p.exit() {
            Some((status, at)) if !(req.exec_id.is_empty() && c.init_exit_held) => {
                Ok(Some(wait_response(status, at)?))
            }
            _ => {
                if self.waiters.len() >= MAX_WAITERS {
                    return Err(ShimError::ResourceExhausted(format!(
                        "container {}: {MAX_WAITERS} waits are already parked",
                        req.id
                    )));
                }
                // No client to answer (it went away): nothing to park.
                let Some(to) = ctx.reply else {
                    return Ok(None);
                };
                self.waiters.push(Waiter {
                    to,
                    container: req.id,
                    exec_id: req.exec_id,
                });
                Ok(None)
            }
        }
    }

    /// The `Wait`s of a process whose exit was just published get their answer.
    pub(super) fn answer_waiters(&mut self, id: &str, exec_id: &str, status: u32, at: i64) {
        let reply = wait_response(status, at);
        let (done, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waiters)
            .into_iter()
            .partition(|w| w.container == id && w.exec_id == exec_id);
        self.waiters = rest;
        for w in done {
            self.outbox.push((
                w.to,
                reply
                    .as_ref()
                    .map(Clone::clone)
                    .map_err(|e| ShimError::InvalidArgument(e.to_string())),
            ));
        }
    }
}
