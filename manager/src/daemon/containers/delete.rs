//! Deleting a container: kill with `force`, the shim's Delete (or its delete action when it
//! died), the shim's shutdown, the directory.

use super::*;

impl Containers {
    /// Deletes the task (killing it first with `force`), stops its shim and removes the bundle.
    pub fn delete(&self, req: api::DeleteRequest) -> Result<api::ExitStatus> {
        let c = self.get(&req.namespace, &req.id)?;
        c.await_cleanup();
        let status = lock(&c.record).status();
        if matches!(status, ContainerStatus::Running | ContainerStatus::Paused) && !req.force {
            return Err(Error::FailedPrecondition(format!(
                "container {} is {status}: stop it first (tether kill) or use delete -f",
                req.id
            )));
        }
        let shim = lock(&c.shim).clone();
        let mut exit = None;
        if let Some(shim) = shim {
            if status != ContainerStatus::Exited {
                if status == ContainerStatus::Paused {
                    let _ = shim.task.call::<_, tether_protocol::api::Empty>(
                        "Resume",
                        &task::ResumeRequest {
                            id: req.id.clone(),
                            ..Default::default()
                        },
                        RUNTIME_TIMEOUT,
                    );
                }
                let kreq = task::KillRequest {
                    id: req.id.clone(),
                    signal: libc::SIGKILL as u32,
                    all: true,
                    ..Default::default()
                };
                let _ = shim.task.call::<_, tether_protocol::api::Empty>(
                    "Kill",
                    &kreq,
                    RUNTIME_TIMEOUT,
                );
                let wreq = task::WaitRequest {
                    id: req.id.clone(),
                    ..Default::default()
                };
                if let Ok(w) = shim
                    .task
                    .call::<_, task::WaitResponse>("Wait", &wreq, CALL_TIMEOUT)
                {
                    let at = w
                        .exited_at
                        .as_ref()
                        .map(tether_protocol::time::from_timestamp)
                        .unwrap_or_else(now_nanos);
                    c.record_exit(w.exit_status, at, "");
                }
            }
            let dreq = task::DeleteRequest {
                id: req.id.clone(),
                ..Default::default()
            };
            match shim
                .task
                .call::<_, task::DeleteResponse>("Delete", &dreq, RUNTIME_TIMEOUT)
            {
                Ok(d) => exit = Some(d),
                Err(e) if is_disconnected(&e) => {}
                Err(e) => return Err(Error::shim(&format!("delete container {}", req.id), e)),
            }
            if let Some(m) = self.monitor() {
                m.forget_shim(c.key.clone());
            }
            *lock(&c.shim) = None;
            shutdown(&shim, &req.id);
            if exit.is_none() {
                // The shim died: its delete action cleans up and knows the exit.
                match shim.command.delete() {
                    Ok(d) => exit = Some(d),
                    Err(e) => log::warn!("container {}/{}: {e}", req.namespace, req.id),
                }
            }
        }
        if let Some(d) = &exit {
            let at = d
                .exited_at
                .as_ref()
                .map(tether_protocol::time::from_timestamp)
                .unwrap_or_else(now_nanos);
            c.record_exit(d.exit_status, at, "");
        }
        let rec = c.update(|r| {
            r.delete(now_nanos())?;
            Ok(())
        })?;
        c.exited.notify_all();
        if let Some(m) = self.monitor() {
            m.stop_log(c.key.clone());
        }
        lock(&self.table).remove(&c.key);
        store::remove(&c.record_path())?;
        remove_dir(&c.dir)?;
        let ns_dir = self.cfg.state.join(&c.key.0);
        let _ = std::fs::remove_dir(ns_dir);
        Ok(api::ExitStatus {
            exit_status: rec.exit_status,
            exited_at: rec.finished_at,
            pid: rec.pid,
            ..Default::default()
        })
    }
}

/// Asks a shim to exit; it answers, or closes the connection as it goes.
fn shutdown(shim: &ShimConn, id: &str) {
    let req = task::ShutdownRequest {
        id: id.to_string(),
        ..Default::default()
    };
    match shim
        .task
        .call::<_, tether_protocol::api::Empty>("Shutdown", &req, CALL_TIMEOUT)
    {
        Ok(_) => {}
        Err(e) if is_disconnected(&e) => {}
        Err(e) => log::warn!(
            "container {id}: shim shutdown: {}",
            crate::error::ttrpc_message(&e)
        ),
    }
}
