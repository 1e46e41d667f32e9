//! The `Upgrade` request (docs/upgrade.md): the check of the new binary, then the wait for the
//! shim to be quiet (no runtime call in flight, at most `UPGRADE_QUIET_DEADLINE`); requests
//! that would start a runtime call meanwhile are deferred, run by the new image or, if the
//! upgrade is refused, by this one. What goes in the record is `handover.rs`.

use super::{Flow, ReplyTo, Service};
use crate::error::{Result, ShimError};
use crate::pid::Pid;
use crate::reaper::Exit;
use crate::upgrade::record::ReplyRecord;
use crate::upgrade::{self, exec::monotonic_nanos};
use mio::Token;
use std::fs::File;
use std::path::PathBuf;
use std::time::Instant;
use tether_protocol::admin::{UpgradeRequest, UPGRADE_QUIET_DEADLINE as QUIET_DEADLINE};

/// Requests deferred while an upgrade waits; past this they are refused (a bound on memory).
const MAX_DEFERRED: usize = 1024;

/// A request that would start a runtime call, taken while an upgrade waits for the shim to be
/// quiet: run after the handover (by the new image) or after a refusal (by this one).
pub(super) struct Deferred {
    pub(super) method: String,
    pub(super) payload: Vec<u8>,
    pub(super) from: ReplyTo,
    pub(super) deadline: Instant,
}

/// Whether `method` may start a runtime call (and so is deferred while an upgrade waits).
fn starts_runtime_call(method: &str) -> bool {
    matches!(
        method,
        "Create"
            | "Start"
            | "Delete"
            | "Pause"
            | "Resume"
            | "Update"
            | "Checkpoint"
            | "Kill"
            | "Pids"
    )
}

/// The new binary's `--handover-check` in flight.
pub struct Check {
    pid: Pid,
    out: File,
    deadline: Instant,
    timed_out: bool,
    binary: PathBuf,
    /// The binary checked, opened once (O_PATH).
    exe: std::os::fd::OwnedFd,
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

impl Service {
    /// `Upgrade`: the new binary is checked at once; the handover waits (up to
    /// `QUIET_DEADLINE`) for the runtime calls in flight to end. The reply comes from the new
    /// image, or with the refusal.
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
        if self.shutdown {
            return Flow::Done(Err(ShimError::FailedPrecondition(
                "upgrade refused: the shim is shutting down".into(),
            )));
        }
        let exe = match upgrade::open_binary(&binary) {
            Ok(fd) => fd,
            Err(e) => return Flow::Done(Err(e)),
        };
        match upgrade::start_check(&binary, &exe) {
            Ok((pid, out)) => {
                log::info!("upgrade: checking {} (pid {pid})", binary.display());
                self.upgrading = Some(Check {
                    pid,
                    out,
                    deadline: Instant::now() + upgrade::CHECK_DEADLINE,
                    timed_out: false,
                    binary,
                    exe,
                    ready: Ready {
                        reply: Some(from),
                        requested_at,
                    },
                });
                self.quiet_by = Some(Instant::now() + QUIET_DEADLINE);
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

    /// Whether an upgrade is being checked or waits for the shim to be quiet.
    pub(super) fn upgrade_pending(&self) -> bool {
        self.upgrading.is_some() || self.upgrade_ready.is_some()
    }

    /// While an upgrade is pending, a request that would start a runtime call waits for it
    /// (so the shim gets quiet); `None`: not deferred, run it now.
    pub(super) fn defer(
        &mut self,
        method: &str,
        payload: &[u8],
        from: ReplyTo,
        deadline: Instant,
    ) -> Option<Flow> {
        if !self.upgrade_pending() || !starts_runtime_call(method) {
            return None;
        }
        if self.deferred.len() >= MAX_DEFERRED {
            return Some(Flow::Done(Err(ShimError::ResourceExhausted(format!(
                "{MAX_DEFERRED} requests already wait for an upgrade in progress"
            )))));
        }
        log::info!("{method} waits for the upgrade in progress");
        self.deferred.push(Deferred {
            method: method.to_string(),
            payload: payload.to_vec(),
            from,
            deadline,
        });
        Some(Flow::Parked)
    }

    /// Runs the requests deferred by an upgrade that is over (done, by the new image; refused,
    /// by this one), in the order they came.
    pub fn run_deferred(&mut self) {
        if self.upgrade_pending() || self.deferred.is_empty() {
            return;
        }
        for d in std::mem::take(&mut self.deferred) {
            if d.deadline <= Instant::now() {
                let why = ShimError::DeadlineExceeded(format!(
                    "{}: waited for an upgrade past its deadline",
                    d.method
                ));
                self.answer(Some(d.from), Err(why));
                continue;
            }
            if let Flow::Done(r) = self.dispatch(&d.method, &d.payload, d.from, d.deadline) {
                self.answer(Some(d.from), r);
            }
        }
    }

    /// Work in flight that the record does not carry: the upgrade waits for it to end.
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
        } else if let Some(c) = self
            .containers
            .values()
            .find(|c| c.killing_all || c.starting)
        {
            Some(format!(
                "container {}: its start or kill-all is in flight",
                c.id
            ))
        } else if self.shutdown {
            Some("the shim is shutting down".to_string())
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
                self.upgrade_exe = Some(c.exe);
            }
            Err(why) => {
                log::warn!("{why}");
                self.quiet_by = None;
                self.answer(c.ready.reply, Err(why));
            }
        }
        true
    }

    pub(super) fn check_deadline(&self) -> Option<Instant> {
        let check = self
            .upgrading
            .as_ref()
            .filter(|c| !c.timed_out)
            .map(|c| c.deadline);
        let quiet = self.upgrade_ready.and(self.quiet_by);
        check.into_iter().chain(quiet).min()
    }

    /// A check past its deadline is killed (its exit answers the request); an upgrade still
    /// not quiet at its deadline is refused with what it waited for.
    pub(super) fn check_timers(&mut self, now: Instant) {
        if let Some(c) = self.upgrading.as_mut() {
            if !c.timed_out && c.deadline <= now {
                c.timed_out = true;
                let _ = c.pid.signal(nix::sys::signal::Signal::SIGKILL);
            }
        }
        if self.upgrade_ready.is_some() && self.quiet_by.is_some_and(|t| t <= now) {
            if let Some(why) = self.blocker() {
                self.refuse_ready(format!(
                    "upgrade refused: the shim was not quiet within {QUIET_DEADLINE:?} ({why}); \
                     retry later"
                ));
            }
        }
    }

    fn refuse_ready(&mut self, why: String) {
        self.quiet_by = None;
        self.upgrade_exe = None;
        if let Some(r) = self.upgrade_ready.take() {
            log::warn!("{why}");
            self.answer(r.reply, Err(ShimError::FailedPrecondition(why)));
        }
    }

    /// An upgrade whose check passed, once the shim is quiet, for the loop to commit.
    pub fn take_ready_upgrade(&mut self) -> Option<Ready> {
        self.upgrade_ready?;
        if self.shutdown {
            self.refuse_ready("upgrade refused: the shim is shutting down".into());
            return None;
        }
        if self.blocker().is_some() {
            return None;
        }
        self.quiet_by = None;
        self.upgrade_ready.take()
    }

    /// Replies owed after a handover, for the loop to send.
    pub fn answer_upgrade(&mut self, to: Option<ReplyTo>, r: Result<Vec<u8>>) {
        self.answer(to, r);
    }

    /// A connection went away: an upgrade it asked for is answered to nobody, its deferred
    /// requests are dropped.
    pub(super) fn forget_upgrade(&mut self, token: Token) {
        self.deferred.retain(|d| d.from.token != token);
        if let Some(c) = self.upgrading.as_mut() {
            c.ready.forget(token);
        }
        if let Some(r) = self.upgrade_ready.as_mut() {
            r.forget(token);
        }
    }
}
