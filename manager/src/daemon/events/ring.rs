//! The bus's memory: the newest events, the keys of those that happen once (to drop a retry),
//! the muted containers and the journal behind them.

use super::Event;
use crate::daemon::events::dedup;
use crate::daemon::events::journal::{self, Entry, Journal};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

pub(super) struct Ring {
    /// The last sequence number given out.
    pub(super) last: u64,
    pub(super) events: VecDeque<Arc<Event>>,
    /// The key of every keyed event in `events`, with its sequence number.
    pub(super) seen: HashMap<dedup::Key, u64>,
    pub(super) journal: Option<Journal>,
    pub(super) capacity: usize,
    /// Containers whose events are dropped, whatever they are: aborted creates being undone.
    pub(super) muted: HashSet<(String, String)>,
    /// False until the journal's events are in (see `Bus::pending`).
    pub(super) loaded: bool,
    /// Why the journal could not be read (then nothing is accepted).
    pub(super) broken: Option<String>,
}

impl Ring {
    pub(super) fn push(&mut self, e: Arc<Event>) {
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

pub(super) fn entry_of(e: &Event) -> Entry {
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
