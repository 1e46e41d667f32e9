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
