//! The event bus: every event from every shim (and the manager's own synthetic ones) in one
//! sequence. Each event gets the next sequence number and is appended to the durable journal
//! (when the bus has one) before anyone hears of it; readers long-poll for events after the last
//! number they saw, so none is lost or seen twice, across daemon restarts too. An event already
//! accepted (same [`dedup::Key`]) is dropped, so a shim's retry is never reported twice.

use crate::dedup;
use crate::error::Result;
use crate::filter::{Fields, Filters};
use crate::journal::{self, Entry, Journal};
use protobuf::reflect::{MessageDescriptor, ReflectFieldRef, ReflectValueRef};
use protobuf::MessageFull;
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use tether_protocol::api::events as ev;
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

/// An event to put on the bus.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub timestamp: i64,
    pub namespace: String,
    pub topic: String,
    pub type_url: String,
    pub value: Vec<u8>,
    pub recovered: bool,
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

/// An event as filters see it: `topic`, `namespace`, `type_url`, and its fields by name (with or
/// without an `event.` prefix).
pub struct EventFields<'a> {
    pub topic: &'a str,
    pub namespace: &'a str,
    pub type_url: &'a str,
    pub fields: &'a Value,
}

impl Fields for EventFields<'_> {
    fn field(&self, path: &[String]) -> Option<String> {
        match path {
            [one] if one == "topic" => return Some(self.topic.to_string()),
            [one] if one == "namespace" => return Some(self.namespace.to_string()),
            [one] if one == "type_url" => return Some(self.type_url.to_string()),
            _ => {}
        }
        let path = match path.split_first() {
            Some((first, rest)) if first == "event" && !rest.is_empty() => rest,
            _ => path,
        };
        let mut v = self.fields;
        for p in path {
            v = v.get(p)?;
        }
        match v {
            Value::String(s) => Some(s.clone()),
            Value::Null => None,
            other => Some(other.to_string()),
        }
    }
}

impl Event {
    pub fn fields(&self) -> EventFields<'_> {
        EventFields {
            topic: &self.topic,
            namespace: &self.namespace,
            type_url: &self.type_url,
            fields: &self.fields,
        }
    }
}

struct Ring {
    /// The last sequence number given out.
    last: u64,
    events: VecDeque<Arc<Event>>,
    /// The key of every keyed event in `events`, with its sequence number.
    seen: HashMap<dedup::Key, u64>,
    journal: Option<Journal>,
    capacity: usize,
    /// Containers whose events are dropped, whatever they are: aborted creates being undone.
    muted: HashSet<(String, String)>,
}

impl Ring {
    fn push(&mut self, e: Arc<Event>) {
        if let Some(k) = dedup::key(&e.namespace, &e.topic, &e.fields) {
            self.seen.insert(k, e.seq);
        }
        self.last = self.last.max(e.seq);
        self.events.push_back(e);
        while self.events.len() > self.capacity {
            let Some(old) = self.events.pop_front() else {
                break;
            };
            if let Some(k) = dedup::key(&old.namespace, &old.topic, &old.fields) {
                if self.seen.get(&k) == Some(&old.seq) {
                    self.seen.remove(&k);
                }
            }
        }
    }
}

fn entry_of(e: &Event) -> Entry {
    Entry {
        seq: e.seq,
        timestamp: e.timestamp,
        namespace: e.namespace.clone(),
        topic: e.topic.clone(),
        type_url: e.type_url.clone(),
        value: journal::to_hex(&e.value),
        recovered: e.recovered,
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
    pub fn with_journal(journal: Journal, entries: Vec<Entry>) -> Bus {
        let bus = Bus::default();
        {
            let mut ring = bus.ring.lock().unwrap_or_else(|p| p.into_inner());
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
        }
        bus
    }

    /// Puts events on the bus, in order: each gets the next sequence number and is journaled
    /// (fsync'd) before any reader sees it. Returns, for each, its sequence number, or `None`
    /// if the same event was accepted before. On a journal error nothing is accepted.
    pub fn publish_batch(&self, batch: Vec<NewEvent>) -> Result<Vec<Option<u64>>> {
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        let mut seqs = Vec::with_capacity(batch.len());
        let mut fresh = Vec::new();
        let mut keys = HashSet::new();
        let mut next = ring.last;
        for n in batch {
            let fields = decode_fields(&n.type_url, &n.value);
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
        self.ring.lock().unwrap_or_else(|p| p.into_inner()).last
    }

    /// Events after `since` that match `filters`, waiting up to `timeout` for the first one.
    pub fn poll(&self, since: u64, filters: &Filters, timeout: Duration, max: usize) -> Batch {
        let deadline = Instant::now() + timeout;
        let max = max.clamp(1, MAX_BATCH);
        let mut cursor = since;
        let mut lost_before = 0;
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
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

/// The task event types containerd's shims publish.
fn descriptor(type_url: &str) -> Option<MessageDescriptor> {
    let name = type_url.rsplit('/').next().unwrap_or(type_url);
    [
        ev::TaskCreate::descriptor(),
        ev::TaskStart::descriptor(),
        ev::TaskDelete::descriptor(),
        ev::TaskExit::descriptor(),
        ev::TaskOOM::descriptor(),
        ev::TaskExecAdded::descriptor(),
        ev::TaskExecStarted::descriptor(),
        ev::TaskPaused::descriptor(),
        ev::TaskResumed::descriptor(),
        ev::TaskCheckpointed::descriptor(),
    ]
    .into_iter()
    .find(|d| d.full_name() == name)
}

/// The fields of an event as a JSON object (empty if its type is unknown or it does not decode).
pub fn decode_fields(type_url: &str, value: &[u8]) -> Value {
    let Some(d) = descriptor(type_url) else {
        return Value::Object(Map::new());
    };
    match d.parse_from_bytes(value) {
        Ok(msg) => message_json(&*msg),
        Err(_) => Value::Object(Map::new()),
    }
}

fn message_json(msg: &dyn protobuf::MessageDyn) -> Value {
    let d = msg.descriptor_dyn();
    if d.full_name() == "google.protobuf.Timestamp" {
        let get = |name: &str| {
            d.field_by_name(name)
                .and_then(|f| match f.get_singular_field_or_default(msg) {
                    ReflectValueRef::I64(v) => Some(v),
                    ReflectValueRef::I32(v) => Some(i64::from(v)),
                    _ => None,
                })
                .unwrap_or(0)
        };
        return Value::from(
            get("seconds")
                .saturating_mul(1_000_000_000)
                .saturating_add(get("nanos")),
        );
    }
    let mut obj = Map::new();
    for f in d.fields() {
        let v = match f.get_reflect(msg) {
            ReflectFieldRef::Optional(o) => match o.value() {
                Some(v) => value_json(v),
                // proto3 scalars at their default read as unset: show the default (an unset
                // message stays out).
                None => match f.get_singular_field_or_default(msg) {
                    ReflectValueRef::Message(_) => continue,
                    v => value_json(v),
                },
            },
            ReflectFieldRef::Repeated(r) => Value::Array(r.into_iter().map(value_json).collect()),
            ReflectFieldRef::Map(_) => continue,
        };
        obj.insert(f.name().to_string(), v);
    }
    Value::Object(obj)
}

fn value_json(v: ReflectValueRef<'_>) -> Value {
    match v {
        ReflectValueRef::U32(x) => x.into(),
        ReflectValueRef::U64(x) => x.into(),
        ReflectValueRef::I32(x) => x.into(),
        ReflectValueRef::I64(x) => x.into(),
        ReflectValueRef::F32(x) => f64::from(x).into(),
        ReflectValueRef::F64(x) => x.into(),
        ReflectValueRef::Bool(x) => x.into(),
        ReflectValueRef::String(s) => s.into(),
        ReflectValueRef::Bytes(b) => b.len().into(),
        ReflectValueRef::Enum(_, n) => n.into(),
        ReflectValueRef::Message(m) => message_json(&*m),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protobuf::Message;

    fn exit(id: &str) -> Vec<u8> {
        ev::TaskExit {
            container_id: id.into(),
            id: id.into(),
            pid: 7,
            exit_status: 3,
            ..Default::default()
        }
        .write_to_bytes()
        .expect("encode")
    }

    #[test]
    fn decodes_fields_of_task_events() {
        let f = decode_fields("containerd.events.TaskExit", &exit("c1"));
        assert_eq!(f["container_id"], "c1");
        assert_eq!(f["exit_status"], 3);
        let zero = ev::TaskExit {
            container_id: "c".into(),
            ..Default::default()
        };
        let f = decode_fields(
            "containerd.events.TaskExit",
            &zero.write_to_bytes().expect("encode"),
        );
        assert_eq!(f["exit_status"], 0, "defaults are shown: {f}");
        assert_eq!(f["exec_id"], Value::Null, "TaskExit has no exec_id");
        assert!(decode_fields("x.Unknown", b"")
            .as_object()
            .expect("object")
            .is_empty());
    }

    #[test]
    fn polls_in_order_with_filters_and_no_duplicates() {
        let bus = Bus::default();
        for i in 0..10 {
            let ns = if i % 2 == 0 { "a" } else { "b" };
            bus.publish(NewEvent {
                timestamp: i,
                namespace: ns.into(),
                topic: "/tasks/exit".into(),
                type_url: "containerd.events.TaskExit".into(),
                value: exit(&format!("c{i}")),
                recovered: false,
            });
        }
        let only_a = Filters::parse(&["namespace==a"]).expect("filter");
        let b = bus.poll(0, &only_a, Duration::ZERO, 3);
        assert_eq!(
            b.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![1, 3, 5]
        );
        let b2 = bus.poll(b.next, &only_a, Duration::ZERO, 100);
        assert_eq!(
            b2.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![7, 9]
        );
        assert_eq!(b2.next, 10);
        let b3 = bus.poll(b2.next, &only_a, Duration::ZERO, 100);
        assert!(b3.events.is_empty());
        assert_eq!(b3.next, 10);
        let by_field = Filters::parse(&["container_id==c4"]).expect("filter");
        let b4 = bus.poll(0, &by_field, Duration::ZERO, 100);
        assert_eq!(b4.events.len(), 1);
        assert_eq!(b4.events[0].seq, 5);
    }

    fn exit_event(id: &str, recovered: bool) -> NewEvent {
        NewEvent {
            timestamp: 1,
            namespace: "ns".into(),
            topic: "/tasks/exit".into(),
            type_url: "containerd.events.TaskExit".into(),
            value: exit(id),
            recovered,
        }
    }

    fn seqs(b: &Batch) -> Vec<u64> {
        b.events.iter().map(|e| e.seq).collect()
    }

    fn no_filter() -> Filters {
        Filters::parse(&[] as &[&str]).expect("none")
    }

    /// A corrupt line in the middle of the journal is skipped on load: its sequence number is a
    /// hole. A reader resuming just after the hole (or on it) still gets every later event.
    #[test]
    fn resuming_after_a_journal_hole_misses_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("events.journal");
        let o = Journal::open(&p, 100).expect("open");
        let bus = Bus::with_journal(o.journal, o.entries);
        let batch = (1..=6)
            .map(|i| exit_event(&format!("c{i}"), false))
            .collect();
        bus.publish_batch(batch).expect("publish");
        drop(bus);
        // Corrupt the record of event 3 (the third line), keeping its newline.
        let text = std::fs::read_to_string(&p).expect("read");
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        assert_eq!(lines.len(), 6);
        lines[2] = "{\"version\":\"v1\",\"seq\":3,garbage".into();
        std::fs::write(&p, lines.join("\n") + "\n").expect("write");
        let o = Journal::open(&p, 100).expect("reopen");
        assert_eq!(o.warnings.len(), 1, "{:?}", o.warnings);
        let bus = Bus::with_journal(o.journal, o.entries);
        assert_eq!(bus.last(), 6);
        for (since, want) in [
            (0, vec![1, 2, 4, 5, 6]),
            (2, vec![4, 5, 6]),
            (3, vec![4, 5, 6]),
            (4, vec![5, 6]),
            (6, vec![]),
        ] {
            let b = bus.poll(since, &no_filter(), Duration::ZERO, 100);
            assert_eq!(seqs(&b), want, "--since {since}");
            assert_eq!(b.next, 6, "--since {since}");
        }
        // Paging one event at a time across the hole visits each survivor once.
        let mut cursor = 0;
        let mut seen = Vec::new();
        loop {
            let b = bus.poll(cursor, &no_filter(), Duration::ZERO, 1);
            if b.events.is_empty() {
                break;
            }
            seen.extend(seqs(&b));
            cursor = b.next;
        }
        assert_eq!(seen, vec![1, 2, 4, 5, 6]);
        // New events continue after the last number ever given out.
        assert_eq!(bus.publish(exit_event("c7", false)), Some(7));
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(128))]

            /// Whatever holes the loaded journal has, polling after any `since` returns exactly
            /// the retained events numbered above it, in order, and pages of any size together
            /// return each of them once.
            #[test]
            fn polls_return_exactly_the_events_after_since(
                gaps in proptest::collection::vec(1u64..4, 0..24),
                since in 0u64..80,
                page in 1usize..5,
            ) {
                let dir = tempfile::tempdir().expect("tempdir");
                let p = dir.path().join("events.journal");
                let o = Journal::open(&p, 100).expect("open");
                let mut seq = 0;
                let mut entries = Vec::new();
                for (i, g) in gaps.iter().enumerate() {
                    seq += g;
                    entries.push(entry_of(&Event {
                        seq,
                        timestamp: 1,
                        namespace: "ns".into(),
                        topic: "/tasks/exit".into(),
                        type_url: "containerd.events.TaskExit".into(),
                        value: exit(&format!("c{i}")),
                        fields: Value::Null,
                        recovered: false,
                    }));
                }
                let all: Vec<u64> = entries.iter().map(|e| e.seq).collect();
                let bus = Bus::with_journal(o.journal, entries);
                let want: Vec<u64> = all.iter().copied().filter(|s| *s > since).collect();
                let b = bus.poll(since, &no_filter(), Duration::ZERO, 1000);
                prop_assert_eq!(seqs(&b), want.clone());
                let mut cursor = since;
                let mut got = Vec::new();
                for _ in 0..=all.len() {
                    let b = bus.poll(cursor, &no_filter(), Duration::ZERO, page);
                    prop_assert!(b.next >= cursor);
                    if b.events.is_empty() {
                        break;
                    }
                    got.extend(seqs(&b));
                    cursor = b.next;
                }
                prop_assert_eq!(got, want);
            }
        }
    }

    #[test]
    fn muted_containers_events_are_dropped_until_unmuted() {
        let bus = Bus::default();
        bus.mute("ns", "c1");
        assert_eq!(bus.publish(exit_event("c1", false)), None);
        assert_eq!(bus.publish(exit_event("c2", false)), Some(1));
        bus.unmute("ns", "c1");
        assert_eq!(bus.publish(exit_event("c1", false)), Some(2));
    }

    #[test]
    fn journaled_events_survive_a_restart_and_are_never_accepted_twice() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("events.journal");
        let o = Journal::open(&p, 100).expect("open");
        let bus = Bus::with_journal(o.journal, o.entries);
        let seqs = bus
            .publish_batch(vec![
                exit_event("c1", false),
                exit_event("c1", false),
                exit_event("c2", false),
            ])
            .expect("publish");
        assert_eq!(seqs, vec![Some(1), None, Some(2)]);
        drop(bus);
        let o = Journal::open(&p, 100).expect("reopen");
        let bus = Bus::with_journal(o.journal, o.entries);
        assert_eq!(bus.last(), 2);
        // A shim's retry, or the daemon's recovered exit, of an exit already accepted.
        assert_eq!(bus.publish(exit_event("c2", true)), None);
        assert_eq!(bus.publish(exit_event("c3", true)), Some(3));
        let all = bus.poll(
            0,
            &Filters::parse(&[] as &[&str]).expect("none"),
            Duration::ZERO,
            100,
        );
        assert_eq!(
            all.events
                .iter()
                .map(|e| (e.seq, e.recovered))
                .collect::<Vec<_>>(),
            vec![(1, false), (2, false), (3, true)]
        );
    }
}
