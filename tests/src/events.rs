//! `ctr events` streamed in the background into a list a test can wait on.
//!
//! [`Events::start`] returns only once the subscription is live (it makes a probe event and
//! waits to see it), so nothing a test does afterwards can be missed. The stream covers every
//! namespace of the daemon: filter with the namespace or container id. The `ctr events` process
//! is killed by its pid and reaped on drop.

use crate::ctr::Ctr;
use crate::ids::unique_id;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// One line of `ctr events`.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// As ctr prints it: `2026-11-23 16:02:51.722765708 +0000 UTC`.
    pub timestamp: String,
    pub namespace: String,
    /// `/tasks/exit`, `/containers/create`, ...
    pub topic: String,
    /// The event as JSON text (may be empty when ctr cannot decode it).
    pub event: String,
    /// When this process read the line.
    pub received: Instant,
}

impl Event {
    /// The event body as JSON, if it is JSON.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_str(&self.event).ok()
    }

    /// The container the event is about: `container_id`, else `id` (for `/containers/*`).
    pub fn container_id(&self) -> Option<String> {
        let v = self.json()?;
        v.get("container_id")
            .or_else(|| v.get("id"))?
            .as_str()
            .map(String::from)
    }

    /// Whether it is `topic` about container `id`.
    pub fn is(&self, id: &str, topic: &str) -> bool {
        self.topic == topic && self.container_id().as_deref() == Some(id)
    }
}

/// Parses `DATE TIME ZONE_OFFSET ZONE NAMESPACE TOPIC [EVENT...]` as `ctr events` prints it.
pub fn parse_event_line(line: &str, received: Instant) -> Option<Event> {
    let mut f = line.trim_end().splitn(7, ' ');
    let timestamp = [f.next()?, f.next()?, f.next()?, f.next()?].join(" ");
    let namespace = f.next()?.to_string();
    let topic = f.next()?.to_string();
    if !topic.starts_with('/') {
        return None;
    }
    Some(Event {
        timestamp,
        namespace,
        topic,
        event: f.next().unwrap_or("").to_string(),
        received,
    })
}

#[derive(Default)]
struct State {
    events: Vec<Event>,
    /// Lines that did not parse (errors ctr printed, ...).
    other: Vec<String>,
    ended: bool,
    /// Lines containing this are the start-up probe's, and are not recorded.
    probe: String,
    probe_seen: bool,
}

type Shared = Arc<(Mutex<State>, Condvar)>;

/// A running `ctr events`.
pub struct Events {
    child: Child,
    shared: Shared,
    reader: Option<JoinHandle<()>>,
}

impl Events {
    /// Starts `ctr events` against `ctr`'s daemon and waits until it is subscribed.
    pub fn start(ctr: &Ctr) -> Events {
        let probe = unique_id("probe");
        let shared: Shared = Arc::new((
            Mutex::new(State {
                probe: probe.clone(),
                ..State::default()
            }),
            Condvar::new(),
        ));
        let mut child = ctr
            .command(&["events"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start `ctr events`");
        let stdout = child.stdout.take().expect("stdout was piped");
        let stderr = child.stderr.take().expect("stderr was piped");
        let sink = Arc::clone(&shared);
        let reader = thread::spawn(move || read_stream(stdout, stderr, sink));
        let events = Events {
            child,
            shared,
            reader: Some(reader),
        };
        events.sync(ctr, &probe);
        events
    }

    /// Makes namespace events named `probe` until one shows up in the stream.
    fn sync(&self, ctr: &Ctr, probe: &str) {
        let deadline = Instant::now() + ctr.timeout();
        let label = |n: u32| format!("probe={n}");
        ctr.call_ok(&["namespaces", "create", probe]);
        let mut n = 0;
        loop {
            let (lock, cv) = &*self.shared;
            let mut st = lock.lock().unwrap_or_else(|p| p.into_inner());
            let wait_until = Instant::now() + Duration::from_millis(100);
            loop {
                if st.probe_seen {
                    drop(st);
                    ctr.call(&["namespaces", "remove", probe]);
                    return;
                }
                let now = Instant::now();
                if st.ended || now >= wait_until {
                    break;
                }
                st = cv
                    .wait_timeout(st, wait_until - now)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            let ended = st.ended;
            let said = st.other.join("\n");
            drop(st);
            if ended || Instant::now() >= deadline {
                ctr.call(&["namespaces", "remove", probe]);
                panic!("`ctr events` did not come up (ended: {ended}); it said:\n{said}");
            }
            // The subscription may have started after the create: make another event.
            n += 1;
            ctr.call(&["namespaces", "label", probe, &label(n)]);
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.shared.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every event so far, in arrival order.
    pub fn snapshot(&self) -> Vec<Event> {
        self.state().events.clone()
    }

    /// The events so far about container `id`.
    pub fn for_container(&self, id: &str) -> Vec<Event> {
        self.snapshot()
            .into_iter()
            .filter(|e| e.container_id().as_deref() == Some(id))
            .collect()
    }

    /// The topics so far about container `id`, in order.
    pub fn topics_for(&self, id: &str) -> Vec<String> {
        self.for_container(id)
            .into_iter()
            .map(|e| e.topic)
            .collect()
    }

    /// Waits for the first event (past or future) matching `pred`; panics with everything seen
    /// when `timeout` passes or the stream ends first.
    pub fn wait_for(&self, pred: impl Fn(&Event) -> bool, timeout: Duration) -> Event {
        let deadline = Instant::now() + timeout;
        let (lock, cv) = &*self.shared;
        let mut st = lock.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(e) = st.events.iter().find(|e| pred(e)) {
                return e.clone();
            }
            let now = Instant::now();
            if st.ended || now >= deadline {
                let seen: Vec<String> = st
                    .events
                    .iter()
                    .map(|e| format!("{} {} {} {}", e.timestamp, e.namespace, e.topic, e.event))
                    .chain(st.other.iter().cloned())
                    .collect();
                panic!(
                    "no matching event within {timeout:?} (stream ended: {}); seen:\n{}",
                    st.ended,
                    seen.join("\n")
                );
            }
            st = cv
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Waits for `topic` about container `id`.
    pub fn wait_for_topic(&self, id: &str, topic: &str, timeout: Duration) -> Event {
        self.wait_for(|e| e.is(id, topic), timeout)
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        // Still our unreaped child, so the pid is its own.
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

fn read_stream(
    stdout: impl std::io::Read + Send + 'static,
    stderr: impl std::io::Read + Send + 'static,
    shared: Shared,
) {
    let err_sink = Arc::clone(&shared);
    let errs = thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let (lock, cv) = &*err_sink;
            lock.lock()
                .unwrap_or_else(|p| p.into_inner())
                .other
                .push(format!("stderr: {line}"));
            cv.notify_all();
        }
    });
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        let received = Instant::now();
        let (lock, cv) = &*shared;
        let mut st = lock.lock().unwrap_or_else(|p| p.into_inner());
        if line.contains(&st.probe) {
            st.probe_seen = true;
        } else {
            match parse_event_line(&line, received) {
                Some(e) => st.events.push(e),
                None => st.other.push(line),
            }
        }
        cv.notify_all();
    }
    let _ = errs.join();
    let (lock, cv) = &*shared;
    lock.lock().unwrap_or_else(|p| p.into_inner()).ended = true;
    cv.notify_all();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_task_event() {
        let line = "2026-11-23 16:02:51.804529965 +0000 UTC t1 /tasks/start {\"container_id\":\"c1\",\"pid\":6592}";
        let e = parse_event_line(line, Instant::now()).expect("parses");
        assert_eq!(e.timestamp, "2026-11-23 16:02:51.804529965 +0000 UTC");
        assert_eq!(e.namespace, "t1");
        assert_eq!(e.topic, "/tasks/start");
        assert_eq!(e.container_id().as_deref(), Some("c1"));
        assert!(e.is("c1", "/tasks/start"));
        assert_eq!(e.json().expect("json")["pid"], 6592);
    }

    #[test]
    fn container_events_use_id_and_bodies_may_have_spaces() {
        let line = "2026-11-23 16:02:51.7 +0000 UTC ns /containers/create {\"id\":\"c 1\"}";
        let e = parse_event_line(line, Instant::now()).expect("parses");
        assert_eq!(e.container_id().as_deref(), Some("c 1"));
        assert!(parse_event_line("ctr: some error", Instant::now()).is_none());
        let bare = parse_event_line("2026-11-23 16:02:51.7 +0000 UTC ns /x/y ", Instant::now())
            .expect("parses without body");
        assert_eq!(bare.event, "");
    }
}
