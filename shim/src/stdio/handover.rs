//! The pumps in a handover record and back (docs/upgrade.md): same tokens, same fds, a terminal
//! copy's unwritten bytes carried over.

use super::{Pump, Pumps, Sink};
use crate::error::{Result, ShimError};
use crate::upgrade::record::{PumpRecord, SinkRecord};
use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use std::collections::HashMap;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::rc::Rc;

impl Pumps {
    /// Why the pumps cannot be handed over now, if they cannot.
    pub fn busy(&self) -> Option<String> {
        (!self.loggers.is_empty()).then(|| "a binary logger has not said it is ready".into())
    }

    pub fn export(&self) -> (Vec<PumpRecord>, usize) {
        let mut v: Vec<PumpRecord> = self
            .pumps
            .iter()
            .map(|(&token, p)| PumpRecord {
                token,
                src: p.src.as_raw_fd(),
                sink: match &p.dst {
                    Sink::Fifo { w, _keep } => SinkRecord::Fifo {
                        w: w.as_raw_fd(),
                        keep: _keep.as_ref().map(AsRawFd::as_raw_fd),
                    },
                    Sink::Pipe(fd) => SinkRecord::Pipe(fd.as_raw_fd()),
                    Sink::File(f) => SinkRecord::File(f.as_raw_fd()),
                    Sink::Tty(fd) => SinkRecord::Tty(fd.as_raw_fd()),
                },
                pending: p.copy.as_ref().map(|(buf, s, e)| buf[*s..*e].to_vec()),
            })
            .collect();
        v.sort_by_key(|p| p.token);
        (v, self.next)
    }

    /// The pumps a record names, registered on `registry` under their old tokens, each run
    /// once (bytes may have come while nobody watched).
    pub fn import(registry: Registry, records: Vec<PumpRecord>, next: usize) -> Result<Self> {
        let mut pumps = Pumps::new(registry, next);
        let mut files: HashMap<RawFd, Rc<File>> = HashMap::new();
        // SAFETY (each `own`): the record names fds the previous image held and handed over;
        // each is taken once (a log file shared by two pumps goes through `files`).
        let own = |fd: RawFd| unsafe { OwnedFd::from_raw_fd(fd) };
        let mut tokens = Vec::new();
        for r in records {
            let dst = match r.sink {
                SinkRecord::Fifo { w, keep } => Sink::Fifo {
                    w: own(w),
                    _keep: keep.map(own),
                },
                SinkRecord::Pipe(fd) => Sink::Pipe(own(fd)),
                SinkRecord::Tty(fd) => Sink::Tty(own(fd)),
                SinkRecord::File(fd) => Sink::File(
                    files
                        .entry(fd)
                        .or_insert_with(|| Rc::new(File::from(own(fd))))
                        .clone(),
                ),
            };
            let copy = r.pending.map(|bytes| {
                let mut buf = vec![0u8; super::COPY_BUFFER.max(bytes.len())].into_boxed_slice();
                buf[..bytes.len()].copy_from_slice(&bytes);
                (buf, 0, bytes.len())
            });
            let pump = Pump {
                src: own(r.src),
                dst,
                copy,
            };
            register(&pumps.registry, &pump, r.token)?;
            pumps.pumps.insert(r.token, pump);
            tokens.push(r.token);
        }
        for t in tokens {
            pumps.run(t);
        }
        Ok(pumps)
    }
}

fn register(registry: &Registry, pump: &Pump, token: usize) -> Result<()> {
    let fail = |fd: RawFd| ShimError::io(format!("re-register stdio fd {fd} with epoll"));
    let src = pump.src.as_raw_fd();
    registry
        .register(&mut SourceFd(&src), Token(token), Interest::READABLE)
        .map_err(fail(src))?;
    if pump.dst.pollable() {
        let dst = pump.dst.fd().as_raw_fd();
        registry
            .register(&mut SourceFd(&dst), Token(token + 1), Interest::WRITABLE)
            .map_err(fail(dst))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stdio::open::new_pipe;
    use std::io::Read;

    fn read_now(fd: &OwnedFd) -> String {
        let mut f = File::from(fd.try_clone().expect("dup"));
        let mut buf = [0u8; 64];
        let n = f.read(&mut buf).expect("read");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    /// A splice pump and a terminal copy with unwritten bytes, exported, taken over by another
    /// `Pumps` on another epoll (as a new image does), still move their bytes, once.
    #[test]
    fn pumps_survive_export_and_import() {
        let poll = mio::Poll::new().expect("epoll");
        let mut old = Pumps::new(poll.registry().try_clone().expect("dup"), 100);
        let (a_r, a_w) = new_pipe().expect("pipe");
        let (b_r, b_w) = new_pipe().expect("pipe");
        let (c_r, c_w) = new_pipe().expect("pipe");
        let (d_r, d_w) = new_pipe().expect("pipe");
        // Non-blocking reads: bytes that did not move fail the test instead of hanging it.
        for fd in [&a_r, &b_r, &c_r, &d_r] {
            nix::fcntl::fcntl(
                fd,
                nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
            )
            .expect("nonblock");
        }
        let splice = old.add(Pump::splice(a_r, Sink::Pipe(b_w))).expect("add");
        nix::unistd::write(&a_w, b"one").expect("write");
        old.on_event(Token(splice));
        assert_eq!(read_now(&b_r), "one");

        let mut copy = Pump::copy(c_r, Sink::Pipe(d_w));
        if let Some((buf, s, e)) = copy.copy.as_mut() {
            buf[..3].copy_from_slice(b"xyz");
            (*s, *e) = (0, 3);
        }
        // Registered by hand, not run: its bytes stay pending, as a full terminal leaves them.
        register(&old.registry, &copy, 200).expect("register");
        old.pumps.insert(200, copy);

        let (records, next) = old.export();
        assert_eq!(records.len(), 2);
        assert_eq!(records[1].pending.as_deref(), Some(&b"xyz"[..]));
        // The old image's fds cross the exec: nothing of it closes them.
        std::mem::forget(old);
        nix::unistd::write(&a_w, b"two").expect("write");

        let poll2 = mio::Poll::new().expect("epoll");
        let new = Pumps::import(poll2.registry().try_clone().expect("dup"), records, next)
            .expect("import");
        assert_eq!(read_now(&b_r), "two", "bytes that came during the handover");
        assert_eq!(read_now(&d_r), "xyz", "a terminal copy's unwritten bytes");
        assert_eq!(new.next, next);
        drop(c_w);
    }
}
