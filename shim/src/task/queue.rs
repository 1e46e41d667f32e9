//! Requests that change a container keep their order: one runs at a time per container, the
//! rest queue behind it (bounded), and a request still queued at its deadline is answered
//! `DeadlineExceeded`. Requests past their deadline while a runtime command runs kill it.

use super::{decode, not_found, Ctx, Flow, ReplyTo, Service};
use crate::error::ShimError;
use std::collections::VecDeque;
use std::time::Instant;
use tether_protocol::api::task::*;
use tether_protocol::validate_id;

/// Requests queued behind one container's operation in flight.
pub const MAX_QUEUED_PER_CONTAINER: usize = 128;

/// A request waiting for its container's operation in flight to end.
pub(super) struct Queued {
    method: String,
    payload: Vec<u8>,
    pub(super) from: ReplyTo,
    deadline: Instant,
}

/// The container a request of an ordered method is about (`None`: not an ordered method).
pub(super) fn ordered_id(method: &str, payload: &[u8]) -> Option<crate::error::Result<String>> {
    macro_rules! id_of {
        ($t:ty) => {
            decode::<$t>(method, payload).map(|r| r.id)
        };
    }
    Some(match method {
        "Create" => id_of!(CreateTaskRequest),
        "Start" => id_of!(StartRequest),
        "Delete" => id_of!(DeleteRequest),
        "Pause" => id_of!(PauseRequest),
        "Resume" => id_of!(ResumeRequest),
        "Update" => id_of!(UpdateTaskRequest),
        "Checkpoint" => id_of!(CheckpointTaskRequest),
        _ => return None,
    })
}

impl Service {
    /// A request that changes a container: run now if nothing is in flight for it, else queue.
    pub(super) fn ordered(
        &mut self,
        id: String,
        method: &str,
        payload: &[u8],
        from: ReplyTo,
        deadline: Instant,
    ) -> Flow {
        if let Err(e) = validate_id(&id) {
            return Flow::Done(Err(e.into()));
        }
        if method != "Create" && !self.containers.contains_key(&id) && !self.creating.contains(&id)
        {
            return Flow::Done(Err(not_found(&id)));
        }
        if self.busy.contains_key(&id) && method == "Delete" {
            self.end_unbounded_calls(&id);
        }
        if let Some(queue) = self.busy.get_mut(&id) {
            if queue.len() >= MAX_QUEUED_PER_CONTAINER {
                return Flow::Done(Err(ShimError::ResourceExhausted(format!(
                    "container {id}: {MAX_QUEUED_PER_CONTAINER} requests already wait for it"
                ))));
            }
            queue.push_back(Queued {
                method: method.to_string(),
                payload: payload.to_vec(),
                from,
                deadline,
            });
            return Flow::Parked;
        }
        self.busy.insert(id.clone(), VecDeque::new());
        let ctx = Ctx {
            reply: Some(from),
            deadline,
            holds: Some(id.clone()),
        };
        match self.run(method, payload, ctx) {
            Flow::Parked => Flow::Parked,
            Flow::Done(r) => {
                self.release(&id);
                Flow::Done(r)
            }
        }
    }

    /// The operation holding container `id` ended: run what queued behind it, in order.
    pub(super) fn release(&mut self, id: &str) {
        loop {
            let Some(q) = self.busy.get_mut(id).and_then(VecDeque::pop_front) else {
                self.busy.remove(id);
                return;
            };
            if q.deadline <= Instant::now() {
                self.answer(Some(q.from), Err(queued_too_long(id, &q.method)));
                continue;
            }
            let ctx = Ctx {
                reply: Some(q.from),
                deadline: q.deadline,
                holds: Some(id.to_string()),
            };
            match self.run(&q.method, &q.payload, ctx) {
                Flow::Parked => return,
                Flow::Done(r) => self.answer(Some(q.from), r),
            }
        }
    }

    /// A Delete came for container `id`: a runtime call in flight for it that has no deadline
    /// (one that could run for ever) is killed, so the Delete queued behind it runs. Its exit
    /// still comes through the reaper and answers its request with the runtime's failure.
    fn end_unbounded_calls(&mut self, id: &str) {
        let now = Instant::now();
        for p in self.calls.values_mut() {
            if !p.expired
                && p.ctx.holds.as_deref() == Some(id)
                && crate::runtime::is_unbounded(p.ctx.deadline, now)
            {
                log::warn!(
                    "container {id}: Delete ends {} (pid {}), which had no deadline",
                    p.call.what,
                    p.call.pid
                );
                p.call.kill();
            }
        }
    }

    /// When the loop must wake for a deadline.
    pub fn next_deadline(&mut self) -> Option<Instant> {
        let abandon = self.abandon_deadline(Instant::now());
        let calls = self
            .calls
            .values()
            .filter(|p| !p.expired)
            .map(|p| p.ctx.deadline);
        let queued = self.busy.values().flatten().map(|q| q.deadline);
        calls
            .chain(queued)
            .chain(self.check_deadline())
            .chain(abandon)
            .min()
    }

    /// Requests past their deadline: a runtime still running is killed (its exit still comes
    /// through the reaper and finishes the operation's clean-up), the client is answered
    /// DeadlineExceeded; a request still queued is answered the same.
    pub fn on_timers(&mut self, now: Instant) {
        self.check_timers(now);
        self.check_abandoned(now);
        let mut late = Vec::new();
        for p in self.calls.values_mut() {
            if !p.expired && p.ctx.deadline <= now {
                p.expired = true;
                p.call.kill();
                log::warn!(
                    "{} (pid {}) ran past its deadline: killed",
                    p.call.what,
                    p.call.pid
                );
                late.push((
                    p.ctx.reply.take(),
                    ShimError::DeadlineExceeded(format!(
                        "{}: no answer before the request's deadline; the runtime was killed",
                        p.call.what
                    )),
                ));
            }
        }
        for (id, queue) in self.busy.iter_mut() {
            queue.retain(|q| {
                let keep = q.deadline > now;
                if !keep {
                    late.push((Some(q.from), queued_too_long(id, &q.method)));
                }
                keep
            });
        }
        for (to, e) in late {
            self.answer(to, Err(e));
        }
    }
}

fn queued_too_long(id: &str, method: &str) -> ShimError {
    ShimError::DeadlineExceeded(format!(
        "container {id}: {method} waited for the container's previous operation past its deadline"
    ))
}
