//! The event bus: every event from every shim (and the manager's own synthetic ones) in one
//! sequence. Each event gets the next sequence number and is appended to the durable journal
//! (when the bus has one) before anyone hears of it; readers long-poll for events after the last
//! number they saw, so none is lost or seen twice, across daemon restarts too. An event already
//! accepted (same [`dedup::Key`]) is dropped, so a shim's retry is never reported twice.
//!
//! Here: the bus (publish, poll, mute). Decoding an event: `decode.rs`; the ring of recent
//! events and their keys: `ring.rs`.

mod decode;
pub(super) mod dedup;
pub(super) mod journal;
mod ring;
#[cfg(test)]
mod tests;

pub use decode::{decode_fields, Decoded};

use crate::error::Result;
use crate::filter::Filters;
use journal::{Entry, Journal};
use protobuf::MessageFull;
use ring::{entry_of, Ring};
use serde_json::Value;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use tether_protocol::manager_api::manager as api;

/// Events kept in memory for readers that fall behind.
pub const CAPACITY: usize = 100_000;
/// The most events one poll returns.
pub const MAX_BATCH: usize = 1000;

/// One event on the bus.
#[derive(Debug, Clone)]
pub struct Event {
    pub seq: u64,
    pub timestamp: i64,
    pub namespace: String,
    pub topic: String,
    pub type_url: String,
    pub value: Vec<u8>,
    /// The decoded event's fields (an object; empty for unknown types).
    pub fields: Value,
    /// Learned after a daemon restart (e.g. an exit that happened while it was down).
    pub recovered: bool,
}

/// An event to put on the bus, decoded once (see [`NewEvent::decode`]).
#[derive(Debug)]
pub struct NewEvent {
    pub timestamp: i64,
    pub namespace: String,
    pub topic: String,
    pub type_url: String,
    pub value: Vec<u8>,
    pub recovered: bool,
    /// `value` decoded: the bus takes its fields, the table its typed message.
    pub decoded: Decoded,
}

impl NewEvent {
    /// An event as a shim sent it: its bytes are decoded here, and nowhere else.
    pub fn decode(
        timestamp: i64,
        namespace: String,
        topic: String,
        type_url: String,
        value: Vec<u8>,
        recovered: bool,
    ) -> NewEvent {
        let decoded = Decoded::parse(&type_url, &value);
        NewEvent {
            timestamp,
            namespace,
            topic,
            type_url,
            value,
            recovered,
            decoded,
        }
    }

    /// An event the daemon makes itself (e.g. an exit it learned while it was down); `None` if
    /// the message does not encode.
    pub fn of<M: MessageFull>(
        timestamp: i64,
        namespace: &str,
        topic: &str,
        message: M,
        recovered: bool,
    ) -> Option<NewEvent> {
        let value = message.write_to_bytes().ok()?;
        Some(NewEvent {
            timestamp,
            namespace: namespace.to_string(),
            topic: topic.to_string(),
            type_url: M::descriptor().full_name().to_string(),
            value,
            recovered,
            decoded: Decoded::of(message),
        })
    }
}

impl Event {
    pub fn to_api(&self) -> api::Event {
        api::Event {
            seq: self.seq,
            timestamp: self.timestamp,
            namespace: self.namespace.clone(),
            topic: self.topic.clone(),
            type_url: self.type_url.clone(),
            value: self.value.clone(),
            fields_json: self.fields.to_string(),
            recovered: self.recovered,
            ..Default::default()
        }
    }
}

/// The bus. Cheap to share behind an `Arc`.
pub struct Bus {
    ring: Mutex<Ring>,
    arrived: Condvar,
}

impl Default for Bus {
    fn default() -> Self {
        Bus {
            ring: Mutex::new(Ring {
                last: 0,
                events: VecDeque::new(),
                seen: HashMap::new(),
                journal: None,
                capacity: CAPACITY,
                muted: HashSet::new(),
                loaded: true,
                broken: None,
            }),
            arrived: Condvar::new(),
        }
    }
}

/// What a poll returns.
#[derive(Debug, Default)]
pub struct Batch {
    pub events: Vec<Arc<Event>>,
    /// The sequence number to poll after next time.
    pub next: u64,
    /// Set when events after the caller's `since` were dropped from the buffer: the first kept.
    pub lost_before: u64,
}

impl Bus {
    /// A bus backed by `journal`, holding what it retained (its newest events).
    #[cfg(test)]
    pub fn with_journal(journal: Journal, entries: Vec<Entry>) -> Bus {
        let bus = Bus::pending();
        bus.load(journal, entries);
        bus
    }

    /// A bus whose journal is still being read (see [`Bus::load`]): it can be muted and
    /// suppressed at once, and publishing or polling waits until it is loaded. A daemon's
    /// restart reads its journal (thousands of events, ~20 us each) while it probes its shims.
    pub fn pending() -> Bus {
        let bus = Bus::default();
        bus.ring.lock().unwrap_or_else(|p| p.into_inner()).loaded = false;
        bus
    }

    /// Fills a [`Bus::pending`] bus from its journal; everyone waiting on it goes on.
    pub fn load(&self, journal: Journal, entries: Vec<Entry>) {
        let started = Instant::now();
        let n = entries.len();
        {
            let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
            ring.capacity = journal.keep();
            for e in entries {
                let Some(value) = journal::from_hex(&e.value) else {
                    log::warn!(
                        "journal {}: event {} has a value that is not hex; skipped",
                        journal.path().display(),
                        e.seq
                    );
                    ring.last = ring.last.max(e.seq);
                    continue;
                };
                let fields = decode_fields(&e.type_url, &value);
                ring.push(Arc::new(Event {
                    seq: e.seq,
                    timestamp: e.timestamp,
                    namespace: e.namespace,
                    topic: e.topic,
                    type_url: e.type_url,
                    value,
                    fields,
                    recovered: e.recovered,
                }));
            }
            ring.journal = Some(journal);
            ring.loaded = true;
        }
        self.arrived.notify_all();
        log::info!(
            "journal: {n} events loaded in {} ms",
            started.elapsed().as_millis()
        );
    }

    /// Ends a [`Bus::pending`] bus whose journal could not be read: nothing is accepted (the
    /// daemon stops with the error).
    pub fn fail(&self, why: &str) {
        {
            let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
            ring.broken = Some(why.to_string());
            ring.loaded = true;
        }
        self.arrived.notify_all();
    }

    /// The ring, once loaded.
    fn loaded(&self) -> std::sync::MutexGuard<'_, Ring> {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        self.arrived
            .wait_while(ring, |r| !r.loaded)
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Puts events on the bus, in order: each gets the next sequence number and is journaled
    /// (fsync'd) before any reader sees it. Returns, for each, its sequence number, or `None`
    /// if the same event was accepted before. On a journal error nothing is accepted.
    pub fn publish_batch(&self, batch: Vec<NewEvent>) -> Result<Vec<Option<u64>>> {
        let mut ring = self.loaded();
        if let Some(why) = &ring.broken {
            return Err(crate::error::Error::Unavailable(why.clone()));
        }
        let mut seqs = Vec::with_capacity(batch.len());
        let mut fresh = Vec::new();
        let mut keys = HashSet::new();
        let mut next = ring.last;
        for n in batch {
            let fields = n.decoded.fields();
            if !ring.muted.is_empty() {
                let container = fields.get("container_id").and_then(Value::as_str);
                if let Some(c) = container {
                    if ring.muted.contains(&(n.namespace.clone(), c.to_string())) {
                        log::debug!(
                            "dropped {} of {}/{c}: an aborted create's",
                            n.topic,
                            n.namespace
                        );
                        seqs.push(None);
                        continue;
                    }
                }
            }
            if let Some(k) = dedup::key(&n.namespace, &n.topic, &fields) {
                if ring.seen.contains_key(&k) || !keys.insert(k) {
                    seqs.push(None);
                    continue;
                }
            }
            next += 1;
            seqs.push(Some(next));
            fresh.push(Arc::new(Event {
                seq: next,
                timestamp: n.timestamp,
                namespace: n.namespace,
                topic: n.topic,
                type_url: n.type_url,
                value: n.value,
                fields,
                recovered: n.recovered,
            }));
        }
        if fresh.is_empty() {
            return Ok(seqs);
        }
        if let Some(j) = ring.journal.as_mut() {
            let entries: Vec<Entry> = fresh.iter().map(|e| entry_of(e)).collect();
            j.append(&entries)?;
        }
        for e in fresh {
            ring.push(e);
        }
        if ring.journal.as_ref().is_some_and(Journal::wants_compaction) {
            let kept: Vec<Entry> = ring.events.iter().map(|e| entry_of(e)).collect();
            if let Some(j) = ring.journal.as_mut() {
                if let Err(e) = j.compact(&kept) {
                    log::warn!("{e}");
                }
            }
        }
        drop(ring);
        self.arrived.notify_all();
        Ok(seqs)
    }

    /// Drops, from now on, the one-time events of process `pid` of `container` (an aborted
    /// create the daemon never acknowledged: its shim's late exit and delete are noise).
    pub fn suppress(&self, namespace: &str, container: &str, pid: u32) {
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        for topic in [
            tether_protocol::topics::TASK_START,
            tether_protocol::topics::TASK_EXIT,
            tether_protocol::topics::TASK_DELETE,
        ] {
            let key = dedup::Key {
                namespace: namespace.to_string(),
                container: container.to_string(),
                exec_id: String::new(),
                pid: u64::from(pid),
                topic: topic.to_string(),
            };
            // Sequence 0: never matched by an event leaving the ring, so it stays.
            ring.seen.entry(key).or_insert(0);
        }
    }

    /// Drops every event of `container` until [`Bus::unmute`]: a create the daemon never
    /// acknowledged is being undone, and nothing its shim says of it may be reported. Set before
    /// the shim is touched (and, after a restart, before any shim can reach the daemon).
    pub fn mute(&self, namespace: &str, container: &str) {
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        ring.muted
            .insert((namespace.to_string(), container.to_string()));
    }

    /// Lifts [`Bus::mute`]: the aborted create's shim is gone.
    pub fn unmute(&self, namespace: &str, container: &str) {
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        ring.muted
            .remove(&(namespace.to_string(), container.to_string()));
    }

    /// Puts one event on the bus: its sequence number, or `None` if it was accepted before or
    /// could not be journaled (logged).
    pub fn publish(&self, event: NewEvent) -> Option<u64> {
        match self.publish_batch(vec![event]) {
            Ok(seqs) => seqs.into_iter().next().flatten(),
            Err(e) => {
                log::error!("event not accepted: {e}");
                None
            }
        }
    }

    /// The last sequence number given out.
    pub fn last(&self) -> u64 {
        self.loaded().last
    }

    /// Events after `since` that match `filters`, waiting up to `timeout` for the first one.
    pub fn poll(&self, since: u64, filters: &Filters, timeout: Duration, max: usize) -> Batch {
        let deadline = Instant::now() + timeout;
        let max = max.clamp(1, MAX_BATCH);
        let mut cursor = since;
        let mut lost_before = 0;
        let mut ring = self.loaded();
        loop {
            let mut out = Vec::new();
            if let Some(first) = ring.events.front() {
                if first.seq > cursor + 1 && cursor < ring.last && lost_before == 0 {
                    lost_before = first.seq;
                }
            }
            // Sequence numbers increase in the ring but are not contiguous: a journal line that
            // was corrupt on load leaves a hole, so the first event after the cursor is searched
            // for, not computed from the front's number.
            let skip = ring.events.partition_point(|e| e.seq <= cursor);
            for e in ring.events.iter().skip(skip) {
                cursor = e.seq;
                if filters.matches(&e.fields()) {
                    out.push(e.clone());
                    if out.len() >= max {
                        break;
                    }
                }
            }
            cursor = cursor.max(if out.len() >= max {
                cursor
            } else {
                ring.last.max(since)
            });
            let now = Instant::now();
            if !out.is_empty() || now >= deadline {
                return Batch {
                    events: out,
                    next: cursor,
                    lost_before,
                };
            }
            ring = self
                .arrived
                .wait_timeout(ring, deadline - now)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }
}
