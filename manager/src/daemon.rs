//! `tether daemon`: state directories, the socket, the ttrpc server, the shim monitor, and
//! waiting for SIGTERM/SIGINT. Shims outlive the daemon, as they outlive containerd.

use crate::containers::{Config, Containers};
use crate::error::{Error, Result};
use crate::events::Bus;
use crate::monitor::Monitor;
use crate::service::{EventsService, ManagerService};
use nix::sys::signal::{SigSet, Signal};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use tether_protocol::api::events_ttrpc::create_events;
use tether_protocol::api::ttrpc;
use tether_protocol::manager_api::manager_ttrpc::create_manager;

pub const DEFAULT_ROOT: &str = "/var/lib/tether";
pub const DEFAULT_STATE: &str = "/run/tether";
pub const DEFAULT_SOCKET: &str = "/run/tether/tether.sock";

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
    if created || dir == Path::new(DEFAULT_STATE) {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(Error::io(format!("chmod 0700 {}", dir.display())))?;
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

pub fn run(cfg: Config) -> Result<()> {
    make_dir(&cfg.root, 0o700)?;
    make_dir(&cfg.state, 0o711)?;
    prepare_socket(&cfg.socket)?;

    // Block the stop signals before any thread starts, so every thread inherits the mask and
    // only `sigwait` below sees them.
    let mut stop = SigSet::empty();
    stop.add(Signal::SIGTERM);
    stop.add(Signal::SIGINT);
    stop.add(Signal::SIGHUP);
    stop.thread_block()
        .map_err(|e| Error::io("block signals")(e.into()))?;
    // Shims may go away while we write to them.
    // SAFETY: setting a signal disposition to ignore.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };

    let bus = Arc::new(Bus::default());
    let containers = Containers::new(cfg.clone(), bus.clone());
    let weak = Arc::downgrade(&containers);
    let monitor = Monitor::start(Box::new(move |key| {
        if let Some(c) = weak.upgrade() {
            c.shim_died(key);
        }
    }))?;
    containers.set_monitor(monitor);

    let address = format!("unix://{}", cfg.socket.display());
    let manager = Arc::new(ManagerService {
        containers: containers.clone(),
        bus: bus.clone(),
    });
    let events = Arc::new(EventsService { containers, bus });
    let mut server = ttrpc::Server::new()
        .bind(&address)
        .map_err(|e| {
            Error::Unavailable(format!(
                "cannot listen on {}: {}",
                cfg.socket.display(),
                crate::error::ttrpc_message(&e)
            ))
        })?
        .register_service(create_manager(manager))
        .register_service(create_events(events));
    std::fs::set_permissions(&cfg.socket, std::fs::Permissions::from_mode(0o600))
        .map_err(Error::io(format!("chmod 0600 {}", cfg.socket.display())))?;
    server.start().map_err(|e| {
        Error::Unavailable(format!(
            "cannot serve {}: {}",
            cfg.socket.display(),
            crate::error::ttrpc_message(&e)
        ))
    })?;
    log::info!(
        "tether daemon serving {} (state {}, root {})",
        cfg.socket.display(),
        cfg.state.display(),
        cfg.root.display()
    );

    let sig = stop
        .wait()
        .map_err(|e| Error::io("wait for a signal")(e.into()))?;
    log::info!("{sig:?}: stopping; shims keep running");
    let _ = std::fs::remove_file(&cfg.socket);
    Ok(())
}
