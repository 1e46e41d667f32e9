//! The service's side of a live upgrade (docs/upgrade.md): the `Upgrade` request and its check
//! of the new binary, whether the shim is quiescent enough to hand over, and the containers,
//! parked `Wait`s and OOM watchers in the record and back.

use super::wait::Waiter;
use super::{Flow, ReplyTo, Service};
use crate::container::Container;
use crate::error::{Result, ShimError};
use crate::oom::OomWatcher;
use crate::pid::Pid;
use crate::process::{Process, State};
use crate::reaper::Exit;
use crate::stdio::{ProcessIo, StdioPaths};
use crate::upgrade::record::{
    ContainerRecord, OomRecord, ProcessRecord, ReplyRecord, StateRecord, WaiterRecord,
};
use crate::upgrade::{self, exec::monotonic_nanos};
use mio::unix::SourceFd;
use mio::{Interest, Token};
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::Instant;
use tether_protocol::admin::UpgradeRequest;

/// The new binary's `--handover-check` in flight.
pub struct Check {
    pid: Pid,
    out: File,
    deadline: Instant,
    timed_out: bool,
    binary: PathBuf,
    ready: Ready,
}

/// An upgrade whose check passed: the loop commits it (`server.rs`).
#[derive(Debug, Clone, Copy)]
pub struct Ready {
    /// None once the asker has gone (the upgrade goes on, unanswered).
    pub reply: Option<ReplyTo>,
    /// CLOCK_MONOTONIC when the request was taken.
    pub requested_at: u64,
}

impl Ready {
    pub fn reply_record(&self) -> Option<ReplyRecord> {
        self.reply.map(|r| ReplyRecord {
            token: r.token.0,
            stream_id: r.stream_id,
        })
    }

    /// The asker's connection `token` went away.
    pub(super) fn forget(&mut self, token: Token) {
        if self.reply.is_some_and(|r| r.token == token) {
            self.reply = None;
        }
    }
}

/// The service's part of the record.
pub struct Exported {
    pub containers: Vec<ContainerRecord>,
    pub waiters: Vec<WaiterRecord>,
    pub ooms: Vec<OomRecord>,
    pub next_oom: usize,
}

impl Service {
    /// `Upgrade`: refused at once if the shim holds work that cannot be handed over, else the
    /// new binary is checked (the reply comes after the handover, or with the refusal).
    pub fn upgrade(&mut self, payload: &[u8], from: ReplyTo, binary: PathBuf) -> Flow {
        let requested_at = monotonic_nanos();
        if let Err(e) = serde_json::from_slice::<UpgradeRequest>(payload) {
            return Flow::Done(Err(ShimError::InvalidArgument(format!(
                "malformed Upgrade request: {e}"
            ))));
        }
        if self.upgrading.is_some() || self.upgrade_ready.is_some() {
            return Flow::Done(Err(ShimError::FailedPrecondition(
                "an upgrade is already in progress".into(),
            )));
        }
        if let Some(why) = self.not_quiescent() {
            return Flow::Done(Err(why));
        }
        match upgrade::start_check(&binary) {
            Ok((pid, out)) => {
                log::info!("upgrade: checking {} (pid {pid})", binary.display());
                self.upgrading = Some(Check {
                    pid,
                    out,
                    deadline: Instant::now() + upgrade::CHECK_DEADLINE,
                    timed_out: false,
                    binary,
                    ready: Ready {
                        reply: Some(from),
                        requested_at,
                    },
                });
                Flow::Parked
            }
            Err(e) => Flow::Done(Err(e)),
        }
    }

    /// Why the shim cannot be handed over now (the caller retries), if it cannot.
    pub fn not_quiescent(&self) -> Option<ShimError> {
        self.blocker().map(|why| {
            ShimError::FailedPrecondition(format!("upgrade refused: {why}; retry later"))
        })
    }

    /// Work in flight that the record does not carry.
    fn blocker(&self) -> Option<String> {
        if let Some(p) = self.calls.values().next() {
            Some(format!(
                "a runtime call is in flight ({}, pid {})",
                p.call.what, p.call.pid
            ))
        } else if let Some(id) = self.busy.keys().next() {
            Some(format!("container {id} has an operation in flight"))
        } else if let Some(id) = self.creating.iter().next() {
            Some(format!("container {id} is being created"))
        } else if !self.unclaimed.is_empty() {
            Some(format!(
                "{} exits are not yet claimed",
                self.unclaimed.len()
            ))
        } else if let Some(c) = self
            .containers
            .values()
            .find(|c| c.init_exit_held || c.killing_all || c.starting)
        {
            Some(format!(
                "container {}: its init's exit is being settled",
                c.id
            ))
        } else if self.shutdown {
            Some("the shim is shutting down".to_string())
        } else if !self.publisher.is_idle() {
            Some("events are not yet delivered to containerd".to_string())
        } else {
            self.pumps.busy()
        }
    }

    /// The check's exit, if `e` is it: the upgrade becomes ready, or is answered refused.
    pub(super) fn check_exited(&mut self, e: &Exit) -> bool {
        if self.upgrading.as_ref().map(|c| c.pid) != Some(e.pid) {
            return false;
        }
        let Some(mut c) = self.upgrading.take() else {
            return false;
        };
        match upgrade::verdict(&c.binary, e.status, &mut c.out, c.timed_out) {
            Ok(version) => {
                log::info!(
                    "upgrade: {} (version {version}) can take over",
                    c.binary.display()
                );
                self.upgrade_ready = Some(c.ready);
            }
            Err(why) => {
                log::warn!("{why}");
                self.answer(c.ready.reply, Err(why));
            }
        }
        true
    }

    pub(super) fn check_deadline(&self) -> Option<Instant> {
        self.upgrading
            .as_ref()
            .filter(|c| !c.timed_out)
            .map(|c| c.deadline)
    }

    /// A check past its deadline is killed; its exit answers the request.
    pub(super) fn check_timers(&mut self, now: Instant) {
        if let Some(c) = self.upgrading.as_mut() {
            if !c.timed_out && c.deadline <= now {
                c.timed_out = true;
                let _ = c.pid.signal(nix::sys::signal::Signal::SIGKILL);
            }
        }
    }

    /// An upgrade whose check passed, for the loop to commit.
    pub fn take_ready_upgrade(&mut self) -> Option<Ready> {
        self.upgrade_ready.take()
    }

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
        Exported {
            containers,
            waiters,
            ooms,
            next_oom: self.next_oom,
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
        Ok(())
    }

    /// Replies owed after a handover, for the loop to send.
    pub fn answer_upgrade(&mut self, to: Option<ReplyTo>, r: Result<Vec<u8>>) {
        self.answer(to, r);
    }

    /// A connection went away: an upgrade it asked for is answered to nobody.
    pub(super) fn forget_upgrade(&mut self, token: Token) {
        if let Some(c) = self.upgrading.as_mut() {
            c.ready.forget(token);
        }
        if let Some(r) = self.upgrade_ready.as_mut() {
            r.forget(token);
        }
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
