//! The bus: order, filters, de-duplication, muting, and the journal across restarts.

use super::ring::entry_of;
use super::*;
use crate::daemon::events::journal::Journal;
use crate::filter::Filters;
use protobuf::Message;
use serde_json::Value;
use tether_protocol::api::events as ev;

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
fn polls_in_order_with_filters_and_no_duplicates() {
    let bus = Bus::default();
    for i in 0..10 {
        let ns = if i % 2 == 0 { "a" } else { "b" };
        bus.publish(NewEvent::decode(
            i,
            ns.into(),
            "/tasks/exit".into(),
            "containerd.events.TaskExit".into(),
            exit(&format!("c{i}")),
            false,
        ));
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
    NewEvent::decode(
        1,
        "ns".into(),
        "/tasks/exit".into(),
        "containerd.events.TaskExit".into(),
        exit(id),
        recovered,
    )
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

/// A restart reads the journal while it probes shims: an event published meanwhile waits for
/// the journal and is numbered after its last event, never reusing a number; a bus whose
/// journal could not be read accepts nothing.
#[test]
fn a_pending_bus_numbers_events_after_its_journal_once_loaded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("events.journal");
    let o = Journal::open(&p, 100).expect("open");
    let bus = Bus::with_journal(o.journal, o.entries);
    bus.publish_batch(
        (1..=3)
            .map(|i| exit_event(&format!("c{i}"), false))
            .collect(),
    )
    .expect("publish");
    drop(bus);
    let bus = Arc::new(Bus::pending());
    bus.mute("ns", "muted");
    let publisher = {
        let bus = bus.clone();
        std::thread::spawn(move || {
            (
                bus.publish(exit_event("muted", false)),
                bus.publish(exit_event("c4", false)),
            )
        })
    };
    let o = Journal::open(&p, 100).expect("reopen");
    bus.load(o.journal, o.entries);
    assert_eq!(publisher.join().expect("publisher"), (None, Some(4)));
    assert_eq!(bus.publish(exit_event("c1", false)), None, "a duplicate");

    let broken = Bus::pending();
    broken.fail("cannot read the journal");
    assert!(broken.publish_batch(vec![exit_event("c5", false)]).is_err());
}
