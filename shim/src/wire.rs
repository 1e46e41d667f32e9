//! ttrpc framing on a non-blocking unix stream, for the one event loop: the shared framing of
//! `tether_protocol::wire` over a `mio` stream.

pub use tether_protocol::wire::{MESSAGE_TYPE_REQUEST, MESSAGE_TYPE_RESPONSE};

/// A non-blocking ttrpc connection on the loop.
pub type Conn = tether_protocol::wire::Conn<mio::net::UnixStream>;
