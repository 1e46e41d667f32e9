//! A process's stdio: the FIFOs (or `file://` / `binary://` URIs) containerd hands over, joined to
//! the pipes the container writes and reads, copied with `splice(2)` in the event loop.
//!
//! The container never holds containerd's FIFOs itself. For stdout/stderr the shim keeps a read
//! end of each FIFO open beside its write end, so the FIFO always has a reader: when containerd
//! goes away for a while the container blocks on a full pipe instead of getting SIGPIPE, and
//! resumes when containerd reopens the FIFO.

use crate::error::{Result, ShimError};
use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use nix::fcntl::{fcntl, splice, FcntlArg, OFlag, SpliceFFlags};
use std::collections::HashMap;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::rc::Rc;

use crate::runtime::ProcessStdio;
use open::{dev_null, grow_pipe, new_pipe, open_fifo, open_log_file, start_binary_logger, Target};

mod handover;
mod open;

/// Bytes moved per splice call; pipes are grown to this size where the kernel allows.
const CHUNK: usize = 1 << 20;
/// A terminal copy's buffer.
const COPY_BUFFER: usize = 64 * 1024;

/// Where a pump writes.
enum Sink {
    /// A FIFO: non-blocking write end, plus a read end held only to keep a reader.
    Fifo { w: OwnedFd, _keep: Option<OwnedFd> },
    /// A pipe into the container (stdin).
    Pipe(OwnedFd),
    /// A regular file (`file://`), shared by stdout and stderr so their offsets agree.
    File(Rc<File>),
    /// A pty master (a dup of it: epoll watches each fd once).
    Tty(OwnedFd),
}

impl Sink {
    fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        match self {
            Sink::Fifo { w, .. } | Sink::Pipe(w) | Sink::Tty(w) => w.as_fd(),
            Sink::File(f) => f.as_fd(),
        }
    }

    /// Regular files cannot be registered with epoll; they are always writable.
    fn pollable(&self) -> bool {
        !matches!(self, Sink::File(_))
    }
}

struct Pump {
    src: OwnedFd,
    dst: Sink,
    /// Terminals cannot splice: their bytes go through this buffer (start, end of what is
    /// read and not yet written).
    copy: Option<(Box<[u8]>, usize, usize)>,
}

impl Pump {
    fn splice(src: OwnedFd, dst: Sink) -> Self {
        Pump {
            src,
            dst,
            copy: None,
        }
    }

    fn copy(src: OwnedFd, dst: Sink) -> Self {
        Pump {
            src,
            dst,
            copy: Some((vec![0u8; COPY_BUFFER].into_boxed_slice(), 0, 0)),
        }
    }
}

/// What a pump did.
#[derive(Debug, PartialEq, Eq)]
enum Flow {
    /// Moved what it could; more may come.
    Open,
    /// The source reached EOF (or the sink failed for good).
    Done,
}

impl Pump {
    fn pump(&mut self) -> Flow {
        if self.copy.is_some() {
            return self.pump_copy();
        }
        loop {
            match splice(
                self.src.as_fd(),
                None,
                self.dst.fd(),
                None,
                CHUNK,
                SpliceFFlags::SPLICE_F_NONBLOCK | SpliceFFlags::SPLICE_F_MOVE,
            ) {
                Ok(0) => return Flow::Done,
                Ok(_) => continue,
                Err(nix::Error::EAGAIN) => return Flow::Open,
                Err(nix::Error::EINTR) => continue,
                Err(e) => {
                    log::warn!("stdio copy stopped: splice: {e}");
                    return Flow::Done;
                }
            }
        }
    }
}

impl Pump {
    fn pump_copy(&mut self) -> Flow {
        let Some((buf, start, end)) = self.copy.as_mut() else {
            return Flow::Done;
        };
        loop {
            if start < end {
                match nix::unistd::write(self.dst.fd(), &buf[*start..*end]) {
                    Ok(n) => *start += n,
                    Err(nix::Error::EAGAIN) => return Flow::Open,
                    Err(nix::Error::EINTR) => continue,
                    Err(_) => return Flow::Done,
                }
                continue;
            }
            match nix::unistd::read(&self.src, buf) {
                Ok(0) => return Flow::Done,
                Ok(n) => (*start, *end) = (0, n),
                Err(nix::Error::EAGAIN) => return Flow::Open,
                Err(nix::Error::EINTR) => continue,
                // EIO: the terminal's last slave closed, the process is gone.
                Err(_) => return Flow::Done,
            }
        }
    }
}

/// All pumps of the shim, keyed by the token of their source (the sink has token + 1).
pub struct Pumps {
    registry: Registry,
    next: usize,
    pumps: HashMap<usize, Pump>,
    /// Binary loggers not yet ready: the read end of their readiness pipe (fd 5), by token.
    /// Held open so a logger that writes there gets no SIGPIPE; dropped when it says ready.
    loggers: HashMap<usize, OwnedFd>,
}

/// The pumps of one process, by stream.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProcessIo {
    pub stdin: Option<usize>,
    pub stdout: Option<usize>,
    pub stderr: Option<usize>,
    /// A binary logger that has not said it is ready.
    pub logger: Option<usize>,
}

impl ProcessIo {
    fn outputs(&self) -> impl Iterator<Item = usize> {
        self.stdout.into_iter().chain(self.stderr)
    }
}

impl Pumps {
    pub fn new(registry: Registry, first_token: usize) -> Self {
        Pumps {
            registry,
            next: first_token,
            pumps: HashMap::new(),
            loggers: HashMap::new(),
        }
    }

    fn add(&mut self, pump: Pump) -> Result<usize> {
        let id = self.next;
        self.next += 2;
        let reg = ShimError::io("register stdio with epoll");
        self.registry
            .register(
                &mut SourceFd(&pump.src.as_raw_fd()),
                Token(id),
                Interest::READABLE,
            )
            .map_err(reg)?;
        if pump.dst.pollable() {
            let fd = pump.dst.fd().as_raw_fd();
            self.registry
                .register(&mut SourceFd(&fd), Token(id + 1), Interest::WRITABLE)
                .map_err(ShimError::io("register stdio with epoll"))?;
        }
        self.pumps.insert(id, pump);
        // Data may already be waiting (edge-triggered: no event for what came before).
        self.run(id);
        Ok(id)
    }

    /// Handles readiness of a pump's source or sink (or of a logger's readiness pipe).
    pub fn on_event(&mut self, token: Token) {
        if self.loggers.contains_key(&token.0) {
            self.logger_ready(token.0);
            return;
        }
        self.run(token.0 & !1);
    }

    /// Watches a binary logger's readiness pipe without waiting for it.
    fn watch_logger(&mut self, ready: OwnedFd) -> Result<usize> {
        let id = self.next;
        self.next += 2;
        self.registry
            .register(
                &mut SourceFd(&ready.as_raw_fd()),
                Token(id),
                Interest::READABLE,
            )
            .map_err(ShimError::io("register the binary logger's readiness pipe"))?;
        self.loggers.insert(id, ready);
        Ok(id)
    }

    fn logger_ready(&mut self, id: usize) {
        if let Some(fd) = self.loggers.remove(&id) {
            let _ = self.registry.deregister(&mut SourceFd(&fd.as_raw_fd()));
            log::debug!("binary logger ready");
        }
    }

    fn run(&mut self, id: usize) {
        if let Some(p) = self.pumps.get_mut(&id) {
            if p.pump() == Flow::Done {
                self.remove(id);
            }
        }
    }

    fn remove(&mut self, id: usize) {
        if let Some(p) = self.pumps.remove(&id) {
            let _ = self.registry.deregister(&mut SourceFd(&p.src.as_raw_fd()));
            if p.dst.pollable() {
                let _ = self
                    .registry
                    .deregister(&mut SourceFd(&p.dst.fd().as_raw_fd()));
            }
        }
    }

    /// Copies what the process's outputs hold now (before its exit is published).
    pub fn flush(&mut self, io: &ProcessIo) {
        for id in io.outputs() {
            self.run(id);
        }
    }

    /// Closes the process's stdin: what was written reaches it, then EOF.
    pub fn close_stdin(&mut self, io: &mut ProcessIo) {
        if let Some(id) = io.stdin.take() {
            self.run(id);
            self.remove(id);
        }
    }

    /// Drops every pump of the process (after a last copy).
    pub fn close(&mut self, io: &mut ProcessIo) {
        self.flush(io);
        if let Some(id) = io.logger.take() {
            self.logger_ready(id);
        }
        for id in [io.stdin.take(), io.stdout.take(), io.stderr.take()]
            .into_iter()
            .flatten()
        {
            self.remove(id);
        }
    }

    /// Opens a process's stdio for the runtime and starts the pumps. On failure nothing is
    /// left open or registered.
    pub fn open(&mut self, paths: &StdioPaths, who: &Who) -> Result<(ProcessIo, ProcessStdio)> {
        let mut io = ProcessIo::default();
        match self.open_into(paths, who, &mut io) {
            Ok(stdio) => Ok((io, stdio)),
            Err(e) => {
                self.close(&mut io);
                Err(e)
            }
        }
    }

    fn open_into(
        &mut self,
        paths: &StdioPaths,
        who: &Who,
        io: &mut ProcessIo,
    ) -> Result<ProcessStdio> {
        let mut stdio = ProcessStdio::default();
        if !paths.stdin.is_empty() {
            let (r, w) = new_pipe()?;
            who.give(&r)?;
            let fifo = open_fifo(&paths.stdin, OFlag::O_RDONLY)?;
            io.stdin = Some(self.add(Pump::splice(fifo, Sink::Pipe(w)))?);
            stdio.stdin = Some(r);
        }
        let out = Target::parse(&paths.stdout)?;
        let err = Target::parse(&paths.stderr)?;
        if let (Target::Binary(uri), _) | (_, Target::Binary(uri)) = (&out, &err) {
            let (o, e, ready) = start_binary_logger(uri, who)?;
            io.logger = Some(self.watch_logger(ready)?);
            who.give(&o)?;
            who.give(&e)?;
            stdio.stdout = Some(o);
            stdio.stderr = Some(e);
            return Ok(stdio);
        }
        let shared_file = match (&out, &err) {
            (Target::File(a), Target::File(b)) if a == b => Some(Rc::new(open_log_file(a)?)),
            _ => None,
        };
        for (target, slot, fd) in [
            (&out, &mut io.stdout, &mut stdio.stdout),
            (&err, &mut io.stderr, &mut stdio.stderr),
        ] {
            let dst = match target {
                Target::Null => {
                    *fd = Some(dev_null()?);
                    continue;
                }
                Target::Fifo(path) => {
                    let keep = open_fifo(path, OFlag::O_RDONLY)?;
                    let w = open_fifo(path, OFlag::O_WRONLY)?;
                    grow_pipe(&w);
                    Sink::Fifo {
                        w,
                        _keep: Some(keep),
                    }
                }
                Target::File(path) => match &shared_file {
                    Some(f) => Sink::File(f.clone()),
                    None => Sink::File(Rc::new(open_log_file(path)?)),
                },
                // Both streams go to the logger when either names one (returned above).
                Target::Binary(uri) => {
                    return Err(ShimError::InvalidArgument(format!(
                        "binary logger {uri:?} must take both stdout and stderr"
                    )))
                }
            };
            let (r, w) = new_pipe()?;
            who.give(&w)?;
            *slot = Some(self.add(Pump::splice(r, dst))?);
            *fd = Some(w);
        }
        Ok(stdio)
    }
}

impl Pumps {
    /// Joins a terminal's master to the process's stdin and stdout FIFOs (or a `binary://`
    /// logger's stdout, as containerd's Go shim does). On failure nothing is left open or
    /// registered.
    pub fn open_terminal(
        &mut self,
        paths: &StdioPaths,
        master: &OwnedFd,
        who: &Who,
    ) -> Result<ProcessIo> {
        let mut io = ProcessIo::default();
        match self.open_terminal_into(paths, master, who, &mut io) {
            Ok(()) => Ok(io),
            Err(e) => {
                self.close(&mut io);
                Err(e)
            }
        }
    }

    fn open_terminal_into(
        &mut self,
        paths: &StdioPaths,
        master: &OwnedFd,
        who: &Who,
        io: &mut ProcessIo,
    ) -> Result<()> {
        let dup = || {
            master
                .try_clone()
                .map_err(ShimError::io("dup the terminal master"))
        };
        let flags = fcntl(master, FcntlArg::F_GETFL).map_err(ShimError::nix("fcntl"))?;
        fcntl(
            master,
            FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
        )
        .map_err(ShimError::nix("set the terminal master non-blocking"))?;
        if !paths.stdin.is_empty() {
            let fifo = open_fifo(&paths.stdin, OFlag::O_RDONLY)?;
            io.stdin = Some(self.add(Pump::copy(fifo, Sink::Tty(dup()?)))?);
        }
        let dst = match Target::parse(&paths.stdout)? {
            Target::Null => None,
            Target::Fifo(path) => {
                let keep = open_fifo(&path, OFlag::O_RDONLY)?;
                let w = open_fifo(&path, OFlag::O_WRONLY)?;
                Some(Sink::Fifo {
                    w,
                    _keep: Some(keep),
                })
            }
            Target::File(path) => Some(Sink::File(Rc::new(open_log_file(&path)?))),
            // The terminal's bytes go to the logger's stdout; its stderr ends at once (the Go
            // shim's contract too: a terminal has one output).
            Target::Binary(uri) => {
                let (o, _stderr, ready) = start_binary_logger(&uri, who)?;
                io.logger = Some(self.watch_logger(ready)?);
                let flags = fcntl(&o, FcntlArg::F_GETFL).map_err(ShimError::nix("fcntl"))?;
                fcntl(
                    &o,
                    FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
                )
                .map_err(ShimError::nix("set the logger's pipe non-blocking"))?;
                Some(Sink::Pipe(o))
            }
        };
        if let Some(dst) = dst {
            io.stdout = Some(self.add(Pump::copy(dup()?, dst))?);
        }
        Ok(())
    }
}

/// The stdio paths or URIs of a process, as containerd sends them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StdioPaths {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

/// Whose stdio this is (for the binary logger's environment).
pub struct Who<'a> {
    pub namespace: &'a str,
    pub id: &'a str,
    /// Who owns the container's ends of the stdio pipes (`IoUid`/`IoGid`): a process of a
    /// user-namespaced container may then reopen them (`/dev/stdout`); none: root, the creator.
    pub owner: Option<(u32, u32)>,
}

impl Who<'_> {
    /// Hands the container's end of a pipe to the stdio owner.
    fn give(&self, fd: &OwnedFd) -> Result<()> {
        if let Some((uid, gid)) = self.owner {
            nix::unistd::fchown(
                fd,
                Some(nix::unistd::Uid::from_raw(uid)),
                Some(nix::unistd::Gid::from_raw(gid)),
            )
            .map_err(ShimError::nix(format!(
                "container {}: chown its stdio pipe to {uid}:{gid}",
                self.id
            )))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::OwnedFd;

    #[test]
    fn stdio_pipes_are_handed_to_the_io_owner() {
        let owner_of = |fd: &OwnedFd| nix::sys::stat::fstat(fd).map(|st| (st.st_uid, st.st_gid));
        let (r, _w) = new_pipe().unwrap();
        let root = Who {
            namespace: "ns",
            id: "c",
            owner: None,
        };
        root.give(&r).unwrap();
        assert_eq!(owner_of(&r).unwrap(), (0, 0), "no IoUid: root keeps it");
        let user = Who {
            owner: Some((1000, 1001)),
            ..root
        };
        user.give(&r).unwrap();
        assert_eq!(owner_of(&r).unwrap(), (1000, 1001));
    }

    #[test]
    fn parses_stdio_targets() {
        assert_eq!(Target::parse("").unwrap(), Target::Null);
        assert_eq!(
            Target::parse("/run/x/stdout").unwrap(),
            Target::Fifo("/run/x/stdout".into())
        );
        assert_eq!(
            Target::parse("file:///var/log/c.log").unwrap(),
            Target::File("/var/log/c.log".into())
        );
        assert_eq!(
            Target::parse("binary:///usr/bin/logger?a=b").unwrap(),
            Target::Binary("/usr/bin/logger?a=b".into())
        );
        assert!(Target::parse("file://relative").is_err());
        assert!(Target::parse("tcp:///x").is_err());
    }
}
