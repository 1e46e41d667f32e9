//! `Start` of a container created from a checkpoint: `runc restore` from the CRIU image, with
//! the container's stdio. When it exits the container runs again, or it stays created from its
//! checkpoint (its stdio closed) for another `Start` or a `Delete`.

use super::call::{launch, launched, who, Then};
use super::{find, Ctx, Flow, Service};
use crate::console::ConsoleSocket;
use crate::container::INIT_PID_FILE;
use crate::error::{Result, ShimError};
use std::path::PathBuf;

impl Service {
    pub(super) fn begin_restore(&mut self, id: &str, ctx: Ctx) -> Result<Flow> {
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
        let who = who(&self.namespace, id, &c.runtime.config);
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

    pub(super) fn restored(
        &mut self,
        id: &str,
        console: Option<ConsoleSocket>,
        result: Result<String>,
    ) -> Result<Vec<u8>> {
        let c = find(&mut self.containers, id)?;
        c.starting = false;
        let pid_file = c.bundle.join(INIT_PID_FILE);
        let init = &mut c.init;
        let (pid, master) = launched(
            &mut self.pumps,
            result,
            console.as_ref(),
            &init.stdio,
            &pid_file,
            &mut init.io,
            &who(&self.namespace, id, &c.runtime.config),
        )?;
        init.console = master;
        init.pid = Some(pid);
        c.restore_from = None;
        c.init.started(pid)?;
        log::info!("container {id}: restored, init pid {pid}");
        self.watch_oom(id, pid);
        self.publish_start(id, pid)
    }
}
