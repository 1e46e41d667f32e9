//! The CLI: `tether [--namespace NS] [--socket PATH] COMMAND ...`, one file per command. Each
//! talks to the daemon over its ttrpc API (`client.rs`) and prints the answer (`crate::output`);
//! none reaches into the daemon's modules. The attached commands (`run`, `exec`, `attach`)
//! share the stdio plumbing (`stdio.rs`) and signal forwarding (`sig_proxy.rs`); `checkpoint`
//! and `restore` share the archive format (`archive.rs`) and the undo on Ctrl-C
//! (`interrupt.rs`).

mod args;
mod client;

mod archive;
mod interrupt;
mod sig_proxy;
mod stdio;

mod attach;
mod checkpoint;
mod create;
mod delete;
mod events;
mod exec;
mod kill;
mod logs;
mod pause;
mod ps;
mod restore;
mod run;
mod start;
mod state;
mod stats;
mod update;
mod upgrade;
mod wait;

use args::{parse_bytes, IdArg, IdJson, JsonArg};
pub(crate) use args::{Cli, Command};

use crate::error::{Error, Result};
use tether_protocol::manager_api::manager as api;
use tether_protocol::{validate_id, validate_namespace};

/// Runs one command of the CLI (all but `daemon`); returns the exit code.
pub(crate) fn run(cli: &Cli) -> Result<i32> {
    let ns = cli.namespace.as_deref().unwrap_or("default");
    let socket = cli.socket.as_path();
    match &cli.command {
        Command::Daemon(_) => Err(Error::InvalidArgument(
            "the daemon is started by main, not as a CLI command".into(),
        )),
        Command::Run(r) => run::run(socket, ns, r),
        Command::Create(c) => create::create(socket, ns, c),
        Command::Start(a) => start::start(socket, ns, a),
        Command::Exec(e) => exec::exec(socket, ns, e),
        Command::Kill(k) => kill::kill(socket, ns, k),
        Command::Wait(w) => wait::wait(socket, ns, w),
        Command::Ps(a) => ps::ps(socket, ns, a),
        Command::State(a) => state::state(socket, ns, a),
        Command::Pause(a) => pause::pause(socket, ns, &a.id, true),
        Command::Resume(a) => pause::pause(socket, ns, &a.id, false),
        Command::Update(u) => update::update(socket, ns, u),
        Command::Stats(a) => stats::stats(socket, ns, a),
        Command::Delete(d) => delete::delete(socket, ns, d),
        Command::Events(e) => events::events(socket, cli.namespace.as_deref(), e),
        Command::Logs(l) => logs::logs(socket, ns, l),
        Command::Attach(a) => attach::attach(socket, ns, a),
        Command::Checkpoint(a) => checkpoint::checkpoint(socket, ns, a),
        Command::Restore(a) => restore::restore(socket, ns, a),
        Command::Upgrade(u) => upgrade::upgrade(socket, cli.namespace.as_deref(), u),
    }
}

/// A container named on the command line, checked before it is sent.
fn container_ref(ns: &str, id: &str) -> Result<api::ContainerRef> {
    validate_namespace(ns)?;
    validate_id(id)?;
    Ok(api::ContainerRef {
        namespace: ns.into(),
        id: id.into(),
        ..Default::default()
    })
}

/// A waited-for process's exit as the CLI's own: 128 + N for a signal, as shells report it.
fn exit_code(status: u32) -> i32 {
    i32::try_from(status).unwrap_or(255).min(255)
}

/// Deletes, forcibly, a container this command created and could not start. Best effort: the
/// start's error is the one to report.
fn discard(client: &client::Client, ns: &str, id: &str) {
    let req = api::DeleteRequest {
        namespace: ns.into(),
        id: id.into(),
        force: true,
        ..Default::default()
    };
    let _ = client.call(client::CALL_TIMEOUT, |m, ctx| m.delete(ctx, &req));
}
