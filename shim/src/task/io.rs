//! `CloseIO` and `ResizePty`: a process's stdin and terminal.

use super::{find, Service};
use crate::error::{Result, ShimError};
use tether_protocol::api::task::{CloseIORequest, ResizePtyRequest};
use tether_protocol::api::Empty;

impl Service {
    pub(super) fn close_io(&mut self, req: CloseIORequest) -> Result<Empty> {
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
    pub(super) fn resize_pty(&mut self, req: ResizePtyRequest) -> Result<Empty> {
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
}
