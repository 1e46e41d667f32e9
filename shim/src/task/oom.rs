//! The OOM watchers of the containers (`crate::oom` reads the kernel's notifications): one per
//! container on the loop, `TaskOOM` published when it fires, and before the init's exit.

use super::Service;
use crate::oom::OomWatcher;
use crate::pid::Pid;
use mio::unix::SourceFd;
use mio::{Interest, Token};
use tether_protocol::api::events::TaskOOM;
use tether_protocol::topics;

/// Tokens of OOM watchers start here (below the stdio pumps' range).
pub const FIRST_OOM: usize = 1 << 19;

impl Service {
    pub(super) fn watch_oom(&mut self, id: &str, pid: Pid) {
        let watcher = match OomWatcher::new(pid.as_u32()) {
            Ok(w) => w,
            Err(e) => {
                log::warn!("container {id}: no OOM notifications: {e}");
                return;
            }
        };
        let token = Token(self.next_oom);
        self.next_oom = FIRST_OOM + (self.next_oom + 1 - FIRST_OOM) % FIRST_OOM;
        match self
            .registry
            .register(&mut SourceFd(&watcher.fd()), token, Interest::READABLE)
        {
            Ok(()) => {
                self.ooms.insert(token, (id.to_string(), watcher));
            }
            Err(e) => log::warn!("container {id}: register OOM eventfd: {e}"),
        }
    }

    /// An OOM eventfd fired.
    pub fn on_oom(&mut self, token: Token) {
        let Some((id, w)) = self.ooms.get(&token) else {
            return;
        };
        if w.fired() {
            let id = id.clone();
            self.publish_oom(&id);
        }
    }

    fn publish_oom(&mut self, id: &str) {
        log::info!("container {id}: OOM");
        let ev = TaskOOM {
            container_id: id.to_string(),
            ..Default::default()
        };
        self.publisher
            .publish(&self.registry, topics::TASK_OOM, &ev);
    }

    /// Publishes a pending OOM of container `id` now (before the exit it caused).
    pub(super) fn check_oom(&mut self, id: &str) {
        let fired = self.ooms.values().any(|(cid, w)| cid == id && w.fired());
        if fired {
            self.publish_oom(id);
        }
    }

    pub(super) fn unwatch_oom(&mut self, id: &str) {
        let tokens: Vec<Token> = self
            .ooms
            .iter()
            .filter(|(_, (cid, _))| cid == id)
            .map(|(t, _)| *t)
            .collect();
        for t in tokens {
            if let Some((_, w)) = self.ooms.remove(&t) {
                let _ = self.registry.deregister(&mut SourceFd(&w.fd()));
            }
        }
    }
}
