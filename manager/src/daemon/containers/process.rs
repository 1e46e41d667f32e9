//! Operations on a created container and its processes through its shim: start, exec, kill,
//! wait, pause/resume, update, stats, close_io, resize.

use super::*;

impl Containers {
    pub fn start(&self, req: api::StartRequest) -> Result<api::StartResponse> {
        let c = self.get(&req.namespace, &req.id)?;
        if req.exec_id.is_empty() {
            let status = lock(&c.record).status();
            if status != ContainerStatus::Created {
                return Err(Error::FailedPrecondition(format!(
                    "container {}: cannot start a container that is {status}",
                    req.id
                )));
            }
        }
        let shim = c.shim()?;
        let resp: task::StartResponse = shim
            .task
            .call(
                "Start",
                &task::StartRequest {
                    id: req.id.clone(),
                    exec_id: req.exec_id.clone(),
                    ..Default::default()
                },
                RUNTIME_TIMEOUT,
            )
            .map_err(|e| Error::shim(&format!("start {}", describe(&req.id, &req.exec_id)), e))?;
        if req.exec_id.is_empty() {
            c.update(|r| {
                if r.started_at == 0 {
                    r.pid = resp.pid;
                    r.started_at = now_nanos();
                }
                Ok(())
            })?;
        }
        Ok(api::StartResponse {
            pid: resp.pid,
            ..Default::default()
        })
    }

    pub fn exec(&self, req: api::ExecRequest) -> Result<api::StartResponse> {
        let c = self.get(&req.namespace, &req.id)?;
        tether_protocol::id::validate("exec id", &req.exec_id)?;
        serde_json::from_slice::<oci_spec::runtime::Process>(&req.process)
            .map_err(|e| Error::InvalidArgument(format!("the process spec is not valid: {e}")))?;
        let shim = c.shim()?;
        let stdio = req.stdio.clone().unwrap_or_default();
        let ereq = task::ExecProcessRequest {
            id: req.id.clone(),
            exec_id: req.exec_id.clone(),
            terminal: stdio.terminal,
            stdin: stdio.stdin,
            stdout: stdio.stdout,
            stderr: stdio.stderr,
            spec: MessageField::some(Any {
                type_url: PROCESS_TYPE_URL.into(),
                value: req.process.clone(),
                ..Default::default()
            }),
            ..Default::default()
        };
        shim.task
            .call::<_, tether_protocol::api::Empty>("Exec", &ereq, CALL_TIMEOUT)
            .map_err(|e| Error::shim(&format!("exec {}", describe(&req.id, &req.exec_id)), e))?;
        self.start(api::StartRequest {
            namespace: req.namespace,
            id: req.id,
            exec_id: req.exec_id,
            ..Default::default()
        })
    }

    pub fn kill(&self, req: api::KillRequest) -> Result<()> {
        let c = self.get(&req.namespace, &req.id)?;
        let shim = c.shim()?;
        let kreq = task::KillRequest {
            id: req.id.clone(),
            exec_id: req.exec_id.clone(),
            signal: req.signal,
            all: req.all,
            ..Default::default()
        };
        shim.task
            .call::<_, tether_protocol::api::Empty>("Kill", &kreq, RUNTIME_TIMEOUT)
            .map_err(|e| Error::shim(&format!("kill {}", describe(&req.id, &req.exec_id)), e))?;
        Ok(())
    }

    /// Waits for a process's exit. The init's exit is answered from the record once known; the
    /// shim's `Wait` is the fast path, the record (set by events or a dead shim's cleanup) the
    /// fallback.
    pub fn wait(&self, req: api::WaitRequest) -> Result<api::ExitStatus> {
        let c = self.get(&req.namespace, &req.id)?;
        let from_record = |r: &ContainerRecord| api::ExitStatus {
            exit_status: r.exit_status,
            exited_at: r.finished_at,
            pid: r.pid,
            ..Default::default()
        };
        if req.exec_id.is_empty() {
            let r = lock(&c.record);
            if r.finished_at != 0 {
                return Ok(from_record(&r));
            }
        }
        let shim = c.shim();
        if let Ok(shim) = shim {
            let wreq = task::WaitRequest {
                id: req.id.clone(),
                exec_id: req.exec_id.clone(),
                ..Default::default()
            };
            match shim
                .task
                .call::<_, task::WaitResponse>("Wait", &wreq, Duration::ZERO)
            {
                Ok(w) => {
                    let at = w
                        .exited_at
                        .as_ref()
                        .map(tether_protocol::time::from_timestamp)
                        .unwrap_or_else(now_nanos);
                    if req.exec_id.is_empty() {
                        c.record_exit(w.exit_status, at, "");
                    }
                    return Ok(api::ExitStatus {
                        exit_status: w.exit_status,
                        exited_at: at,
                        ..Default::default()
                    });
                }
                Err(e) if !is_disconnected(&e) || !req.exec_id.is_empty() => {
                    return Err(Error::shim(
                        &format!("wait for {}", describe(&req.id, &req.exec_id)),
                        e,
                    ))
                }
                Err(_) => {}
            }
        } else if !req.exec_id.is_empty() {
            return Err(shim
                .err()
                .unwrap_or_else(|| Error::NotFound("no shim".into())));
        }
        // The shim went away: its cleanup records the exit.
        let mut r = lock(&c.record);
        while r.finished_at == 0 && r.deleted_at == 0 {
            r = c.exited.wait(r).unwrap_or_else(|p| p.into_inner());
        }
        Ok(from_record(&r))
    }

    pub fn pause(&self, req: api::ContainerRef, pause: bool) -> Result<()> {
        let c = self.get(&req.namespace, &req.id)?;
        let shim = c.shim()?;
        let (method, verb) = if pause {
            ("Pause", "pause")
        } else {
            ("Resume", "resume")
        };
        shim.task
            .call::<_, tether_protocol::api::Empty>(
                method,
                &task::PauseRequest {
                    id: req.id.clone(),
                    ..Default::default()
                },
                RUNTIME_TIMEOUT,
            )
            .map_err(|e| Error::shim(&format!("{verb} container {}", req.id), e))?;
        c.update(|r| {
            if pause {
                r.pause(now_nanos())?;
            } else {
                r.resume()?;
            }
            Ok(())
        })?;
        Ok(())
    }

    pub fn update(&self, req: api::UpdateRequest) -> Result<()> {
        let c = self.get(&req.namespace, &req.id)?;
        serde_json::from_slice::<oci_spec::runtime::LinuxResources>(&req.resources)
            .map_err(|e| Error::InvalidArgument(format!("the resources are not valid: {e}")))?;
        let shim = c.shim()?;
        let ureq = task::UpdateTaskRequest {
            id: req.id.clone(),
            resources: MessageField::some(Any {
                type_url: RESOURCES_TYPE_URL.into(),
                value: req.resources,
                ..Default::default()
            }),
            ..Default::default()
        };
        shim.task
            .call::<_, tether_protocol::api::Empty>("Update", &ureq, RUNTIME_TIMEOUT)
            .map_err(|e| Error::shim(&format!("update container {}", req.id), e))?;
        Ok(())
    }

    pub fn stats(&self, req: api::ContainerRef) -> Result<api::StatsResponse> {
        let c = self.get(&req.namespace, &req.id)?;
        let shim = c.shim()?;
        let resp: task::StatsResponse = shim
            .task
            .call(
                "Stats",
                &task::StatsRequest {
                    id: req.id.clone(),
                    ..Default::default()
                },
                CALL_TIMEOUT,
            )
            .map_err(|e| Error::shim(&format!("stats of container {}", req.id), e))?;
        Ok(crate::daemon::containers::stats::decode(
            resp.stats.as_ref(),
        ))
    }

    pub fn close_io(&self, req: api::ProcessRef) -> Result<()> {
        let c = self.get(&req.namespace, &req.id)?;
        let shim = c.shim()?;
        let creq = task::CloseIORequest {
            id: req.id.clone(),
            exec_id: req.exec_id.clone(),
            stdin: true,
            ..Default::default()
        };
        shim.task
            .call::<_, tether_protocol::api::Empty>("CloseIO", &creq, CALL_TIMEOUT)
            .map_err(|e| {
                Error::shim(
                    &format!("close the stdin of {}", describe(&req.id, &req.exec_id)),
                    e,
                )
            })?;
        Ok(())
    }

    pub fn resize_pty(&self, req: api::ResizePtyRequest) -> Result<()> {
        let c = self.get(&req.namespace, &req.id)?;
        let shim = c.shim()?;
        let rreq = task::ResizePtyRequest {
            id: req.id.clone(),
            exec_id: req.exec_id.clone(),
            width: req.width,
            height: req.height,
            ..Default::default()
        };
        shim.task
            .call::<_, tether_protocol::api::Empty>("ResizePty", &rreq, CALL_TIMEOUT)
            .map_err(|e| {
                Error::shim(
                    &format!("resize the terminal of {}", describe(&req.id, &req.exec_id)),
                    e,
                )
            })?;
        Ok(())
    }
}
