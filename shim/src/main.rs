//! containerd-shim-tether-v2: a containerd runtime v2 shim, one per container.

mod bootstrap;
mod cgroup;
mod cleanup;
mod cli;
mod console;
mod container;
mod error;
mod events;
mod files;
mod heap;
mod info;
mod logging;
mod mount;
mod oom;
mod oom_score;
mod options;
mod pid;
mod process;
mod reaper;
mod runtime;
mod server;
mod signals;
mod spec;
mod start;
mod stats;
mod stdio;
mod task;
mod upgrade;
mod wire;

use protobuf::Message;
use std::io::Write;
use std::os::fd::FromRawFd;
use std::process::ExitCode;

fn main() -> ExitCode {
    // containerd's service environment (NOTIFY_SOCKET above all) must reach none of our
    // children: runc, loggers, the upgrade's check.
    let _ = tether_protocol::service_env::take();
    let flags = match cli::parse(std::env::args().skip(1)) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("containerd-shim-tether-v2: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(version) = &flags.handover_check {
        return upgrade::answer_check(version);
    }
    if flags.version {
        println!("containerd-shim-tether-v2 {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    if flags.info {
        // stdout carries the message alone; errors go to stderr, which containerd quotes.
        return match info::runtime_info(std::io::stdin().lock()).and_then(|info| {
            let bytes = info
                .write_to_bytes()
                .map_err(|e| error::ShimError::InvalidArgument(e.to_string()))?;
            std::io::stdout()
                .write_all(&bytes)
                .map_err(error::ShimError::io("write RuntimeInfo"))
        }) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("containerd-shim-tether-v2: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let result = match flags.action.as_str() {
        "start" => start::start(&flags).and_then(|answer| {
            std::io::stdout()
                .write_all(&answer)
                .map_err(error::ShimError::io("write the start answer"))
        }),
        "delete" => {
            logging::init(flags.debug, &flags.id);
            cleanup::delete(&flags).and_then(|resp| {
                let bytes = resp
                    .write_to_bytes()
                    .map_err(|e| error::ShimError::InvalidArgument(e.to_string()))?;
                std::io::stdout()
                    .write_all(&bytes)
                    .map_err(error::ShimError::io("write DeleteResponse"))
            })
        }
        "upgrade" => match upgrade::client::run(&flags) {
            Ok(true) => return ExitCode::SUCCESS,
            Ok(false) => return ExitCode::FAILURE,
            Err(e) => Err(e),
        },
        "" => serve(&flags),
        other => Err(error::ShimError::InvalidArgument(format!(
            "unknown action {other:?} (start, delete, upgrade)"
        ))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("containerd-shim-tether-v2: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The long-lived shim: serves on the socket `start` handed over as fd 3.
fn serve(flags: &cli::Flags) -> error::Result<()> {
    logging::init(flags.debug, &flags.id);
    if let Some(fd) = flags.resume_from {
        return upgrade::resume::resume(flags, fd);
    }
    // A parent may have left signals blocked: start from none (the reaper and the server then
    // block the ones they read from a signalfd).
    nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&nix::sys::signal::SigSet::empty()),
        None,
    )
    .map_err(error::ShimError::nix("sigprocmask"))?;
    let st =
        nix::sys::stat::fstat(unsafe { std::os::fd::BorrowedFd::borrow_raw(start::LISTENER_FD) })
            .map_err(error::ShimError::nix(
            "fd 3 is not the listening socket (run via `start`)",
        ))?;
    if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err(error::ShimError::InvalidArgument(
            "fd 3 is not a socket: the shim is started by its `start` action".into(),
        ));
    }
    // `start` handed it over with close-on-exec cleared (dup2 clears it): set it again, or
    // every runtime command and hook inherits the socket and can keep it alive past the shim.
    upgrade::exec::set_cloexec(&[start::LISTENER_FD], true)?;
    // SAFETY: fd 3 was checked to be a socket handed to us by `start`, and nothing else owns it.
    let listener = unsafe { std::os::unix::net::UnixListener::from_raw_fd(start::LISTENER_FD) };
    let socket = (!flags.socket.is_empty()).then(|| std::path::PathBuf::from(&flags.socket));
    let ttrpc_address = std::env::var("TTRPC_ADDRESS").ok();
    let server = server::Server::new(
        listener,
        socket,
        &flags.namespace,
        ttrpc_address.as_deref(),
        flags.serve_args(),
    )?;
    log::info!("shim serving (pid {})", std::process::id());
    server.run()
}
