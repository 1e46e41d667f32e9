//! One `mio` loop that watches every shim: a pidfd per shim process (readable when it dies) and
//! the `log` FIFO of every bundle, drained into a per-container log file.
//!
//! Other threads hand it work through a channel and a `Waker`; it reports shim deaths to a
//! callback, run on the loop thread.

use crate::error::{Error, Result};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;

/// A container: (namespace, id).
pub type Key = (String, String);

const WAKER: Token = Token(0);

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
}

/// The handle other threads use.
#[derive(Clone)]
pub struct Monitor {
    tx: Sender<Cmd>,
    waker: Arc<Waker>,
}

type OnDeath = Box<dyn Fn(Key) + Send>;

impl Monitor {
    /// Starts the loop thread; `on_death` is called (on that thread) when a watched shim dies.
    pub fn start(on_death: OnDeath) -> Result<Monitor> {
        let poll = Poll::new().map_err(Error::io("create the epoll instance"))?;
        let waker =
            Arc::new(Waker::new(poll.registry(), WAKER).map_err(Error::io("create a waker"))?);
        let (tx, rx) = channel();
        std::thread::Builder::new()
            .name("monitor".into())
            .spawn(move || {
                Loop {
                    poll,
                    rx,
                    on_death,
                    watched: HashMap::new(),
                    next: 1,
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
fn pidfd_open(pid: u32) -> std::io::Result<OwnedFd> {
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
    watched: HashMap<Token, Watched>,
    next: usize,
}

impl Loop {
    fn run(mut self) {
        let mut events = Events::with_capacity(256);
        loop {
            if let Err(e) = self.poll.poll(&mut events, None) {
                if e.kind() != std::io::ErrorKind::Interrupted {
                    log::error!("monitor: epoll_wait: {e}");
                }
                continue;
            }
            for ev in events.iter() {
                if ev.token() == WAKER {
                    continue;
                }
                self.ready(ev.token());
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

    fn ready(&mut self, token: Token) {
        let is_shim = match self.watched.get(&token) {
            Some(w) => matches!(w, Watched::Shim { .. }),
            None => return,
        };
        if is_shim {
            if let Some(Watched::Shim { key, .. }) = self.remove(token) {
                (self.on_death)(key);
            }
        } else if self.drain(token) {
            self.remove(token);
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
