//! The requests that only read the table: `State`, `Stats`, `Connect`, and `Shutdown` (which
//! only sets a flag the loop reads).

use super::{encode, find, Ctx, Flow, Service};
use crate::error::{Result, ShimError};
use protobuf::MessageField;
use tether_protocol::api::task::*;
use tether_protocol::api::Empty;
use tether_protocol::time::to_timestamp;

impl Service {
    pub(super) fn state(&mut self, req: StateRequest) -> Result<StateResponse> {
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

    pub(super) fn stats(&mut self, req: StatsRequest) -> Result<StatsResponse> {
        let c = find(&mut self.containers, &req.id)?;
        if c.init.is_stopped() {
            return Err(ShimError::NotFound(format!(
                "container {}: no metrics: its init process has exited",
                req.id
            )));
        }
        let pid = c.init.require_pid("read the metrics of")?.as_u32();
        let cgroup = match c.cgroup.take() {
            Some((p, cg)) if p == pid && cg.exists() => cg,
            _ => crate::cgroup::locate(pid)?,
        };
        let stats = crate::stats::collect(pid, &cgroup);
        c.cgroup = Some((pid, cgroup));
        let stats = stats?;
        Ok(StatsResponse {
            stats: MessageField::some(stats),
            ..Default::default()
        })
    }

    pub(super) fn connect(&mut self, req: ConnectRequest) -> Result<ConnectResponse> {
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

    /// With no container left the shim stops; its answer waits for the runtime commands still
    /// in flight, so the requests they serve are answered first on the same connection
    /// (containerd closes its connection once `Shutdown` answers).
    pub(super) fn shutdown_req(&mut self, _req: ShutdownRequest, ctx: Ctx) -> Flow {
        if !self.is_empty() {
            return Flow::Done(encode(&Empty::new()));
        }
        self.shutdown = true;
        match ctx.reply {
            Some(to) if self.calls_in_flight() > 0 => {
                log::info!(
                    "shutdown: answered once {} runtime command(s) in flight end",
                    self.calls_in_flight()
                );
                self.shutdown_replies.push(to);
                Flow::Parked
            }
            _ => Flow::Done(encode(&Empty::new())),
        }
    }

    /// Answers the `Shutdown` requests held back (the loop calls it once no runtime command is
    /// in flight, or at its last moment).
    pub fn answer_shutdown(&mut self) {
        for to in std::mem::take(&mut self.shutdown_replies) {
            self.answer(Some(to), encode(&Empty::new()));
        }
    }
}
