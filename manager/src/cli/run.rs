//! `tether run`: creates and starts a container and, unless `-d`, stays attached to its stdio
//! (signals forwarded, a terminal in raw mode), waits for it and with `--rm` deletes it.

use super::client::{Client, CALL_TIMEOUT};
use super::create::{create_request, CreateArgs};
use super::sig_proxy::{self, SignalProxy};
use super::stdio::{close_stdin, Copiers, Fifos, RawMode, DRAIN_LIMIT};
use super::{discard, exit_code};
use crate::error::Result;
use clap::Args;
use std::path::Path;
use std::time::Duration;
use tether_protocol::manager_api::manager as api;
use tether_protocol::{validate_id, validate_namespace};

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Delete the container when it exits.
    #[arg(long, conflicts_with = "detach")]
    pub rm: bool,
    /// Do not attach: print the container's pid and return.
    #[arg(short = 'd', long)]
    pub detach: bool,
    #[command(flatten)]
    pub create: CreateArgs,
}

pub(super) fn run(socket: &Path, ns: &str, r: &RunArgs) -> Result<i32> {
    let a = &r.create;
    if r.detach {
        let req = create_request(ns, a, None)?;
        let client = Client::connect(socket)?;
        client.call(CALL_TIMEOUT, |m, ctx| m.create(ctx, &req))?;
        let start = api::StartRequest {
            namespace: ns.into(),
            id: a.id.clone(),
            ..Default::default()
        };
        let s = client.call(CALL_TIMEOUT, |m, ctx| m.start(ctx, &start))?;
        if a.json {
            let st = api::ContainerRef {
                namespace: ns.into(),
                id: a.id.clone(),
                ..Default::default()
            };
            let c = client.call(CALL_TIMEOUT, |m, ctx| m.state(ctx, &st))?;
            println!("{}", crate::output::container_json(&c));
        } else {
            println!("{}", s.pid);
        }
        return Ok(0);
    }
    // Check everything we can before making FIFOs or asking the daemon.
    validate_namespace(ns)?;
    validate_id(&a.id)?;
    let client = Client::connect(socket)?;
    let fifos = Fifos::new(ns, &a.id, a.tty)?;
    let req = create_request(ns, a, Some(fifos.stdio()))?;
    let mut copiers = Copiers::spawn(&fifos, close_stdin(socket, ns, &a.id, ""));
    client.call(CALL_TIMEOUT, |m, ctx| m.create(ctx, &req))?;
    // Before the start, so a signal sent as soon as the container runs is not lost.
    let mut proxy = SignalProxy::install(sig_proxy::target(socket, ns, &a.id, "", a.tty))?;
    let raw = a.tty.then(RawMode::enter);
    let start = api::StartRequest {
        namespace: ns.into(),
        id: a.id.clone(),
        ..Default::default()
    };
    let started = client.call(CALL_TIMEOUT, |m, ctx| m.start(ctx, &start));
    if let Err(e) = started {
        proxy.stop();
        drop(raw);
        if r.rm {
            discard(&client, ns, &a.id);
        }
        return Err(e);
    }
    proxy.started();
    copiers.started();
    let wait = api::WaitRequest {
        namespace: ns.into(),
        id: a.id.clone(),
        ..Default::default()
    };
    let status = client.call(Duration::ZERO, |m, ctx| m.wait(ctx, &wait));
    proxy.stop();
    copiers.finish(DRAIN_LIMIT);
    drop(raw);
    let status = status?;
    if r.rm {
        let del = api::DeleteRequest {
            namespace: ns.into(),
            id: a.id.clone(),
            ..Default::default()
        };
        client.call(CALL_TIMEOUT, |m, ctx| m.delete(ctx, &del))?;
    }
    drop(fifos);
    Ok(exit_code(status.exit_status))
}
