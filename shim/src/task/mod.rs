//! The task API, one file per operation. A request goes, top to bottom:
//!
//! 1. `dispatch` (here): decode, then run now or queue behind the container's operation in
//!    flight (`queue.rs`);
//! 2. the operation's module (`create.rs`, `start.rs`, `exec.rs`, `kill.rs`, ...): the request is
//!    checked against the process state machine (`process.rs`), a runtime command starts and the
//!    request parks (`call.rs`) with what it needs to finish;
//! 3. the command's exit comes from the reaper (`exits.rs`) and runs the operation's second half,
//!    in the same module: the effect on the state, the event, the reply.
//!
//! A container process's exit takes the same road: `exits.rs` records and publishes it and
//! answers the parked `Wait`s (`wait.rs`). Nothing here blocks the loop.

mod abandoned;
mod call;
mod checkpoint;
mod create;
mod delete;
mod exec;
mod exits;
mod handover;
mod io;
mod kill;
mod oom;
mod pause;
mod pids;
mod queue;
mod restore;
mod start;
mod state;
mod update;
mod upgrade;
mod wait;

pub use delete::delete_response;
pub use handover::Exported;
pub use oom::FIRST_OOM;
pub use upgrade::Ready;

use crate::container::Container;
use crate::error::{Result, ShimError};
use crate::events::Publisher;
use crate::oom::OomWatcher;
use crate::pid::Pid;
use crate::reaper::{Exit, Reaper};
use crate::stdio::Pumps;
use call::Parked;
use mio::{Registry, Token};
use protobuf::Message;
use queue::Queued;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::Instant;
use tether_protocol::validate_id;
use wait::Waiter;

/// A reply owed to a client: which connection and stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyTo {
    pub token: Token,
    pub stream_id: u32,
}

/// What a request (or one step of an operation) produced.
pub enum Flow {
    Done(Result<Vec<u8>>),
    /// The reply comes later, through `outbox`: a runtime command is in flight, or the request
    /// waits in its container's queue or for a process's exit.
    Parked,
}

/// Who is owed the reply, by when, and which container's queue the operation holds.
pub struct Ctx {
    pub reply: Option<ReplyTo>,
    pub deadline: Instant,
    pub holds: Option<String>,
}

pub struct Service {
    pub namespace: String,
    /// The one container table every operation works on.
    pub(crate) containers: BTreeMap<String, Container>,
    pub reaper: Reaper,
    pub pumps: Pumps,
    pub publisher: Publisher,
    pub(crate) registry: Registry,
    waiters: Vec<Waiter>,
    /// Replies to parked requests, for the loop to send.
    pub outbox: Vec<(ReplyTo, Result<Vec<u8>>)>,
    /// Set by `Shutdown` once no container is left.
    pub shutdown: bool,
    /// OOM watchers by token, with their container.
    ooms: HashMap<Token, (String, OomWatcher)>,
    next_oom: usize,
    /// Runtime commands in flight, by the command's pid.
    calls: HashMap<Pid, Parked>,
    /// `Shutdown` requests answered once the calls in flight end (`state.rs`).
    shutdown_replies: Vec<ReplyTo>,
    /// Containers with an operation in flight, and the requests queued behind it.
    busy: HashMap<String, VecDeque<Queued>>,
    /// Ids whose `Create` is in flight (not yet in `containers`).
    creating: HashSet<String>,
    /// Exits of pids no process owns yet.
    unclaimed: Vec<Exit>,
    /// A live upgrade's check of the new binary in flight (`upgrade.rs`).
    upgrading: Option<upgrade::Check>,
    /// A live upgrade whose check passed, for the loop to commit once the shim is quiet.
    upgrade_ready: Option<Ready>,
    /// The binary the passed check ran, held open: the handover executes this very file,
    /// whatever is installed at its path meanwhile.
    pub(crate) upgrade_exe: Option<std::os::fd::OwnedFd>,
    /// When a pending upgrade stops waiting for the shim to be quiet.
    quiet_by: Option<Instant>,
    /// When to look next whether the shim was abandoned (`abandoned.rs`).
    abandon_check_at: Option<Instant>,
    /// The wait before that look: doubles while nothing is found.
    abandon_check_every: std::time::Duration,
    /// Requests that would start a runtime call, held while an upgrade is pending.
    deferred: Vec<upgrade::Deferred>,
}

impl Service {
    pub fn new(
        namespace: &str,
        reaper: Reaper,
        pumps: Pumps,
        publisher: Publisher,
        registry: Registry,
    ) -> Self {
        Service {
            namespace: namespace.to_string(),
            containers: BTreeMap::new(),
            reaper,
            pumps,
            publisher,
            registry,
            waiters: Vec::new(),
            outbox: Vec::new(),
            shutdown: false,
            ooms: HashMap::new(),
            next_oom: FIRST_OOM,
            calls: HashMap::new(),
            shutdown_replies: Vec::new(),
            busy: HashMap::new(),
            creating: HashSet::new(),
            unclaimed: Vec::new(),
            upgrading: None,
            upgrade_ready: None,
            upgrade_exe: None,
            abandon_check_at: None,
            abandon_check_every: abandoned::CHECK_EVERY,
            quiet_by: None,
            deferred: Vec::new(),
        }
    }

    /// Handles one task API call; `deadline` is the caller's (or the default).
    pub fn dispatch(
        &mut self,
        method: &str,
        payload: &[u8],
        from: ReplyTo,
        deadline: Instant,
    ) -> Flow {
        if let Some(flow) = self.defer(method, payload, from, deadline) {
            return flow;
        }
        let flow = match queue::ordered_id(method, payload) {
            Some(Err(e)) => Flow::Done(Err(e)),
            Some(Ok(id)) => self.ordered(id, method, payload, from, deadline),
            None => {
                let ctx = Ctx {
                    reply: Some(from),
                    deadline,
                    holds: None,
                };
                self.run(method, payload, ctx)
            }
        };
        self.handle_exits();
        flow
    }

    /// The method's operation. `op!(f)`: `f` takes the context and may park; `op!(now f)`:
    /// `f` answers at once.
    fn run(&mut self, method: &str, payload: &[u8], ctx: Ctx) -> Flow {
        macro_rules! op {
            ($handler:ident) => {
                match decode(method, payload) {
                    Ok(r) => self.$handler(r, ctx),
                    Err(e) => Flow::Done(Err(e)),
                }
            };
            (now $handler:ident) => {
                Flow::Done(
                    decode(method, payload)
                        .and_then(|r| self.$handler(r))
                        .and_then(|r| encode(&r)),
                )
            };
        }
        match method {
            "Create" => op!(create),
            "Start" => op!(start),
            "Delete" => op!(delete),
            "Pause" => op!(pause),
            "Resume" => op!(resume),
            "Update" => op!(update),
            "Checkpoint" => op!(checkpoint),
            "Kill" => op!(kill),
            "Pids" => op!(pids),
            "Wait" => op!(wait),
            "State" => op!(now state),
            "Exec" => op!(now exec),
            "CloseIO" => op!(now close_io),
            "ResizePty" => op!(now resize_pty),
            "Stats" => op!(now stats),
            "Connect" => op!(now connect),
            "Shutdown" => op!(shutdown_req),
            _ => Flow::Done(Err(ShimError::Unimplemented(format!(
                "unknown task method {method:?}"
            )))),
        }
    }

    /// Sends a parked request's reply (none if its client or deadline already went).
    fn answer(&mut self, to: Option<ReplyTo>, r: Result<Vec<u8>>) {
        if let Some(to) = to {
            self.outbox.push((to, r));
        }
    }

    fn container(&mut self, id: &str) -> Result<&Container> {
        find(&mut self.containers, id).map(|c| &*c)
    }

    fn check_exec_id(exec_id: &str) -> Result<()> {
        if exec_id.is_empty() {
            Ok(())
        } else {
            tether_protocol::id::validate("exec id", exec_id).map_err(Into::into)
        }
    }

    /// A client connection went away: nothing is sent to its token again (a new connection
    /// may get the same token).
    pub fn forget(&mut self, token: Token) {
        self.waiters.retain(|w| w.to.token != token);
        self.shutdown_replies.retain(|to| to.token != token);
        for p in self.calls.values_mut() {
            if p.ctx.reply.is_some_and(|r| r.token == token) {
                p.ctx.reply = None;
            }
        }
        for queue in self.busy.values_mut() {
            queue.retain(|q| q.from.token != token);
        }
        self.outbox.retain(|(to, _)| to.token != token);
        self.forget_upgrade(token);
    }

    /// Runtime commands still running (each answers a request or finishes a clean-up).
    pub fn calls_in_flight(&self) -> usize {
        self.calls.len()
    }

    pub fn is_empty(&self) -> bool {
        self.containers.is_empty() && self.creating.is_empty()
    }
}

fn encode<M: Message>(m: &M) -> Result<Vec<u8>> {
    m.write_to_bytes()
        .map_err(|e| ShimError::InvalidArgument(format!("encode reply: {e}")))
}

fn decode<M: Message>(method: &str, payload: &[u8]) -> Result<M> {
    M::parse_from_bytes(payload)
        .map_err(|e| ShimError::InvalidArgument(format!("malformed {method} request: {e}")))
}

fn not_found(id: &str) -> ShimError {
    ShimError::NotFound(format!("container {id}: not found in this shim"))
}

/// The container `id` names (validated first: ids come from outside).
fn find<'a>(
    containers: &'a mut BTreeMap<String, Container>,
    id: &str,
) -> Result<&'a mut Container> {
    validate_id(id)?;
    containers.get_mut(id).ok_or_else(|| not_found(id))
}
