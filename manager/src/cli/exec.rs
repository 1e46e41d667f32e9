//! `tether exec [-d] [-t] [--exec-id EID] ID -- CMD...`: another process in a running container,
//! attached to our stdio unless `-d`.

use super::client::{Client, CALL_TIMEOUT};
use super::exit_code;
use super::sig_proxy::{self, SignalProxy};
use super::stdio::{close_stdin, Copiers, Fifos, RawMode, DRAIN_LIMIT};
use crate::bundle;
use crate::error::{Error, Result};
use clap::Args;
use std::path::Path;
use std::time::Duration;
use tether_protocol::manager_api::manager as api;
use tether_protocol::validate_id;
use tether_protocol::validate_namespace;

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Do not attach: print the process's pid (and, on the next line, the exec id made up
    /// when none was given) and return.
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Allocate a terminal for the process.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// The id of the new process; a unique one is made up when it is not given.
    #[arg(long, value_name = "EID")]
    pub exec_id: Option<String>,
    #[arg(long = "env", short = 'e', value_name = "K=V")]
    pub env: Vec<String>,
    #[arg(long, value_name = "DIR")]
    pub cwd: Option<String>,
    pub id: String,
    #[arg(last = true, required = true, value_name = "CMD")]
    pub args: Vec<String>,
}

/// A unique exec id, as docker and nerdctl make one up: random, so two CLIs never collide.
fn new_exec_id() -> Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 8];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(Error::io("read /dev/urandom for an exec id"))?;
    Ok(format!(
        "exec-{}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    ))
}

pub(super) fn exec(socket: &Path, ns: &str, e: &ExecArgs) -> Result<i32> {
    validate_namespace(ns)?;
    validate_id(&e.id)?;
    let made_up = e.exec_id.is_none();
    let exec_id = match &e.exec_id {
        Some(given) => given.clone(),
        None => new_exec_id()?,
    };
    tether_protocol::id::validate("exec id", &exec_id)?;
    let process = bundle::process(&e.args, &e.env, e.cwd.as_deref(), e.tty)?;
    let process = serde_json::to_vec(&process)
        .map_err(|err| Error::InvalidArgument(format!("cannot encode the process spec: {err}")))?;
    let client = Client::connect(socket)?;
    let mut req = api::ExecRequest {
        namespace: ns.into(),
        id: e.id.clone(),
        exec_id: exec_id.clone(),
        process,
        ..Default::default()
    };
    if e.detach {
        let s = client.call(CALL_TIMEOUT, |m, ctx| m.exec(ctx, &req))?;
        println!("{}", s.pid);
        if made_up {
            println!("{exec_id}");
        }
        return Ok(0);
    }
    let fifos = Fifos::new(ns, &format!("{}-{}", e.id, exec_id), e.tty)?;
    req.stdio = Some(fifos.stdio()).into();
    let mut copiers = Copiers::spawn(&fifos, close_stdin(socket, ns, &e.id, &exec_id));
    // As for `run`: signals to the CLI go to the exec'd process, resizes to its terminal; the
    // handlers are in place before it starts, and what comes before is held until it runs.
    let mut proxy = SignalProxy::install(sig_proxy::target(socket, ns, &e.id, &exec_id, e.tty))?;
    let raw = e.tty.then(RawMode::enter);
    if let Err(err) = client.call(CALL_TIMEOUT, |m, ctx| m.exec(ctx, &req)) {
        proxy.stop();
        return Err(err);
    }
    proxy.started();
    copiers.started();
    let wait = api::WaitRequest {
        namespace: ns.into(),
        id: e.id.clone(),
        exec_id: exec_id.clone(),
        ..Default::default()
    };
    let status = client.call(Duration::ZERO, |m, ctx| m.wait(ctx, &wait));
    proxy.stop();
    copiers.finish(DRAIN_LIMIT);
    drop(raw);
    Ok(exit_code(status?.exit_status))
}
