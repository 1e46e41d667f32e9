//! The publisher across a live upgrade: its queue, and its connection with the `Forward` in
//! flight, go into the record, so the reply to that request reaches the new image and every
//! event is sent once.

use super::{Publisher, Queued};
use crate::error::{Result, ShimError};
use crate::upgrade::record::{ConnRecord, EventRecord, EventsRecord};
use crate::wire::Conn;
use mio::{Interest, Registry};
use std::os::fd::{AsRawFd, FromRawFd};
use std::time::Instant;
use tether_protocol::api::Any;

impl Publisher {
    /// The queue and the connection, by fd number (the connection stays open for `execve`).
    pub fn export(&mut self) -> EventsRecord {
        let conn = self.conn.as_mut().map(|c| {
            // What the socket takes now need not travel in the record.
            c.flush();
            let (inbuf, outbuf) = c.buffers();
            ConnRecord {
                token: self.token.0,
                fd: c.stream.as_raw_fd(),
                inbuf: inbuf.to_vec(),
                outbuf: outbuf.to_vec(),
            }
        });
        EventsRecord {
            conn,
            in_flight: self.in_flight.map(|(stream, _)| stream),
            next_stream: self.next_stream,
            queue: self
                .queue
                .iter()
                .map(|q| EventRecord {
                    topic: q.topic.clone(),
                    keep: q.keep,
                    type_url: q.event.type_url.clone(),
                    value: q.event.value.clone(),
                    at: q.at,
                })
                .collect(),
        }
    }

    /// Takes over an exported publisher: the connection is registered under this publisher's
    /// token; the request in flight gets a full reply timeout from now.
    pub fn import(&mut self, r: EventsRecord, registry: &Registry) -> Result<()> {
        self.queue = r
            .queue
            .into_iter()
            .map(|e| {
                let mut event = Any::new();
                event.type_url = e.type_url;
                event.value = e.value;
                Queued {
                    topic: e.topic,
                    keep: e.keep,
                    event,
                    at: e.at,
                }
            })
            .collect();
        self.next_stream = r.next_stream;
        if let Some(c) = r.conn {
            // SAFETY: the record names the event connection the old image held; ours alone now.
            let std_stream = unsafe { std::os::unix::net::UnixStream::from_raw_fd(c.fd) };
            let mut stream = mio::net::UnixStream::from_std(std_stream);
            registry
                .register(
                    &mut stream,
                    self.token,
                    Interest::READABLE | Interest::WRITABLE,
                )
                .map_err(ShimError::io(format!(
                    "re-register the event connection fd {}",
                    c.fd
                )))?;
            let mut conn = Conn::with_buffers(stream, c.inbuf, c.outbuf);
            conn.flush();
            self.conn = Some(conn);
            self.in_flight = r.in_flight.map(|s| (s, Instant::now()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{MESSAGE_TYPE_REQUEST, MESSAGE_TYPE_RESPONSE};
    use containerd_shim_protos::ttrpc;
    use mio::{Poll, Token};
    use protobuf::Message;
    use tether_protocol::api::events::TaskExit;

    /// Two events queued, the first sent and not yet answered, handed over: the new publisher
    /// takes the reply on the same connection and sends the second, never the first again.
    #[test]
    fn an_event_in_flight_is_answered_to_the_new_publisher_and_not_sent_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("events.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).expect("bind");
        let poll = Poll::new().expect("poll");
        let addr = path.to_string_lossy().into_owned();
        let mut old = Publisher::new(Some(&addr), "ns", Token(3));
        for n in [1, 2] {
            let ev = TaskExit {
                container_id: format!("c{n}"),
                ..Default::default()
            };
            old.publish(poll.registry(), tether_protocol::topics::TASK_EXIT, &ev);
        }
        let (mut peer, _) = listener.accept().expect("accept");
        peer.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .expect("timeout");
        let first = read_request(&mut peer);
        let record = old.export();
        assert_eq!(record.queue.len(), 2);
        assert!(record.in_flight.is_some());
        // The old image's fd numbers name the same open files here (one process).
        std::mem::forget(old);
        let mut poll2 = Poll::new().expect("poll");
        let mut new = Publisher::new(Some(&addr), "ns", Token(3));
        new.import(record, poll2.registry()).expect("import");
        let answer = ttrpc::Response::new().write_to_bytes().expect("encode");
        let frame = tether_protocol::wire::encode(first, MESSAGE_TYPE_RESPONSE, &answer);
        std::io::Write::write_all(&mut peer, &frame).expect("answer");
        let mut events = mio::Events::with_capacity(8);
        for _ in 0..100 {
            if new.queue.len() == 1 {
                break;
            }
            poll2
                .poll(&mut events, Some(std::time::Duration::from_millis(50)))
                .expect("poll");
            new.on_event(poll2.registry());
        }
        assert_eq!(
            new.queue.len(),
            1,
            "the reply took the first event off the queue"
        );
        let second = read_request(&mut peer);
        assert_ne!(second, first, "the next event is a new request");
        assert_eq!(
            new.queue.front().map(|q| q.topic.as_str()),
            Some("/tasks/exit")
        );
    }

    /// Reads one request frame's stream id from `peer`.
    fn read_request(peer: &mut std::os::unix::net::UnixStream) -> u32 {
        use std::io::Read;
        let mut head = [0u8; 10];
        peer.read_exact(&mut head).expect("frame header");
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let mut body = vec![0u8; len];
        peer.read_exact(&mut body).expect("frame body");
        assert_eq!(head[8], MESSAGE_TYPE_REQUEST);
        u32::from_be_bytes([head[4], head[5], head[6], head[7]])
    }
}
