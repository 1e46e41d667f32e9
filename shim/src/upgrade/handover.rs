//! The old image's side of a live upgrade: the record of what the loop holds, the fds made
//! inheritable, and the `execve` of the binary installed at the shim's path. It returns only
//! when the `execve` did not happen, with everything as it was.

use super::exec;
use super::record::{ConnRecord, Record, RECORD_VERSION};
use crate::error::{Result, ShimError};
use crate::server::Server;
use crate::task::Ready;
use std::os::fd::{AsRawFd, OwnedFd};

impl Server {
    /// Commits an upgrade whose check passed. On return the request has been answered with
    /// why the handover did not happen.
    pub fn handover(&mut self, ready: Ready) {
        let why = match self.try_handover(ready) {
            Ok(never) => match never {},
            Err(e) => e,
        };
        log::warn!("upgrade not done, this image serves on: {why}");
        self.service.answer_upgrade(ready.reply, Err(why));
    }

    fn try_handover(&mut self, ready: Ready) -> Result<std::convert::Infallible> {
        // The check ran in the loop: work may have started meanwhile.
        if let Some(why) = self.service.not_quiescent() {
            return Err(why);
        }
        let Some(exe) = self.service.upgrade_exe.take() else {
            return Err(ShimError::FailedPrecondition(
                "upgrade refused: the checked binary is not held open".into(),
            ));
        };
        let committed_at = exec::monotonic_nanos();
        let mut record = self.record(ready);
        record.committed_at = committed_at;
        let memfd = exec::write_record(&record)?;
        let mut fds = record.fds();
        fds.push(memfd.as_raw_fd());
        if let Err(e) = exec::set_cloexec(&fds, false) {
            // Some may be cleared already: none may leak into the commands this image runs next.
            let _ = exec::set_cloexec(&fds, true);
            return Err(e);
        }
        let mut argv = vec![self.binary.to_string_lossy().into_owned()];
        argv.extend(self.args.iter().cloned());
        argv.extend(["-resume-from".to_string(), memfd.as_raw_fd().to_string()]);
        log::info!(
            "upgrade: handing over to {} ({} fds)",
            self.binary.display(),
            fds.len()
        );
        let failed = exec::exec_checked(&exe, &self.binary, &argv);
        // Still here: nothing of this image may leak into the commands it runs next.
        if let Err(e) = exec::set_cloexec(&fds, true) {
            log::error!("upgrade: restore close-on-exec: {e}");
        }
        drop::<OwnedFd>(memfd);
        Err(ShimError::FailedPrecondition(format!(
            "upgrade refused: {failed}"
        )))
    }

    /// What this image holds, by fd number.
    fn record(&mut self, ready: Ready) -> Record {
        let mut conns: Vec<ConnRecord> = self
            .conns
            .iter_mut()
            .map(|(t, c)| {
                // What the socket takes now need not travel in the record.
                c.flush();
                let (inbuf, outbuf) = c.buffers();
                ConnRecord {
                    token: t.0,
                    fd: c.stream.as_raw_fd(),
                    inbuf: inbuf.to_vec(),
                    outbuf: outbuf.to_vec(),
                }
            })
            .collect();
        conns.sort_by_key(|c| c.token);
        let (pumps, next_pump) = self.service.pumps.export();
        let ex = self.service.export();
        let events = self.service.publisher.export();
        Record {
            record_version: RECORD_VERSION,
            shim_version: env!("CARGO_PKG_VERSION").to_string(),
            namespace: self.service.namespace.clone(),
            reply: ready.reply_record(),
            requested_at: ready.requested_at,
            committed_at: 0,
            fallback_exe: self.self_exe.as_raw_fd(),
            listener: self.listener.as_raw_fd(),
            conns,
            next_conn: self.next_conn,
            waiters: ex.waiters,
            containers: ex.containers,
            pumps,
            next_pump,
            ooms: ex.ooms,
            next_oom: ex.next_oom,
            events,
            unclaimed: ex.unclaimed,
            deferred: ex.deferred,
        }
    }
}
