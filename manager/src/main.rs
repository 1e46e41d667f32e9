//! `tether`: a thin daemon and CLI that runs containers through containerd runtime v2 shims.
//!
//! The daemon launches shims exactly as containerd does and serves their Events service; the
//! CLI talks to the daemon over our own ttrpc API (`tether.manager.v1.Manager`).

mod archive;
mod attach;
mod attach_cmd;
mod bounded;
mod bundle;
mod checkpoint;
mod cli;
mod client;
mod commands;
mod containers;
mod cpcli;
mod cri_log;
mod daemon;
mod dedup;
mod error;
mod event_server;
mod events;
mod fifo_logger;
mod filter;
mod interrupt;
mod journal;
mod launcher;
mod log_driver;
mod logs;
mod monitor;
mod notify;
mod output;
mod peer;
mod reaper;
mod recovery;
mod run;
mod runtime_root;
mod service;
mod shim_client;
mod sig_proxy;
mod stats;
mod upgrade;
mod upgrade_cmd;

use clap::Parser;
use cli::{Cli, Command};

fn main() {
    // A service manager's variables (NOTIFY_SOCKET above all) are the daemon's alone: no shim,
    // runtime or logger it starts inherits them.
    let notify = notify::Notifier::new(tether_protocol::service_env::take());
    // Started by a shim as a container's binary:// logger (see log_driver).
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(opts) = log_driver::invocation(&args) {
        std::process::exit(log_driver::run(opts));
    }
    let cli = Cli::parse();
    let ns = cli.namespace.as_deref().unwrap_or("default");
    let socket = cli.socket.as_path();
    let result = match &cli.command {
        Command::Daemon(d) => {
            let level = if d.debug { "debug" } else { "info" };
            env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
                .init();
            daemon::run(
                containers::Config {
                    root: d.root.clone(),
                    state: d.state.clone(),
                    socket: socket.to_path_buf(),
                    debug: d.debug,
                    log_max_size: d.log_max_size,
                    log_max_files: d.log_max_files,
                    criu: d.criu.clone(),
                },
                &notify,
            )
            .map(|()| 0)
        }
        Command::Run(r) => run::run(socket, ns, r),
        Command::Create(c) => run::create(socket, ns, c),
        Command::Start(a) => commands::start(socket, ns, &a.id),
        Command::Exec(e) => run::exec(socket, ns, e),
        Command::Kill(k) => commands::kill(socket, ns, k),
        Command::Wait(w) => commands::wait(socket, ns, w),
        Command::Ps(a) => commands::ps(socket, ns, a.json),
        Command::State(a) => commands::state(socket, ns, a),
        Command::Pause(a) => commands::pause(socket, ns, &a.id, true),
        Command::Resume(a) => commands::pause(socket, ns, &a.id, false),
        Command::Update(u) => commands::update(socket, ns, u),
        Command::Stats(a) => commands::stats(socket, ns, a),
        Command::Delete(d) => commands::delete(socket, ns, d),
        Command::Events(e) => commands::events(socket, cli.namespace.as_deref(), e),
        Command::Logs(l) => logs::logs(socket, ns, l),
        Command::Attach(a) => attach_cmd::attach(socket, ns, a),
        Command::Checkpoint(a) => cpcli::checkpoint(socket, ns, a),
        Command::Restore(a) => cpcli::restore(socket, ns, a),
        Command::Upgrade(u) => upgrade_cmd::upgrade(socket, cli.namespace.as_deref(), u),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("tether: {e}");
            std::process::exit(1);
        }
    }
}
