//! The task operations that drive the OCI runtime, as steps on the event loop.
//!
//! An operation checks the request against the process state machine, starts the runtime
//! command and parks (`Flow::Parked`) with what it needs to finish (`Then`). When the reaper
//! hands over the command's exit, [`Service::resume`] runs the next step: the effect on the
//! state, the event, the reply, or another runtime command (clean-up after a failed create).
//! A request's deadline kills a command that runs too long and answers `DeadlineExceeded`; the
//! command's exit still finishes the step, so clean-up is never skipped.

use crate::console::ConsoleSocket;
use crate::container::{
    read_pid_file, shares_pid_namespace, Container, INIT_PID_FILE, RUNTIME_FILE,
};
use crate::error::{Result, ShimError};
use crate::process::Process;
use crate::runtime::{parse_ps, ProcessStdio, RuntimeCall, RuntimeConfig};
use crate::service::{delete_response, encode, find, ReplyTo, Service};
use crate::stdio::{ProcessIo, StdioPaths, Who};
use protobuf::MessageField;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tether_protocol::api::events::{
    TaskCheckpointed, TaskCreate, TaskDelete, TaskExecStarted, TaskIO, TaskPaused, TaskResumed,
    TaskStart,
};
use tether_protocol::api::runc_options::{CheckpointOptions, ProcessDetails};
use tether_protocol::api::task::*;
use tether_protocol::api::{pack_any, Empty, TypeUrl};
use tether_protocol::time::{now_nanos, to_timestamp};
use tether_protocol::{store, topics, validate_id};

/// How long clean-up commands the shim runs on its own may take (no request's deadline).
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Runtime commands in flight that do not hold a container's queue (Kill, Pids, clean-ups).
const MAX_UNQUEUED_CALLS: usize = 64;

/// Who is owed the reply, by when, and which container's queue the operation holds.
pub struct Ctx {
    pub reply: Option<ReplyTo>,
    pub deadline: Instant,
    pub holds: Option<String>,
}

/// What an operation step produced.
pub enum Flow {
    Done(Result<Vec<u8>>),
    /// A runtime command is in flight; the reply comes with its exit.
    Parked,
}

/// A runtime command in flight and the operation waiting for it.
pub struct Parked {
    pub ctx: Ctx,
    pub call: RuntimeCall,
    pub then: Then,
    /// Its deadline passed: killed and answered already.
    pub expired: bool,
}

/// The container being created, until the runtime has made it.
pub struct Creating {
    c: Container,
    console: Option<ConsoleSocket>,
    event: TaskCreate,
}

pub struct StartingExec {
    id: String,
    exec_id: String,
    console: Option<ConsoleSocket>,
    io: ProcessIo,
    pid_file: PathBuf,
}

/// What to do when the runtime command exits.
pub enum Then {
    Create(Box<Creating>),
    /// `runc delete --force` after a failed create; then the create's error is the reply.
    UndoCreate {
        id: String,
        error: ShimError,
    },
    Start {
        id: String,
    },
    /// `runc restore` of a container created from a checkpoint.
    Restore {
        id: String,
        console: Option<ConsoleSocket>,
    },
    StartExec(Box<StartingExec>),
    Kill,
    /// The runtime killed a created, never started, init.
    DeleteCreated {
        id: String,
    },
    /// The runtime removed a stopped container.
    Delete {
        id: String,
    },
    Pause {
        id: String,
    },
    Resume {
        id: String,
    },
    Update {
        path: PathBuf,
    },
    Checkpoint {
        id: String,
        image: PathBuf,
    },
    Pids {
        id: String,
    },
    /// The container's other processes were killed after its init exited.
    KillAllOnExit {
        id: String,
    },
}

impl Then {
    /// Whether this step may give a process its pid (so an exit reaped meanwhile may be its).
    pub fn may_claim_pid(&self) -> bool {
        matches!(
            self,
            Then::Create(_) | Then::Start { .. } | Then::StartExec(_)
        )
    }
}

impl Service {
    /// Parks `then` on `call`.
    fn park(&mut self, ctx: Ctx, call: RuntimeCall, then: Then) -> Flow {
        self.calls.insert(
            call.pid,
            Parked {
                ctx,
                call,
                then,
                expired: false,
            },
        );
        Flow::Parked
    }

    /// Room for a runtime command that holds no container queue (a bound on what a peer can
    /// make the shim run at once).
    fn unqueued_room(&self) -> Result<()> {
        let n = self
            .calls
            .values()
            .filter(|p| p.ctx.holds.is_none())
            .count();
        if n >= MAX_UNQUEUED_CALLS {
            return Err(ShimError::ResourceExhausted(format!(
                "{n} runtime commands are already running"
            )));
        }
        Ok(())
    }

    /// A runtime command exited: the operation's next step.
    pub(crate) fn on_call_exit(&mut self, p: Parked, status: u32) {
        let Parked {
            ctx, call, then, ..
        } = p;
        let (reply, holds) = (ctx.reply, ctx.holds.clone());
        let result = call.finish(status);
        let flow = match then {
            Then::Create(creating) => self.created(*creating, result, ctx),
            Then::UndoCreate { id, error } => {
                if let Err(e) = result {
                    log::warn!("container {id}: undoing a failed create: {e}");
                }
                self.creating.remove(&id);
                Flow::Done(Err(error))
            }
            Then::Start { id } => Flow::Done(self.started(&id, result)),
            Then::Restore { id, console } => Flow::Done(self.restored(&id, console, result)),
            Then::StartExec(s) => Flow::Done(self.exec_started(*s, result)),
            Then::Kill => Flow::Done(result.and_then(|_| encode(&Empty::new()))),
            Then::DeleteCreated { id } => self.deleted_created(&id, result, ctx),
            Then::Delete { id } => {
                if let Err(e) = result {
                    log::warn!("container {id}: {e}");
                }
                Flow::Done(self.finish_delete(&id))
            }
            Then::Pause { id } => Flow::Done(self.paused(&id, result)),
            Then::Resume { id } => Flow::Done(self.resumed(&id, result)),
            Then::Update { path } => {
                let _ = std::fs::remove_file(&path);
                Flow::Done(result.and_then(|_| encode(&Empty::new())))
            }
            Then::Checkpoint { id, image } => Flow::Done(self.checkpointed(&id, &image, result)),
            Then::Pids { id } => Flow::Done(self.listed(&id, result)),
            Then::KillAllOnExit { id } => {
                if let Err(e) = result {
                    log::warn!("container {id}: killing its processes after its init exited: {e}");
                }
                self.after_init_exit(&id);
                Flow::Done(Ok(Vec::new()))
            }
        };
        if let Flow::Done(r) = flow {
            self.answer(reply, r);
            if let Some(id) = &holds {
                self.release(id);
            }
        }
    }

    pub(crate) fn create(&mut self, req: CreateTaskRequest, ctx: Ctx) -> Flow {
        match self.begin_create(req, ctx) {
            Ok(flow) => flow,
            Err(e) => Flow::Done(Err(e)),
        }
    }

    fn begin_create(&mut self, req: CreateTaskRequest, ctx: Ctx) -> Result<Flow> {
        validate_id(&req.id)?;
        if self.containers.contains_key(&req.id) || self.creating.contains(&req.id) {
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
        let restore_from = if req.checkpoint.is_empty() {
            None
        } else {
            let image = PathBuf::from(&req.checkpoint);
            if !image.is_absolute() || !image.is_dir() {
                return Err(ShimError::InvalidArgument(format!(
                    "container {}: checkpoint {:?} is not a directory (an absolute path to a \
                     CRIU image)",
                    req.id, req.checkpoint
                )));
            }
            Some(image)
        };
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
        c.kill_all_on_exit = shares_pid_namespace(&config_json);
        if !req.rootfs.is_empty() {
            let rootfs = c.rootfs();
            std::fs::create_dir_all(&rootfs)
                .map_err(ShimError::io(format!("create {}", rootfs.display())))?;
            crate::mount::mount_rootfs(&req.rootfs, &rootfs)?;
            c.rootfs_mounted = true;
        }
        let event = TaskCreate {
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
            ..Default::default()
        };
        if let Some(image) = restore_from {
            // As containerd's shim: the runtime restores the container at Start.
            log::info!(
                "container {}: created from checkpoint {}",
                req.id,
                image.display()
            );
            c.restore_from = Some(image);
            self.publisher
                .publish(&self.registry, topics::TASK_CREATE, &event);
            self.containers.insert(req.id, c);
            return Ok(Flow::Done(encode(&CreateTaskResponse::default())));
        }
        let pid_file = bundle.join(INIT_PID_FILE);
        let who = Who {
            namespace: &self.namespace,
            id: &req.id,
            owner: stdio_owner(&c.runtime.config),
        };
        let launched = launch(&mut self.pumps, &stdio, &who, |console, runtime_stdio| {
            c.runtime
                .create(&req.id, &bundle, &pid_file, console, runtime_stdio)
        });
        match launched {
            Ok((io, console, call)) => {
                c.init.io = io;
                self.creating.insert(req.id.clone());
                let creating = Creating { c, console, event };
                Ok(self.park(ctx, call, Then::Create(Box::new(creating))))
            }
            Err(e) => {
                if c.rootfs_mounted {
                    let _ = crate::mount::unmount_all(&c.rootfs());
                }
                Err(e)
            }
        }
    }

    /// `runc create` exited: the container exists (its init's pid in the pid file), or the
    /// create is undone: stdio closed, rootfs unmounted, the runtime's container removed.
    fn created(&mut self, mut s: Creating, result: Result<String>, ctx: Ctx) -> Flow {
        let id = s.c.id.clone();
        let finished = result.and_then(|_| {
            if let Some(socket) = &s.console {
                let master = socket.receive_master()?;
                let who = Who {
                    namespace: &self.namespace,
                    id: &s.c.id,
                    owner: stdio_owner(&s.c.runtime.config),
                };
                s.c.init.io = self.pumps.open_terminal(&s.c.init.stdio, &master, &who)?;
                s.c.init.console = Some(master);
            }
            read_pid_file(&s.c.bundle.join(INIT_PID_FILE))
        });
        let pid = match finished {
            Ok(pid) => pid,
            Err(error) => {
                self.pumps.close(&mut s.c.init.io);
                s.c.init.console = None;
                if s.c.rootfs_mounted {
                    let _ = crate::mount::unmount_all(&s.c.rootfs());
                }
                return match s.c.runtime.delete(&id, true) {
                    Ok(call) => {
                        let ctx = Ctx {
                            deadline: Instant::now() + CLEANUP_TIMEOUT,
                            ..ctx
                        };
                        self.park(ctx, call, Then::UndoCreate { id, error })
                    }
                    Err(e) => {
                        log::warn!("container {id}: cannot undo the failed create: {e}");
                        self.creating.remove(&id);
                        Flow::Done(Err(error))
                    }
                };
            }
        };
        s.c.init.pid = Some(pid);
        s.event.pid = pid.as_u32();
        self.creating.remove(&id);
        self.publisher
            .publish(&self.registry, topics::TASK_CREATE, &s.event);
        log::info!("container {id}: created, init pid {pid}");
        self.watch_oom(&id, pid);
        self.containers.insert(id, s.c);
        Flow::Done(encode(&CreateTaskResponse {
            pid: pid.as_u32(),
            ..Default::default()
        }))
    }

    pub(crate) fn start(&mut self, req: StartRequest, ctx: Ctx) -> Flow {
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

    /// `Start` of a container created from a checkpoint: `runc restore` with its stdio.
    fn begin_restore(&mut self, id: &str, ctx: Ctx) -> Result<Flow> {
        let c = find(&mut self.containers, id)?;
        let Some(image) = c.restore_from.clone() else {
            return Err(ShimError::FailedPrecondition(format!(
                "container {id}: nothing to restore"
            )));
        };
        let work = if c.runtime.config.criu_work_path.is_empty() {
            c.bundle.join("criu-work")
        } else {
            PathBuf::from(&c.runtime.config.criu_work_path)
        };
        std::fs::create_dir_all(&work)
            .map_err(ShimError::io(format!("create {}", work.display())))?;
        let pid_file = c.bundle.join(INIT_PID_FILE);
        let stdio = c.init.stdio.clone();
        let who = Who {
            namespace: &self.namespace,
            id,
            owner: stdio_owner(&c.runtime.config),
        };
        let (bundle, runtime) = (&c.bundle, &c.runtime);
        let (io, console, call) = launch(&mut self.pumps, &stdio, &who, |console, rstdio| {
            runtime.restore(id, bundle, &pid_file, &image, &work, console, rstdio)
        })?;
        c.init.io = io;
        c.starting = true;
        let then = Then::Restore {
            id: id.to_string(),
            console,
        };
        Ok(self.park(ctx, call, then))
    }

    /// `runc restore` exited: the container runs again (its init's pid in the pid file), or
    /// it stays created from its checkpoint, its stdio closed, for another Start or a Delete.
    fn restored(
        &mut self,
        id: &str,
        console: Option<ConsoleSocket>,
        result: Result<String>,
    ) -> Result<Vec<u8>> {
        let pumps = &mut self.pumps;
        let namespace = &self.namespace;
        let c = find(&mut self.containers, id)?;
        c.starting = false;
        let pid = result.and_then(|_| {
            if let Some(socket) = &console {
                let master = socket.receive_master()?;
                let who = Who {
                    namespace,
                    id,
                    owner: stdio_owner(&c.runtime.config),
                };
                c.init.io = pumps.open_terminal(&c.init.stdio, &master, &who)?;
                c.init.console = Some(master);
            }
            read_pid_file(&c.bundle.join(INIT_PID_FILE))
        });
        let pid = match pid {
            Ok(pid) => pid,
            Err(e) => {
                pumps.close(&mut c.init.io);
                c.init.console = None;
                return Err(e);
            }
        };
        c.init.pid = Some(pid);
        c.restore_from = None;
        c.init.started(pid)?;
        log::info!("container {id}: restored, init pid {pid}");
        self.watch_oom(id, pid);
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

    fn started(&mut self, id: &str, result: Result<String>) -> Result<Vec<u8>> {
        let c = find(&mut self.containers, id)?;
        c.starting = false;
        result?;
        let pid = c.init.require_pid("start")?;
        c.init.started(pid)?;
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

    fn begin_start_exec(&mut self, req: StartRequest, ctx: Ctx) -> Result<Flow> {
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
        let who = Who {
            namespace: &self.namespace,
            id: &req.id,
            owner: stdio_owner(&c.runtime.config),
        };
        let runtime = &c.runtime;
        let (io, console, call) = launch(&mut self.pumps, &stdio, &who, |console, rstdio| {
            runtime.exec(&req.id, &spec, &pid_file, console, rstdio)
        })?;
        let s = StartingExec {
            id: req.id,
            exec_id: req.exec_id,
            console,
            io,
            pid_file,
        };
        Ok(self.park(ctx, call, Then::StartExec(Box::new(s))))
    }

    fn exec_started(&mut self, mut s: StartingExec, result: Result<String>) -> Result<Vec<u8>> {
        let mut master: Option<OwnedFd> = None;
        let pid = result.and_then(|_| {
            if let Some(socket) = &s.console {
                let m = socket.receive_master()?;
                let c = self.container(&s.id)?;
                let stdio = c.process(&s.exec_id)?.stdio.clone();
                let owner = stdio_owner(&c.runtime.config);
                let who = Who {
                    namespace: &self.namespace,
                    id: &s.id,
                    owner,
                };
                s.io = self.pumps.open_terminal(&stdio, &m, &who)?;
                master = Some(m);
            }
            read_pid_file(&s.pid_file)
        });
        let _ = std::fs::remove_file(&s.pid_file);
        let pid = match pid {
            Ok(pid) => pid,
            Err(e) => {
                self.pumps.close(&mut s.io);
                return Err(e);
            }
        };
        let pumps = &mut self.pumps;
        let c = match find(&mut self.containers, &s.id) {
            Ok(c) => c,
            Err(e) => {
                pumps.close(&mut s.io);
                return Err(e);
            }
        };
        let p = match c.process_mut(&s.exec_id) {
            Ok(p) => p,
            Err(e) => {
                pumps.close(&mut s.io);
                return Err(e);
            }
        };
        p.io = s.io;
        p.console = master;
        p.started(pid)?;
        let ev = TaskExecStarted {
            container_id: s.id,
            exec_id: s.exec_id,
            pid: pid.as_u32(),
            ..Default::default()
        };
        self.publisher
            .publish(&self.registry, topics::TASK_EXEC_STARTED, &ev);
        encode(&StartResponse {
            pid: pid.as_u32(),
            ..Default::default()
        })
    }

    pub(crate) fn kill(&mut self, req: KillRequest, ctx: Ctx) -> Flow {
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
                pid.signal(sig).map_err(ShimError::nix(format!(
                    "container {}: kill exec {} (pid {pid})",
                    req.id, req.exec_id
                )))?;
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

    /// The init exited in a container that shares its PID namespace: its other processes are
    /// killed (`kill --all`) before the exit is published. False if that cannot be started.
    pub(crate) fn kill_all_after_exit(&mut self, id: &str) -> bool {
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

    pub(crate) fn delete(&mut self, req: DeleteRequest, ctx: Ctx) -> Flow {
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

    fn deleted_created(&mut self, id: &str, result: Result<String>, _ctx: Ctx) -> Flow {
        if let Err(e) = result {
            return Flow::Done(Err(e));
        }
        // The runtime waited for the init to die, which our reaper made happen: its exit is
        // normally in by now. If it is not, it was SIGKILLed.
        let stopped = self.containers.get(id).is_none_or(|c| c.init.is_stopped());
        if !stopped {
            self.on_exit(id, "", 128 + libc::SIGKILL as u32, now_nanos());
        }
        Flow::Done(self.finish_delete(id))
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
            return Err(ShimError::NotFound(format!(
                "container {id}: not found in this shim"
            )));
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

    pub(crate) fn pids(&mut self, req: PidsRequest, ctx: Ctx) -> Flow {
        let begun = (|| -> Result<Flow> {
            self.unqueued_room()?;
            let c = find(&mut self.containers, &req.id)?;
            let call = c.runtime.ps(&c.id)?;
            Ok(self.park(ctx, call, Then::Pids { id: req.id }))
        })();
        begun.unwrap_or_else(|e| Flow::Done(Err(e)))
    }

    fn listed(&mut self, id: &str, result: Result<String>) -> Result<Vec<u8>> {
        let c = find(&mut self.containers, id)?;
        let pids = parse_ps(&c.runtime.config.binary, &result?)?;
        let mut processes = Vec::with_capacity(pids.len());
        for pid in pids {
            let mut info = ProcessInfo {
                pid,
                ..Default::default()
            };
            let exec_id = c
                .execs
                .iter()
                .find(|(_, p)| p.wire_pid() == pid)
                .map(|(k, _)| k);
            if let Some(exec_id) = exec_id {
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
        encode(&PidsResponse {
            processes,
            ..Default::default()
        })
    }

    pub(crate) fn pause(&mut self, req: PauseRequest, ctx: Ctx) -> Flow {
        let begun = (|| -> Result<Flow> {
            let c = find(&mut self.containers, &req.id)?;
            c.init.check_pause()?;
            let call = c.runtime.pause(&c.id)?;
            Ok(self.park(ctx, call, Then::Pause { id: req.id }))
        })();
        begun.unwrap_or_else(|e| Flow::Done(Err(e)))
    }

    fn paused(&mut self, id: &str, result: Result<String>) -> Result<Vec<u8>> {
        result?;
        find(&mut self.containers, id)?.init.paused()?;
        let ev = TaskPaused {
            container_id: id.to_string(),
            ..Default::default()
        };
        self.publisher
            .publish(&self.registry, topics::TASK_PAUSED, &ev);
        encode(&Empty::new())
    }

    pub(crate) fn resume_task(&mut self, req: ResumeRequest, ctx: Ctx) -> Flow {
        let begun = (|| -> Result<Flow> {
            let c = find(&mut self.containers, &req.id)?;
            c.init.check_resume()?;
            let call = c.runtime.resume(&c.id)?;
            Ok(self.park(ctx, call, Then::Resume { id: req.id }))
        })();
        begun.unwrap_or_else(|e| Flow::Done(Err(e)))
    }

    fn resumed(&mut self, id: &str, result: Result<String>) -> Result<Vec<u8>> {
        result?;
        find(&mut self.containers, id)?.init.resumed()?;
        let ev = TaskResumed {
            container_id: id.to_string(),
            ..Default::default()
        };
        self.publisher
            .publish(&self.registry, topics::TASK_RESUMED, &ev);
        encode(&Empty::new())
    }

    pub(crate) fn update(&mut self, req: UpdateTaskRequest, ctx: Ctx) -> Flow {
        let begun = (|| -> Result<Flow> {
            let c = find(&mut self.containers, &req.id)?;
            let Some(res) = req.resources.as_ref() else {
                return Err(ShimError::InvalidArgument(format!(
                    "container {}: update without resources",
                    req.id
                )));
            };
            serde_json::from_slice::<oci_spec::runtime::LinuxResources>(&res.value).map_err(
                |e| {
                    ShimError::InvalidArgument(format!(
                        "container {}: update resources are not valid JSON LinuxResources: {e}",
                        req.id
                    ))
                },
            )?;
            let path = c.bundle.join("update-resources.json");
            std::fs::write(&path, &res.value)
                .map_err(ShimError::io(format!("write {}", path.display())))?;
            let call = c.runtime.update(&c.id, &path)?;
            Ok(self.park(ctx, call, Then::Update { path }))
        })();
        begun.unwrap_or_else(|e| Flow::Done(Err(e)))
    }

    /// `Checkpoint` through the runtime and CRIU, of a running or paused container. The image
    /// goes to `path`; CRIU's own logs to the options' work path, else beside the image, so a
    /// failure can be read afterwards.
    pub(crate) fn checkpoint(&mut self, req: CheckpointTaskRequest, ctx: Ctx) -> Flow {
        let begun = (|| -> Result<Flow> {
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
            if !matches!(c.init.status(), Status::RUNNING | Status::PAUSED) {
                return Err(ShimError::FailedPrecondition(format!(
                    "container {}: only a running or paused container can be checkpointed",
                    req.id
                )));
            }
            for dir in [&image, &work] {
                std::fs::create_dir_all(dir)
                    .map_err(ShimError::io(format!("create {}", dir.display())))?;
            }
            let call = c.runtime.checkpoint(&c.id, &image, &work, &opts)?;
            Ok(self.park(ctx, call, Then::Checkpoint { id: req.id, image }))
        })();
        begun.unwrap_or_else(|e| Flow::Done(Err(e)))
    }

    fn checkpointed(&mut self, id: &str, image: &Path, result: Result<String>) -> Result<Vec<u8>> {
        result?;
        let ev = TaskCheckpointed {
            container_id: id.to_string(),
            checkpoint: image.display().to_string(),
            ..Default::default()
        };
        self.publisher
            .publish(&self.registry, topics::TASK_CHECKPOINTED, &ev);
        encode(&Empty::new())
    }
}

/// Opens a process's stdio (pipes and FIFOs, or a console socket for a terminal) and starts
/// the runtime command that creates the process. On failure nothing is left open.
fn launch(
    pumps: &mut crate::stdio::Pumps,
    stdio: &StdioPaths,
    who: &Who,
    run: impl FnOnce(Option<&Path>, ProcessStdio) -> Result<RuntimeCall>,
) -> Result<(ProcessIo, Option<ConsoleSocket>, RuntimeCall)> {
    if stdio.terminal {
        let socket = ConsoleSocket::new()?;
        let call = run(Some(&socket.path), ProcessStdio::default())?;
        // The pumps open once the runtime sent the terminal's master.
        return Ok((ProcessIo::default(), Some(socket), call));
    }
    let (mut io, runtime_stdio) = pumps.open(stdio, who)?;
    match run(None, runtime_stdio) {
        Ok(call) => Ok((io, None, call)),
        Err(e) => {
            pumps.close(&mut io);
            Err(e)
        }
    }
}

/// The `IoUid`/`IoGid` runtime options: none when both are 0 (root keeps the pipes).
fn stdio_owner(config: &RuntimeConfig) -> Option<(u32, u32)> {
    (config.io_uid != 0 || config.io_gid != 0).then_some((config.io_uid, config.io_gid))
}

pub(crate) fn exec_spec_path(bundle: &Path, exec_id: &str) -> PathBuf {
    bundle.join(format!("exec-{exec_id}.json"))
}

/// Options of type `M` from a request's `Any` (`what` names them in errors): absent or empty
/// gives the defaults; another type or bad bytes are InvalidArgument.
fn options<M: TypeUrl + Default>(
    any: &MessageField<tether_protocol::api::Any>,
    what: &str,
) -> Result<M> {
    tether_protocol::api::unpack_any_or_default(any.as_ref())
        .map_err(|e| ShimError::InvalidArgument(format!("{what} {e}")))
}
