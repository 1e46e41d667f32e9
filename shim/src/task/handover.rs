//! The service's part of a live upgrade's record (docs/upgrade.md): the containers, parked
//! `Wait`s, OOM watchers, unclaimed exits and deferred requests, out and back in.

use super::upgrade::Deferred;
use super::wait::Waiter;
use super::{ReplyTo, Service};
use crate::container::Container;
use crate::error::{Result, ShimError};
use crate::oom::OomWatcher;
use crate::pid::Pid;
use crate::process::{Process, State};
use crate::reaper::Exit;
use crate::stdio::{ProcessIo, StdioPaths};
use crate::upgrade::record::{
    ContainerRecord, DeferredRecord, ExitRecord, OomRecord, ProcessRecord, StateRecord,
    WaiterRecord,
};
use mio::unix::SourceFd;
use mio::{Interest, Token};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};
/// The service's part of the record.
pub struct Exported {
    pub containers: Vec<ContainerRecord>,
    pub waiters: Vec<WaiterRecord>,
    pub ooms: Vec<OomRecord>,
    pub next_oom: usize,
    pub unclaimed: Vec<ExitRecord>,
    pub deferred: Vec<DeferredRecord>,
}

impl Service {
    /// The containers, parked `Wait`s and OOM watchers, by fd number.
    pub fn export(&self) -> Exported {
        let containers = self
            .containers
            .values()
            .map(|c| ContainerRecord {
                id: c.id.clone(),
                bundle: c.bundle.clone(),
                runtime: c.runtime.config.clone(),
                rootfs_mounted: c.rootfs_mounted,
                kill_all_on_exit: c.kill_all_on_exit,
                init_exit_held: c.init_exit_held,
                restore_from: c.restore_from.clone(),
                init: process_record(&c.init),
                execs: c.execs.values().map(process_record).collect(),
            })
            .collect();
        let waiters = self
            .waiters
            .iter()
            .map(|w| WaiterRecord {
                token: w.to.token.0,
                stream_id: w.to.stream_id,
                container: w.container.clone(),
                exec_id: w.exec_id.clone(),
            })
            .collect();
        let mut ooms: Vec<OomRecord> = self
            .ooms
            .iter()
            .map(|(t, (id, w))| {
                let (dir, seen) = match w {
                    OomWatcher::V1 { dir, .. } => (dir.clone(), None),
                    OomWatcher::V2 { dir, seen, .. } => (dir.clone(), Some(seen.get())),
                };
                OomRecord {
                    token: t.0,
                    container: id.clone(),
                    fd: w.fd(),
                    dir,
                    v2_seen: seen,
                }
            })
            .collect();
        ooms.sort_by_key(|o| o.token);
        let unclaimed = self
            .unclaimed
            .iter()
            .map(|e| ExitRecord {
                pid: e.pid.raw(),
                status: e.status,
                at: e.at,
            })
            .collect();
        let now = Instant::now();
        let deferred = self
            .deferred
            .iter()
            .map(|d| DeferredRecord {
                token: d.from.token.0,
                stream_id: d.from.stream_id,
                method: d.method.clone(),
                payload: d.payload.clone(),
                deadline_left_micros: d.deadline.saturating_duration_since(now).as_micros() as u64,
            })
            .collect();
        Exported {
            containers,
            waiters,
            ooms,
            next_oom: self.next_oom,
            unclaimed,
            deferred,
        }
    }

    /// Rebuilds the table from a record; the OOM watchers are registered on this service's
    /// registry under their old tokens.
    pub fn import(&mut self, ex: Exported) -> Result<()> {
        for r in ex.containers {
            let init = process_from(r.init);
            let mut c = Container::new(&r.id, &r.bundle, r.runtime, init);
            c.rootfs_mounted = r.rootfs_mounted;
            c.kill_all_on_exit = r.kill_all_on_exit;
            c.init_exit_held = r.init_exit_held;
            c.restore_from = r.restore_from;
            for e in r.execs {
                c.execs.insert(e.exec_id.clone(), process_from(e));
            }
            self.containers.insert(r.id, c);
        }
        self.waiters = ex
            .waiters
            .into_iter()
            .map(|w| Waiter {
                to: ReplyTo {
                    token: Token(w.token),
                    stream_id: w.stream_id,
                },
                container: w.container,
                exec_id: w.exec_id,
            })
            .collect();
        for o in ex.ooms {
            // SAFETY: the record names the watcher's fd, handed over and owned by nobody else.
            let fd = unsafe { OwnedFd::from_raw_fd(o.fd) };
            let w = match o.v2_seen {
                // SAFETY: the fd is the inotify instance (or eventfd) the old image made.
                Some(seen) => OomWatcher::V2 {
                    inotify: unsafe { nix::sys::inotify::Inotify::from_owned_fd(fd) },
                    dir: o.dir,
                    seen: std::cell::Cell::new(seen),
                },
                None => OomWatcher::V1 {
                    efd: unsafe { nix::sys::eventfd::EventFd::from_owned_fd(fd) },
                    dir: o.dir,
                },
            };
            self.registry
                .register(&mut SourceFd(&w.fd()), Token(o.token), Interest::READABLE)
                .map_err(ShimError::io(format!(
                    "container {}: re-register its OOM watcher",
                    o.container
                )))?;
            self.ooms.insert(Token(o.token), (o.container, w));
        }
        self.next_oom = ex.next_oom;
        self.unclaimed = ex
            .unclaimed
            .into_iter()
            .filter_map(|e| {
                Some(Exit {
                    pid: Pid::new(i64::from(e.pid))?,
                    status: e.status,
                    at: e.at,
                })
            })
            .collect();
        let now = Instant::now();
        self.deferred = ex
            .deferred
            .into_iter()
            .map(|d| Deferred {
                method: d.method,
                payload: d.payload,
                from: ReplyTo {
                    token: Token(d.token),
                    stream_id: d.stream_id,
                },
                deadline: now + Duration::from_micros(d.deadline_left_micros),
            })
            .collect();
        Ok(())
    }
}

fn process_record(p: &Process) -> ProcessRecord {
    ProcessRecord {
        exec_id: p.exec_id.clone(),
        pid: p.pid.map(Pid::raw),
        state: match p.state {
            State::Created => StateRecord::Created,
            State::Running => StateRecord::Running,
            State::Paused => StateRecord::Paused,
            State::Stopped { status, at } => StateRecord::Stopped { status, at },
        },
        stdin: p.stdio.stdin.clone(),
        stdout: p.stdio.stdout.clone(),
        stderr: p.stdio.stderr.clone(),
        terminal: p.stdio.terminal,
        io_stdin: p.io.stdin,
        io_stdout: p.io.stdout,
        io_stderr: p.io.stderr,
        console: p.console.as_ref().map(|m| m.as_fd().as_raw_fd()),
    }
}

fn process_from(r: ProcessRecord) -> Process {
    let mut p = Process::new(
        &r.exec_id,
        StdioPaths {
            stdin: r.stdin,
            stdout: r.stdout,
            stderr: r.stderr,
            terminal: r.terminal,
        },
    );
    p.pid = r.pid.and_then(|n| Pid::new(n as i64));
    p.state = match r.state {
        StateRecord::Created => State::Created,
        StateRecord::Running => State::Running,
        StateRecord::Paused => State::Paused,
        StateRecord::Stopped { status, at } => State::Stopped { status, at },
    };
    p.io = ProcessIo {
        stdin: r.io_stdin,
        stdout: r.io_stdout,
        stderr: r.io_stderr,
        logger: None,
    };
    // SAFETY: the record names the terminal master the old image held, now ours alone.
    p.console = r.console.map(|fd| unsafe { OwnedFd::from_raw_fd(fd) });
    p
}
