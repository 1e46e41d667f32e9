//! `Exec` adds a process to a running container (its spec written beside the bundle, nothing
//! run yet); its `Start` runs `runc exec` with the process's stdio, and when that exits the
//! exec runs with the pid from its pid file and `TaskExecStarted` is published.

use super::call::{launch, launched, stdio_owner, who, Then};
use super::{encode, find, Ctx, Flow, Service};
use crate::console::ConsoleSocket;
use crate::error::{Result, ShimError};
use crate::process::Process;
use crate::stdio::{ProcessIo, StdioPaths, Who};
use std::path::{Path, PathBuf};
use tether_protocol::api::events::{TaskExecAdded, TaskExecStarted};
use tether_protocol::api::task::{ExecProcessRequest, StartRequest, StartResponse};
use tether_protocol::api::Empty;
use tether_protocol::topics;

/// Execs one container holds at once (added, running or exited and not deleted): each costs
/// a spec file and, once started, its stdio; containerd deletes them as they end.
pub const MAX_EXECS_PER_CONTAINER: usize = 1024;

/// An exec whose `runc exec` is in flight.
pub(super) struct StartingExec {
    id: String,
    exec_id: String,
    stdio: StdioPaths,
    console: Option<ConsoleSocket>,
    io: ProcessIo,
    pid_file: PathBuf,
}

pub(super) fn exec_spec_path(bundle: &Path, exec_id: &str) -> PathBuf {
    bundle.join(format!("exec-{exec_id}.json"))
}

impl Service {
    /// `Exec` only adds the process (its `Start` runs it): nothing here touches the runtime.
    pub(super) fn exec(&mut self, req: ExecProcessRequest) -> Result<Empty> {
        tether_protocol::id::validate("exec id", &req.exec_id)?;
        let c = find(&mut self.containers, &req.id)?;
        if c.execs.contains_key(&req.exec_id) {
            return Err(ShimError::AlreadyExists(format!(
                "container {}: exec {:?} already exists",
                req.id, req.exec_id
            )));
        }
        if c.execs.len() >= MAX_EXECS_PER_CONTAINER {
            return Err(ShimError::ResourceExhausted(format!(
                "container {}: {MAX_EXECS_PER_CONTAINER} execs already (delete some first)",
                req.id
            )));
        }
        // While the init's exit is held (its execs' exits go out first) an exec can still be
        // added, as with containerd's shim: its Start is what fails. Nothing runs here.
        let init_gone = c.init.is_stopped() && !c.init_exit_held;
        if init_gone || c.init.pid.is_none() {
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
        let mut spec: serde_json::Value = serde_json::from_slice(spec).map_err(invalid)?;
        crate::spec::check::<crate::spec::Process>(&spec).map_err(|e| {
            ShimError::InvalidArgument(format!(
                "container {}: exec {:?}: the process spec is not a valid OCI process: {e}",
                req.id, req.exec_id
            ))
        })?;
        // The request decides whether the process gets a terminal, as containerd's shim does:
        // a spec saying otherwise would make the runtime refuse the console socket.
        if let Some(obj) = spec.as_object_mut() {
            obj.insert("terminal".into(), serde_json::Value::Bool(req.terminal));
        }
        let bytes = serde_json::to_vec(&spec).map_err(invalid)?;
        let path = exec_spec_path(&c.bundle, &req.exec_id);
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

    /// `Start` of an exec: `runc exec` with its spec and stdio.
    pub(super) fn begin_start_exec(&mut self, req: StartRequest, ctx: Ctx) -> Result<Flow> {
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
        let who = who(&self.namespace, &req.id, &c.runtime.config);
        let runtime = &c.runtime;
        let (io, console, call) = launch(&mut self.pumps, &stdio, &who, |console, rstdio| {
            runtime.exec(&req.id, &spec, &pid_file, console, rstdio)
        })?;
        let s = StartingExec {
            id: req.id,
            exec_id: req.exec_id,
            stdio,
            console,
            io,
            pid_file,
        };
        Ok(self.park(ctx, call, Then::StartExec(Box::new(s))))
    }

    pub(super) fn exec_started(
        &mut self,
        mut s: StartingExec,
        result: Result<String>,
    ) -> Result<Vec<u8>> {
        // The container may be gone (deleted meanwhile): then its stdio has no owner to set.
        let owner = self
            .container(&s.id)
            .map(|c| stdio_owner(&c.runtime.config))
            .unwrap_or(None);
        let made = launched(
            &mut self.pumps,
            result,
            s.console.as_ref(),
            &s.stdio,
            &s.pid_file,
            &mut s.io,
            &Who {
                namespace: &self.namespace,
                id: &s.id,
                owner,
            },
        );
        let _ = std::fs::remove_file(&s.pid_file);
        let (pid, master) = made?;
        let pumps = &mut self.pumps;
        let p = match find(&mut self.containers, &s.id).and_then(|c| c.process_mut(&s.exec_id)) {
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
}
