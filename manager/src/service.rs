//! What the daemon serves: our manager API (ttrpc, for the CLI), and the sink behind
//! containerd's Events service that shims publish to (framed on the monitor's loop). Both are
//! thin: the work is in [`crate::containers`] and [`crate::events`].

use crate::containers::Containers;
use crate::event_server::Sink;
use crate::events::{Bus, NewEvent, MAX_BATCH};
use crate::filter::Filters;
use std::sync::Arc;
use std::time::Duration;
use tether_protocol::api::events::TaskExit;
use tether_protocol::api::forward::ForwardRequest;
use tether_protocol::api::ttrpc::{self, TtrpcContext};
use tether_protocol::api::Any;
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
    fn create(&self, _: &TtrpcContext, req: api::CreateRequest) -> R<api::Container> {
        Ok(self.containers.create(req)?)
    }
    fn start(&self, _: &TtrpcContext, req: api::StartRequest) -> R<api::StartResponse> {
        Ok(self.containers.start(req)?)
    }
    fn exec(&self, _: &TtrpcContext, req: api::ExecRequest) -> R<api::StartResponse> {
        Ok(self.containers.exec(req)?)
    }
    fn kill(&self, _: &TtrpcContext, req: api::KillRequest) -> R<api::Empty> {
        self.containers.kill(req)?;
        Ok(api::Empty::new())
    }
    fn wait(&self, _: &TtrpcContext, req: api::WaitRequest) -> R<api::ExitStatus> {
        Ok(self.containers.wait(req)?)
    }
    fn state(&self, _: &TtrpcContext, req: api::ContainerRef) -> R<api::Container> {
        Ok(self.containers.state(req)?)
    }
    fn list(&self, _: &TtrpcContext, req: api::ListRequest) -> R<api::ListResponse> {
        Ok(self.containers.list(req)?)
    }
    fn pause(&self, _: &TtrpcContext, req: api::ContainerRef) -> R<api::Empty> {
        self.containers.pause(req, true)?;
        Ok(api::Empty::new())
    }
    fn resume(&self, _: &TtrpcContext, req: api::ContainerRef) -> R<api::Empty> {
        self.containers.pause(req, false)?;
        Ok(api::Empty::new())
    }
    fn update(&self, _: &TtrpcContext, req: api::UpdateRequest) -> R<api::Empty> {
        self.containers.update(req)?;
        Ok(api::Empty::new())
    }
    fn stats(&self, _: &TtrpcContext, req: api::ContainerRef) -> R<api::StatsResponse> {
        Ok(self.containers.stats(req)?)
    }
    fn delete(&self, _: &TtrpcContext, req: api::DeleteRequest) -> R<api::ExitStatus> {
        Ok(self.containers.delete(req)?)
    }
    fn close_io(&self, _: &TtrpcContext, req: api::ProcessRef) -> R<api::Empty> {
        self.containers.close_io(req)?;
        Ok(api::Empty::new())
    }
    fn resize_pty(&self, _: &TtrpcContext, req: api::ResizePtyRequest) -> R<api::Empty> {
        self.containers.resize_pty(req)?;
        Ok(api::Empty::new())
    }
    fn checkpoint(&self, _: &TtrpcContext, req: api::CheckpointRequest) -> R<api::Empty> {
        self.containers.checkpoint(req)?;
        Ok(api::Empty::default())
    }
    fn upgrade(&self, _: &TtrpcContext, req: api::UpgradeRequest) -> R<api::UpgradeResponse> {
        Ok(crate::upgrade::upgrade(&self.containers, req)?)
    }
    fn events(&self, _: &TtrpcContext, req: api::EventsRequest) -> R<api::EventsResponse> {
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

/// containerd's `Events/Forward`, served on the monitor's loop: what shims publish is
/// journaled (one fsync per batch) and put on the bus before the shims hear "ok", then the
/// container table learns from it (the init's exit).
pub fn forward_sink(containers: Arc<Containers>, bus: Arc<Bus>) -> Sink {
    Box::new(move |reqs: Vec<ForwardRequest>| {
        let mut events = Vec::with_capacity(reqs.len());
        // Which request each event to publish comes from: another init's are dropped.
        let mut from = Vec::with_capacity(reqs.len());
        for (i, req) in reqs.iter().enumerate() {
            let env = req.envelope.clone().unwrap_or_default();
            if let Some(ev) = env.event.as_ref() {
                if containers.is_other_init(&env.namespace, &env.topic, ev) {
                    log::debug!(
                        "dropped {} of {}: not the init the daemon knows",
                        env.topic,
                        env.namespace
                    );
                    continue;
                }
            }
            let timestamp = env
                .timestamp
                .as_ref()
                .map(tether_protocol::time::from_timestamp)
                .unwrap_or_else(tether_protocol::time::now_nanos);
            let (type_url, value) = env
                .event
                .as_ref()
                .map(|a| (a.type_url.clone(), a.value.clone()))
                .unwrap_or_default();
            events.push(NewEvent {
                timestamp,
                namespace: env.namespace,
                topic: env.topic,
                type_url,
                value,
                recovered: false,
            });
            from.push(i);
        }
        match bus.publish_batch(events) {
            Ok(published) => {
                let mut seqs = vec![None; reqs.len()];
                for (i, seq) in from.into_iter().zip(published) {
                    seqs[i] = seq;
                }
                reqs.iter()
                    .zip(seqs)
                    .map(|(req, seq)| {
                        // A duplicate (or a suppressed event) taught us nothing new.
                        if let (Some(env), Some(seq)) = (req.envelope.as_ref(), seq) {
                            if let Some(ev) = env.event.as_ref() {
                                log_exit(&containers, seq, &env.namespace, &env.topic, ev);
                                containers.on_event(&env.namespace, &env.topic, ev);
                            }
                        }
                        Ok(())
                    })
                    .collect()
            }
            Err(e) => {
                log::error!("events not accepted (the shims send them again): {e}");
                let msg = format!("the daemon could not journal the event: {e}");
                reqs.iter()
                    .map(|_| Err(crate::error::Error::Unavailable(msg.clone())))
                    .collect()
            }
        }
    })
}

/// Which exit a shim reported, from which process, and whether its container is in the table.
fn log_exit(containers: &Containers, seq: u64, namespace: &str, topic: &str, ev: &Any) {
    if topic != tether_protocol::topics::TASK_EXIT {
        return;
    }
    use protobuf::Message;
    if let Ok(e) = TaskExit::parse_from_bytes(&ev.value) {
        log::debug!(
            "event {seq}: /tasks/exit of {namespace}/{} ({}) pid {} status {} from a shim \
             (container {})",
            e.container_id,
            e.id,
            e.pid,
            e.exit_status,
            containers.describe_pid(namespace, &e.container_id)
        );
    }
}
