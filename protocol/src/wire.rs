//! ttrpc framing, shared by the shim's and the manager's event loops, and a blocking one-call
//! client that needs no thread.
//!
//! A frame is a 10-byte header (big-endian length and stream id, type, flags) and a payload of
//! at most 4 MiB. The message types come from the `ttrpc` crate (`ttrpc::proto`); only the
//! framing and buffering are ours, because the crate's sync server and client need threads.

use crate::api::ttrpc;
use protobuf::Message;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;
use ttrpc::proto::{MessageHeader, MESSAGE_HEADER_LENGTH, MESSAGE_LENGTH_MAX};

pub use ttrpc::proto::{MESSAGE_TYPE_REQUEST, MESSAGE_TYPE_RESPONSE};

/// One decoded frame.
#[derive(Debug)]
pub struct Frame {
    pub stream_id: u32,
    pub kind: u8,
    pub payload: Vec<u8>,
}

/// A peer sent a frame we cannot take.
#[derive(Debug, thiserror::Error)]
#[error(
    "ttrpc frame on stream {stream_id} is {len} bytes, over the {MESSAGE_LENGTH_MAX}-byte limit"
)]
pub struct FrameTooLarge {
    pub stream_id: u32,
    pub len: usize,
}

/// Encodes one frame.
pub fn encode(stream_id: u32, kind: u8, payload: &[u8]) -> Vec<u8> {
    let header = MessageHeader {
        length: payload.len() as u32,
        stream_id,
        type_: kind,
        flags: 0,
    };
    let mut out: Vec<u8> = header.into();
    out.extend_from_slice(payload);
    out
}

/// A non-blocking ttrpc connection: buffered reads split into frames, buffered writes. `S` is
/// the stream (a `mio::net::UnixStream` on an event loop).
pub struct Conn<S> {
    pub stream: S,
    inbuf: Vec<u8>,
    outbuf: Vec<u8>,
    /// The peer closed its side (or the connection failed).
    pub closed: bool,
}

impl<S: Read + Write> Conn<S> {
    pub fn new(stream: S) -> Self {
        Conn {
            stream,
            inbuf: Vec::new(),
            outbuf: Vec::new(),
            closed: false,
        }
    }

    /// A connection handed over from another image of the same process (a live upgrade):
    /// the bytes it had read short of a whole frame and the replies it had not written yet.
    pub fn with_buffers(stream: S, inbuf: Vec<u8>, outbuf: Vec<u8>) -> Self {
        Conn {
            stream,
            inbuf,
            outbuf,
            closed: false,
        }
    }

    /// What a handover must carry: bytes read short of a frame, replies not yet written.
    pub fn buffers(&self) -> (&[u8], &[u8]) {
        (&self.inbuf, &self.outbuf)
    }

    /// Reads what is available and returns the whole frames received.
    pub fn read_frames(&mut self) -> Result<Vec<Frame>, FrameTooLarge> {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    self.closed = true;
                    break;
                }
                Ok(n) => self.inbuf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.closed = true;
                    break;
                }
            }
        }
        let mut frames = Vec::new();
        let mut at = 0;
        while self.inbuf.len() - at >= MESSAGE_HEADER_LENGTH {
            let header = MessageHeader::from(&self.inbuf[at..at + MESSAGE_HEADER_LENGTH]);
            let len = header.length as usize;
            if len > MESSAGE_LENGTH_MAX {
                self.closed = true;
                return Err(FrameTooLarge {
                    stream_id: header.stream_id,
                    len,
                });
            }
            let end = at + MESSAGE_HEADER_LENGTH + len;
            if self.inbuf.len() < end {
                break;
            }
            frames.push(Frame {
                stream_id: header.stream_id,
                kind: header.type_,
                payload: self.inbuf[at + MESSAGE_HEADER_LENGTH..end].to_vec(),
            });
            at = end;
        }
        self.inbuf.drain(..at);
        Ok(frames)
    }

    /// Queues a frame and writes what the socket takes now.
    pub fn send(&mut self, stream_id: u32, kind: u8, payload: &[u8]) {
        self.outbuf
            .extend_from_slice(&encode(stream_id, kind, payload));
        self.flush();
    }

    /// Whether bytes wait to be written.
    pub fn has_pending(&self) -> bool {
        !self.outbuf.is_empty()
    }

    /// How many bytes wait to be written (the peer has not read them).
    pub fn pending_bytes(&self) -> usize {
        self.outbuf.len()
    }

    /// Writes buffered bytes until the socket would block.
    pub fn flush(&mut self) {
        while !self.outbuf.is_empty() && !self.closed {
            match self.stream.write(&self.outbuf) {
                Ok(0) => self.closed = true,
                Ok(n) => {
                    self.outbuf.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => self.closed = true,
            }
        }
    }
}

/// A ttrpc request (the one place one is built): `deadline` is the server's (`timeout_nano`;
/// zero: none).
pub fn request(
    service: &str,
    method: &str,
    payload: Vec<u8>,
    deadline: Duration,
) -> ttrpc::Request {
    ttrpc::Request {
        service: service.to_string(),
        method: method.to_string(),
        timeout_nano: deadline.as_nanos().min(i64::MAX as u128) as i64,
        payload,
        ..Default::default()
    }
}

/// A ttrpc response (the one place one is built): the payload with status OK, or the error.
pub fn response(result: Result<Vec<u8>, ttrpc::Status>) -> ttrpc::Response {
    let mut res = ttrpc::Response::new();
    match result {
        Ok(payload) => {
            res.payload = payload;
            res.status = protobuf::MessageField::some(ttrpc::Status {
                code: ttrpc::Code::OK.into(),
                ..Default::default()
            });
        }
        Err(status) => res.status = protobuf::MessageField::some(status),
    }
    res
}

static NEXT_STREAM: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);

/// One blocking request on a fresh connection to the ttrpc server at `socket`: no thread, no
/// connection kept. A zero `timeout` waits for ever (as a task `Wait` must). Errors are the
/// `ttrpc` crate's, so callers tell a refusal (`RpcStatus`) from a dead peer (the rest); a
/// socket with no listener fails at once (`ECONNREFUSED`), never after a dial timeout.
pub fn call(
    socket: &Path,
    service: &str,
    method: &str,
    payload: Vec<u8>,
    timeout: Duration,
) -> ttrpc::Result<Vec<u8>> {
    call_with_deadline(socket, service, method, payload, timeout, timeout)
}

/// Like [`call`], telling the server `deadline` (`timeout_nano`, zero: none) and waiting up to
/// `timeout` for its answer. A caller that waits a little longer than the deadline it gives
/// always gets the server's verdict (done, or `DeadlineExceeded` and undone) rather than
/// giving up on work the server then completes.
pub fn call_with_deadline(
    socket: &Path,
    service: &str,
    method: &str,
    payload: Vec<u8>,
    deadline: Duration,
    timeout: Duration,
) -> ttrpc::Result<Vec<u8>> {
    let mut answers = call_pipelined(socket, service, vec![(method, payload)], deadline, timeout)?;
    answers
        .pop()
        .unwrap_or_else(|| Err(ttrpc::Error::Others(format!("no answer to {method}"))))
}

/// Several requests on one fresh connection, written at once (the server reads them in one
/// wake-up) and answered in any order: each answer, in the order of `calls`. The connection
/// failing fails them all (`Err` of the whole); a refusal fails only its call.
pub fn call_pipelined(
    socket: &Path,
    service: &str,
    calls: Vec<(&str, Vec<u8>)>,
    deadline: Duration,
    timeout: Duration,
) -> ttrpc::Result<Vec<ttrpc::Result<Vec<u8>>>> {
    let sock_err = |what: &str, e: io::Error| {
        ttrpc::Error::Socket(format!("{what} {}: {e}", socket.display()))
    };
    let mut stream = UnixStream::connect(socket).map_err(|e| sock_err("connect to", e))?;
    let limit = (!timeout.is_zero()).then_some(timeout);
    stream
        .set_read_timeout(limit)
        .and_then(|()| stream.set_write_timeout(limit))
        .map_err(|e| sock_err("set timeouts on", e))?;
    let mut frames = Vec::new();
    let mut pending = Vec::with_capacity(calls.len());
    for (method, payload) in calls {
        let bytes = request(service, method, payload, deadline)
            .write_to_bytes()
            .map_err(|e| ttrpc::Error::Others(format!("encode {method} request: {e}")))?;
        // Each call gets its own (odd) stream id, so a reply can never be taken for another's.
        let stream_id = NEXT_STREAM.fetch_add(2, std::sync::atomic::Ordering::Relaxed) | 1;
        frames.extend_from_slice(&encode(stream_id, MESSAGE_TYPE_REQUEST, &bytes));
        pending.push((stream_id, method, None));
    }
    stream
        .write_all(&frames)
        .map_err(|e| sock_err("write to", e))?;
    let mut left = pending.len();
    while left > 0 {
        let mut header = [0u8; MESSAGE_HEADER_LENGTH];
        read_exact(&mut stream, &mut header).map_err(|e| sock_err("read from", e))?;
        let h = MessageHeader::from(&header[..]);
        let len = h.length as usize;
        if len > MESSAGE_LENGTH_MAX {
            return Err(ttrpc::Error::Others(
                FrameTooLarge {
                    stream_id: h.stream_id,
                    len,
                }
                .to_string(),
            ));
        }
        let mut body = vec![0u8; len];
        read_exact(&mut stream, &mut body).map_err(|e| sock_err("read from", e))?;
        if h.type_ != MESSAGE_TYPE_RESPONSE {
            continue;
        }
        let Some((_, method, slot)) = pending
            .iter_mut()
            .find(|(id, _, slot)| *id == h.stream_id && slot.is_none())
        else {
            continue;
        };
        let answer = match ttrpc::Response::parse_from_bytes(&body) {
            Err(e) => Err(ttrpc::Error::Others(format!(
                "decode {method} response: {e}"
            ))),
            Ok(resp) => match resp.status.as_ref() {
                Some(status) if status.code() != ttrpc::Code::OK => {
                    Err(ttrpc::Error::RpcStatus(status.clone()))
                }
                _ => Ok(resp.payload),
            },
        };
        *slot = Some(answer);
        left -= 1;
    }
    Ok(pending
        .into_iter()
        .map(|(_, method, slot)| {
            slot.unwrap_or_else(|| Err(ttrpc::Error::Others(format!("no answer to {method}"))))
        })
        .collect())
}

/// `read_exact` that reports a closed peer as `UnexpectedEof` and a timeout as `TimedOut`.
fn read_exact(stream: &mut UnixStream, buf: &mut [u8]) -> io::Result<()> {
    stream.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::WouldBlock => io::Error::new(io::ErrorKind::TimedOut, "no answer in time"),
        _ => e,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_and_join_across_reads() {
        let (a, b) = UnixStream::pair().expect("pair");
        b.set_nonblocking(true).expect("nonblocking");
        let mut tx = Conn::new(a);
        let mut rx = Conn::new(b);
        tx.send(1, MESSAGE_TYPE_REQUEST, b"hello");
        tx.send(3, MESSAGE_TYPE_RESPONSE, b"");
        let frames = rx.read_frames().expect("frames");
        assert_eq!(frames.len(), 2);
        assert_eq!(
            (frames[0].stream_id, frames[0].kind, &frames[0].payload[..]),
            (1, MESSAGE_TYPE_REQUEST, &b"hello"[..])
        );
        assert_eq!((frames[1].stream_id, frames[1].payload.len()), (3, 0));
        // Half a header waits for the rest.
        let bytes = encode(5, MESSAGE_TYPE_REQUEST, b"xy");
        tx.stream.write_all(&bytes[..4]).expect("write");
        assert!(rx.read_frames().expect("none yet").is_empty());
        tx.stream.write_all(&bytes[4..]).expect("write");
        assert_eq!(rx.read_frames().expect("one")[0].payload, b"xy");
        drop(tx);
        assert!(rx.read_frames().expect("eof").is_empty());
        assert!(rx.closed);
    }

    #[test]
    fn oversized_frames_are_refused() {
        let (mut a, b) = UnixStream::pair().expect("pair");
        b.set_nonblocking(true).expect("nonblocking");
        let header: Vec<u8> = MessageHeader {
            length: (MESSAGE_LENGTH_MAX + 1) as u32,
            stream_id: 9,
            type_: MESSAGE_TYPE_REQUEST,
            flags: 0,
        }
        .into();
        a.write_all(&header).expect("write");
        let mut rx = Conn::new(b);
        let e = rx.read_frames().expect_err("too large");
        assert_eq!(e.stream_id, 9);
        assert!(rx.closed);
    }

    /// A stream that hands out pre-cut chunks, then would block (or ends, if `eof`).
    struct Feed {
        chunks: std::collections::VecDeque<Vec<u8>>,
        eof: bool,
    }

    impl Read for Feed {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let Some(mut chunk) = self.chunks.pop_front() else {
                return if self.eof {
                    Ok(0)
                } else {
                    Err(io::ErrorKind::WouldBlock.into())
                };
            };
            let n = chunk.len().min(buf.len());
            buf[..n].copy_from_slice(&chunk[..n]);
            if n < chunk.len() {
                self.chunks.push_front(chunk.split_off(n));
            }
            Ok(n)
        }
    }

    impl Write for Feed {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// `bytes` cut at `cuts` (positions taken modulo its length), as separate reads.
    fn cut(bytes: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
        let mut at: Vec<usize> = cuts
            .iter()
            .map(|c| c % (bytes.len() + 1))
            .chain([0, bytes.len()])
            .collect();
        at.sort_unstable();
        at.dedup();
        at.windows(2).map(|w| bytes[w[0]..w[1]].to_vec()).collect()
    }

    /// Feeds `chunks` one read at a time and collects every frame (or the refusal).
    fn decode_all(chunks: Vec<Vec<u8>>) -> (Vec<Frame>, Option<FrameTooLarge>, bool) {
        let rounds = chunks.len() + 1;
        let mut conn = Conn::new(Feed {
            chunks: chunks.into(),
            eof: true,
        });
        let mut frames = Vec::new();
        for _ in 0..rounds {
            match conn.read_frames() {
                Ok(f) => frames.extend(f),
                Err(e) => return (frames, Some(e), conn.closed),
            }
            if conn.closed {
                break;
            }
        }
        (frames, None, conn.closed)
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// Any bytes from a peer, cut anywhere: frames or a refusal, never a panic, and
            /// never more payload out than came in.
            #[test]
            fn arbitrary_bytes_never_panic(
                bytes in prop_oneof![
                    proptest::collection::vec(any::<u8>(), 0..4096),
                    // Plausible headers whose lengths lie about the payloads after them.
                    proptest::collection::vec(
                        (0u32..600, any::<u32>(), any::<u8>(), any::<u8>(),
                         proptest::collection::vec(any::<u8>(), 0..600)),
                        0..8,
                    )
                    .prop_map(|parts| parts
                        .into_iter()
                        .flat_map(|(len, id, kind, flags, payload)| {
                            let mut v: Vec<u8> = MessageHeader {
                                length: len, stream_id: id, type_: kind, flags,
                            }.into();
                            v.extend_from_slice(&payload);
                            v
                        })
                        .collect()),
                ],
                cuts in proptest::collection::vec(any::<usize>(), 0..8),
            ) {
                let (frames, refused, closed) = decode_all(cut(&bytes, &cuts));
                let out: usize = frames.iter().map(|f| f.payload.len() + MESSAGE_HEADER_LENGTH).sum();
                prop_assert!(out <= bytes.len());
                prop_assert!(closed, "the feed ended: the connection is closed");
                if let Some(e) = refused {
                    prop_assert!(e.len > MESSAGE_LENGTH_MAX);
                }
            }

            /// Encoded frames, however the reads split them, decode to what was sent.
            #[test]
            fn encoded_frames_round_trip(
                sent in proptest::collection::vec(
                    (any::<u32>(), any::<u8>(), proptest::collection::vec(any::<u8>(), 0..300)),
                    0..16,
                ),
                cuts in proptest::collection::vec(any::<usize>(), 0..16),
            ) {
                let bytes: Vec<u8> = sent
                    .iter()
                    .flat_map(|(id, kind, p)| encode(*id, *kind, p))
                    .collect();
                let (frames, refused, _) = decode_all(cut(&bytes, &cuts));
                prop_assert!(refused.is_none());
                let got: Vec<(u32, u8, Vec<u8>)> = frames
                    .into_iter()
                    .map(|f| (f.stream_id, f.kind, f.payload))
                    .collect();
                prop_assert_eq!(got, sent);
            }

            /// A header declaring more than the limit is refused as soon as it is read.
            #[test]
            fn oversized_headers_are_refused(
                len in (MESSAGE_LENGTH_MAX as u32 + 1)..=u32::MAX,
                stream_id in any::<u32>(),
                tail in proptest::collection::vec(any::<u8>(), 0..64),
            ) {
                let mut bytes: Vec<u8> = MessageHeader {
                    length: len,
                    stream_id,
                    type_: MESSAGE_TYPE_REQUEST,
                    flags: 0,
                }
                .into();
                bytes.extend_from_slice(&tail);
                let (frames, refused, closed) = decode_all(vec![bytes]);
                prop_assert!(frames.is_empty());
                let e = refused.expect("refused");
                prop_assert_eq!((e.stream_id, e.len), (stream_id, len as usize));
                prop_assert!(closed);
            }
        }
    }

    #[test]
    fn a_socket_with_no_listener_fails_at_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("dead.sock");
        drop(std::os::unix::net::UnixListener::bind(&path).expect("bind"));
        let e = call(&path, "s", "m", Vec::new(), Duration::from_secs(30)).expect_err("dead");
        assert!(
            matches!(&e, ttrpc::Error::Socket(m) if m.contains("refused")),
            "{e:?}"
        );
    }
}
