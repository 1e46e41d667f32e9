//! `tether run`, `create` and `exec`: build the spec, create, attach, start, wait, clean up.

use crate::attach::{Copiers, Fifos, RawMode};
use crate::bundle::{self, SpecOptions};
use crate::cli::{CreateArgs, ExecArgs, RunArgs};
use crate::client::{Client, CALL_TIMEOUT};
use crate::error::{Error, Result};
use crate::sig_proxy::{self, SignalProxy};
use std::path::Path;
use std::time::Duration;
use tether_protocol::manager_api::manager as api;
use tether_protocol::{validate_id, validate_namespace};

/// How long output may keep flowing after the process exited before the CLI stops copying.
const DRAIN_LIMIT: Duration = Duration::from_secs(10);

fn spec_json(ns: &str, a: &CreateArgs) -> Result<Vec<u8>> {
    let spec = match (&a.rootfs, &a.bundle) {
        (Some(rootfs), _) => {
            let args = if a.args.is_empty() {
                vec!["/bin/sh".to_string()]
            } else {
                a.args.clone()
            };
            bundle::generate(
                rootfs,
                &SpecOptions {
                    namespace: ns.to_string(),
                    id: a.id.clone(),
                    args,
                    env: a.env.clone(),
                    cwd: a.cwd.clone(),
                    terminal: a.tty,
                    memory: a.memory,
                    cpus: a.cpus,
                },
            )?
        }
        (None, Some(dir)) => {
            let mut spec = bundle::from_bundle(dir)?;
            if let Some(mut p) = spec.process().clone() {
                p.set_terminal(Some(a.tty));
                if !a.args.is_empty() {
                    p.set_args(Some(a.args.clone()));
                }
                spec.set_process(Some(p));
            }
            spec
        }
        (None, None) => {
            return Err(Error::InvalidArgument(
                "give --rootfs DIR or --bundle DIR".into(),
            ))
        }
    };
    bundle::check_root(&spec)?;
    serde_json::to_vec(&spec)
        .map_err(|e| Error::InvalidArgument(format!("cannot encode the spec: {e}")))
}

fn create_request(
    ns: &str,
    a: &CreateArgs,
    stdio: Option<api::Stdio>,
) -> Result<api::CreateRequest> {
    validate_namespace(ns)?;
    validate_id(&a.id)?;
    crate::launcher::binary_name(&a.runtime)?;
    Ok(api::CreateRequest {
        namespace: ns.to_string(),
        id: a.id.clone(),
        runtime: a.runtime.clone(),
        spec: spec_json(ns, a)?,
        open_stdin: a.interactive && stdio.is_none(),
        stdio: stdio.into(),
        ..Default::default()
    })
}

pub fn create(socket: &Path, ns: &str, a: &CreateArgs) -> Result<i32> {
    let req = create_request(ns, a, None)?;
    let client = Client::connect(socket)?;
    let c = client.call(CALL_TIMEOUT, |m, ctx| m.create(ctx, &req))?;
    if a.json {
        println!("{}", crate::output::container_json(&c));
    } else {
        println!("{}", c.pid);
    }
    Ok(0)
}

/// An attached process's exit: 128 + N for a signal, as shells report it.
fn exit_code(status: u32) -> i32 {
    i32::try_from(status).unwrap_or(255).min(255)
}

fn close_stdin(socket: &Path, ns: &str, id: &str, exec_id: &str) -> impl FnOnce() + Send + 'static {
    let (socket, req) = (
        socket.to_path_buf(),
        api::ProcessRef {
            namespace: ns.into(),
            id: id.into(),
            exec_id: exec_id.into(),
            ..Default::default()
        },
    );
    move || {
        if let Ok(c) = Client::connect(&socket) {
            let _ = c.call(CALL_TIMEOUT, |m, ctx| m.close_io(ctx, &req));
        }
    }
}

pub fn run(socket: &Path, ns: &str, r: &RunArgs) -> Result<i32> {
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
            let del = api::DeleteRequest {
                namespace: ns.into(),
                id: a.id.clone(),
                force: true,
                ..Default::default()
            };
            let _ = client.call(CALL_TIMEOUT, |m, ctx| m.delete(ctx, &del));
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

pub fn exec(socket: &Path, ns: &str, e: &ExecArgs) -> Result<i32> {
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
