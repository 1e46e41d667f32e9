//! The daemon's table of containers and every operation on them.
//!
//! Each container has a directory `<state>/<ns>/<id>` that is also its bundle: `config.json`,
//! the `log` FIFO its shim writes to, the shim's `address`, and our `record.json` (written on
//! every transition). Calls to a shim are made without holding the table lock, so a blocked
//! `Wait` stalls nobody else.
//!
//! Here: the table, a container's record and its persistence. The operations: `create.rs`,
//! `process.rs` (start, exec, kill, wait, pause, update, stats, io), `delete.rs`; what shims say
//! besides answers (events, deaths, adoption after a restart): `shim_events.rs`.

mod create;
mod delete;
mod fifo_logger;
mod process;
mod shim_events;
mod stats;
mod writer;

use crate::daemon::events::{Bus, NewEvent};
use crate::daemon::monitor::{Key, Monitor};
use crate::daemon::shim::launcher::{self, ShimCommand};
use crate::error::{is_disconnected, Error, Result};
use protobuf::{Message, MessageField};
use std::collections::HashMap;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;
use tether_protocol::api::events::{TaskDelete, TaskExit, TaskStart};
use tether_protocol::api::forward::ForwardRequest;
use tether_protocol::api::task;
use tether_protocol::api::Any;
use tether_protocol::manager_api::manager as api;
use tether_protocol::task_service::TaskCaller;
use tether_protocol::time::{now_nanos, to_timestamp};
use tether_protocol::{
    store, topics, validate_id, validate_namespace, ContainerRecord, ContainerStatus,
};

/// Why a container ended when its shim died under a running daemon.
pub const REASON_SHIM_DIED: &str = "shim died";
/// How long ordinary shim calls may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Calls that run the OCI runtime (start, kill, pause, resume, update, delete): the shims'
/// own default runtime timeout (ours and containerd's: 60 s). It goes to the shim as the call's
/// deadline, and the daemon waits a margin longer (see `TaskCaller::call`), so a runtime that
/// finishes late is either reported done or undone by the shim, never done behind a reported
/// failure.
pub const RUNTIME_TIMEOUT: Duration = Duration::from_secs(60);
/// `Create` runs the OCI runtime and may take longer on a loaded machine.
const CREATE_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a shim asked to exit may take: it flushes its events for up to 3 s.
const SHIM_EXIT_WAIT: Duration = Duration::from_millis(3500);
/// The type URLs containerd gives OCI JSON in an `Any`.
const PROCESS_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";
const RESOURCES_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources";

/// Where things live and what the shims are told.
#[derive(Debug, Clone)]
pub struct Config {
    pub root: PathBuf,
    pub state: PathBuf,
    pub socket: PathBuf,
    pub debug: bool,
    /// Bounds of a detached container's log files (see `log_driver`).
    pub log_max_size: u64,
    pub log_max_files: u32,
    /// The CRIU shims use for checkpoints (`--criu`): a path or a name on PATH.
    pub criu: PathBuf,
}

pub struct ShimConn {
    pub task: TaskCaller,
    pub pid: u32,
    pub command: ShimCommand,
}

/// One container the daemon knows.
pub struct Container {
    pub key: Key,
    pub dir: PathBuf,
    record: Mutex<ContainerRecord>,
    /// Notified whenever the record records an exit.
    exited: Condvar,
    shim: Mutex<Option<Arc<ShimConn>>>,
    /// The write end of a `-i` container's stdin FIFO, held so the shim never sees its end
    /// while nobody is attached (see `hold_stdin`).
    stdin: Mutex<Option<std::fs::File>>,
    /// The pid of the logger the daemon started for a `-i` container (`fifo_logger`), killed
    /// if the creation fails.
    logger: Mutex<Option<u32>>,
    /// Set while a dead shim's clean-up runs in the background after a restart (see
    /// `recovery`): a delete waits for it, rather than remove the bundle under its `delete`
    /// action.
    cleaning: Mutex<bool>,
    cleaned: Condvar,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Container {
    fn record_path(&self) -> PathBuf {
        self.dir.join("record.json")
    }

    pub(crate) fn shim(&self) -> Result<Arc<ShimConn>> {
        lock(&self.shim).clone().ok_or_else(|| {
            Error::FailedPrecondition(format!(
                "container {}: its shim is not running (the task has ended)",
                self.key.1
            ))
        })
    }

    /// Applies `f` to the record and writes it if `f` changed it.
    fn update(
        &self,
        f: impl FnOnce(&mut ContainerRecord) -> Result<()>,
    ) -> Result<ContainerRecord> {
        let mut rec = lock(&self.record);
        let before = rec.clone();
        f(&mut rec)?;
        if *rec != before {
            store::write(&self.record_path(), &*rec)?;
            if rec.finished_at != 0 && before.finished_at == 0 {
                self.exited.notify_all();
            }
        }
        Ok(rec.clone())
    }

    /// Records, in memory, the init's exit unless one is recorded already; true if it was new
    /// (then the caller has the file written, see [`writer`]).
    fn note_exit(&self, status: u32, at: i64) -> bool {
        let mut rec = lock(&self.record);
        if rec.finished_at != 0 || rec.deleted_at != 0 {
            return false;
        }
        if let Err(e) = rec.exit(status, at, "") {
            log::warn!("container {}/{}: record exit: {e}", self.key.0, self.key.1);
            return false;
        }
        self.exited.notify_all();
        true
    }

    /// Records the init's exit unless one is recorded already.
    pub fn record_exit(&self, status: u32, at: i64, reason: &str) {
        let r = self.update(|rec| {
            if rec.finished_at == 0 && rec.deleted_at == 0 {
                rec.exit(status, at, reason)?;
            }
            Ok(())
        });
        if let Err(e) = r {
            log::warn!("container {}/{}: record exit: {e}", self.key.0, self.key.1);
        }
    }

    /// Records a start the daemon did not see (it was down): the shim says the init runs.
    pub fn record_started(&self, pid: u32) {
        let r = self.update(|rec| {
            if rec.started_at == 0 && rec.finished_at == 0 {
                rec.start(pid, now_nanos())?;
            }
            Ok(())
        });
        if let Err(e) = r {
            log::warn!("container {}/{}: record start: {e}", self.key.0, self.key.1);
        }
    }

    /// Marks the container's dead shim as being cleaned up (see [`Container::cleaning`]).
    pub fn begin_cleanup(&self) {
        *lock(&self.cleaning) = true;
    }

    pub fn end_cleanup(&self) {
        *lock(&self.cleaning) = false;
        self.cleaned.notify_all();
    }

    /// Waits until no clean-up of the container's dead shim runs.
    fn await_cleanup(&self) {
        let mut busy = lock(&self.cleaning);
        while *busy {
            busy = self.cleaned.wait(busy).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn info(&self) -> api::Container {
        to_api(&lock(&self.record))
    }
}

fn to_api(r: &ContainerRecord) -> api::Container {
    api::Container {
        namespace: r.namespace.clone(),
        id: r.id.clone(),
        runtime: r.runtime.clone(),
        bundle: r.bundle.clone(),
        pid: r.pid,
        status: r.status().to_string(),
        exit_status: r.exit_status,
        created_at: r.created_at,
        started_at: r.started_at,
        finished_at: r.finished_at,
        reason: r.reason.clone(),
        ..Default::default()
    }
}

/// The daemon's state: every container, the event bus, the shim monitor.
pub struct Containers {
    cfg: Config,
    table: Mutex<HashMap<Key, Arc<Container>>>,
    /// Containers found on disk and not adopted yet, with the init exits their shims forwarded
    /// meanwhile (the events socket is served before recovery ends): adoption applies them, so
    /// an exit between a shim's probe and its adoption is not lost to the table. Locked after
    /// `table`.
    unadopted: Mutex<HashMap<Key, Vec<TaskExit>>>,
    bus: Arc<Bus>,
    monitor: Mutex<Option<Monitor>>,
    writer: writer::Writer,
}

fn check_key(namespace: &str, id: &str) -> Result<Key> {
    validate_namespace(namespace)?;
    validate_id(id)?;
    Ok((namespace.to_string(), id.to_string()))
}

impl Containers {
    pub fn new(cfg: Config, bus: Arc<Bus>) -> Result<Arc<Containers>> {
        Ok(Arc::new(Containers {
            cfg,
            table: Mutex::new(HashMap::new()),
            unadopted: Mutex::new(HashMap::new()),
            bus,
            monitor: Mutex::new(None),
            writer: writer::Writer::start().map_err(Error::io("spawn the record writer"))?,
        }))
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The shim invocation for a container (its `delete` action, after a crash).
    pub fn shim_command(&self, key: &Key, runtime: &str) -> Result<ShimCommand> {
        Ok(ShimCommand {
            binary: launcher::find_shim(runtime)?,
            namespace: key.0.clone(),
            id: key.1.clone(),
            bundle: self.cfg.state.join(&key.0).join(&key.1),
            address: self.cfg.socket.display().to_string(),
            ttrpc_address: self.events_socket().display().to_string(),
            debug: self.cfg.debug,
        })
    }

    /// Where shims publish events (their `TTRPC_ADDRESS`).
    pub fn events_socket(&self) -> PathBuf {
        self.cfg
            .state
            .join(crate::daemon::event_server::SOCKET_NAME)
    }

    /// For logs: whether a container is in the table, and its init's pid.
    pub fn describe_pid(&self, namespace: &str, id: &str) -> String {
        let key = (namespace.to_string(), id.to_string());
        match lock(&self.table).get(&key) {
            Some(c) => format!("known, init pid {}", lock(&c.record).pid),
            None => "unknown".to_string(),
        }
    }

    pub fn set_monitor(&self, m: Monitor) {
        *lock(&self.monitor) = Some(m);
    }

    fn monitor(&self) -> Option<Monitor> {
        lock(&self.monitor).clone()
    }

    pub(crate) fn get(&self, namespace: &str, id: &str) -> Result<Arc<Container>> {
        let key = check_key(namespace, id)?;
        lock(&self.table).get(&key).cloned().ok_or_else(|| {
            Error::NotFound(format!(
                "container {id:?} not found in namespace {namespace:?}"
            ))
        })
    }

    pub fn state(&self, req: api::ContainerRef) -> Result<api::Container> {
        Ok(self.get(&req.namespace, &req.id)?.info())
    }

    pub fn list(&self, req: api::ListRequest) -> Result<api::ListResponse> {
        if !req.namespace.is_empty() {
            validate_namespace(&req.namespace)?;
        }
        let all: Vec<Arc<Container>> = lock(&self.table).values().cloned().collect();
        let mut containers: Vec<api::Container> = all
            .iter()
            .filter(|c| req.namespace.is_empty() || c.key.0 == req.namespace)
            .map(|c| c.info())
            .filter(|i| i.created_at != 0)
            .collect();
        containers.sort_by(|a, b| (&a.namespace, &a.id).cmp(&(&b.namespace, &b.id)));
        Ok(api::ListResponse {
            containers,
            ..Default::default()
        })
    }
}

fn describe(id: &str, exec_id: &str) -> String {
    if exec_id.is_empty() {
        format!("container {id}")
    } else {
        format!("exec {exec_id} of container {id}")
    }
}

/// Removes a container directory, refusing if anything is still mounted below it (removing
/// would delete the mounted files).
pub fn remove_dir(dir: &Path) -> Result<()> {
    let mounted = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .any(|m| Path::new(&m).starts_with(dir));
    if mounted {
        return Err(Error::FailedPrecondition(format!(
            "{} still has mounts below it; not removing it",
            dir.display()
        )));
    }
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("remove {}", dir.display()))(e)),
    }
}
