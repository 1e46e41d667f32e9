//! One `mio` loop that watches every shim: a pidfd per shim process (readable when it dies),
//! the shims' event connections (containerd's Events service, see [`crate::daemon::event_server`]),
//! the `log` FIFO of every bundle (drained into a per-container log file), and `SIGCHLD` (a
//! signalfd) to reap orphans. One thread, however many containers.
//!
//! Other threads hand it work through a channel and a `Waker`; it reports shim deaths to a
//! callback, run on the loop thread (which must not block: the daemon's posts them on).

use crate::daemon::event_server::{self, Incoming, Sink};
use crate::error::{Error, Result};
use mio::net::UnixListener;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tether_protocol::api::forward::ForwardRequest;

/// A container: (namespace, id).
pub type Key = (String, String);

const WAKER: Token = Token(0);
const LISTENER: Token = Token(1);
const SIGNALS: Token = Token(2);
const FIRST_TOKEN: usize = 3;
/// Orphans are reaped on SIGCHLD, and at least this often.
const REAP_EVERY: Duration = Duration::from_secs(1);

enum Cmd {
    WatchShim { key: Key, pid: u32 },
    ForgetShim { key: Key },
    DrainLog { key: Key, fifo: File, log: PathBuf },
    StopLog { key: Key },
}

enum Watched {
    Shim {
        key: Key,
        pidfd: OwnedFd,
    },
    Log {
        key: Key,
        fifo: File,
        out: Option<File>,
    },
    /// A shim's connection to our Events service.
    Events(event_server::Conn),
}

/// The handle other threads use.
#[derive(Clone)]
pub struct Monitor {
    tx: Sender<Cmd>,
    waker: Arc<Waker>,
}

pub type OnDeath = Box<dyn Fn(Key) + Send>;

/// What the loop serves besides the shims' pidfds.
pub struct Setup {
    /// The bound events socket.
    pub events: UnixListener,
    /// Where forwarded events go.
    pub sink: Sink,
    /// Called (on the loop thread) when a watched shim dies.
    pub on_death: OnDeath,
}

impl Monitor {
    /// Starts the loop thread. `SIGCHLD` must be blocked in every thread already.
    pub fn start(setup: Setup) -> Result<Monitor> {
        let Setup {
            mut events,
            sink,
            on_death,
        } = setup;
        let poll = Poll::new().map_err(Error::io("create the epoll instance"))?;
        let waker =
            Arc::new(Waker::new(poll.registry(), WAKER).map_err(Error::io("create a waker"))?);
        let mut mask = nix::sys::signal::SigSet::empty();
        mask.add(nix::sys::signal::Signal::SIGCHLD);
        let signals = nix::sys::signalfd::SignalFd::with_flags(
            &mask,
            nix::sys::signalfd::SfdFlags::SFD_NONBLOCK | nix::sys::signalfd::SfdFlags::SFD_CLOEXEC,
        )
        .map_err(|e| Error::io("create a signalfd for SIGCHLD")(e.into()))?;
        poll.registry()
            .register(
                &mut SourceFd(&signals.as_fd().as_raw_fd()),
                SIGNALS,
                Interest::READABLE,
            )
            .map_err(Error::io("watch SIGCHLD"))?;
        poll.registry()
            .register(&mut events, LISTENER, Interest::READABLE)
            .map_err(Error::io("watch the events socket"))?;
        let (tx, rx) = channel();
        std::thread::Builder::new()
            .name("monitor".into())
            .spawn(move || {
                Loop {
                    poll,
                    rx,
                    on_death,
                    sink,
                    events,
                    signals,
                    watched: HashMap::new(),
                    next: FIRST_TOKEN,
                }
                .run()
            })
            .map_err(Error::io("spawn the monitor thread"))?;
        Ok(Monitor { tx, waker })
    }

    fn send(&self, cmd: Cmd) {
        if self.tx.send(cmd).is_ok() {
            let _ = self.waker.wake();
        }
    }

    /// Watches the shim process `pid` serving `key`.
    pub fn watch_shim(&self, key: Key, pid: u32) {
        self.send(Cmd::WatchShim { key, pid });
    }

    /// Stops watching `key`'s shim (before it is shut down on purpose).
    pub fn forget_shim(&self, key: Key) {
        self.send(Cmd::ForgetShim { key });
    }

    /// Drains the read end of a `log` FIFO into the file `log`.
    pub fn drain_log(&self, key: Key, fifo: File, log: PathBuf) {
        self.send(Cmd::DrainLog { key, fifo, log });
    }

    pub fn stop_log(&self, key: Key) {
        self.send(Cmd::StopLog { key });
    }
}

/// `pidfd_open(2)`: an fd that becomes readable when `pid` exits.
pub(crate) fn pidfd_open(pid: u32) -> std::io::Result<OwnedFd> {
    // SAFETY: a plain system call; the fd it returns is owned by nobody else.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd to us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

struct Loop {
    poll: Poll,
    rx: Receiver<Cmd>,
    on_death: OnDeath,
    sink: Sink,
    events: UnixListener,
    signals: nix::sys::signalfd::SignalFd,
    watched: HashMap<Token, Watched>,
    next: usize,
}

impl Loop {
    fn run(mut self) {
        let mut events = Events::with_capacity(256);
        let mut reaped_at = Instant::now();
        loop {
            if let Err(e) = self.poll.poll(&mut events, Some(REAP_EVERY)) {
                if e.kind() != std::io::ErrorKind::Interrupted {
                    log::error!("monitor: epoll_wait: {e}");
                }
                continue;
            }
            let mut forwards = Vec::new();
            let mut reap = reaped_at.elapsed() >= REAP_EVERY;
            for ev in events.iter() {
                match ev.token() {
                    WAKER => {}
                    LISTENER => self.accept(&mut forwards),
                    SIGNALS => {
                        while let Ok(Some(_)) = self.signals.read_signal() {}
                        reap = true;
                    }
                    t => reap |= self.ready(t, &mut forwards),
                }
            }
            if !forwards.is_empty() {
                self.forward(forwards);
            }
            if reap {
                crate::daemon::reaper::reap_orphans();
                reaped_at = Instant::now();
            }
            loop {
                match self.rx.try_recv() {
                    Ok(cmd) => self.command(cmd),
                    Err(std::sync::mpsc::TryRecvError::Empty) => break,
                    // Every handle is gone: the daemon is exiting.
                    Err(std::sync::mpsc::TryRecvError::Disconnected) => return,
                }
            }
        }
    }

    fn add(&mut self, fd: i32, w: Watched) -> std::io::Result<()> {
        let token = Token(self.next);
        self.next += 1;
        self.poll
            .registry()
            .register(&mut SourceFd(&fd), token, Interest::READABLE)?;
        self.watched.insert(token, w);
        Ok(())
    }

    fn remove(&mut self, token: Token) -> Option<Watched> {
        let w = self.watched.remove(&token)?;
        let fd = match &w {
            Watched::Shim { pidfd, .. } => pidfd.as_raw_fd(),
            Watched::Log { fifo, .. } => fifo.as_raw_fd(),
            Watched::Events(conn) => conn.stream.as_raw_fd(),
        };
        let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
        Some(w)
    }

    fn find(&self, key: &Key, shim: bool) -> Option<Token> {
        self.watched.iter().find_map(|(t, w)| match w {
            Watched::Shim { key: k, .. } if shim && k == key => Some(*t),
            Watched::Log { key: k, .. } if !shim && k == key => Some(*t),
            _ => None,
        })
    }

    fn command(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::WatchShim { key, pid } => match pidfd_open(pid) {
                Ok(pidfd) => {
                    let fd = pidfd.as_raw_fd();
                    if let Err(e) = self.add(
                        fd,
                        Watched::Shim {
                            key: key.clone(),
                            pidfd,
                        },
                    ) {
                        log::error!("monitor: watch shim {pid} of {}/{}: {e}", key.0, key.1);
                    }
                }
                // Already gone: report it as a death at once.
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => (self.on_death)(key),
                Err(e) => log::error!("monitor: pidfd_open({pid}) for {}/{}: {e}", key.0, key.1),
            },
            Cmd::ForgetShim { key } => {
                if let Some(t) = self.find(&key, true) {
                    self.remove(t);
                }
            }
            Cmd::DrainLog { key, fifo, log } => {
                let out = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log)
                    .map_err(|e| log::warn!("monitor: open {}: {e}", log.display()))
                    .ok();
                let fd = fifo.as_raw_fd();
                if let Err(e) = self.add(fd, Watched::Log { key, fifo, out }) {
                    log::error!("monitor: watch log FIFO: {e}");
                }
            }
            Cmd::StopLog { key } => {
                if let Some(t) = self.find(&key, false) {
                    self.drain(t);
                    self.remove(t);
                }
            }
        }
    }

    /// Handles readiness of `token`; true when a shim died (time to reap).
    fn ready(&mut self, token: Token, forwards: &mut Vec<(Token, u32, ForwardRequest)>) -> bool {
        match self.watched.get(&token) {
            Some(Watched::Shim { .. }) => {
                if let Some(Watched::Shim { key, .. }) = self.remove(token) {
                    // Reap it first (if it is ours), so no zombie outlives the report.
                    crate::daemon::reaper::reap_orphans();
                    (self.on_death)(key);
                }
                true
            }
            Some(Watched::Log { .. }) => {
                if self.drain(token) {
                    self.remove(token);
                }
                false
            }
            Some(Watched::Events(_)) => {
                self.read_events(token, forwards);
                false
            }
            None => false,
        }
    }

    /// Accepts every pending shim connection to the events socket; what they sent already joins
    /// the turn's forwards (a shim connects when it has an event to send: after a daemon
    /// restart, a burst of exits is a burst of new connections, journaled with one fsync).
    fn accept(&mut self, forwards: &mut Vec<(Token, u32, ForwardRequest)>) {
        loop {
            match self.events.accept() {
                Ok((mut stream, _)) => {
                    if let Err(e) = crate::daemon::peer::check(stream.as_raw_fd()) {
                        // Closed unread: only root and the daemon's uid may publish events.
                        log::warn!("events socket: {e}");
                        continue;
                    }
                    let token = Token(self.next);
                    self.next += 1;
                    let r = self.poll.registry().register(
                        &mut stream,
                        token,
                        Interest::READABLE | Interest::WRITABLE,
                    );
                    match r {
                        Ok(()) => {
                            self.watched
                                .insert(token, Watched::Events(event_server::Conn::new(stream)));
                            // Data may have arrived before registration.
                            self.read_events(token, forwards);
                        }
                        Err(e) => log::error!("monitor: watch an events connection: {e}"),
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log::error!("monitor: accept on the events socket: {e}");
                    return;
                }
            }
        }
    }

    /// Reads a shim's event connection: `Forward`s are collected, anything else answered.
    fn read_events(&mut self, token: Token, forwards: &mut Vec<(Token, u32, ForwardRequest)>) {
        let Some(Watched::Events(conn)) = self.watched.get_mut(&token) else {
            return;
        };
        conn.flush();
        match conn.read_frames() {
            Ok(frames) => {
                for f in &frames {
                    match event_server::decode(f) {
                        Incoming::Forward(id, req) => forwards.push((token, id, req)),
                        Incoming::Refuse(id, status) => event_server::reply(conn, id, Err(status)),
                        Incoming::Ignore => {}
                    }
                }
            }
            Err(e) => log::warn!("monitor: events connection: {e}; closing it"),
        }
        if conn.closed {
            self.remove(token);
        }
    }

    /// Hands the turn's forwarded events to the sink (one journal fsync) and answers each.
    fn forward(&mut self, forwards: Vec<(Token, u32, ForwardRequest)>) {
        let (replies, reqs): (Vec<(Token, u32)>, Vec<ForwardRequest>) =
            forwards.into_iter().map(|(t, id, r)| ((t, id), r)).unzip();
        let results = (self.sink)(reqs);
        for ((token, id), result) in replies.into_iter().zip(results) {
            let Some(Watched::Events(conn)) = self.watched.get_mut(&token) else {
                // The shim hung up: it sends the event again, and the journal knows it.
                continue;
            };
            event_server::reply(conn, id, result.map_err(event_server::status_of));
            if conn.closed {
                self.remove(token);
            }
        }
    }

    /// Copies what the FIFO holds to the log file; true at EOF (every writer closed it).
    fn drain(&mut self, token: Token) -> bool {
        let Some(Watched::Log { fifo, out, .. }) = self.watched.get_mut(&token) else {
            return true;
        };
        let mut buf = [0u8; 16 * 1024];
        loop {
            match fifo.read(&mut buf) {
                Ok(0) => return true,
                Ok(n) => {
                    if let Some(f) = out.as_mut() {
                        let _ = f.write_all(&buf[..n]);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
    }
}
