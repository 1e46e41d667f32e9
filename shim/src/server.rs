//! The one event loop: ttrpc listener and connections, SIGCHLD, signals, stdio pumps and the
//! event publisher, multiplexed with `mio` on one thread.

use crate::error::{Result, ShimError};
use crate::events::Publisher;
use crate::reaper::Reaper;
use crate::signals::Signals;
use crate::stdio::Pumps;
use crate::task::{Flow, ReplyTo, Service, FIRST_OOM};
use crate::wire::{Conn, MESSAGE_TYPE_REQUEST, MESSAGE_TYPE_RESPONSE};
use containerd_shim_protos::ttrpc;
use mio::net::UnixListener;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use nix::sys::signal::Signal;
use protobuf::Message;
use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tether_protocol::task_service::task_method;

pub(crate) const LISTENER: Token = Token(0);
pub(crate) const SIGNALS: Token = Token(1);
pub(crate) const SIGCHLD: Token = Token(2);
pub(crate) const EVENTS: Token = Token(3);
const FIRST_CONN: usize = 16;
/// Client connections at once; past this a new one is closed at once (containerd keeps one or
/// two per shim).
pub const MAX_CONNS: usize = 4096;
/// Replies a client has not read; a peer that sends and never reads is disconnected here.
pub const MAX_UNREAD_REPLIES: usize = 16 << 20;
/// The descriptors the shim wants: connections, stdio, OOM watchers.
const WANT_NOFILE: u64 = 16_384;
pub(crate) const FIRST_PUMP: usize = 1 << 20;
/// How long a shutting-down shim keeps trying to deliver its last events.
const FLUSH_EVENTS_FOR: Duration = Duration::from_secs(3);
/// How long a shutting-down shim waits for the runtime commands still in flight, so that the
/// requests they answer get their reply (a `Kill` whose `runc kill` outlives the `Delete` and
/// `Shutdown` its container's death let through) instead of a closed connection.
const FINISH_CALLS_FOR: Duration = Duration::from_secs(10);

pub struct Server {
    /// Where this shim's binary is installed: what an upgrade executes (a new inode there).
    pub(crate) binary: PathBuf,
    /// This image's binary, held open for a failed upgrade to come back to.
    pub(crate) self_exe: OwnedFd,
    /// The flags this shim serves with, given again to the next image.
    pub(crate) args: Vec<String>,
    pub(crate) poll: Poll,
    pub(crate) listener: UnixListener,
    pub(crate) socket_path: Option<PathBuf>,
    pub(crate) signals: Signals,
    pub(crate) conns: HashMap<Token, Conn>,
    pub(crate) next_conn: usize,
    pub(crate) service: Service,
}

impl Server {
    pub fn new(
        listener: std::os::unix::net::UnixListener,
        socket_path: Option<PathBuf>,
        namespace: &str,
        ttrpc_address: Option<&str>,
        args: Vec<String>,
    ) -> Result<Self> {
        raise_nofile();
        let poll = Poll::new().map_err(ShimError::io("epoll_create"))?;
        let registry = poll.registry();
        listener
            .set_nonblocking(true)
            .map_err(ShimError::io("listener O_NONBLOCK"))?;
        let mut listener = UnixListener::from_std(listener);
        registry
            .register(&mut listener, LISTENER, Interest::READABLE)
            .map_err(ShimError::io("register listener"))?;
        let signals = Signals::catch(&[Signal::SIGTERM, Signal::SIGINT])?;
        registry
            .register(&mut SourceFd(&signals.fd()), SIGNALS, Interest::READABLE)
            .map_err(ShimError::io("register signals"))?;
        let reaper = Reaper::new()?;
        registry
            .register(&mut SourceFd(&reaper.fd()), SIGCHLD, Interest::READABLE)
            .map_err(ShimError::io("register SIGCHLD pipe"))?;
        let clone = || registry.try_clone().map_err(ShimError::io("dup epoll fd"));
        let pumps = Pumps::new(clone()?, FIRST_PUMP);
        let publisher = Publisher::new(ttrpc_address, namespace, EVENTS);
        let service = Service::new(namespace, reaper, pumps, publisher, clone()?);
        Ok(Server {
            binary: installed_binary()?,
            self_exe: crate::upgrade::exec::open_self_exe()?,
            args,
            poll,
            listener,
            socket_path,
            signals,
            conns: HashMap::new(),
            next_conn: FIRST_CONN,
            service,
        })
    }

    /// Serves until `Shutdown` leaves no container (or a signal does, with none).
    pub fn run(mut self) -> Result<()> {
        let mut events = Events::with_capacity(256);
        let mut stop_by: Option<(Instant, Instant)> = None;
        // Whether anything but stdio ran since the heap's free pages were last given back
        // (copying stdio allocates nothing, so a stream never triggers it).
        let mut heap_used = true;
        loop {
            let now = Instant::now();
            if self.service.shutdown && stop_by.is_none() {
                stop_by = Some((now + FLUSH_EVENTS_FOR, now + FINISH_CALLS_FOR));
                self.remove_socket();
            }
            if let Some((events_by, calls_by)) = stop_by {
                let calls_over = self.service.calls_in_flight() == 0 || now >= calls_by;
                if calls_over {
                    self.service.answer_shutdown();
                    self.send_outbox();
                }
                let events_over = self.service.publisher.is_idle() || now >= events_by;
                let sent = !self.replies_unsent() || now >= calls_by;
                if calls_over && events_over && sent {
                    return Ok(());
                }
            }
            let deadline = [
                self.service.publisher.deadline(),
                self.service.next_deadline(),
                stop_by.map(|(events_by, calls_by)| events_by.min(calls_by)),
            ]
            .into_iter()
            .flatten()
            .min();
            let timeout = deadline.map(|d| d.saturating_duration_since(now));
            if timeout.is_none() && heap_used {
                // Nothing is due: the loop may sleep for hours.
                crate::heap::release_free_pages();
                heap_used = false;
            }
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(ShimError::io("epoll_wait")(e));
                }
            }
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => self.accept(),
                    SIGCHLD => self.service.reaper.reap(),
                    SIGNALS => self.on_signals(),
                    EVENTS => {
                        let reg = self.poll.registry();
                        self.service.publisher.on_event(reg);
                    }
                    t if t.0 >= FIRST_PUMP => self.service.pumps.on_event(t),
                    t if t.0 >= FIRST_OOM => self.service.on_oom(t),
                    t => self.on_conn(t),
                }
                heap_used |= ev.token().0 < FIRST_PUMP;
            }
            self.service.on_timers(Instant::now());
            self.service.handle_exits();
            self.send_outbox();
            if let Some(ready) = self.service.take_ready_upgrade() {
                // Returns only if the handover did not happen: this image serves on.
                self.handover(ready);
            }
            // An upgrade refused (or never committed) leaves its deferred requests to us.
            self.service.run_deferred();
            self.send_outbox();
            self.service.publisher.kick(self.poll.registry());
        }
    }

    /// Whether a reply is still buffered for a connection that can take it.
    fn replies_unsent(&self) -> bool {
        self.conns.values().any(|c| c.has_pending() && !c.closed)
    }

    fn remove_socket(&mut self) {
        if let Some(p) = &self.socket_path {
            let _ = std::fs::remove_file(p);
        }
        let _ = self.poll.registry().deregister(&mut self.listener);
    }

    fn on_signals(&mut self) {
        for sig in self.signals.pending() {
            if self.service.is_empty() {
                log::info!("signal {sig} with no container: exiting");
                self.service.shutdown = true;
            } else {
                // A dead shim orphans its containers; containerd ends us with Shutdown.
                log::warn!("signal {sig} ignored: this shim still holds containers");
            }
        }
    }

    /// A token no live connection has (tokens wrap after ~500,000 connections).
    fn next_token(&mut self) -> Token {
        loop {
            let token = Token(self.next_conn);
            self.next_conn += 1;
            if self.next_conn >= FIRST_OOM {
                self.next_conn = FIRST_CONN;
            }
            if !self.conns.contains_key(&token) {
                return token;
            }
        }
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((mut stream, _)) => {
                    if self.conns.len() >= MAX_CONNS {
                        log::warn!("{MAX_CONNS} connections already open: closing a new one");
                        drop(stream);
                        continue;
                    }
                    let token = self.next_token();
                    if let Err(e) = self.poll.registry().register(
                        &mut stream,
                        token,
                        Interest::READABLE | Interest::WRITABLE,
                    ) {
                        log::warn!("register connection: {e}");
                        continue;
                    }
                    self.conns.insert(token, Conn::new(stream));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    log::warn!("accept: {e}");
                    return;
                }
            }
        }
    }

    fn on_conn(&mut self, token: Token) {
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        conn.flush();
        let frames = match conn.read_frames() {
            Ok(f) => f,
            Err(e) => {
                log::warn!("closing connection: {e}");
                let status = ShimError::InvalidArgument(e.to_string()).to_status();
                send_response(conn, e.stream_id, Err(status));
                Vec::new()
            }
        };
        for f in frames {
            if f.kind != MESSAGE_TYPE_REQUEST {
                continue;
            }
            let to = ReplyTo {
                token,
                stream_id: f.stream_id,
            };
            let reply = match ttrpc::Request::parse_from_bytes(&f.payload) {
                // ttrpc clients open odd streams; Go's server refuses even ones too.
                _ if f.stream_id % 2 == 0 => Flow::Done(Err(ShimError::InvalidArgument(format!(
                    "stream id {} is even: client streams are odd",
                    f.stream_id
                )))),
                Err(e) => Flow::Done(Err(ShimError::InvalidArgument(format!(
                    "malformed ttrpc request: {e}"
                )))),
                Ok(req)
                    if req.service == tether_protocol::admin::ADMIN_SERVICE
                        && req.method == tether_protocol::admin::UPGRADE_METHOD =>
                {
                    self.service.upgrade(&req.payload, to, self.binary.clone())
                }
                Ok(req) => match task_method(&req.service, &req.method) {
                    Some(m) => {
                        let deadline = request_deadline(req.timeout_nano, Instant::now());
                        self.service.dispatch(m, &req.payload, to, deadline)
                    }
                    None => Flow::Done(Err(ShimError::Unimplemented(format!(
                        "service {} is not served here (method {})",
                        req.service, req.method
                    )))),
                },
            };
            if let Flow::Done(r) = reply {
                if let Some(conn) = self.conns.get_mut(&token) {
                    send_response(conn, f.stream_id, r.map_err(|e| e.to_status()));
                }
            }
        }
        self.close_if_done(token);
    }

    /// Drops a connection its peer closed, or one whose unread replies passed the bound.
    fn close_if_done(&mut self, token: Token) {
        let Some(conn) = self.conns.get(&token) else {
            return;
        };
        if conn.pending_bytes() > MAX_UNREAD_REPLIES {
            log::warn!(
                "a client left {} bytes of replies unread: disconnected",
                conn.pending_bytes()
            );
        } else if !conn.closed {
            return;
        }
        {
            if let Some(mut c) = self.conns.remove(&token) {
                let _ = self.poll.registry().deregister(&mut c.stream);
            }
            self.service.forget(token);
        }
    }

    fn send_outbox(&mut self) {
        for (to, r) in std::mem::take(&mut self.service.outbox) {
            if let Some(conn) = self.conns.get_mut(&to.token) {
                send_response(conn, to.stream_id, r.map_err(|e| e.to_status()));
                self.close_if_done(to.token);
            }
        }
    }
}

/// The path this shim's binary is installed at (`/proc/self/exe`, without the " (deleted)" a
/// replaced file shows).
pub(crate) fn installed_binary() -> Result<PathBuf> {
    let exe =
        std::fs::read_link("/proc/self/exe").map_err(ShimError::io("readlink /proc/self/exe"))?;
    let text = exe.to_string_lossy();
    Ok(match text.strip_suffix(" (deleted)") {
        Some(path) => PathBuf::from(path),
        None => exe,
    })
}

/// When a request must be answered: the caller's `timeout_nano`, else never (see
/// [`crate::runtime::NO_DEADLINE`]).
fn request_deadline(timeout_nano: i64, now: Instant) -> Instant {
    let timeout = if timeout_nano > 0 {
        Duration::from_nanos(timeout_nano as u64).min(crate::runtime::NO_DEADLINE)
    } else {
        crate::runtime::NO_DEADLINE
    };
    now.checked_add(timeout)
        .unwrap_or_else(|| now + Duration::from_secs(365 * 24 * 3600))
}

/// Raises the soft descriptor limit toward the hard one (no privilege needed), so the
/// connection bound is ours and not the default 1,024.
pub(crate) fn raise_nofile() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let want = WANT_NOFILE.min(hard);
        if soft < want {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, want, hard) {
                log::debug!("raise RLIMIT_NOFILE to {want}: {e}");
            }
        }
    }
}

fn send_response(
    conn: &mut Conn,
    stream_id: u32,
    result: std::result::Result<Vec<u8>, ttrpc::Status>,
) {
    match tether_protocol::wire::response(result).write_to_bytes() {
        Ok(bytes) => conn.send(stream_id, MESSAGE_TYPE_RESPONSE, &bytes),
        Err(e) => log::error!("encode response: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{is_unbounded, NO_DEADLINE};

    #[test]
    fn a_request_without_a_deadline_gets_none() {
        let now = Instant::now();
        assert!(is_unbounded(request_deadline(0, now), now));
        assert!(is_unbounded(request_deadline(-5, now), now));
        let two_s = request_deadline(2_000_000_000, now);
        assert_eq!(two_s - now, Duration::from_secs(2));
        assert!(!is_unbounded(two_s, now));
        // The longest a caller can name is capped, not wrapped.
        assert!(request_deadline(i64::MAX, now) - now <= NO_DEADLINE);
    }
}
