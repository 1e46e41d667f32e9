//! `tether`: three programs in one binary. The CLI a person types (`cli/`), the daemon that
//! launches shims exactly as containerd does and serves their Events service (`daemon/`), and
//! the `binary://` logger that shims start for a container's output (`logger/`). Beside them
//! only what more than one of them uses: errors, output formatting, event filters, OCI specs,
//! and the names they agree on.

mod bundle;
mod cli;
mod daemon;
mod error;
mod filter;
mod logger;
mod names;
mod output;

use clap::Parser;
use cli::{Cli, Command};

fn main() {
    // A service manager's variables (NOTIFY_SOCKET above all) are the daemon's alone: no shim,
    // runtime or logger it starts inherits them.
    let notify = daemon::Notifier::new(tether_protocol::service_env::take());
    // Started by a shim as a container's binary:// logger.
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(opts) = logger::invocation(&args) {
        std::process::exit(logger::run(opts));
    }
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Daemon(d) => {
            let level = if d.debug { "debug" } else { "info" };
            env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
                .init();
            daemon::run(
                daemon::Config {
                    root: d.root.clone(),
                    state: d.state.clone(),
                    socket: cli.socket.clone(),
                    debug: d.debug,
                    log_max_size: d.log_max_size,
                    log_max_files: d.log_max_files,
                    criu: d.criu.clone(),
                },
                &notify,
            )
            .map(|()| 0)
        }
        _ => cli::run(&cli),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("tether: {e}");
            std::process::exit(1);
        }
    }
}
