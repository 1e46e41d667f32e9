//! What the daemon serves: our manager API (ttrpc, for the CLI), and the sink behind
//! containerd's Events service that shims publish to (framed on the monitor's loop). Both are
//! thin: the work is in [`crate::daemon::containers`] and [`crate::daemon::events`].

use crate::daemon::containers::Containers;
use crate::daemon::event_server::Sink;
use crate::daemon::events::{Bus, MAX_BATCH};
use crate::filter::Filters;
use std::sync::Arc;
use std::time::Duration;
use tether_protocol::api::forward::ForwardRequest;
use tether_protocol::api::ttrpc::{self, TtrpcContext};
use tether_protocol::manager_api::manager as api;
use tether_protocol::manager_api::manager_ttrpc::Manager;

/// The longest an `Events` poll may wait.
const MAX_POLL: Duration = Duration::from_secs(60);

pub struct ManagerService {
    pub containers: Arc<Containers>,
    pub bus: Arc<Bus>,
}

type R<T> = ttrpc::Result<T>;

impl Manager for ManagerService {
    fn create(&self, ctx: &TtrpcContext, req: api::CreateRequest) -> R<api::Container> {
        crate::daemon::peer::check(ctx.fd)?;
        Ok(self.containers.create(req)?)
    }
    fn start(&self, ctx: &TtrpcContext, req: api::StartRequest) -> R<api::StartResponse> {
        crate::daemon::peer::check(ctx.fd)?;
        Ok(self.containers.start(req)?)
    }
    fn exec(&self, ctx: &TtrpcContext, req: api::ExecRequest) -> R<api::StartResponse> {
        crate::daemon::peer::check(ctx.fd)?;
        Ok(self.containers.exec(req)?)
    }
    fn kill(&self, ctx: &TtrpcContext, req: api::KillRequest) -> R<api::Empty> {
        crate::daemon::peer::check(ctx.fd)?;
        self.containers.kill(req)?;
        Ok(api::Empty::new())
    }
    fn wait(&self, ctx: &TtrpcContext, req: api::WaitRequest) -> R<api::ExitStatus> {
        crate::daemon::peer::check(ctx.fd)?;
        Ok(self.containers.wait(req)?)
    }
    fn state(&self, ctx: &TtrpcContext, req: api::ContainerRef) -> R<api::Container> {
        crate::daemon::peer::check(ctx.fd)?;
        Ok(self.containers.state(req)?)
    }
    fn list(&self, ctx: &TtrpcContext, req: api::ListRequest) -> R<api::ListResponse> {
        crate::daemon::peer::check(ctx.fd)?;
        Ok(self.containers.list(req)?)
    }
    fn pause(&self, ctx: &TtrpcContext, req: api::ContainerRef) -> R<api::Empty> {
        crate::daemon::peer::check(ctx.fd)?;
        self.containers.pause(req, true)?;
        Ok(api::Empty::new())
    }
    fn resume(&self, ctx: &TtrpcContext, req: api::ContainerRef) -> R<api::Empty> {
        crate::daemon::peer::check(ctx.fd)?;
        self.containers.pause(req, false)?;
        Ok(api::Empty::new())
    }
    fn update(&self, ctx: &TtrpcContext, req: api::UpdateRequest) -> R<api::Empty> {
        crate::daemon::peer::check(ctx.fd)?;
        self.containers.update(req)?;
        Ok(api::Empty::new())
    }
    fn stats(&self, ctx: &TtrpcContext, req: api::ContainerRef) -> R<api::StatsResponse> {
        crate::daemon::peer::check(ctx.fd)?;
        Ok(self.containers.stats(req)?)
    }
    fn delete(&self, ctx: &TtrpcContext, req: api::DeleteRequest) -> R<api::ExitStatus> {
        crate::daemon::peer::check(ctx.fd)?;
        Ok(self.containers.delete(req)?)
    }
    fn close_io(&self, ctx: &TtrpcContext, req: api::ProcessRef) -> R<api::Empty> {
        crate::daemon::peer::check(ctx.fd)?;
        self.containers.close_io(req)?;
        Ok(api::Empty::new())
    }
    fn resize_pty(&self, ctx: &TtrpcContext, req: api::ResizePtyRequest) -> R<api::Empty> {
        crate::daemon::peer::check(ctx.fd)?;
        self.containers.resize_pty(req)?;
        Ok(api::Empty::new())
    }
    fn checkpoint(&self, ctx: &TtrpcContext, req: api::CheckpointRequest) -> R<api::Empty> {
        crate::daemon::peer::check(ctx.fd)?;
        self.containers.checkpoint(req)?;
        Ok(api::Empty::default())
    }
    fn upgrade(&self, ctx: &TtrpcContext, req: api::UpgradeRequest) -> R<api::UpgradeResponse> {
        crate::daemon::peer::check(ctx.fd)?;
        Ok(crate::daemon::upgrade::upgrade(&self.containers, req)?)
    }
    fn events(&self, ctx: &TtrpcContext, req: api::EventsRequest) -> R<api::EventsResponse> {
        crate::daemon::peer::check(ctx.fd)?;
        let filters = Filters::parse(&req.filters).map_err(crate::error::Error::from)?;
        let since = if req.from_now {
            self.bus.last()
        } else {
            req.since
        };
        let timeout = Duration::from_millis(u64::from(req.timeout_ms)).min(MAX_POLL);
        let max = if req.max == 0 {
            MAX_BATCH
        } else {
            req.max as usize
        };
        let batch = self.bus.poll(since, &filters, timeout, max);
        Ok(api::EventsResponse {
            events: batch.events.iter().map(|e| e.to_api()).collect(),
            next: batch.next,
            lost_before: batch.lost_before,
            ..Default::default()
        })
    }
}

/// containerd's `Events/Forward`, served on the monitor's loop (see [`Containers::forward`]).
pub fn forward_sink(containers: Arc<Containers>) -> Sink {
    Box::new(move |reqs: Vec<ForwardRequest>| containers.forward(reqs))
}
