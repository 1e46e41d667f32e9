//! Signal forwarding for an attached `tether run` or `tether exec` (like `docker run`'s default
//! `--sig-proxy`): SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 sent to the CLI go to the
//! container's init (or the exec'd process) as a `Kill`, and with a terminal every SIGWINCH
//! becomes a `ResizePty` with the CLI's current size. Otherwise Ctrl-C would kill the CLI and
//! leave the container running.
//!
//! The handlers are installed before the container starts, so no signal is lost in between;
//! what arrives before the start is held and forwarded once the process runs (a `Kill` before
//! that would find no process). The first forwarded SIGINT does not end the CLI: it waits for
//! the container's exit status, as the container decides what the signal means.

use super::client::{Client, CALL_TIMEOUT};
use super::stdio::terminal_size;
use crate::error::{Error, Result};
use signal_hook::consts::signal::{SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2, SIGWINCH};
use signal_hook::iterator::{Handle, Signals};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Sender};
use std::thread::{self, JoinHandle};
use tether_protocol::manager_api::manager as api;

/// The signals forwarded to the container's process.
pub const FORWARDED: [i32; 6] = [SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2];

/// The process signals go to.
#[derive(Debug, Clone)]
pub struct Target {
    pub socket: PathBuf,
    pub namespace: String,
    pub id: String,
    pub exec_id: String,
    /// Forward SIGWINCH as `ResizePty` (the process has a terminal).
    pub terminal: bool,
    /// Forward the [`FORWARDED`] signals (`tether attach` to a terminal does not: Ctrl-C is a
    /// key there, and other signals end the CLI, detaching it).
    pub signals: bool,
}

/// The running proxy; [`SignalProxy::stop`] ends it.
pub struct SignalProxy {
    handle: Handle,
    started: Option<Sender<()>>,
    threads: Vec<JoinHandle<()>>,
}

impl SignalProxy {
    /// Installs the handlers. One thread collects signals into a queue; another forwards them,
    /// from [`SignalProxy::started`] on (the queue holds what came before).
    pub fn install(target: Target) -> Result<SignalProxy> {
        let mut wanted = if target.signals {
            FORWARDED.to_vec()
        } else {
            Vec::new()
        };
        if target.terminal {
            wanted.push(SIGWINCH);
        }
        let mut signals = Signals::new(&wanted).map_err(Error::io(format!(
            "install handlers for signals {wanted:?}"
        )))?;
        let handle = signals.handle();
        let (sig_tx, sig_rx) = channel::<i32>();
        let collector = thread::spawn(move || {
            for sig in signals.forever() {
                if sig_tx.send(sig).is_err() {
                    break;
                }
            }
        });
        let (started_tx, started_rx) = channel::<()>();
        let forwarder = thread::spawn(move || {
            // Never started (the run gave up): nothing runs to receive them.
            if started_rx.recv().is_err() {
                return;
            }
            let mut client = None;
            // The first size goes from this thread too: every ResizePty then reads the size
            // and sends it in one order, so the last one sent is the terminal's latest size
            // (a first resize sent from another thread could overtake a SIGWINCH's and undo it).
            if target.terminal {
                forward(&target, &mut client, SIGWINCH);
            }
            // Ends when the collector does (stop).
            while let Ok(sig) = sig_rx.recv() {
                forward(&target, &mut client, sig);
            }
        });
        Ok(SignalProxy {
            handle,
            started: Some(started_tx),
            threads: vec![collector, forwarder],
        })
    }

    /// The process runs: forward what was held and everything from now on.
    pub fn started(&mut self) {
        if let Some(tx) = self.started.take() {
            let _ = tx.send(());
        }
    }

    /// Stops forwarding (the process has exited, or never started).
    pub fn stop(mut self) {
        self.handle.close();
        self.started = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn forward(target: &Target, client: &mut Option<Client>, sig: i32) {
    if client.is_none() {
        *client = Client::connect(&target.socket).ok();
    }
    let Some(c) = client.as_ref() else { return };
    let r = if sig == SIGWINCH {
        let Some((width, height)) = terminal_size(std::io::stdout().as_fd()) else {
            return;
        };
        let req = api::ResizePtyRequest {
            namespace: target.namespace.clone(),
            id: target.id.clone(),
            exec_id: target.exec_id.clone(),
            width,
            height,
            ..Default::default()
        };
        c.call(CALL_TIMEOUT, |m, ctx| m.resize_pty(ctx, &req))
            .map(drop)
    } else {
        let req = api::KillRequest {
            namespace: target.namespace.clone(),
            id: target.id.clone(),
            exec_id: target.exec_id.clone(),
            signal: sig as u32,
            ..Default::default()
        };
        c.call(CALL_TIMEOUT, |m, ctx| m.kill(ctx, &req)).map(drop)
    };
    if let Err(e) = r {
        // The process may have exited meanwhile; the run reports its status either way.
        if matches!(e, Error::Unavailable(_)) {
            *client = None;
        }
    }
}

/// The process `id`/`exec_id` in `ns`, through the daemon at `socket`.
pub fn target(socket: &Path, ns: &str, id: &str, exec_id: &str, terminal: bool) -> Target {
    Target {
        socket: socket.to_path_buf(),
        namespace: ns.to_string(),
        id: id.to_string(),
        exec_id: exec_id.to_string(),
        terminal,
        signals: true,
    }
}
