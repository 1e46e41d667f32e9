//! `Create`: the bundle is checked, the rootfs mounted, the stdio opened and `runc create`
//! started; when it exits the container is in the table with its init's pid, or the create is
//! undone (stdio closed, rootfs unmounted, `runc delete --force`). A create from a checkpoint
//! only records the image: the runtime restores it at `Start` (`restore.rs`).

use super::call::{launch, launched, who, Then, CLEANUP_TIMEOUT};
use super::{encode, Ctx, Flow, Service};
use crate::console::ConsoleSocket;
use crate::container::{
    has_systemd_cgroups_path, shares_pid_namespace, Container, INIT_PID_FILE, RUNTIME_FILE,
};
use crate::error::{Result, ShimError};
use crate::process::Process;
use crate::runtime::RuntimeConfig;
use crate::stdio::StdioPaths;
use protobuf::MessageField;
use std::path::PathBuf;
use std::time::Instant;
use tether_protocol::api::events::{TaskCreate, TaskIO};
use tether_protocol::api::task::{CreateTaskRequest, CreateTaskResponse};
use tether_protocol::{store, topics, validate_id};

/// The container being created, until the runtime has made it.
pub(super) struct Creating {
    c: Container,
    console: Option<ConsoleSocket>,
    event: TaskCreate,
}

impl Service {
    pub(super) fn create(&mut self, req: CreateTaskRequest, ctx: Ctx) -> Flow {
        self.begin_create(req, ctx)
            .unwrap_or_else(|e| Flow::Done(Err(e)))
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
        let spec = crate::container::read_spec(&config_json);
        let mut config = RuntimeConfig::from_options(&opts, &self.namespace)?;
        if !config.systemd_cgroup && has_systemd_cgroups_path(spec.as_ref()) {
            log::info!(
                "container {}: its cgroups path is in the systemd driver's form: the runtime \
                 uses systemd cgroups",
                req.id
            );
            config.systemd_cgroup = true;
        }
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
        c.kill_all_on_exit = shares_pid_namespace(spec.as_ref());
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
        let who = who(&self.namespace, &req.id, &c.runtime.config);
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
    pub(super) fn created(&mut self, mut s: Creating, result: Result<String>, ctx: Ctx) -> Flow {
        let id = s.c.id.clone();
        let init = &mut s.c.init;
        let pid_file = s.c.bundle.join(INIT_PID_FILE);
        let made = launched(
            &mut self.pumps,
            result,
            s.console.as_ref(),
            &init.stdio,
            &pid_file,
            &mut init.io,
            &who(&self.namespace, &id, &s.c.runtime.config),
        );
        let (pid, master) = match made {
            Ok(made) => made,
            Err(error) => {
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
        s.c.init.console = master;
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

    /// `runc delete --force` after a failed create exited: the create's error is the reply.
    pub(super) fn create_undone(
        &mut self,
        id: &str,
        error: ShimError,
        result: Result<String>,
    ) -> Result<Vec<u8>> {
        if let Err(e) = result {
            log::warn!("container {id}: undoing a failed create: {e}");
        }
        self.creating.remove(id);
        Err(error)
    }
}
