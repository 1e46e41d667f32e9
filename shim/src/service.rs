//! The task API: each request is decoded, checked against the process state machine, carried out
//! through the runtime, and turned into events and replies.
//!
//! Data flows one way: request -> state machine -> effect (runtime, stdio) -> event. Exits come
//! from the reaper and take the same path. `Wait` never blocks: it parks a reply that is sent
//! when the exit arrives.

use crate::console::ConsoleSocket;
use crate::container::{read_pid_file, Container, INIT_PID_FILE, RUNTIME_FILE};
use crate::error::{Result, ShimError};
use crate::events::Publisher;
use crate::oom::OomWatcher;
use crate::process::Process;
use crate::reaper::{Exit, Reaper};
use crate::runtime::ProcessStdio;
use crate::runtime::RuntimeConfig;
use crate::stdio::{ProcessIo, Pumps, StdioPaths, Who};
use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use protobuf::{Message, MessageField};
use std::collections::BTreeMap;
use std::collections::HashMap;
use std::path::PathBuf;
use tether_protocol::api::events::{
    TaskCheckpointed, TaskExecAdded, TaskExecStarted, TaskPaused, TaskResumed,
};
use tether_protocol::api::events::{TaskCreate, TaskDelete, TaskExit, TaskIO, TaskOOM, TaskStart};
use tether_protocol::api::runc_options::{CheckpointOptions, ProcessDetails};
use tether_protocol::api::task::*;
use tether_protocol::api::{pack_any, type_url, Empty, TypeUrl};
use tether_protocol::time::to_timestamp;
use tether_protocol::{store, topics, validate_id};

/// A reply owed to a client: which connection and stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyTo {
    pub token: Token,
    pub stream_id: u32,
}

/// What a request produced.
pub enum Reply {
    Now(Result<Vec<u8>>),
    /// A `Wait`: the reply comes with the exit.
    Parked,
}

struct Waiter {
    to: ReplyTo,
    container: String,
    exec_id: String,
}

pub struct Service {
    pub namespace: String,
    containers: BTreeMap<String, Container>,
    pub reaper: Reaper,
    pub pumps: Pumps,
    pub publisher: Publisher,
    registry: Registry,
    waiters: Vec<Waiter>,
    /// Replies to parked waits, for the loop to send.
    pub outbox: Vec<(ReplyTo, Result<Vec<u8>>)>,
    /// Set by `Shutdown` once no container is left.
    pub shutdown: bool,
    /// OOM watchers by token, with their container.
    ooms: HashMap<Token, (String, OomWatcher)>,
    next_oom: usize,
}

/// Tokens of OOM watchers start here (below the stdio pumps' range).
pub const FIRST_OOM: usize = 1 << 19;

fn encode<M: Message>(m: &M) -> Result<Vec<u8>> {
    m.write_to_bytes()
        .map_err(|e| ShimError::InvalidArgument(format!("encode reply: {e}")))
}

fn decode<M: Message>(method: &str, payload: &[u8]) -> Result<M> {
    M::parse_from_bytes(payload)
        .map_err(|e| ShimError::InvalidArgument(format!("malformed {method} request: {e}")))
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
        }
    }

    /// Handles one task API call.
    pub fn dispatch(&mut self, method: &str, payload: &[u8], from: ReplyTo) -> Reply {
        macro_rules! call {
            ($handler:ident) => {
                Reply::Now(
                    decode(method, payload)
                        .and_then(|r| self.$handler(r))
                        .and_then(|r| encode(&r)),
                )
            };
        }
        let reply = match method {
            "Create" => call!(create),
            "Start" => call!(start),
            "State" => call!(state),
            "Kill" => call!(kill),
            "Delete" => call!(delete),
            "Pids" => call!(pids),
            "Pause" => call!(pause),
            "Resume" => call!(resume),
            "CloseIO" => call!(close_io),
            "Update" => call!(update),
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
            "Checkpoint" => call!(checkpoint),
            _ => Reply::Now(Err(ShimError::Unimplemented(format!(
                "unknown task method {method:?}"
            )))),
        };
        // Exits met while the runtime ran are handled now, after the request's own events.
        self.handle_exits();
        reply
    }

    fn container(&mut self, id: &str) -> Result<&Container> {
        find(&mut self.containers, id).map(|c| &*c)
    }

    fn container_mut(&mut self, id: &str) -> Result<&mut Container> {
        find(&mut self.containers, id)
    }

    fn check_exec_id(exec_id: &str) -> Result<()> {
        if exec_id.is_empty() {
            Ok(())
        } else {
            tether_protocol::id::validate("exec id", exec_id).map_err(Into::into)
        }
    }

    fn create(&mut self, req: CreateTaskRequest) -> Result<CreateTaskResponse> {
        validate_id(&req.id)?;
        if self.containers.contains_key(&req.id) {
            return Err(ShimError::AlreadyExists(format!(
                "container {}: already exists",
                req.id
            )));
        }
        let bundle = PathBuf::from(&req.bundle);
        if !bundle.is_absolute() {
            return Err(ShimError::InvalidArgument(format!(
                "container {}: bundle {:?} is not an absolute path",
                req.id, req.bundle
            )));
        }
        let config_json = bundle.join("config.json");
        if !config_json.is_file() {
            return Err(ShimError::InvalidArgument(format!(
                "container {}: {} does not exist: the bundle has no OCI config",
                req.id,
                config_json.display()
            )));
        }
        if !req.checkpoint.is_empty() {
            return Err(ShimError::Unimplemented(format!(
                "container {}: restore from a checkpoint is not implemented",
                req.id
            )));
        }
        let opts = crate::options::from_any(&req.options)?;
        let config = RuntimeConfig::from_options(&opts, &self.namespace);
        store::write_with(
            &bundle.join(RUNTIME_FILE),
            &config,
            store::Durability::Atomic,
        )?;

        let stdio = StdioPaths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        };
        let mut c = Container::new(&req.id, &bundle, config, Process::new("", stdio.clone()));
        if !req.rootfs.is_empty() {
            let rootfs = c.rootfs();
            std::fs::create_dir_all(&rootfs)
                .map_err(ShimError::io(format!("create {}", rootfs.display())))?;
            crate::mount::mount_rootfs(&req.rootfs, &rootfs)?;
            c.rootfs_mounted = true;
        }
        let result = self.create_init(&mut c, &stdio);
        if let Err(e) = result {
            self.pumps.close(&mut c.init.io);
            if c.rootfs_mounted {
                let _ = crate::mount::unmount_all(&c.rootfs());
            }
            return Err(e);
        }
        let pid = c.init.pid;
        self.publisher.publish(
            &self.registry,
            topics::TASK_CREATE,
            &TaskCreate {
                container_id: req.id.clone(),
                bundle: req.bundle.clone(),
                rootfs: req.rootfs.clone(),
                io: MessageField::some(TaskIO {
                    stdin: req.stdin,
                    stdout: req.stdout,
                    stderr: req.stderr,
                    terminal: req.terminal,
                    ..Default::default()
                }),
                checkpoint: req.checkpoint,
                pid,
                ..Default::default()
            },
        );
        log::info!("container {}: created, init pid {pid}", req.id);
        self.watch_oom(&req.id, pid);
        self.containers.insert(req.id, c);
        Ok(CreateTaskResponse {
            pid,
            ..Default::default()
        })
    }

    fn create_init(&mut self, c: &mut Container, stdio: &StdioPaths) -> Result<()> {
        let pid_file = c.bundle.join(INIT_PID_FILE);
        let runtime = &c.runtime;
        let (id, bundle) = (c.id.clone(), c.bundle.clone());
        let launched = spawn_process(
            &mut self.pumps,
            &mut self.reaper,
            stdio,
            &Who {
                namespace: &self.namespace,
                id: &c.id,
            },
            |reaper, console, runtime_stdio| {
                runtime.create(reaper, &id, &bundle, &pid_file, console, runtime_stdio)
            },
        );
        match launched {
            Ok((io, console)) => {
                c.init.io = io;
                c.init.console = console;
            }
            Err(e) => {
                let _ = c.runtime.delete(&mut self.reaper, &c.id, true);
                return Err(e);
            }
        }
        c.init.pid = read_pid_file(&pid_file)?;
        Ok(())
    }

    fn watch_oom(&mut self, id: &str, pid: u32) {
        let watcher = match OomWatcher::new(pid) {
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

    fn unwatch_oom(&mut self, id: &str) {
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

    /// `Checkpoint` through the runtime and CRIU. The image goes to `path`; CRIU's own logs
    /// to the options' work path, else beside the image, so a failure can be read afterwards.
    fn checkpoint(&mut self, req: CheckpointTaskRequest) -> Result<Empty> {
        let opts: CheckpointOptions = options(&req.options, "checkpoint")?;
        let image = if opts.image_path.is_empty() {
            PathBuf::from(&req.path)
        } else {
            PathBuf::from(&opts.image_path)
        };
        if !image.is_absolute() {
            return Err(ShimError::InvalidArgument(format!(
                "container {}: checkpoint path {:?} is not absolute",
                req.id,
                image.display()
            )));
        }
        let work = if opts.work_path.is_empty() {
            image.clone()
        } else {
            PathBuf::from(&opts.work_path)
        };
        let c = find(&mut self.containers, &req.id)?;
        if c.init.status() != Status::RUNNING {
            return Err(ShimError::FailedPrecondition(format!(
                "container {}: only a running container can be checkpointed",
                req.id
            )));
        }
        for dir in [&image, &work] {
            std::fs::create_dir_all(dir)
                .map_err(ShimError::io(format!("create {}", dir.display())))?;
        }
        c.runtime
            .checkpoint(&mut self.reaper, &c.id, &image, &work, &opts)?;
        let ev = TaskCheckpointed {
            container_id: req.id,
            checkpoint: image.display().to_string(),
            ..Default::default()
        };
        self.publisher
            .publish(&self.registry, topics::TASK_CHECKPOINTED, &ev);
        Ok(Empty::new())
    }

    fn stats(&mut self, req: StatsRequest) -> Result<StatsResponse> {
        let c = self.container(&req.id)?;
        if c.init.is_stopped() {
            return Err(ShimError::NotFound(format!(
                "container {}: no metrics: its init process has exited",
                req.id
            )));
        }
        let stats = crate::stats::collect(c.init.pid)?;
        Ok(StatsResponse {
            stats: MessageField::some(stats),
            ..Default::default()
        })
    }

    fn start(&mut self, req: StartRequest) -> Result<StartResponse> {
        Self::check_exec_id(&req.exec_id)?;
        if !req.exec_id.is_empty() {
            return self.start_exec(req);
        }
        let reaper = &mut self.reaper;
        let c = find(&mut self.containers, &req.id)?;
        c.init.check_start()?;
        c.runtime.start(reaper, &c.id)?;
        let pid = c.init.pid;
        c.init.started(pid)?;
        self.publisher.publish(
            &self.registry,
            topics::TASK_START,
            &TaskStart {
                container_id: req.id.clone(),
                pid,
                ..Default::default()
            },
        );
        Ok(StartResponse {
            pid,
            ..Default::default()
        })
    }

    fn exec(&mut self, req: ExecProcessRequest) -> Result<Empty> {
        tether_protocol::id::validate("exec id", &req.exec_id)?;
        let c = self.container_mut(&req.id)?;
        if c.execs.contains_key(&req.exec_id) {
            return Err(ShimError::AlreadyExists(format!(
                "container {}: exec {:?} already exists",
                req.id, req.exec_id
            )));
        }
        if c.init.is_stopped() || c.init.pid == 0 {
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
        serde_json::from_slice::<oci_spec::runtime::Process>(spec).map_err(|e| {
            ShimError::InvalidArgument(format!(
                "container {}: exec {:?}: the process spec is not a valid OCI process: {e}",
                req.id, req.exec_id
            ))
        })?;
        let path = exec_spec_path(&c.bundle, &req.exec_id);
        std::fs::write(&path, spec).map_err(ShimError::io(format!("write {}", path.display())))?;
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

    fn start_exec(&mut self, req: StartRequest) -> Result<StartResponse> {
        let c = find(&mut self.containers, &req.id)?;
        if c.init.is_stopped() {
            return Err(ShimError::FailedPrecondition(format!(
                "container {}: cannot start exec {:?}: its init process has exited",
                req.id, req.exec_id
            )));
        }
        let p = c.process_mut(&req.exec_id)?;
        p.check_start()?;
        let stdio = p.stdio.clone();
        let spec = exec_spec_path(&c.bundle, &req.exec_id);
        let pid_file = c.bundle.join(format!("exec-{}.pid", req.exec_id));
        let runtime = &c.runtime;
        let launched = spawn_process(
            &mut self.pumps,
            &mut self.reaper,
            &stdio,
            &Who {
                namespace: &self.namespace,
                id: &req.id,
            },
            |reaper, console, runtime_stdio| {
                runtime.exec(reaper, &req.id, &spec, &pid_file, console, runtime_stdio)
            },
        );
        let pid = launched.and_then(|(io, console)| {
            let pid = read_pid_file(&pid_file);
            let p = c.process_mut(&req.exec_id)?;
            p.io = io;
            p.console = console;
            if pid.is_err() {
                self.pumps.close(&mut p.io);
                p.console = None;
            }
            pid
        });
        let _ = std::fs::remove_file(&pid_file);
        let pid = pid?;
        let p = c.process_mut(&req.exec_id)?;
        p.started(pid)?;
        let ev = TaskExecStarted {
            container_id: req.id,
            exec_id: req.exec_id,
            pid,
            ..Default::default()
        };
        self.publisher
            .publish(&self.registry, topics::TASK_EXEC_STARTED, &ev);
        Ok(StartResponse {
            pid,
            ..Default::default()
        })
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
            pid: p.pid,
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

    fn kill(&mut self, req: KillRequest) -> Result<Empty> {
        Self::check_exec_id(&req.exec_id)?;
        let reaper = &mut self.reaper;
        let c = find(&mut self.containers, &req.id)?;
        if req.signal == 0 || req.signal > 64 {
            return Err(ShimError::InvalidArgument(format!(
                "container {}: invalid signal {}",
                req.id, req.signal
            )));
        }
        let p = c.process(&req.exec_id)?;
        p.check_kill()?;
        if req.exec_id.is_empty() {
            c.runtime.kill(reaper, &c.id, req.signal, req.all)?;
        } else {
            let sig = nix::sys::signal::Signal::try_from(req.signal as i32)
                .map_err(|e| ShimError::InvalidArgument(format!("signal {}: {e}", req.signal)))?;
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(p.pid as i32), sig).map_err(
                ShimError::nix(format!("container {}: kill exec {}", req.id, req.exec_id)),
            )?;
        }
        Ok(Empty::new())
    }

    fn delete(&mut self, req: DeleteRequest) -> Result<DeleteResponse> {
        Self::check_exec_id(&req.exec_id)?;
        self.container(&req.id)?;
        if !req.exec_id.is_empty() {
            let c = self.container_mut(&req.id)?;
            c.process(&req.exec_id)?.check_delete()?;
            let Some(mut p) = c.execs.remove(&req.exec_id) else {
                return Err(ShimError::NotFound(format!("no exec {}", req.exec_id)));
            };
            self.pumps.close(&mut p.io);
            if let Some(c) = self.containers.get(&req.id) {
                let _ = std::fs::remove_file(exec_spec_path(&c.bundle, &req.exec_id));
            }
            let (status, at) = p.exit().unwrap_or((0, 0));
            return Ok(delete_response(p.pid, status, at));
        }
        let c = find(&mut self.containers, &req.id)?;
        c.init.check_delete()?;
        if !c.init.is_stopped() {
            // Created but never started: the runtime kills its init; its exit is real.
            c.runtime.delete(&mut self.reaper, &c.id, true)?;
            let status = self
                .reaper
                .wait_pid(
                    c.init.pid as i32,
                    "reap created init",
                    std::time::Duration::from_secs(10),
                )
                .unwrap_or(137);
            let at = tether_protocol::time::now_nanos();
            self.on_exit(&req.id, "", status, at);
        }
        let Some(mut c) = self.containers.remove(&req.id) else {
            return Err(ShimError::NotFound(format!(
                "container {}: not found",
                req.id
            )));
        };
        if let Err(e) = c.runtime.delete(&mut self.reaper, &c.id, true) {
            log::warn!("container {}: {e}", c.id);
        }
        self.unwatch_oom(&c.id);
        self.pumps.close(&mut c.init.io);
        for p in c.execs.values_mut() {
            self.pumps.close(&mut p.io);
        }
        if c.rootfs_mounted {
            crate::mount::unmount_all(&c.rootfs())?;
        }
        let (status, at) = c.init.exit().unwrap_or((0, 0));
        let pid = c.init.pid;
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
        Ok(delete_response(pid, status, at))
    }

    fn pids(&mut self, req: PidsRequest) -> Result<PidsResponse> {
        let reaper = &mut self.reaper;
        let c = find(&mut self.containers, &req.id)?;
        let pids = c.runtime.ps(reaper, &c.id)?;
        let mut processes = Vec::with_capacity(pids.len());
        for pid in pids {
            let mut info = ProcessInfo {
                pid,
                ..Default::default()
            };
            if let Some(exec_id) = c.execs.iter().find(|(_, p)| p.pid == pid).map(|(k, _)| k) {
                let details = ProcessDetails {
                    exec_id: exec_id.clone(),
                    ..Default::default()
                };
                if let Ok(any) = pack_any(&details) {
                    info.info = MessageField::some(any);
                }
            }
            processes.push(info);
        }
        Ok(PidsResponse {
            processes,
            ..Default::default()
        })
    }

    fn pause(&mut self, req: PauseRequest) -> Result<Empty> {
        let reaper = &mut self.reaper;
        let c = find(&mut self.containers, &req.id)?;
        c.init.check_pause()?;
        c.runtime.pause(reaper, &c.id)?;
        c.init.paused()?;
        let ev = TaskPaused {
            container_id: req.id,
            ..Default::default()
        };
        self.publisher
            .publish(&self.registry, topics::TASK_PAUSED, &ev);
        Ok(Empty::new())
    }

    fn resume(&mut self, req: ResumeRequest) -> Result<Empty> {
        let reaper = &mut self.reaper;
        let c = find(&mut self.containers, &req.id)?;
        c.init.check_resume()?;
        c.runtime.resume(reaper, &c.id)?;
        c.init.resumed()?;
        let ev = TaskResumed {
            container_id: req.id,
            ..Default::default()
        };
        self.publisher
            .publish(&self.registry, topics::TASK_RESUMED, &ev);
        Ok(Empty::new())
    }

    fn close_io(&mut self, req: CloseIORequest) -> Result<Empty> {
        Self::check_exec_id(&req.exec_id)?;
        let pumps = &mut self.pumps;
        let c = find(&mut self.containers, &req.id)?;
        let p = c.process_mut(&req.exec_id)?;
        if req.stdin {
            pumps.close_stdin(&mut p.io);
            if let Some(master) = &p.console {
                crate::console::send_eof(master)?;
            }
        }
        Ok(Empty::new())
    }

    fn resize_pty(&mut self, req: ResizePtyRequest) -> Result<Empty> {
        Self::check_exec_id(&req.exec_id)?;
        let c = self.container(&req.id)?;
        let p = c.process(&req.exec_id)?;
        let Some(master) = &p.console else {
            return Err(ShimError::FailedPrecondition(format!(
                "container {}: process {:?} has no terminal",
                req.id, req.exec_id
            )));
        };
        crate::console::resize(master, req.width, req.height)?;
        Ok(Empty::new())
    }

    fn update(&mut self, req: UpdateTaskRequest) -> Result<Empty> {
        let reaper = &mut self.reaper;
        let c = find(&mut self.containers, &req.id)?;
        let Some(res) = req.resources.as_ref() else {
            return Err(ShimError::InvalidArgument(
                "update without resources".into(),
            ));
        };
        serde_json::from_slice::<serde_json::Value>(&res.value).map_err(|e| {
            ShimError::InvalidArgument(format!("update resources are not JSON: {e}"))
        })?;
        let path = c.bundle.join("update-resources.json");
        std::fs::write(&path, &res.value)
            .map_err(ShimError::io(format!("write {}", path.display())))?;
        let r = c.runtime.update(reaper, &c.id, &path);
        let _ = std::fs::remove_file(&path);
        r.map(|_| Empty::new())
    }

    fn connect(&mut self, req: ConnectRequest) -> Result<ConnectResponse> {
        let task_pid = self
            .containers
            .get(&req.id)
            .map(|c| c.init.pid)
            .unwrap_or(0);
        Ok(ConnectResponse {
            shim_pid: std::process::id(),
            task_pid,
            version: concat!("tether ", env!("CARGO_PKG_VERSION")).to_string(),
            ..Default::default()
        })
    }

    fn shutdown_req(&mut self, _req: ShutdownRequest) -> Result<Empty> {
        if self.containers.is_empty() {
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
                self.waiters.push(Waiter {
                    to: from,
                    container: req.id,
                    exec_id: req.exec_id,
                });
                Ok(None)
            }
        }
    }

    /// A client connection went away: its parked waits go with it.
    pub fn forget(&mut self, token: Token) {
        self.waiters.retain(|w| w.to.token != token);
    }

    pub fn is_empty(&self) -> bool {
        self.containers.is_empty()
    }

    /// Handles every exit the reaper collected.
    pub fn handle_exits(&mut self) {
        for Exit { pid, status, at } in self.reaper.take_exits() {
            let owner = self
                .containers
                .iter()
                .find_map(|(id, c)| c.exec_id_of(pid as u32).map(|e| (id.clone(), e)));
            match owner {
                Some((id, exec_id)) => self.on_exit(&id, &exec_id, status, at),
                None => log::debug!("reaped pid {pid} (status {status}): not a task process"),
            }
        }
    }

    fn on_exit(&mut self, id: &str, exec_id: &str, status: u32, at: i64) {
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
        if exec_id.is_empty() {
            // The OOM that killed it is published before its exit.
            self.check_oom(id);
            let Some(c) = self.containers.get_mut(id) else {
                return;
            };
            if let Err(e) = c.persist_init_exit() {
                log::error!("container {id}: cannot persist exit: {e}");
            }
            // Execs do not outlive the init; their exits are published first.
            let mut held = false;
            for p in c.running_execs() {
                held = true;
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(p.pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            c.init_exit_held = held;
            if held {
                return;
            }
        }
        self.publish_exit(id, exec_id);
        // The last exec is gone: the held init exit follows.
        if let Some(c) = self.containers.get_mut(id) {
            if c.init_exit_held && c.running_execs().next().is_none() {
                c.init_exit_held = false;
                self.publish_exit(id, "");
            }
        }
    }

    fn publish_exit(&mut self, id: &str, exec_id: &str) {
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
            pid: p.pid,
            exit_status: status,
            exited_at: MessageField::some(to_timestamp(at)),
            ..Default::default()
        };
        log::info!(
            "container {id}: process {} (pid {}) exited with {status}",
            ev.id,
            p.pid
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

/// The container `id` names (validated first: ids come from outside).
fn find<'a>(
    containers: &'a mut BTreeMap<String, Container>,
    id: &str,
) -> Result<&'a mut Container> {
    validate_id(id)?;
    containers
        .get_mut(id)
        .ok_or_else(|| ShimError::NotFound(format!("container {id}: not found in this shim")))
}

/// Opens a process's stdio (pipes and FIFOs, or a terminal through a console socket) and runs
/// the runtime command that creates the process; on failure its pumps are closed again.
fn spawn_process(
    pumps: &mut Pumps,
    reaper: &mut Reaper,
    stdio: &StdioPaths,
    who: &Who,
    run: impl FnOnce(&mut Reaper, Option<&std::path::Path>, ProcessStdio) -> Result<()>,
) -> Result<(ProcessIo, Option<std::os::fd::OwnedFd>)> {
    if stdio.terminal {
        let socket = ConsoleSocket::new()?;
        run(reaper, Some(&socket.path), ProcessStdio::default())?;
        let master = socket.receive_master()?;
        let io = pumps.open_terminal(stdio, &master)?;
        return Ok((io, Some(master)));
    }
    let (mut io, runtime_stdio) = pumps.open(stdio, who)?;
    if let Err(e) = run(reaper, None, runtime_stdio) {
        pumps.close(&mut io);
        return Err(e);
    }
    Ok((io, None))
}

fn exec_spec_path(bundle: &std::path::Path, exec_id: &str) -> PathBuf {
    bundle.join(format!("exec-{exec_id}.json"))
}

fn wait_response(status: u32, at: i64) -> WaitResponse {
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

/// Options of type `M` from a request's `Any` (`what` names them in errors); an absent or empty
/// `Any` gives the defaults, another type or bad bytes are refused.
fn options<M: TypeUrl + Default>(
    any: &MessageField<tether_protocol::api::Any>,
    what: &str,
) -> Result<M> {
    let Some(any) = any.as_ref() else {
        return Ok(M::default());
    };
    if any.type_url.is_empty() && any.value.is_empty() {
        return Ok(M::default());
    }
    let want = type_url::<M>();
    if any.type_url.trim_start_matches("type.googleapis.com/") != want {
        return Err(ShimError::InvalidArgument(format!(
            "{what} options of type {:?} are not supported (want {want})",
            any.type_url
        )));
    }
    M::parse_from_bytes(&any.value)
        .map_err(|e| ShimError::InvalidArgument(format!("malformed {what} options: {e}")))
}
