//! The task API: each request is decoded, checked against the process state machine, carried out
//! (through the runtime, see `ops.rs`), and turned into events and replies.
//!
//! Data flows one way: request -> state machine -> effect (runtime, stdio) -> event. Exits come
//! from the reaper and take the same path. Nothing here waits: a request that needs the runtime
//! parks until the runtime's exit arrives (or its deadline passes), `Wait` parks until the
//! process's exit, and requests that change a container queue behind that container's operation
//! in flight, so one container's requests keep their order while everything else goes on.

use crate::error::{Result, ShimError};
use crate::events::Publisher;
use crate::oom::OomWatcher;
use crate::ops::{Ctx, Flow, Parked};
use crate::pid::Pid;
use crate::reaper::{Exit, Reaper};
use crate::stdio::{Pumps, StdioPaths};
use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use protobuf::{Message, MessageField};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::Instant;
use tether_protocol::api::events::{TaskExecAdded, TaskExit, TaskOOM};
use tether_protocol::api::task::*;
use tether_protocol::api::Empty;
use tether_protocol::time::to_timestamp;
use tether_protocol::{topics, validate_id};

use crate::container::Container;
use crate::process::Process;

/// Parked `Wait`s across all clients.
pub const MAX_WAITERS: usize = 4096;
/// Requests queued behind one container's operation in flight.
pub const MAX_QUEUED_PER_CONTAINER: usize = 128;
/// Exits nobody has claimed yet, kept while a create, start or exec may still claim them.
const MAX_UNCLAIMED: usize = 4096;

/// A reply owed to a client: which connection and stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyTo {
    pub token: Token,
    pub stream_id: u32,
}

/// What a request produced.
pub enum Reply {
    Now(Result<Vec<u8>>),
    /// The reply comes later, through `outbox`.
    Parked,
}

struct Waiter {
    to: ReplyTo,
    container: String,
    exec_id: String,
}

/// A request waiting for its container's operation in flight to end.
struct Queued {
    method: String,
    payload: Vec<u8>,
    from: ReplyTo,
    deadline: Instant,
}

pub struct Service {
    pub namespace: String,
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
    pub(crate) calls: HashMap<Pid, Parked>,
    /// Containers with an operation in flight, and the requests queued behind it.
    busy: HashMap<String, VecDeque<Queued>>,
    /// Ids whose `Create` is in flight (not yet in `containers`).
    pub(crate) creating: HashSet<String>,
    /// Exits of pids no process owns yet.
    unclaimed: Vec<Exit>,
}

/// Tokens of OOM watchers start here (below the stdio pumps' range).
pub const FIRST_OOM: usize = 1 << 19;

pub(crate) fn encode<M: Message>(m: &M) -> Result<Vec<u8>> {
    m.write_to_bytes()
        .map_err(|e| ShimError::InvalidArgument(format!("encode reply: {e}")))
}

fn decode<M: Message>(method: &str, payload: &[u8]) -> Result<M> {
    M::parse_from_bytes(payload)
        .map_err(|e| ShimError::InvalidArgument(format!("malformed {method} request: {e}")))
}

/// The container a request of an ordered method is about (`None`: not an ordered method).
fn ordered_id(method: &str, payload: &[u8]) -> Option<Result<String>> {
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
            busy: HashMap::new(),
            creating: HashSet::new(),
            unclaimed: Vec::new(),
        }
    }

    /// Handles one task API call; `deadline` is the caller's (or the default).
    pub fn dispatch(
        &mut self,
        method: &str,
        payload: &[u8],
        from: ReplyTo,
        deadline: Instant,
    ) -> Reply {
        let reply = match ordered_id(method, payload) {
            Some(Err(e)) => Reply::Now(Err(e)),
            Some(Ok(id)) => self.ordered(id, method, payload, from, deadline),
            None => self.unordered(method, payload, from, deadline),
        };
        self.handle_exits();
        reply
    }

    /// A request that changes a container: run now if nothing is in flight for it, else queue.
    fn ordered(
        &mut self,
        id: String,
        method: &str,
        payload: &[u8],
        from: ReplyTo,
        deadline: Instant,
    ) -> Reply {
        if let Err(e) = validate_id(&id) {
            return Reply::Now(Err(e.into()));
        }
        if method != "Create" && !self.containers.contains_key(&id) && !self.creating.contains(&id)
        {
            return Reply::Now(Err(not_found(&id)));
        }
        if let Some(queue) = self.busy.get_mut(&id) {
            if queue.len() >= MAX_QUEUED_PER_CONTAINER {
                return Reply::Now(Err(ShimError::ResourceExhausted(format!(
                    "container {id}: {MAX_QUEUED_PER_CONTAINER} requests already wait for it"
                ))));
            }
            queue.push_back(Queued {
                method: method.to_string(),
                payload: payload.to_vec(),
                from,
                deadline,
            });
            return Reply::Parked;
        }
        self.busy.insert(id.clone(), VecDeque::new());
        let ctx = Ctx {
            reply: Some(from),
            deadline,
            holds: Some(id.clone()),
        };
        match self.run_ordered(method, payload, ctx) {
            Flow::Parked => Reply::Parked,
            Flow::Done(r) => {
                self.release(&id);
                Reply::Now(r)
            }
        }
    }

    fn run_ordered(&mut self, method: &str, payload: &[u8], ctx: Ctx) -> Flow {
        macro_rules! op {
            ($handler:ident) => {
                match decode(method, payload) {
                    Ok(r) => self.$handler(r, ctx),
                    Err(e) => Flow::Done(Err(e)),
                }
            };
        }
        match method {
            "Create" => op!(create),
            "Start" => op!(start),
            "Delete" => op!(delete),
            "Pause" => op!(pause),
            "Resume" => op!(resume_task),
            "Update" => op!(update),
            "Checkpoint" => op!(checkpoint),
            _ => Flow::Done(Err(ShimError::Unimplemented(format!(
                "unknown task method {method:?}"
            )))),
        }
    }

    /// The operation holding container `id` ended: run what queued behind it, in order.
    pub(crate) fn release(&mut self, id: &str) {
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
            match self.run_ordered(&q.method, &q.payload, ctx) {
                Flow::Parked => return,
                Flow::Done(r) => self.answer(Some(q.from), r),
            }
        }
    }

    fn unordered(
        &mut self,
        method: &str,
        payload: &[u8],
        from: ReplyTo,
        deadline: Instant,
    ) -> Reply {
        macro_rules! call {
            ($handler:ident) => {
                Reply::Now(
                    decode(method, payload)
                        .and_then(|r| self.$handler(r))
                        .and_then(|r| encode(&r)),
                )
            };
        }
        let ctx = Ctx {
            reply: Some(from),
            deadline,
            holds: None,
        };
        macro_rules! op {
            ($handler:ident) => {
                match decode(method, payload) {
                    Ok(r) => match self.$handler(r, ctx) {
                        Flow::Parked => Reply::Parked,
                        Flow::Done(r) => Reply::Now(r),
                    },
                    Err(e) => Reply::Now(Err(e)),
                }
            };
        }
        match method {
            "State" => call!(state),
            "Kill" => op!(kill),
            "Pids" => op!(pids),
            "CloseIO" => call!(close_io),
            "Connect" => call!(connect),
            "Shutdown" => call!(shutdown_req),
            "Wait" => match decode::<WaitRequest>(method, payload).and_then(|r| self.wait(r, from))
            {
                Ok(Some(bytes)) => Reply::Now(Ok(bytes)),
                Ok(None) => Reply::Parked,
                Err(e) => Reply::Now(Err(e)),
            },
            "Exec" => call!(exec),
            "ResizePty" => call!(resize_pty),
            "Stats" => call!(stats),
            _ => Reply::Now(Err(ShimError::Unimplemented(format!(
                "unknown task method {method:?}"
            )))),
        }
    }

    /// Sends a parked request's reply (none if its client or deadline already went).
    pub(crate) fn answer(&mut self, to: Option<ReplyTo>, r: Result<Vec<u8>>) {
        if let Some(to) = to {
            self.outbox.push((to, r));
        }
    }

    pub(crate) fn container(&mut self, id: &str) -> Result<&Container> {
        find(&mut self.containers, id).map(|c| &*c)
    }

    pub(crate) fn container_mut(&mut self, id: &str) -> Result<&mut Container> {
        find(&mut self.containers, id)
    }

    pub(crate) fn check_exec_id(exec_id: &str) -> Result<()> {
        if exec_id.is_empty() {
            Ok(())
        } else {
            tether_protocol::id::validate("exec id", exec_id).map_err(Into::into)
        }
    }

    /// When the loop must wake for a deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        let calls = self
            .calls
            .values()
            .filter(|p| !p.expired)
            .map(|p| p.ctx.deadline);
        let queued = self.busy.values().flatten().map(|q| q.deadline);
        calls.chain(queued).min()
    }

    /// Requests past their deadline: a runtime still running is killed (its exit still comes
    /// through the reaper and finishes the operation's clean-up), the client is answered
    /// DeadlineExceeded; a request still queued is answered the same.
    pub fn on_timers(&mut self, now: Instant) {
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

    pub(crate) fn watch_oom(&mut self, id: &str, pid: Pid) {
        let watcher = match OomWatcher::new(pid.as_u32()) {
            Ok(w) => w,
            Err(e) => {
                log::warn!("container {id}: no OOM notifications: {e}");
                return;
            }
        };
        let token = Token(self.next_oom);
        self.next_oom = FIRST_OOM + (self.next_oom + 1 - FIRST_OOM) % FIRST_OOM;
        match self
            .registry
            .register(&mut SourceFd(&watcher.fd()), token, Interest::READABLE)
        {
            Ok(()) => {
                self.ooms.insert(token, (id.to_string(), watcher));
            }
            Err(e) => log::warn!("container {id}: register OOM eventfd: {e}"),
        }
    }

    /// An OOM eventfd fired.
    pub fn on_oom(&mut self, token: Token) {
        let Some((id, w)) = self.ooms.get(&token) else {
            return;
        };
        if w.fired() {
            let id = id.clone();
            self.publish_oom(&id);
        }
    }

    fn publish_oom(&mut self, id: &str) {
        log::info!("container {id}: OOM");
        let ev = TaskOOM {
            container_id: id.to_string(),
            ..Default::default()
        };
        self.publisher
            .publish(&self.registry, topics::TASK_OOM, &ev);
    }

    /// Publishes a pending OOM of container `id` now (before the exit it caused).
    fn check_oom(&mut self, id: &str) {
        let fired = self.ooms.values().any(|(cid, w)| cid == id && w.fired());
        if fired {
            self.publish_oom(id);
        }
    }

    pub(crate) fn unwatch_oom(&mut self, id: &str) {
        let tokens: Vec<Token> = self
            .ooms
            .iter()
            .filter(|(_, (cid, _))| cid == id)
            .map(|(t, _)| *t)
            .collect();
        for t in tokens {
            if let Some((_, w)) = self.ooms.remove(&t) {
                let _ = self.registry.deregister(&mut SourceFd(&w.fd()));
            }
        }
    }

    fn stats(&mut self, req: StatsRequest) -> Result<StatsResponse> {
        let c = self.container(&req.id)?;
        if c.init.is_stopped() {
            return Err(ShimError::NotFound(format!(
                "container {}: no metrics: its init process has exited",
                req.id
            )));
        }
        let pid = c.init.require_pid("read the metrics of")?;
        let stats = crate::stats::collect(pid.as_u32())?;
        Ok(StatsResponse {
            stats: MessageField::some(stats),
            ..Default::default()
        })
    }

    /// `Exec` only adds the process (its `Start` runs it): nothing here touches the runtime.
    fn exec(&mut self, req: ExecProcessRequest) -> Result<Empty> {
        tether_protocol::id::validate("exec id", &req.exec_id)?;
        let c = self.container_mut(&req.id)?;
        if c.execs.contains_key(&req.exec_id) {
            return Err(ShimError::AlreadyExists(format!(
                "container {}: exec {:?} already exists",
                req.id, req.exec_id
            )));
        }
        if c.init.is_stopped() || c.init.pid.is_none() {
            return Err(ShimError::FailedPrecondition(format!(
                "container {}: cannot exec: its init process is not running",
                req.id
            )));
        }
        let spec = req
            .spec
            .as_ref()
            .map(|a| a.value.as_slice())
            .unwrap_or_default();
        let invalid = |e: serde_json::Error| {
            ShimError::InvalidArgument(format!(
                "container {}: exec {:?}: the process spec is not a valid OCI process: {e}",
                req.id, req.exec_id
            ))
        };
        serde_json::from_slice::<oci_spec::runtime::Process>(spec).map_err(invalid)?;
        // The request decides whether the process gets a terminal, as containerd's shim does:
        // a spec saying otherwise would make the runtime refuse the console socket.
        let mut spec: serde_json::Value = serde_json::from_slice(spec).map_err(invalid)?;
        if let Some(obj) = spec.as_object_mut() {
            obj.insert("terminal".into(), serde_json::Value::Bool(req.terminal));
        }
        let bytes = serde_json::to_vec(&spec).map_err(invalid)?;
        let path = crate::ops::exec_spec_path(&c.bundle, &req.exec_id);
        std::fs::write(&path, bytes).map_err(ShimError::io(format!("write {}", path.display())))?;
        let stdio = StdioPaths {
            stdin: req.stdin,
            stdout: req.stdout,
            stderr: req.stderr,
            terminal: req.terminal,
        };
        c.execs
            .insert(req.exec_id.clone(), Process::new(&req.exec_id, stdio));
        let ev = TaskExecAdded {
            container_id: req.id,
            exec_id: req.exec_id,
            ..Default::default()
        };
        self.publisher
            .publish(&self.registry, topics::TASK_EXEC_ADDED, &ev);
        Ok(Empty::new())
    }

    fn state(&mut self, req: StateRequest) -> Result<StateResponse> {
        Self::check_exec_id(&req.exec_id)?;
        let c = self.container(&req.id)?;
        let p = c.process(&req.exec_id)?;
        let (exit_status, exited_at) = match p.exit() {
            Some((s, at)) => (s, MessageField::some(to_timestamp(at))),
            None => (0, MessageField::none()),
        };
        Ok(StateResponse {
            id: if req.exec_id.is_empty() {
                c.id.clone()
            } else {
                req.exec_id.clone()
            },
            bundle: c.bundle.display().to_string(),
            pid: p.wire_pid(),
            status: p.status().into(),
            stdin: p.stdio.stdin.clone(),
            stdout: p.stdio.stdout.clone(),
            stderr: p.stdio.stderr.clone(),
            terminal: p.stdio.terminal,
            exit_status,
            exited_at,
            exec_id: req.exec_id,
            ..Default::default()
        })
    }

    fn close_io(&mut self, req: CloseIORequest) -> Result<Empty> {
        Self::check_exec_id(&req.exec_id)?;
        let pumps = &mut self.pumps;
        let c = find(&mut self.containers, &req.id)?;
        let p = c.process_mut(&req.exec_id)?;
        p.require_pid("close the stdin of")?;
        if req.stdin {
            pumps.close_stdin(&mut p.io);
            if let Some(master) = &p.console {
                crate::console::send_eof(master)?;
            }
        }
        Ok(Empty::new())
    }

    /// A process without a terminal has nothing to resize: OK, as containerd's shim answers.
    fn resize_pty(&mut self, req: ResizePtyRequest) -> Result<Empty> {
        Self::check_exec_id(&req.exec_id)?;
        let c = self.container(&req.id)?;
        let p = c.process(&req.exec_id)?;
        p.require_pid("resize the terminal of")?;
        if p.is_stopped() {
            return Err(ShimError::FailedPrecondition(format!(
                "container {}: cannot resize the terminal of {:?}: it has exited",
                req.id, req.exec_id
            )));
        }
        if let Some(master) = &p.console {
            crate::console::resize(master, req.width, req.height)?;
        }
        Ok(Empty::new())
    }

    fn connect(&mut self, req: ConnectRequest) -> Result<ConnectResponse> {
        let task_pid = self
            .containers
            .get(&req.id)
            .map(|c| c.init.wire_pid())
            .unwrap_or(0);
        Ok(ConnectResponse {
            shim_pid: std::process::id(),
            task_pid,
            version: concat!("tether ", env!("CARGO_PKG_VERSION")).to_string(),
            ..Default::default()
        })
    }

    fn shutdown_req(&mut self, _req: ShutdownRequest) -> Result<Empty> {
        if self.containers.is_empty() && self.creating.is_empty() {
            self.shutdown = true;
        }
        Ok(Empty::new())
    }

    fn wait(&mut self, req: WaitRequest, from: ReplyTo) -> Result<Option<Vec<u8>>> {
        Self::check_exec_id(&req.exec_id)?;
        let c = self.container(&req.id)?;
        let p = c.process(&req.exec_id)?;
        match p.exit() {
            Some((status, at)) if !(req.exec_id.is_empty() && c.init_exit_held) => {
                Ok(Some(encode(&wait_response(status, at))?))
            }
            _ => {
                if self.waiters.len() >= MAX_WAITERS {
                    return Err(ShimError::ResourceExhausted(format!(
                        "container {}: {MAX_WAITERS} waits are already parked",
                        req.id
                    )));
                }
                self.waiters.push(Waiter {
                    to: from,
                    container: req.id,
                    exec_id: req.exec_id,
                });
                Ok(None)
            }
        }
    }

    /// A client connection went away: nothing is sent to its token again (a new connection
    /// may get the same token).
    pub fn forget(&mut self, token: Token) {
        self.waiters.retain(|w| w.to.token != token);
        for p in self.calls.values_mut() {
            if p.ctx.reply.is_some_and(|r| r.token == token) {
                p.ctx.reply = None;
            }
        }
        for queue in self.busy.values_mut() {
            queue.retain(|q| q.from.token != token);
        }
        self.outbox.retain(|(to, _)| to.token != token);
    }

    pub fn is_empty(&self) -> bool {
        self.containers.is_empty() && self.creating.is_empty()
    }

    /// Handles every exit the reaper collected, in order: a runtime command's ends its
    /// operation; a container process's is recorded and published; one nobody owns yet is kept
    /// while an operation that may claim it (create, start, exec) is in flight.
    pub fn handle_exits(&mut self) {
        let fresh = self.reaper.take_exits();
        if fresh.is_empty() && self.unclaimed.is_empty() {
            return;
        }
        for e in fresh {
            if let Some(p) = self.calls.remove(&e.pid) {
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
                None if self.calls.values().any(|p| p.then.may_claim_pid()) => {
                    self.unclaimed.push(e)
                }
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
    pub(crate) fn on_exit(&mut self, id: &str, exec_id: &str, status: u32, at: i64) {
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
    pub(crate) fn after_init_exit(&mut self, id: &str) {
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

    pub(crate) fn publish_exit(&mut self, id: &str, exec_id: &str) {
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
        let reply = encode(&wait_response(status, at));
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

fn not_found(id: &str) -> ShimError {
    ShimError::NotFound(format!("container {id}: not found in this shim"))
}

fn queued_too_long(id: &str, method: &str) -> ShimError {
    ShimError::DeadlineExceeded(format!(
        "container {id}: {method} waited for the container's previous operation past its deadline"
    ))
}

/// The container `id` names (validated first: ids come from outside).
pub(crate) fn find<'a>(
    containers: &'a mut BTreeMap<String, Container>,
    id: &str,
) -> Result<&'a mut Container> {
    validate_id(id)?;
    containers.get_mut(id).ok_or_else(|| not_found(id))
}

pub(crate) fn wait_response(status: u32, at: i64) -> WaitResponse {
    WaitResponse {
        exit_status: status,
        exited_at: MessageField::some(to_timestamp(at)),
        ..Default::default()
    }
}

pub fn delete_response(pid: u32, status: u32, at: i64) -> DeleteResponse {
    DeleteResponse {
        pid,
        exit_status: status,
        exited_at: MessageField::some(to_timestamp(at)),
        ..Default::default()
    }
}
