//! Publishing task events to containerd (`$TTRPC_ADDRESS`, Events/Forward) from the event loop.
//!
//! Events are queued and sent one at a time, in order: containerd's ttrpc server handles
//! requests concurrently, so pipelining could reorder create/start/exit. A send that fails (the
//! receiver is restarting) is retried with backoff; nothing here ever blocks the reaper.
//!
//! Bounds: at most `MAX_QUEUED` events wait; past that the oldest event that is not an exit is
//! dropped. Exits are never dropped (they are persisted before they are queued, and their number
//! is bounded by the processes the shim holds), and one the receiver refuses is offered again
//! with backoff until it is taken.

mod handover;

use crate::wire::{Conn, MESSAGE_TYPE_REQUEST, MESSAGE_TYPE_RESPONSE};
use containerd_shim_protos::ttrpc;
use mio::net::UnixStream;
use mio::{Interest, Registry, Token};
use protobuf::{Message, MessageField};
use std::collections::VecDeque;
use std::time::{Duration, Instant};
use tether_protocol::api::{forward::ForwardRequest, pack_any, Any, TypeUrl};
use tether_protocol::task_service::EVENTS_SERVICE;
use tether_protocol::time::{now_nanos, to_timestamp};

/// Events kept while the receiver is away; the oldest are dropped beyond this.
const MAX_QUEUED: usize = 10_000;
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

struct Queued {
    topic: String,
    /// An exit: never dropped, retried until the receiver takes it.
    keep: bool,
    event: Any,
    at: i64,
}

pub struct Publisher {
    socket: Option<std::path::PathBuf>,
    namespace: String,
    token: Token,
    queue: VecDeque<Queued>,
    conn: Option<Conn>,
    /// Stream id of the request in flight, and when it was sent.
    in_flight: Option<(u32, Instant)>,
    next_stream: u32,
    retry_at: Option<Instant>,
    backoff: Duration,
}

impl Publisher {
    /// `address` is `$TTRPC_ADDRESS` (a socket path or `unix://` address); none disables events.
    pub fn new(address: Option<&str>, namespace: &str, token: Token) -> Self {
        Publisher {
            socket: address.and_then(tether_protocol::socket::from_address),
            namespace: namespace.to_string(),
            token,
            queue: VecDeque::new(),
            conn: None,
            in_flight: None,
            next_stream: 1,
            retry_at: None,
            backoff: Duration::from_millis(50),
        }
    }

    /// Queues an event and sends it as soon as the receiver takes it.
    pub fn publish<M: TypeUrl>(&mut self, registry: &Registry, topic: &'static str, msg: &M) {
        if self.socket.is_none() {
            return;
        }
        let event = match pack_any(msg) {
            Ok(a) => a,
            Err(e) => {
                log::error!("cannot encode {topic} event: {e}");
                return;
            }
        };
        if self.queue.len() >= MAX_QUEUED {
            // Not the one in flight (index 0 while a send is out).
            let skip = usize::from(self.in_flight.is_some());
            match self.queue.iter().skip(skip).position(|q| !q.keep) {
                Some(i) => {
                    let dropped = self.queue.remove(i + skip);
                    log::error!(
                        "event queue full ({MAX_QUEUED}): dropped the oldest droppable event ({})",
                        dropped.map(|q| q.topic).unwrap_or_default()
                    );
                }
                None => log::warn!("event queue holds {} exits", self.queue.len()),
            }
        }
        self.queue.push_back(Queued {
            topic: topic.to_string(),
            keep: topic == tether_protocol::topics::TASK_EXIT,
            event,
            at: now_nanos(),
        });
        self.kick(registry);
    }

    pub fn is_idle(&self) -> bool {
        self.queue.is_empty()
    }

    /// When the loop should wake us next (retry or reply deadline).
    pub fn deadline(&self) -> Option<Instant> {
        match self.in_flight {
            Some((_, sent)) => Some(sent + REPLY_TIMEOUT),
            None if !self.queue.is_empty() => self.retry_at,
            None => None,
        }
    }

    /// Drives the queue: connects if needed and sends the next event.
    pub fn kick(&mut self, registry: &Registry) {
        let now = Instant::now();
        if let Some((_, sent)) = self.in_flight {
            if now >= sent + REPLY_TIMEOUT {
                log::warn!("event receiver did not answer in {REPLY_TIMEOUT:?}; reconnecting");
                self.fail(registry);
            } else {
                return;
            }
        }
        if self.queue.is_empty() || self.retry_at.is_some_and(|t| now < t) {
            return;
        }
        if self.conn.is_none() && !self.connect(registry) {
            return;
        }
        self.send_front(registry);
    }

    fn connect(&mut self, registry: &Registry) -> bool {
        let Some(path) = &self.socket else {
            return false;
        };
        match UnixStream::connect(path) {
            Ok(mut s) => {
                if let Err(e) =
                    registry.register(&mut s, self.token, Interest::READABLE | Interest::WRITABLE)
                {
                    log::warn!("register event connection: {e}");
                    self.schedule_retry();
                    return false;
                }
                self.conn = Some(Conn::new(s));
                true
            }
            Err(e) => {
                log::debug!("event receiver {} unreachable: {e}", path.display());
                self.schedule_retry();
                false
            }
        }
    }

    fn schedule_retry(&mut self) {
        self.retry_at = Some(Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }

    fn fail(&mut self, registry: &Registry) {
        if let Some(mut c) = self.conn.take() {
            let _ = registry.deregister(&mut c.stream);
        }
        self.in_flight = None;
        self.schedule_retry();
    }

    fn send_front(&mut self, registry: &Registry) {
        let (Some(conn), Some(q)) = (self.conn.as_mut(), self.queue.front()) else {
            return;
        };
        let req = ForwardRequest {
            envelope: MessageField::some(containerd_shim_protos::shim::event::Envelope {
                timestamp: MessageField::some(to_timestamp(q.at)),
                namespace: self.namespace.clone(),
                topic: q.topic.clone(),
                event: MessageField::some(q.event.clone()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let payload = match req.write_to_bytes() {
            Ok(p) => p,
            Err(e) => {
                log::error!("encode {} event: {e}", q.topic);
                self.queue.pop_front();
                return;
            }
        };
        let treq =
            tether_protocol::wire::request(EVENTS_SERVICE, "Forward", payload, REPLY_TIMEOUT);
        let Ok(bytes) = treq.write_to_bytes() else {
            self.queue.pop_front();
            return;
        };
        let stream = self.next_stream;
        // Client stream ids are odd.
        self.next_stream = self.next_stream.wrapping_add(2);
        conn.send(stream, MESSAGE_TYPE_REQUEST, &bytes);
        if conn.closed {
            self.fail(registry);
            return;
        }
        self.in_flight = Some((stream, Instant::now()));
    }

    /// Readiness of the event connection.
    pub fn on_event(&mut self, registry: &Registry) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        conn.flush();
        let frames = conn.read_frames().unwrap_or_default();
        let closed = conn.closed;
        for f in frames {
            if f.kind != MESSAGE_TYPE_RESPONSE
                || self.in_flight.map(|(s, _)| s) != Some(f.stream_id)
            {
                continue;
            }
            self.in_flight = None;
            let refusal = match ttrpc::Response::parse_from_bytes(&f.payload) {
                Ok(r)
                    if r.status
                        .as_ref()
                        .is_none_or(|s| s.code() == ttrpc::Code::OK) =>
                {
                    None
                }
                Ok(r) => Some(
                    r.status
                        .as_ref()
                        .map(|s| s.message().to_string())
                        .unwrap_or_default(),
                ),
                Err(e) => Some(format!("unreadable reply: {e}")),
            };
            let keep = self.queue.front().is_some_and(|q| q.keep);
            match refusal {
                // An exit is offered again until it is taken.
                Some(why) if keep => {
                    log::warn!("event receiver refused an exit event ({why}); retrying");
                    self.schedule_retry();
                }
                Some(why) => {
                    log::warn!("event receiver refused an event: {why}");
                    self.queue.pop_front();
                }
                None => {
                    self.queue.pop_front();
                    self.backoff = Duration::from_millis(50);
                    self.retry_at = None;
                }
            }
        }
        if closed {
            self.fail(registry);
        }
        self.kick(registry);
    }
}
