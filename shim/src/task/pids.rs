//! `Pids`: `runc ps`, with each exec's id beside its pid.

use super::call::Then;
use super::{encode, find, Ctx, Flow, Service};
use crate::error::Result;
use crate::runtime::parse_ps;
use protobuf::MessageField;
use tether_protocol::api::pack_any;
use tether_protocol::api::runc_options::ProcessDetails;
use tether_protocol::api::task::{PidsRequest, PidsResponse, ProcessInfo};

impl Service {
    pub(super) fn pids(&mut self, req: PidsRequest, ctx: Ctx) -> Flow {
        let begun = (|| -> Result<Flow> {
            self.unqueued_room()?;
            let c = find(&mut self.containers, &req.id)?;
            let call = c.runtime.ps(&c.id)?;
            Ok(self.park(ctx, call, Then::Pids { id: req.id }))
        })();
        begun.unwrap_or_else(|e| Flow::Done(Err(e)))
    }

    pub(super) fn listed(&mut self, id: &str, result: Result<String>) -> Result<Vec<u8>> {
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
}
