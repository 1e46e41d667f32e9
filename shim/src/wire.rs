//! ttrpc framing on a non-blocking unix stream, for the one event loop.
//!
//! A frame is a 10-byte header (big-endian length and stream id, type, flags) and a payload of
//! at most 4 MiB. The message types come from the `ttrpc` crate (`ttrpc::proto`); only the
//! framing and buffering are ours, because the crate's sync server needs threads.

use containerd_shim_protos::ttrpc::proto::{
    MessageHeader, MESSAGE_HEADER_LENGTH, MESSAGE_LENGTH_MAX,
};
use mio::net::UnixStream;
use std::io::{self, Read, Write};

pub use containerd_shim_protos::ttrpc::proto::{MESSAGE_TYPE_REQUEST, MESSAGE_TYPE_RESPONSE};

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

/// A non-blocking ttrpc connection: buffered reads split into frames, buffered writes.
pub struct Conn {
    pub stream: UnixStream,
    inbuf: Vec<u8>,
    outbuf: Vec<u8>,
    /// The peer closed its side (or the connection failed).
    pub closed: bool,
}

impl Conn {
    pub fn new(stream: UnixStream) -> Self {
        Conn {
            stream,
            inbuf: Vec::new(),
            outbuf: Vec::new(),
            closed: false,
        }
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
