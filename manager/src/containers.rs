//! The daemon's table of containers and every operation on them.
//!
//! Each container has a directory `<state>/<ns>/<id>` that is also its bundle: `config.json`,
//! the `log` FIFO its shim writes to, the shim's `address`, and our `record.json` (written on
//! every transition). Calls to a shim are made without holding the table lock, so a blocked
//! `Wait` stalls nobody else.

use crate::error::{is_disconnected, Error, Result};
use crate::events::{Bus, NewEvent};
use crate::launcher::{self, ShimCommand};
use crate::monitor::{Key, Monitor};
use protobuf::MessageFull;
use protobuf::{Message, MessageField};
use std::collections::HashMap;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;
use tether_protocol::api::events::{TaskDelete, TaskExit, TaskStart};
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
    bus: Arc<Bus>,
    monitor: Mutex<Option<Monitor>>,
}

fn check_key(namespace: &str, id: &str) -> Result<Key> {
    validate_namespace(namespace)?;
    validate_id(id)?;
    Ok((namespace.to_string(), id.to_string()))
}

impl Containers {
    pub fn new(cfg: Config, bus: Arc<Bus>) -> Arc<Containers> {
        Arc::new(Containers {
            cfg,
            table: Mutex::new(HashMap::new()),
            bus,
            monitor: Mutex::new(None),
        })
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
        self.cfg.state.join(crate::event_server::SOCKET_NAME)
    }

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
            shim: Mutex::new(shim.map(Arc::new)),
        });
        if lock(&c.shim).is_some() && c.dir.join(STDIN_FIFO).exists() {
            // Rediscovered after a restart: hold its stdin again (the logger held it meanwhile).
            match hold_stdin(&c.dir) {
                Ok(f) => *lock(&c.stdin) = Some(f),
                Err(e) => log::warn!("container {}/{}: {e}", key.0, key.1),
            }
        }
        lock(&self.table).insert(key.clone(), c.clone());
        if let (Some(pid), Some(m)) = (pid, self.monitor()) {
            m.watch_shim(key, pid);
        }
        c
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
        if let Ok(value) = ev.write_to_bytes() {
            self.bus.publish(NewEvent {
                timestamp: now_nanos(),
                namespace: key.0.clone(),
                topic: topics::TASK_EXIT.into(),
                type_url: TaskExit::descriptor().full_name().into(),
                value,
                recovered,
            });
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
        let process = match crate::shim_client::ShimProcess::open(shim_pid) {
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

    /// Creates a container: bundle, shim start, shim `Create`.
    pub fn create(&self, req: api::CreateRequest) -> Result<api::Container> {
        let key = check_key(&req.namespace, &req.id)?;
        let runtime = if req.runtime.is_empty() {
            launcher::DEFAULT_RUNTIME.to_string()
        } else {
            req.runtime.clone()
        };
        let binary = launcher::find_shim(&runtime)?;
        let spec: oci_spec::runtime::Spec = serde_json::from_slice(&req.spec)
            .map_err(|e| Error::InvalidArgument(format!("the OCI spec is not valid: {e}")))?;
        crate::bundle::check_root(&spec)?;

        let dir = self.cfg.state.join(&key.0).join(&key.1);
        let events = self.events_socket();
        let c = Arc::new(Container {
            key: key.clone(),
            dir: dir.clone(),
            record: Mutex::new(ContainerRecord::new(
                &key.0,
                &key.1,
                &runtime,
                &dir.display().to_string(),
                0,
            )),
            exited: Condvar::new(),
            shim: Mutex::new(None),
            stdin: Mutex::new(None),
            logger: Mutex::new(None),
        });
        {
            let mut table = lock(&self.table);
            if table.contains_key(&key) {
                return Err(Error::AlreadyExists(format!(
                    "container {:?} already exists in namespace {:?}",
                    key.1, key.0
                )));
            }
            table.insert(key.clone(), c.clone());
        }
        let cmd = ShimCommand {
            binary,
            namespace: key.0.clone(),
            id: key.1.clone(),
            bundle: dir.clone(),
            address: self.cfg.socket.display().to_string(),
            ttrpc_address: events.display().to_string(),
            debug: self.cfg.debug,
        };
        match self.create_task(&c, &cmd, &spec, &req) {
            Ok(info) => Ok(info),
            Err(e) => {
                self.discard(&c);
                Err(e)
            }
        }
    }

    fn create_task(
        &self,
        c: &Arc<Container>,
        cmd: &ShimCommand,
        spec: &oci_spec::runtime::Spec,
        req: &api::CreateRequest,
    ) -> Result<api::Container> {
        let dir = &c.dir;
        if dir.exists() {
            // Leftovers of a container of the same name this daemon no longer knows.
            remove_dir(dir)?;
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(dir)
            .map_err(Error::io(format!("create bundle {}", dir.display())))?;
        let spec_json = serde_json::to_vec_pretty(spec)
            .map_err(|e| Error::InvalidArgument(format!("cannot encode the spec: {e}")))?;
        std::fs::write(dir.join("config.json"), spec_json)
            .map_err(Error::io(format!("write {}/config.json", dir.display())))?;
        // Not created yet (created_at 0): a restart that finds this cleans the attempt up.
        store::write(&c.record_path(), &*lock(&c.record))?;
        self.open_log(c)?;

        // The runtime root under the daemon's root (and our CRIU), as containerd passes
        // options: on `start`'s stdin and in `Create`.
        let options = crate::checkpoint::runtime_options(&self.cfg)?;
        let options_bytes = options
            .write_to_bytes()
            .map_err(|e| Error::Shim(format!("encode the runtime options: {e}")))?;
        let address = cmd.start(&options_bytes)?;
        store::write_bytes(
            &dir.join("shim-address"),
            address.as_bytes(),
            store::Durability::Durable,
        )?;
        let (task, connected) = TaskCaller::connect_per_call(&address, CALL_TIMEOUT)
            .map_err(|e| Error::shim(&format!("connect to the shim at {address}"), e))?;
        let shim = Arc::new(ShimConn {
            task,
            pid: connected.shim_pid,
            command: cmd.clone(),
        });
        *lock(&c.shim) = Some(shim.clone());
        if let Some(m) = self.monitor() {
            m.watch_shim(c.key.clone(), shim.pid);
        }
        let stdio = match req.stdio.clone().into_option() {
            Some(s) => s,
            None if req.open_stdin => self.interactive_stdio(c, spec)?,
            None => self.log_stdio(dir, spec),
        };
        let creq = task::CreateTaskRequest {
            id: c.key.1.clone(),
            bundle: dir.display().to_string(),
            terminal: stdio.terminal,
            stdin: stdio.stdin,
            stdout: stdio.stdout,
            stderr: stdio.stderr,
            options: MessageField::some(options),
            checkpoint: req.checkpoint.clone(),
            ..Default::default()
        };
        let resp: task::CreateTaskResponse = shim
            .task
            .call("Create", &creq, CREATE_TIMEOUT)
            .map_err(|e| Error::shim(&format!("create container {}", c.key.1), e))?;
        let rec = c.update(|r| {
            r.created_at = now_nanos();
            r.pid = resp.pid;
            Ok(())
        })?;
        Ok(to_api(&rec))
    }

    /// A `-i` container's stdio: FIFOs, its stdin FIFO held open by us (so the shim never sees
    /// its end while nobody is attached) and by the logger we start (which lives on while we
    /// restart); see `fifo_logger`.
    fn interactive_stdio(
        &self,
        c: &Container,
        spec: &oci_spec::runtime::Spec,
    ) -> Result<api::Stdio> {
        let dir = &c.dir;
        let fifo = dir.join(STDIN_FIFO);
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .map_err(|e| Error::io(format!("mkfifo {}", fifo.display()))(e.into()))?;
        *lock(&c.stdin) = Some(hold_stdin(dir)?);
        let exe = std::env::current_exe()
            .map_err(Error::io("find our own binary (the logger)".to_string()))?;
        let (stdio, pid) = crate::fifo_logger::start(
            &exe,
            dir,
            spec_terminal(spec),
            self.cfg.log_max_size,
            self.cfg.log_max_files,
        )?;
        *lock(&c.logger) = Some(pid);
        Ok(stdio)
    }

    /// A detached container's stdio: no stdin, and stdout and stderr (or its terminal, as
    /// containerd's Go shim does with binary://) to our logger, which writes the container's
    /// log file in its directory.
    fn log_stdio(&self, dir: &Path, spec: &oci_spec::runtime::Spec) -> api::Stdio {
        let terminal = spec_terminal(spec);
        let exe = std::env::current_exe();
        let uri = match exe {
            Ok(exe) if crate::log_driver::uri_safe(&exe) && crate::log_driver::uri_safe(dir) => {
                let extras = crate::log_driver::Extras {
                    stdin: None,
                    flush: terminal,
                };
                crate::log_driver::uri(
                    &exe,
                    dir,
                    self.cfg.log_max_size,
                    self.cfg.log_max_files,
                    extras,
                )
            }
            other => {
                log::warn!(
                    "no log file for {}: the paths of {other:?} and {} cannot go into a binary:// URI",
                    dir.display(),
                    dir.display()
                );
                String::new()
            }
        };
        api::Stdio {
            stdout: uri.clone(),
            // A terminal has one output (the Go shim ignores stderr then; ours wants none).
            stderr: if terminal { String::new() } else { uri },
            terminal,
            ..Default::default()
        }
    }

    /// Creates the bundle's `log` FIFO and hands its read end to the monitor.
    fn open_log(&self, c: &Container) -> Result<()> {
        let fifo = c.dir.join("log");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o700))
            .map_err(|e| Error::io(format!("mkfifo {}", fifo.display()))(e.into()))?;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .map_err(Error::io(format!("open {}", fifo.display())))?;
        if let Some(m) = self.monitor() {
            m.drain_log(c.key.clone(), file, c.dir.join("shim.log"));
        }
        Ok(())
    }

    /// Undoes a failed create: stops the shim, cleans up, forgets the container.
    fn discard(&self, c: &Arc<Container>) {
        if let Some(pid) = lock(&c.logger).take() {
            // Its FIFOs never got a writer: it would wait forever. Reaped as an orphan.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        lock(&c.stdin).take();
        if let Some(m) = self.monitor() {
            m.forget_shim(c.key.clone());
        }
        let shim = lock(&c.shim).take();
        if let Some(shim) = shim {
            // Never acknowledged: nothing its shim says of it is reported.
            self.mute_events(&c.key);
            self.stop_aborted_shim(&c.key, &shim.task, shim.pid, CALL_TIMEOUT);
            if let Err(e) = shim.command.delete() {
                log::warn!("container {}/{}: shim delete: {e}", c.key.0, c.key.1);
            }
        }
        if let Some(m) = self.monitor() {
            m.stop_log(c.key.clone());
        }
        if let Err(e) = remove_dir(&c.dir) {
            log::warn!("{e}");
        }
        self.unmute_events(&c.key);
        lock(&self.table).remove(&c.key);
    }

    pub fn start(&self, req: api::StartRequest) -> Result<api::StartResponse> {
        let c = self.get(&req.namespace, &req.id)?;
        if req.exec_id.is_empty() {
            let status = lock(&c.record).status();
            if status != ContainerStatus::Created {
                return Err(Error::FailedPrecondition(format!(
                    "container {}: cannot start a container that is {status}",
                    req.id
                )));
            }
        }
        let shim = c.shim()?;
        let resp: task::StartResponse = shim
            .task
            .call(
                "Start",
                &task::StartRequest {
                    id: req.id.clone(),
                    exec_id: req.exec_id.clone(),
                    ..Default::default()
                },
                RUNTIME_TIMEOUT,
            )
            .map_err(|e| Error::shim(&format!("start {}", describe(&req.id, &req.exec_id)), e))?;
        if req.exec_id.is_empty() {
            c.update(|r| {
                if r.started_at == 0 {
                    r.pid = resp.pid;
                    r.started_at = now_nanos();
                }
                Ok(())
            })?;
        }
        Ok(api::StartResponse {
            pid: resp.pid,
            ..Default::default()
        })
    }

    pub fn exec(&self, req: api::ExecRequest) -> Result<api::StartResponse> {
        let c = self.get(&req.namespace, &req.id)?;
        tether_protocol::id::validate("exec id", &req.exec_id)?;
        serde_json::from_slice::<oci_spec::runtime::Process>(&req.process)
            .map_err(|e| Error::InvalidArgument(format!("the process spec is not valid: {e}")))?;
        let shim = c.shim()?;
        let stdio = req.stdio.clone().unwrap_or_default();
        let ereq = task::ExecProcessRequest {
            id: req.id.clone(),
            exec_id: req.exec_id.clone(),
            terminal: stdio.terminal,
            stdin: stdio.stdin,
            stdout: stdio.stdout,
            stderr: stdio.stderr,
            spec: MessageField::some(Any {
                type_url: PROCESS_TYPE_URL.into(),
                value: req.process.clone(),
                ..Default::default()
            }),
            ..Default::default()
        };
        shim.task
            .call::<_, tether_protocol::api::Empty>("Exec", &ereq, CALL_TIMEOUT)
            .map_err(|e| Error::shim(&format!("exec {}", describe(&req.id, &req.exec_id)), e))?;
        self.start(api::StartRequest {
            namespace: req.namespace,
            id: req.id,
            exec_id: req.exec_id,
            ..Default::default()
        })
    }

    pub fn kill(&self, req: api::KillRequest) -> Result<()> {
        let c = self.get(&req.namespace, &req.id)?;
        let shim = c.shim()?;
        let kreq = task::KillRequest {
            id: req.id.clone(),
            exec_id: req.exec_id.clone(),
            signal: req.signal,
            all: req.all,
            ..Default::default()
        };
        shim.task
            .call::<_, tether_protocol::api::Empty>("Kill", &kreq, RUNTIME_TIMEOUT)
            .map_err(|e| Error::shim(&format!("kill {}", describe(&req.id, &req.exec_id)), e))?;
        Ok(())
    }

    /// Waits for a process's exit. The init's exit is answered from the record once known; the
    /// shim's `Wait` is the fast path, the record (set by events or a dead shim's cleanup) the
    /// fallback.
    pub fn wait(&self, req: api::WaitRequest) -> Result<api::ExitStatus> {
        let c = self.get(&req.namespace, &req.id)?;
        let from_record = |r: &ContainerRecord| api::ExitStatus {
            exit_status: r.exit_status,
            exited_at: r.finished_at,
            pid: r.pid,
            ..Default::default()
        };
        if req.exec_id.is_empty() {
            let r = lock(&c.record);
            if r.finished_at != 0 {
                return Ok(from_record(&r));
            }
        }
        let shim = c.shim();
        if let Ok(shim) = shim {
            let wreq = task::WaitRequest {
                id: req.id.clone(),
                exec_id: req.exec_id.clone(),
                ..Default::default()
            };
            match shim
                .task
                .call::<_, task::WaitResponse>("Wait", &wreq, Duration::ZERO)
            {
                Ok(w) => {
                    let at = w
                        .exited_at
                        .as_ref()
                        .map(tether_protocol::time::from_timestamp)
                        .unwrap_or_else(now_nanos);
                    if req.exec_id.is_empty() {
                        c.record_exit(w.exit_status, at, "");
                    }
                    return Ok(api::ExitStatus {
                        exit_status: w.exit_status,
                        exited_at: at,
                        ..Default::default()
                    });
                }
                Err(e) if !is_disconnected(&e) || !req.exec_id.is_empty() => {
                    return Err(Error::shim(
                        &format!("wait for {}", describe(&req.id, &req.exec_id)),
                        e,
                    ))
                }
                Err(_) => {}
            }
        } else if !req.exec_id.is_empty() {
            return Err(shim
                .err()
                .unwrap_or_else(|| Error::NotFound("no shim".into())));
        }
        // The shim went away: its cleanup records the exit.
        let mut r = lock(&c.record);
        while r.finished_at == 0 && r.deleted_at == 0 {
            r = c.exited.wait(r).unwrap_or_else(|p| p.into_inner());
        }
        Ok(from_record(&r))
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

    pub fn pause(&self, req: api::ContainerRef, pause: bool) -> Result<()> {
        let c = self.get(&req.namespace, &req.id)?;
        let shim = c.shim()?;
        let (method, verb) = if pause {
            ("Pause", "pause")
        } else {
            ("Resume", "resume")
        };
        shim.task
            .call::<_, tether_protocol::api::Empty>(
                method,
                &task::PauseRequest {
                    id: req.id.clone(),
                    ..Default::default()
                },
                RUNTIME_TIMEOUT,
            )
            .map_err(|e| Error::shim(&format!("{verb} container {}", req.id), e))?;
        c.update(|r| {
            if pause {
                r.pause(now_nanos())?;
            } else {
                r.resume()?;
            }
            Ok(())
        })?;
        Ok(())
    }

    pub fn update(&self, req: api::UpdateRequest) -> Result<()> {
        let c = self.get(&req.namespace, &req.id)?;
        serde_json::from_slice::<oci_spec::runtime::LinuxResources>(&req.resources)
            .map_err(|e| Error::InvalidArgument(format!("the resources are not valid: {e}")))?;
        let shim = c.shim()?;
        let ureq = task::UpdateTaskRequest {
            id: req.id.clone(),
            resources: MessageField::some(Any {
                type_url: RESOURCES_TYPE_URL.into(),
                value: req.resources,
                ..Default::default()
            }),
            ..Default::default()
        };
        shim.task
            .call::<_, tether_protocol::api::Empty>("Update", &ureq, RUNTIME_TIMEOUT)
            .map_err(|e| Error::shim(&format!("update container {}", req.id), e))?;
        Ok(())
    }

    pub fn stats(&self, req: api::ContainerRef) -> Result<api::StatsResponse> {
        let c = self.get(&req.namespace, &req.id)?;
        let shim = c.shim()?;
        let resp: task::StatsResponse = shim
            .task
            .call(
                "Stats",
                &task::StatsRequest {
                    id: req.id.clone(),
                    ..Default::default()
                },
                CALL_TIMEOUT,
            )
            .map_err(|e| Error::shim(&format!("stats of container {}", req.id), e))?;
        Ok(crate::stats::decode(resp.stats.as_ref()))
    }

    pub fn close_io(&self, req: api::ProcessRef) -> Result<()> {
        let c = self.get(&req.namespace, &req.id)?;
        let shim = c.shim()?;
        let creq = task::CloseIORequest {
            id: req.id.clone(),
            exec_id: req.exec_id.clone(),
            stdin: true,
            ..Default::default()
        };
        shim.task
            .call::<_, tether_protocol::api::Empty>("CloseIO", &creq, CALL_TIMEOUT)
            .map_err(|e| {
                Error::shim(
                    &format!("close the stdin of {}", describe(&req.id, &req.exec_id)),
                    e,
                )
            })?;
        Ok(())
    }

    pub fn resize_pty(&self, req: api::ResizePtyRequest) -> Result<()> {
        let c = self.get(&req.namespace, &req.id)?;
        let shim = c.shim()?;
        let rreq = task::ResizePtyRequest {
            id: req.id.clone(),
            exec_id: req.exec_id.clone(),
            width: req.width,
            height: req.height,
            ..Default::default()
        };
        shim.task
            .call::<_, tether_protocol::api::Empty>("ResizePty", &rreq, CALL_TIMEOUT)
            .map_err(|e| {
                Error::shim(
                    &format!("resize the terminal of {}", describe(&req.id, &req.exec_id)),
                    e,
                )
            })?;
        Ok(())
    }

    /// Deletes the task (killing it first with `force`), stops its shim and removes the bundle.
    pub fn delete(&self, req: api::DeleteRequest) -> Result<api::ExitStatus> {
        let c = self.get(&req.namespace, &req.id)?;
        let status = lock(&c.record).status();
        if matches!(status, ContainerStatus::Running | ContainerStatus::Paused) && !req.force {
            return Err(Error::FailedPrecondition(format!(
                "container {} is {status}: stop it first (tether kill) or use delete -f",
                req.id
            )));
        }
        let shim = lock(&c.shim).clone();
        let mut exit = None;
        if let Some(shim) = shim {
            if status != ContainerStatus::Exited {
                if status == ContainerStatus::Paused {
                    let _ = shim.task.call::<_, tether_protocol::api::Empty>(
                        "Resume",
                        &task::ResumeRequest {
                            id: req.id.clone(),
                            ..Default::default()
                        },
                        RUNTIME_TIMEOUT,
                    );
                }
                let kreq = task::KillRequest {
                    id: req.id.clone(),
                    signal: libc::SIGKILL as u32,
                    all: true,
                    ..Default::default()
                };
                let _ = shim.task.call::<_, tether_protocol::api::Empty>(
                    "Kill",
                    &kreq,
                    RUNTIME_TIMEOUT,
                );
                let wreq = task::WaitRequest {
                    id: req.id.clone(),
                    ..Default::default()
                };
                if let Ok(w) = shim
                    .task
                    .call::<_, task::WaitResponse>("Wait", &wreq, CALL_TIMEOUT)
                {
                    let at = w
                        .exited_at
                        .as_ref()
                        .map(tether_protocol::time::from_timestamp)
                        .unwrap_or_else(now_nanos);
                    c.record_exit(w.exit_status, at, "");
                }
            }
            let dreq = task::DeleteRequest {
                id: req.id.clone(),
                ..Default::default()
            };
            match shim
                .task
                .call::<_, task::DeleteResponse>("Delete", &dreq, RUNTIME_TIMEOUT)
            {
                Ok(d) => exit = Some(d),
                Err(e) if is_disconnected(&e) => {}
                Err(e) => return Err(Error::shim(&format!("delete container {}", req.id), e)),
            }
            if let Some(m) = self.monitor() {
                m.forget_shim(c.key.clone());
            }
            *lock(&c.shim) = None;
            shutdown(&shim, &req.id);
            if exit.is_none() {
                // The shim died: its delete action cleans up and knows the exit.
                match shim.command.delete() {
                    Ok(d) => exit = Some(d),
                    Err(e) => log::warn!("container {}/{}: {e}", req.namespace, req.id),
                }
            }
        }
        if let Some(d) = &exit {
            let at = d
                .exited_at
                .as_ref()
                .map(tether_protocol::time::from_timestamp)
                .unwrap_or_else(now_nanos);
            c.record_exit(d.exit_status, at, "");
        }
        let rec = c.update(|r| {
            r.delete(now_nanos())?;
            Ok(())
        })?;
        c.exited.notify_all();
        if let Some(m) = self.monitor() {
            m.stop_log(c.key.clone());
        }
        lock(&self.table).remove(&c.key);
        store::remove(&c.record_path())?;
        remove_dir(&c.dir)?;
        let ns_dir = self.cfg.state.join(&c.key.0);
        let _ = std::fs::remove_dir(ns_dir);
        Ok(api::ExitStatus {
            exit_status: rec.exit_status,
            exited_at: rec.finished_at,
            pid: rec.pid,
            ..Default::default()
        })
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
            crate::shim_client::remove_dead_socket(socket);
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

    /// Whether an init's one-time event (start, exit, delete) names a pid other than that of
    /// the init the daemon knows for that container: another incarnation's (an aborted
    /// create's), which must not be reported as this container's.
    pub fn is_other_init(&self, namespace: &str, topic: &str, event: &Any) -> bool {
        let (container, id, pid) = match topic {
            topics::TASK_EXIT => match TaskExit::parse_from_bytes(&event.value) {
                Ok(e) => (e.container_id, e.id, e.pid),
                Err(_) => return false,
            },
            topics::TASK_DELETE => match TaskDelete::parse_from_bytes(&event.value) {
                Ok(e) => (e.container_id, e.id, e.pid),
                Err(_) => return false,
            },
            topics::TASK_START => match TaskStart::parse_from_bytes(&event.value) {
                Ok(e) => (e.container_id, String::new(), e.pid),
                Err(_) => return false,
            },
            _ => return false,
        };
        if pid == 0 || !(id.is_empty() || id == container) {
            return false;
        }
        let key = (namespace.to_string(), container);
        let Some(c) = lock(&self.table).get(&key).cloned() else {
            return false;
        };
        let known = lock(&c.record).pid;
        known != 0 && known != pid
    }

    /// Learns from an event a shim published (the init's exit).
    pub fn on_event(&self, namespace: &str, topic: &str, event: &Any) {
        if topic != topics::TASK_EXIT {
            return;
        }
        let Ok(exit) = TaskExit::parse_from_bytes(&event.value) else {
            return;
        };
        if exit.id != exit.container_id && !exit.id.is_empty() {
            return;
        }
        let key = (namespace.to_string(), exit.container_id.clone());
        let Some(c) = lock(&self.table).get(&key).cloned() else {
            return;
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
        c.record_exit(exit.exit_status, at, "");
    }
}

fn describe(id: &str, exec_id: &str) -> String {
    if exec_id.is_empty() {
        format!("container {id}")
    } else {
        format!("exec {exec_id} of container {id}")
    }
}

/// Asks a shim to exit; it answers, or closes the connection as it goes.
fn shutdown(shim: &ShimConn, id: &str) {
    let req = task::ShutdownRequest {
        id: id.to_string(),
        ..Default::default()
    };
    match shim
        .task
        .call::<_, tether_protocol::api::Empty>("Shutdown", &req, CALL_TIMEOUT)
    {
        Ok(_) => {}
        Err(e) if is_disconnected(&e) => {}
        Err(e) => log::warn!(
            "container {id}: shim shutdown: {}",
            crate::error::ttrpc_message(&e)
        ),
    }
}

/// Removes a container directory, refusing if anything is still mounted below it (removing
/// would delete the mounted files).
fn spec_terminal(spec: &oci_spec::runtime::Spec) -> bool {
    spec.process()
        .as_ref()
        .and_then(|p| p.terminal())
        .unwrap_or(false)
}

/// A `-i` container's stdin FIFO in its directory.
pub const STDIN_FIFO: &str = "stdin";

/// Opens a container's stdin FIFO for writing without waiting for a reader (O_RDWR).
fn hold_stdin(dir: &Path) -> Result<std::fs::File> {
    let fifo = dir.join(STDIN_FIFO);
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&fifo)
        .map_err(Error::io(format!("open {}", fifo.display())))
}

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
