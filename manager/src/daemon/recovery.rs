//! Rediscovery: on start the daemon rebuilds its table from the state root, from what the shims
//! and the disk say.
//!
//! Every `<state>/<namespace>/<id>` with a `record.json` is a container. Its shim is probed at
//! the address it left: a live one answers `Connect` and is watched again (and asked whether
//! the init exited while we were away); a dead one refuses the connection at once (a unix
//! socket with no listener answers `ECONNREFUSED`: no dial timeout). Interrupted creates and
//! deletes are finished. A corrupt record is reported (file and reason) and skipped.
//! Containers are probed by a few threads at once, which end when rediscovery does.
//!
//! A dead shim's container is in the table at once, UNKNOWN (never RUNNING), and its clean-up
//! runs in the background after rediscovery, so the daemon serves the live ones without waiting
//! for it: its `delete` action (which runs the OCI runtime's, ~40 ms a shim on this machine)
//! gives the exit, journaled once, marked as recovered. A `tether delete` of that container
//! waits for its clean-up.
//!
//! Records are read first ([`scan_state`]), before the events endpoint opens: a create that was
//! never acknowledged (`created_at` 0 on disk, so this holds across any number of crashes) has
//! its events muted before its shim can deliver any, and unmuted only once that shim is gone.

use crate::daemon::containers::{remove_dir, Container, Containers, ShimConn};
use crate::daemon::monitor::Key;
use crate::daemon::shim::launcher::ShimCommand;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tether_protocol::api::task::{self, Status};
use tether_protocol::api::ttrpc;
use tether_protocol::task_service::TaskCaller;
use tether_protocol::time::{from_timestamp, now_nanos};
use tether_protocol::{store, validate_id, validate_namespace, ContainerRecord};

/// How long a shim that accepts the connection may take to answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Threads probing at once, during rediscovery only. More than the cores: a dead shim's `delete`
/// action mostly waits (the runtime kills its orphaned container and waits for it), and 20 dead
/// shims resolve in ~200 ms with 32 workers against ~430 ms with 8 (`bench --restart-only`).
const WORKERS: usize = 32;

/// Why a container ended while the daemon could not see it.
pub const REASON_SHIM_GONE: &str = "shim died while the daemon was down";

#[derive(Debug, Default)]
pub struct Report {
    /// Containers whose shim answered.
    pub live: usize,
    /// Containers whose shim was gone: resolved through its `delete` action.
    pub dead: usize,
    /// Exits learned now that happened while the daemon was down.
    pub exits: usize,
    /// Interrupted creates and deletes finished.
    pub cleaned: usize,
    /// Entries that could not be read (each with its path and reason).
    pub skipped: Vec<String>,
}

enum Outcome {
    Live { exited: bool },
    Dead(Dead),
    Cleaned,
    Skipped(String),
}

/// A container whose shim was gone, to clean up after rediscovery.
struct Dead {
    key: Key,
    container: Arc<Container>,
    command: ShimCommand,
    /// Its pid and whether its exit was recorded, as the record said.
    pid: u32,
    known: bool,
}

/// What is on disk, read before any shim can reach the daemon.
pub struct Found {
    started: Instant,
    containers: Vec<(Key, Read)>,
    skipped: Vec<String>,
}

type Read = std::result::Result<ContainerRecord, String>;

/// Reads every record, and mutes the events of every create the daemon never acknowledged
/// (see [`Bus::mute`](crate::daemon::events::Bus::mute)): its shim may still report that init (its
/// exit when it is undone, or a retry of an event sent before the crash), and must be silenced
/// before the events endpoint opens. Call before the events endpoint is bound.
pub fn scan_state(containers: &Containers) -> Found {
    let started = Instant::now();
    let mut skipped = Vec::new();
    let keys = scan(&containers.config().state, &mut skipped);
    let mut found = Vec::with_capacity(keys.len());
    for key in keys {
        let read = read_record(containers, &key);
        if let Ok(r) = &read {
            if r.created_at == 0 {
                containers.mute_events(&key);
            }
            containers.expect_adoption(&key);
        }
        found.push((key, read));
    }
    log::info!(
        "rediscovery: {} records read in {} ms",
        found.len(),
        started.elapsed().as_millis()
    );
    Found {
        started,
        containers: found,
        skipped,
    }
}

fn read_record(containers: &Containers, key: &Key) -> Read {
    let dir = containers.config().state.join(&key.0).join(&key.1);
    let record: ContainerRecord = match store::read(&dir.join("record.json")) {
        Ok(r) => r,
        Err(e) if e.is_not_found() => {
            return Err(format!("{}: no record.json: not ours", dir.display()))
        }
        Err(e) => return Err(e.to_string()),
    };
    if record.namespace != key.0 || record.id != key.1 {
        return Err(format!(
            "{}: record.json names {}/{}",
            dir.join("record.json").display(),
            record.namespace,
            record.id
        ));
    }
    Ok(record)
}

/// Rebuilds the table from what [`scan_state`] found.
pub fn recover(containers: &Arc<Containers>, found: Found) -> Report {
    let started = found.started;
    let mut report = Report {
        skipped: found.skipped,
        ..Default::default()
    };
    let queue = Mutex::new(found.containers);
    let outcomes = Mutex::new(Vec::new());
    let mut dead = Vec::new();
    let workers = WORKERS.min(queue.lock().map(|q| q.len()).unwrap_or(0));
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let next = queue.lock().ok().and_then(|mut q| q.pop());
                let Some((key, read)) = next else { break };
                let o = match read {
                    Ok(record) => recover_one(containers, key, record),
                    Err(why) => Outcome::Skipped(why),
                };
                if let Ok(mut out) = outcomes.lock() {
                    out.push(o);
                }
            });
        }
    });
    for o in outcomes.into_inner().unwrap_or_default() {
        match o {
            Outcome::Live { exited } => {
                report.live += 1;
                report.exits += usize::from(exited);
            }
            Outcome::Dead(d) => {
                report.dead += 1;
                dead.push(d);
            }
            Outcome::Cleaned => report.cleaned += 1,
            Outcome::Skipped(why) => report.skipped.push(why),
        }
    }
    for why in &report.skipped {
        log::warn!("rediscovery: skipped {why}");
    }
    log::info!(
        "rediscovery: {} live shims, {} dead (cleaned up in the background), {} exits while \
         down, {} interrupted operations finished, {} skipped, in {} ms",
        report.live,
        report.dead,
        report.exits,
        report.cleaned,
        report.skipped.len(),
        started.elapsed().as_millis()
    );
    containers.end_adoptions();
    clean_up_in_background(containers, dead);
    report
}

/// Runs the dead shims' clean-ups on a few threads of their own, which end with the last.
fn clean_up_in_background(containers: &Arc<Containers>, dead: Vec<Dead>) {
    if dead.is_empty() {
        return;
    }
    let containers = containers.clone();
    let spawned = std::thread::Builder::new()
        .name("cleanup".into())
        .spawn(move || {
            let started = Instant::now();
            let n = dead.len();
            let queue = Mutex::new(dead);
            std::thread::scope(|s| {
                for _ in 0..WORKERS.min(n) {
                    s.spawn(|| loop {
                        let next = queue.lock().ok().and_then(|mut q| q.pop());
                        let Some(d) = next else { break };
                        clean_up(&containers, d);
                    });
                }
            });
            log::info!(
                "rediscovery: {n} dead shims cleaned up in {} ms",
                started.elapsed().as_millis()
            );
        });
    if let Err(e) = spawned {
        log::error!("rediscovery: cannot spawn the clean-up thread: {e}");
    }
}

/// Every `(namespace, id)` directory under the state root.
fn scan(state: &Path, skipped: &mut Vec<String>) -> Vec<Key> {
    let mut keys = Vec::new();
    let Ok(namespaces) = std::fs::read_dir(state) else {
        return keys;
    };
    for ns in namespaces.flatten() {
        if !ns.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let ns_name = ns.file_name().to_string_lossy().into_owned();
        if let Err(e) = validate_namespace(&ns_name) {
            skipped.push(format!("{}: {e}", ns.path().display()));
            continue;
        }
        let Ok(ids) = std::fs::read_dir(ns.path()) else {
            continue;
        };
        for c in ids.flatten() {
            if !c.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let id = c.file_name().to_string_lossy().into_owned();
            match validate_id(&id) {
                Ok(()) => keys.push((ns_name.clone(), id)),
                Err(e) => skipped.push(format!("{}: {e}", c.path().display())),
            }
        }
    }
    keys
}

/// The shim's address: ours (`shim-address`), else the one the shim wrote (`address`).
fn shim_address(dir: &Path) -> Option<String> {
    ["shim-address", "address"].iter().find_map(|f| {
        let text = std::fs::read_to_string(dir.join(f)).ok()?;
        let t = text.trim();
        (!t.is_empty())
            .then(|| crate::daemon::shim::launcher::normalize_address(t).ok())
            .flatten()
    })
}

/// What a live shim answered: its caller, `Connect`, and the container's `State`.
type Probed = (
    TaskCaller,
    task::ConnectResponse,
    ttrpc::Result<task::StateResponse>,
);

/// Connects to the shim if it is alive, and asks the container's state on the same connection;
/// `None` at once if its socket refuses.
fn probe(dir: &Path, key: &Key) -> Option<Probed> {
    let address = shim_address(dir)?;
    match TaskCaller::connect_and_state(&address, &key.1, PROBE_TIMEOUT) {
        Ok(c) => Some(c),
        Err(e) => {
            log::debug!(
                "container {}/{}: shim at {address} is gone: {}",
                key.0,
                key.1,
                crate::error::ttrpc_message(&e)
            );
            None
        }
    }
}

fn recover_one(containers: &Arc<Containers>, key: Key, record: ContainerRecord) -> Outcome {
    let dir = containers.config().state.join(&key.0).join(&key.1);
    let shim = probe(&dir, &key);
    if record.created_at == 0 || record.deleted_at != 0 {
        finish_interrupted(containers, &key, &dir, &record, shim);
        return Outcome::Cleaned;
    }
    let command = match containers.shim_command(&key, &record.runtime) {
        Ok(c) => c,
        Err(e) => return Outcome::Skipped(format!("container {}/{}: {e}", key.0, key.1)),
    };
    let known = record.finished_at != 0;
    match shim {
        Some((client, connected, state)) => {
            test_pause_adopt(&key);
            let conn = ShimConn {
                task: client.clone(),
                pid: connected.shim_pid,
                command,
            };
            let c = containers.adopt(key.clone(), record, Some(conn));
            if known {
                return Outcome::Live { exited: false };
            }
            match state {
                Ok(st) if st.status.enum_value() == Ok(Status::STOPPED) => {
                    let at = st
                        .exited_at
                        .as_ref()
                        .map(from_timestamp)
                        .unwrap_or_else(now_nanos);
                    c.record_exit(st.exit_status, at, "");
                    containers.publish_exit(&key, st.pid, st.exit_status, at, true);
                    Outcome::Live { exited: true }
                }
                Ok(st) => {
                    let running = matches!(
                        st.status.enum_value(),
                        Ok(Status::RUNNING | Status::PAUSED | Status::PAUSING)
                    );
                    if running {
                        c.record_started(st.pid);
                    }
                    Outcome::Live { exited: false }
                }
                Err(e) => {
                    log::warn!(
                        "container {}/{}: state after the restart: {}",
                        key.0,
                        key.1,
                        crate::error::ttrpc_message(&e)
                    );
                    Outcome::Live { exited: false }
                }
            }
        }
        None => {
            let pid = record.pid;
            let mut record = record;
            if !known {
                // Not RUNNING meanwhile: nothing answers for it until its clean-up says how it
                // ended.
                let _ = record.mark_unknown(REASON_SHIM_GONE);
            }
            let container = containers.adopt(key.clone(), record, None);
            container.begin_cleanup();
            Outcome::Dead(Dead {
                key,
                container,
                command,
                pid,
                known,
            })
        }
    }
}

/// Set to a directory in the daemon's environment, recovery stops before adopting each live
/// shim it probed (making `DIR/adopt-paused-ID`) until `DIR/adopt-go` exists, 30 s at most:
/// the tests' way to make a container exit between the probe and the adoption.
const PAUSE_ADOPT_ENV: &str = "TETHER_TEST_PAUSE_ADOPT";

fn test_pause_adopt(key: &Key) {
    let Some(dir) = std::env::var_os(PAUSE_ADOPT_ENV).map(PathBuf::from) else {
        return;
    };
    if let Err(e) = std::fs::write(dir.join(format!("adopt-paused-{}", key.1)), b"") {
        log::warn!("{PAUSE_ADOPT_ENV}: {e}");
        return;
    }
    let until = Instant::now() + Duration::from_secs(30);
    while !dir.join("adopt-go").exists() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A dead shim's clean-up: its `delete` action (which knows the exit it persisted), then the
/// exit recorded and journaled (once) unless the record knew it.
fn clean_up(containers: &Containers, d: Dead) {
    let Dead {
        key,
        container: c,
        command,
        pid,
        known,
    } = d;
    let dir = containers.config().state.join(&key.0).join(&key.1);
    let socket = shim_address(&dir)
        .as_deref()
        .and_then(tether_protocol::socket::from_address);
    // A shim that is there but did not answer (its socket still accepts) is not left to wake
    // up later. A refused socket means it is gone: no /proc scan for it, which would cost every
    // dead shim a walk of every process.
    if socket
        .as_deref()
        .is_some_and(|s| std::os::unix::net::UnixStream::connect(s).is_ok())
    {
        command.kill_lingering();
    }
    // Its leftovers (mounts, runtime state) go with the delete action in any case.
    let deleted = command.delete();
    if let Some(socket) = socket {
        crate::daemon::shim::handle::remove_dead_socket(&socket);
    }
    if known {
        if let Err(e) = deleted {
            log::warn!("container {}/{}: {e}", key.0, key.1);
        }
        c.end_cleanup();
        return;
    }
    let (status, at, pid, reason) = match deleted {
        Ok(d) => (
            d.exit_status,
            d.exited_at
                .as_ref()
                .map(from_timestamp)
                .unwrap_or_else(now_nanos),
            if d.pid != 0 { d.pid } else { pid },
            REASON_SHIM_GONE.to_string(),
        ),
        Err(e) => (
            128 + libc::SIGKILL as u32,
            now_nanos(),
            pid,
            format!("{REASON_SHIM_GONE}; its cleanup failed: {e}"),
        ),
    };
    // Journaled first, as a shim's own exit is: whoever sees the record's exit finds the event.
    containers.publish_exit(&key, pid, status, at, true);
    c.record_exit(status, at, &reason);
    c.end_cleanup();
}

/// A create or delete the daemon did not finish: stop the shim, clean up, forget it.
///
/// An aborted create's events were muted by [`scan_state`]; its shim is gone (it exited, or was
/// killed) before they are unmuted, so nothing of that init can be reported later, nor can a
/// new create of the same id be grouped into that shim.
fn finish_interrupted(
    containers: &Containers,
    key: &Key,
    dir: &Path,
    record: &ContainerRecord,
    shim: Option<Probed>,
) {
    let create = record.created_at == 0;
    log::info!(
        "container {}/{}: finishing an interrupted {}",
        key.0,
        key.1,
        if create { "create" } else { "delete" }
    );
    if let Some((client, connected, _)) = shim {
        if create {
            containers.stop_aborted_shim(key, &client, connected.shim_pid, PROBE_TIMEOUT);
        } else {
            let _ = client.call::<_, task::DeleteResponse>(
                "Delete",
                &task::DeleteRequest {
                    id: key.1.clone(),
                    ..Default::default()
                },
                PROBE_TIMEOUT,
            );
            let _ = client.call::<_, tether_protocol::api::Empty>(
                "Shutdown",
                &task::ShutdownRequest {
                    id: key.1.clone(),
                    ..Default::default()
                },
                PROBE_TIMEOUT,
            );
        }
    }
    if !record.runtime.is_empty() {
        match containers
            .shim_command(key, &record.runtime)
            .and_then(|c| c.delete())
        {
            Ok(_) => {}
            Err(e) => log::warn!("container {}/{}: {e}", key.0, key.1),
        }
    }
    if let Err(e) = store::remove(&dir.join("record.json")) {
        log::warn!("{e}");
    }
    if let Err(e) = remove_dir(dir) {
        log::warn!("{e}");
    }
    if create {
        containers.unmute_events(key);
    }
}
