//! A shim nobody will ask for again exits by itself. containerd (or the daemon) may give up on
//! a shim it could not reach (stopped, or slow, during containerd's restart): it runs the
//! shim's `delete` action, which removes the container from the runtime, removes the bundle
//! and forgets the task. Such a shim would otherwise serve nobody forever (the leak containerd's
//! own shim shows under pod churn). While no container runs, the shim looks now and then:
//! a container whose init has exited and whose bundle is gone is dropped, and a shim left with
//! no container and no bundle of its own (its working directory) exits. A running container
//! means no timer at all: an idle shim never wakes. Each look doubles the wait before the next
//! (to a minute): a pod whose containers all completed and that nobody deletes for hours costs
//! a wake-up a minute, not one every two seconds.

use super::Service;
use std::time::{Duration, Instant};

/// How soon a shim whose containers stopped first looks for its bundles.
pub const CHECK_EVERY: Duration = Duration::from_secs(2);
/// The longest wait between two looks.
pub const CHECK_AT_MOST_EVERY: Duration = Duration::from_secs(60);

impl Service {
    /// Whether any container still runs (or is being created): then nothing is abandoned.
    fn anything_runs(&self) -> bool {
        !self.creating.is_empty()
            || !self.calls.is_empty()
            || self.containers.values().any(|c| !c.init.is_stopped())
    }

    /// When the loop must wake to look for abandonment, if it must.
    pub(super) fn abandon_deadline(&mut self, now: Instant) -> Option<Instant> {
        if self.shutdown || self.anything_runs() {
            self.abandon_check_at = None;
            self.abandon_check_every = CHECK_EVERY;
            return None;
        }
        let every = self.abandon_check_every;
        Some(*self.abandon_check_at.get_or_insert(now + every))
    }

    /// At its time: drops the containers whose bundle is gone; with none left and the shim's
    /// own bundle gone too, shuts the shim down.
    pub(super) fn check_abandoned(&mut self, now: Instant) {
        match self.abandon_check_at {
            Some(at) if at <= now => self.abandon_check_at = None,
            _ => return,
        }
        self.abandon_check_every = (self.abandon_check_every * 2).min(CHECK_AT_MOST_EVERY);
        if self.shutdown || self.anything_runs() {
            return;
        }
        let gone: Vec<String> = self
            .containers
            .values()
            .filter(|c| !c.bundle.exists())
            .map(|c| c.id.clone())
            .collect();
        for id in gone {
            log::warn!("container {id}: its bundle is gone and it has exited: forgotten");
            if let Err(e) = self.forget_container(&id) {
                log::warn!("container {id}: {e}");
            }
        }
        if self.containers.is_empty() && !own_bundle_exists() {
            log::warn!("no container and no bundle left: nobody will ask for this shim; exiting");
            self.shutdown = true;
        }
    }
}

/// The shim runs in the bundle it was started for: a deleted working directory means it is gone.
fn own_bundle_exists() -> bool {
    match std::fs::symlink_metadata("/proc/self/cwd") {
        Err(_) => true,
        Ok(_) => std::fs::read_link("/proc/self/cwd")
            .map(|p| !p.to_string_lossy().ends_with(" (deleted)"))
            .unwrap_or(true),
    }
}
