//! `tether daemon`: state directories, the event journal, rediscovery, the sockets (the CLI's
//! ttrpc API; the shims' events endpoint on the monitor's loop), and waiting for
//! SIGTERM/SIGINT. Shims outlive the daemon, as they outlive containerd.
//!
//! Threads: this one (signals), the monitor's loop, a few janitors (clean up after dead shims,
//! which may take a while, in parallel), and the ttrpc server's for the CLI. None per container.

mod checkpoint;
mod containers;
mod event_server;
mod events;
mod monitor;
mod notify;
mod peer;
mod reaper;
mod recovery;
mod service;
mod shim;
mod upgrade;

pub(crate) use containers::Config;
pub(crate) use notify::Notifier;

use crate::daemon::containers::Containers;
use crate::daemon::events::journal::Journal;
use crate::daemon::events::Bus;
use crate::daemon::monitor::{Key, Monitor};
use crate::daemon::service::{forward_sink, ManagerService};
use crate::error::{Error, Result};
use nix::sys::signal::{SigSet, Signal};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use tether_protocol::api::ttrpc;
use tether_protocol::manager_api::manager_ttrpc::create_manager;

/// The event journal, in the state directory.
const JOURNAL_NAME: &str = "events.journal";
/// Events the journal keeps (and `--since` can replay).
const JOURNAL_KEEP: usize = crate::daemon::events::CAPACITY;

fn make_dir(dir: &Path, mode: u32) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
        .map_err(Error::io(format!("create {}", dir.display())))
}

/// Binds the socket: 0600, in a 0700 directory (created so, or tightened if it is ours).
fn prepare_socket(socket: &Path) -> Result<()> {
    let dir = socket
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let created = !dir.exists();
    make_dir(dir, 0o700)?;
    if created || dir == Path::new(crate::names::DEFAULT_STATE) {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(Error::io(format!("chmod 0700 {}", dir.display())))?;
    } else {
        // Not ours to tighten; but where others may write, they could put their own socket in
        // place of ours (a sticky directory, like /tmp, keeps ours ours).
        let mode = std::fs::metadata(dir)
            .map_err(Error::io(format!("stat {}", dir.display())))?
            .permissions()
            .mode();
        if mode & 0o022 != 0 && mode & 0o1000 == 0 {
            return Err(Error::InvalidArgument(format!(
                "the socket's directory {} is writable by others (mode {:o}): use a directory \
                 only root may write to",
                dir.display(),
                mode & 0o7777
            )));
        }
    }
    if socket.exists() {
        if std::os::unix::net::UnixStream::connect(socket).is_ok() {
            return Err(Error::AlreadyExists(format!(
                "a tether daemon already serves {}",
                socket.display()
            )));
        }
        std::fs::remove_file(socket).map_err(Error::io(format!(
            "remove stale socket {}",
            socket.display()
        )))?;
    }
    Ok(())
}

pub(crate) fn run(mut cfg: Config, notify: &Notifier) -> Result<()> {
    make_dir(&cfg.root, 0o700)?;
    // Shims get paths under it (their runtime root) and run in their bundle: make it absolute.
    cfg.root = std::fs::canonicalize(&cfg.root)
        .map_err(Error::io(format!("resolve {}", cfg.root.display())))?;
    make_dir(&cfg.state, 0o711)?;
    prepare_socket(&cfg.socket)?;

    // Block the stop signals and SIGCHLD before any thread starts, so every thread inherits the
    // mask: only `sigwait` below sees the former, the monitor's signalfd the latter.
    let mut stop = SigSet::empty();
    stop.add(Signal::SIGTERM);
    stop.add(Signal::SIGINT);
    stop.add(Signal::SIGHUP);
    let mut blocked = stop;
    blocked.add(Signal::SIGCHLD);
    blocked
        .thread_block()
        .map_err(|e| Error::io("block signals")(e.into()))?;
    // Shims may go away while we write to them.
    // SAFETY: setting a signal disposition to ignore.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    // Shims we start are reparented to us, and so are a killed shim's processes: we reap them.
    crate::daemon::reaper::become_subreaper().map_err(Error::io("become a child subreaper"))?;

    // The journal is read while the shims are probed and the table served: a restart's `ps`
    // does not wait for it. Publishing and polling do (`Bus::pending`).
    let journal_path = cfg.state.join(JOURNAL_NAME);
    let bus = Arc::new(Bus::pending());
    let loader = {
        let bus = bus.clone();
        std::thread::Builder::new()
            .name("journal".into())
            .spawn(move || -> Result<()> {
                match Journal::open(&journal_path, JOURNAL_KEEP) {
                    Ok(opened) => {
                        for w in &opened.warnings {
                            log::warn!("{w}");
                        }
                        bus.load(opened.journal, opened.entries);
                        Ok(())
                    }
                    Err(e) => {
                        // Whoever waits for the bus (rediscovery's recovered exits) goes on.
                        bus.fail(&e.to_string());
                        Err(e)
                    }
                }
            })
            .map_err(Error::io("spawn the journal reader"))?
    };
    let containers = Containers::new(cfg.clone(), bus.clone())?;

    // Before any shim can reach us: aborted creates are muted before their shims speak.
    let found = crate::daemon::recovery::scan_state(&containers);
    let janitor = start_janitor(&containers)?;
    let events_listener = crate::daemon::event_server::bind(&containers.events_socket())?;
    let monitor = Monitor::start(crate::daemon::monitor::Setup {
        events: events_listener,
        sink: forward_sink(containers.clone()),
        on_death: Box::new(move |key| {
            let _ = janitor.send(key);
        }),
    })?;
    containers.set_monitor(monitor);
    crate::daemon::recovery::recover(&containers, found);

    let address = format!("unix://{}", cfg.socket.display());
    let manager = Arc::new(ManagerService { containers, bus });
    // Bound under umask 077: never open to others, not even until the chmod below.
    let bound = crate::daemon::peer::with_private_umask(|| ttrpc::Server::new().bind(&address));
    let mut server = bound
        .map_err(|e| {
            Error::Unavailable(format!(
                "cannot listen on {}: {}",
                cfg.socket.display(),
                crate::error::ttrpc_message(&e)
            ))
        })?
        .register_service(create_manager(manager));
    std::fs::set_permissions(&cfg.socket, std::fs::Permissions::from_mode(0o600))
        .map_err(Error::io(format!("chmod 0600 {}", cfg.socket.display())))?;
    server.start().map_err(|e| {
        Error::Unavailable(format!(
            "cannot serve {}: {}",
            cfg.socket.display(),
            crate::error::ttrpc_message(&e)
        ))
    })?;
    notify.send("READY=1");
    log::info!(
        "tether daemon serving {} (state {}, root {})",
        cfg.socket.display(),
        cfg.state.display(),
        cfg.root.display()
    );
    // The table is served while the journal may still be read (events wait for it); a journal
    // that cannot be read stops the daemon.
    loader
        .join()
        .map_err(|_| Error::Unavailable("the journal reader panicked".into()))??;

    let sig = stop
        .wait()
        .map_err(|e| Error::io("wait for a signal")(e.into()))?;
    log::info!("{sig:?}: stopping; shims keep running");
    notify.send("STOPPING=1");
    let _ = std::fs::remove_file(&cfg.socket);
    Ok(())
}

/// Threads cleaning up after dead shims. A `delete` action mostly waits (for the runtime to
/// kill and remove the container) and may hang until its deadline: a few run at once, so one
/// slow clean-up does not hold up the others, and their number does not grow with the deaths.
const JANITORS: usize = 4;

/// The threads that handle shim deaths the monitor reports: each shim's `delete` action runs
/// there (bounded in time, see `ShimCommand::delete`), off the loop.
fn start_janitor(containers: &Arc<Containers>) -> Result<std::sync::mpsc::Sender<Key>> {
    let (tx, rx) = std::sync::mpsc::channel::<Key>();
    let rx = Arc::new(std::sync::Mutex::new(rx));
    for i in 0..JANITORS {
        let weak = Arc::downgrade(containers);
        let rx = rx.clone();
        std::thread::Builder::new()
            .name(format!("janitor-{i}"))
            .spawn(move || loop {
                // The lock is held only while taking the next death, not while handling it.
                let next = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                let Ok(key) = next else { return };
                match weak.upgrade() {
                    Some(c) => c.shim_died(key),
                    None => return,
                }
            })
            .map_err(Error::io("spawn a janitor thread"))?;
    }
    Ok(tx)
}
