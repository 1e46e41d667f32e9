//! What shims tell the table besides answers: their events (an init's exit, another init's
//! to ignore), their deaths, adopted shims after a restart, and aborted creates' shims.

use super::create::hold_stdin;
use super::*;

/// Exits kept per container not adopted yet (one init exits once; a few retries at most).
const MAX_EARLY_EXITS: usize = 8;

impl Containers {
    /// Takes a container found on disk after a restart into the table, with its live shim if
    /// it has one (then watched).
    pub fn adopt(
        &self,
        key: Key,
        record: ContainerRecord,
        shim: Option<ShimConn>,
    ) -> Arc<Container> {
        let dir = self.cfg.state.join(&key.0).join(&key.1);
        let pid = shim.as_ref().map(|s| s.pid);
        let c = Arc::new(Container {
            key: key.clone(),
            dir,
            record: Mutex::new(record),
            exited: Condvar::new(),
            stdin: Mutex::new(None),
            logger: Mutex::new(None),
            cleaning: Mutex::new(false),
            cleaned: Condvar::new(),
            shim: Mutex::new(shim.map(Arc::new)),
        });
        if lock(&c.shim).is_some() && c.dir.join(crate::names::STDIN_FIFO).exists() {
            // Rediscovered after a restart: hold its stdin again (the logger held it meanwhile).
            match hold_stdin(&c.dir) {
                Ok(f) => *lock(&c.stdin) = Some(f),
                Err(e) => log::warn!("container {}/{}: {e}", key.0, key.1),
            }
        }
        let early = {
            let mut table = lock(&self.table);
            table.insert(key.clone(), c.clone());
            lock(&self.unadopted).remove(&key).unwrap_or_default()
        };
        for exit in &early {
            self.on_exit(&key.0, exit);
        }
        if let (Some(pid), Some(m)) = (pid, self.monitor()) {
            m.watch_shim(key, pid);
        }
        c
    }

    /// A container found on disk that recovery will adopt: until then its init's exits wait.
    pub fn expect_adoption(&self, key: &Key) {
        lock(&self.unadopted).insert(key.clone(), Vec::new());
    }

    /// Recovery is over: what it did not adopt (records it skipped) waits no longer.
    pub fn end_adoptions(&self) {
        lock(&self.unadopted).clear();
    }

    /// Reports the init's exit on the bus (journaled; once, whoever reports it first).
    pub fn publish_exit(&self, key: &Key, pid: u32, status: u32, at: i64, recovered: bool) {
        let ev = TaskExit {
            container_id: key.1.clone(),
            id: key.1.clone(),
            pid,
            exit_status: status,
            exited_at: MessageField::some(to_timestamp(at)),
            ..Default::default()
        };
        if let Some(e) = NewEvent::of(now_nanos(), &key.0, topics::TASK_EXIT, ev, recovered) {
            self.bus.publish(e);
        }
    }

    /// Ignores the late events of an aborted create's init (see [`Bus::suppress`]).
    pub fn suppress_events(&self, key: &Key, pid: u32) {
        self.bus.suppress(&key.0, &key.1, pid);
    }

    /// Drops every event of the container until [`Containers::unmute_events`] (see
    /// [`Bus::mute`]).
    pub fn mute_events(&self, key: &Key) {
        self.bus.mute(&key.0, &key.1);
    }

    pub fn unmute_events(&self, key: &Key) {
        self.bus.unmute(&key.0, &key.1);
    }

    /// Undoes, in its shim, a create the daemon never acknowledged, and makes sure that shim is
    /// gone when this returns (the caller muted the container's events first, and runs the
    /// shim's `delete` action after): its init is deleted, even one whose `Create` the shim
    /// only handles now (sent before a crash, still queued on the old connection), and the
    /// shim is asked to exit. A shim that still runs after its flush time is SIGKILLed if it
    /// still holds the container; else it serves other containers of its group and stays.
    pub fn stop_aborted_shim(&self, key: &Key, client: &TaskCaller, shim_pid: u32, t: Duration) {
        let process = match crate::daemon::shim::handle::ShimProcess::open(shim_pid) {
            Ok(p) => Some(p),
            Err(e) => {
                log::debug!("container {}/{}: shim {shim_pid}: {e}", key.0, key.1);
                None
            }
        };
        let state = || {
            client.call::<_, task::StateResponse>(
                "State",
                &task::StateRequest {
                    id: key.1.clone(),
                    ..Default::default()
                },
                t,
            )
        };
        if let Ok(st) = state() {
            log::debug!(
                "container {}/{}: the aborted create's init is pid {} (shim {shim_pid})",
                key.0,
                key.1,
                st.pid
            );
            if st.pid != 0 {
                self.suppress_events(key, st.pid);
            }
        }
        let _ = client.call::<_, task::DeleteResponse>(
            "Delete",
            &task::DeleteRequest {
                id: key.1.clone(),
                ..Default::default()
            },
            t,
        );
        let _ = client.call::<_, tether_protocol::api::Empty>(
            "Shutdown",
            &task::ShutdownRequest {
                id: key.1.clone(),
                ..Default::default()
            },
            t,
        );
        let Some(process) = process else { return };
        if process.wait_exit(SHIM_EXIT_WAIT) {
            return;
        }
        if state().is_ok() {
            log::warn!(
                "container {}/{}: shim {} did not let the aborted create go: killing it",
                key.0,
                key.1,
                process.pid()
            );
            process.kill();
            if !process.wait_exit(SHIM_EXIT_WAIT) {
                log::warn!(
                    "container {}/{}: shim {} survives SIGKILL",
                    key.0,
                    key.1,
                    process.pid()
                );
            }
        } else {
            log::info!(
                "container {}/{}: shim {} serves on (other containers of its group)",
                key.0,
                key.1,
                process.pid()
            );
        }
    }

    /// A watched shim died on its own: clean up with its `delete` action, record the exit, and
    /// publish the exit nobody else will.
    pub fn shim_died(&self, key: Key) {
        let Some(c) = lock(&self.table).get(&key).cloned() else {
            return;
        };
        let Some(shim) = lock(&c.shim).take() else {
            return;
        };
        log::warn!("container {}/{}: shim {} died", key.0, key.1, shim.pid);
        let deleted = shim.command.delete();
        if let Some(socket) = shim.task.socket() {
            crate::daemon::shim::handle::remove_dead_socket(socket);
        }
        let (status, at, pid, reason) = match deleted {
            Ok(d) => (
                d.exit_status,
                d.exited_at
                    .as_ref()
                    .map(tether_protocol::time::from_timestamp)
                    .unwrap_or_else(now_nanos),
                d.pid,
                REASON_SHIM_DIED.to_string(),
            ),
            Err(e) => {
                log::warn!("container {}/{}: {e}", key.0, key.1);
                (
                    128 + libc::SIGKILL as u32,
                    now_nanos(),
                    lock(&c.record).pid,
                    // Said where users look (`ps`, `inspect`): e.g. a delete action that hung.
                    format!("{REASON_SHIM_DIED}; its cleanup failed: {e}"),
                )
            }
        };
        let already = lock(&c.record).finished_at != 0;
        c.record_exit(status, at, &reason);
        if !already {
            self.publish_exit(&key, pid, status, at, false);
        }
    }

    /// containerd's `Events/Forward`, on the monitor's loop: each event is decoded once,
    /// another incarnation's init's dropped, the rest journaled (one fsync for the batch) and put
    /// on the bus before the shims hear "ok"; then the table learns the inits' exits.
    pub fn forward(&self, reqs: Vec<ForwardRequest>) -> Vec<Result<()>> {
        let n = reqs.len();
        let mut events = Vec::with_capacity(n);
        // The init exits among the events to publish, for the table once they are accepted.
        let mut exits = Vec::with_capacity(n);
        for req in reqs {
            let env = req.envelope.into_option().unwrap_or_default();
            let timestamp = env
                .timestamp
                .as_ref()
                .map(tether_protocol::time::from_timestamp)
                .unwrap_or_else(now_nanos);
            let (type_url, value) = env
                .event
                .into_option()
                .map(|a| (a.type_url, a.value))
                .unwrap_or_default();
            let e = NewEvent::decode(timestamp, env.namespace, env.topic, type_url, value, false);
            if self.is_other_init(&e) {
                log::debug!(
                    "dropped {} of {}: not the init the daemon knows",
                    e.topic,
                    e.namespace
                );
                continue;
            }
            let exit = match e.topic.as_str() {
                topics::TASK_EXIT => e.decoded.get::<TaskExit>().cloned(),
                _ => None,
            };
            exits.push(exit.map(|x| (e.namespace.clone(), x)));
            events.push(e);
        }
        match self.bus.publish_batch(events) {
            Ok(seqs) => {
                for (exit, seq) in exits.into_iter().zip(seqs) {
                    // A duplicate (or a muted event) taught us nothing new.
                    if let (Some((namespace, exit)), Some(seq)) = (exit, seq) {
                        log::debug!(
                            "event {seq}: /tasks/exit of {namespace}/{} ({}) pid {} status {} \
                             from a shim (container {})",
                            exit.container_id,
                            exit.id,
                            exit.pid,
                            exit.exit_status,
                            self.describe_pid(&namespace, &exit.container_id)
                        );
                        self.on_exit(&namespace, &exit);
                    }
                }
                (0..n).map(|_| Ok(())).collect()
            }
            Err(e) => {
                log::error!("events not accepted (the shims send them again): {e}");
                let msg = format!("the daemon could not journal the event: {e}");
                (0..n)
                    .map(|_| Err(Error::Unavailable(msg.clone())))
                    .collect()
            }
        }
    }

    /// Whether an init's one-time event (start, exit, delete) names a pid other than that of
    /// the init the daemon knows for that container: another incarnation's (an aborted
    /// create's), which must not be reported as this container's.
    fn is_other_init(&self, e: &NewEvent) -> bool {
        let d = &e.decoded;
        let (container, id, pid) = match e.topic.as_str() {
            topics::TASK_EXIT => match d.get::<TaskExit>() {
                Some(x) => (&x.container_id, x.id.as_str(), x.pid),
                None => return false,
            },
            topics::TASK_DELETE => match d.get::<TaskDelete>() {
                Some(x) => (&x.container_id, x.id.as_str(), x.pid),
                None => return false,
            },
            topics::TASK_START => match d.get::<TaskStart>() {
                Some(x) => (&x.container_id, "", x.pid),
                None => return false,
            },
            _ => return false,
        };
        if pid == 0 || !(id.is_empty() || id == container) {
            return false;
        }
        let key = (e.namespace.clone(), container.clone());
        let Some(c) = lock(&self.table).get(&key).cloned() else {
            return false;
        };
        let known = lock(&c.record).pid;
        known != 0 && known != pid
    }

    /// Learns an init's exit a shim published: in the table at once, in its record from the
    /// writer thread (the journal holds the exit durably already; see [`writer`]).
    fn on_exit(&self, namespace: &str, exit: &TaskExit) {
        if exit.id != exit.container_id && !exit.id.is_empty() {
            return;
        }
        let key = (namespace.to_string(), exit.container_id.clone());
        let c = {
            let table = lock(&self.table);
            match table.get(&key) {
                Some(c) => c.clone(),
                None => {
                    // Not adopted yet: adoption applies it, in order after the shim's State.
                    if let Some(q) = lock(&self.unadopted).get_mut(&key) {
                        if q.len() < MAX_EARLY_EXITS {
                            q.push(exit.clone());
                        }
                    }
                    return;
                }
            }
        };
        let pid = lock(&c.record).pid;
        if pid != 0 && exit.pid != 0 && exit.pid != pid {
            // The exit of another init of the same name (an aborted create's).
            return;
        }
        let at = exit
            .exited_at
            .as_ref()
            .map(tether_protocol::time::from_timestamp)
            .unwrap_or_else(now_nanos);
        if c.note_exit(exit.exit_status, at) {
            self.writer.write_soon(c);
        }
    }
}
