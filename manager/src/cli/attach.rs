//! `tether attach ID [--stdin] [--sig-proxy=false]`: the running container's output from now
//! on, read from its log files as `logs -f` does (the logger lives with the container, so a
//! daemon restart changes nothing), and with `--stdin` our stdin written into the container's
//! stdin FIFO (`run -d -i`), which its logger and the daemon hold open: our stdin's end does
//! not end the container's. Exits with the container's status, as `tether run` does.
//!
//! Detaching leaves the container running: Ctrl-C is forwarded to the container (docker's
//! default `--sig-proxy`) unless `--sig-proxy=false`, where it ends the CLI; with a terminal
//! Ctrl-C is a key, and Ctrl-P Ctrl-Q detaches (docker's detach keys) when stdin is attached.

use super::client::{Client, CALL_TIMEOUT};
use super::logs::{self, Lines, Printer};
use super::sig_proxy::{self, SignalProxy};
use super::stdio::RawMode;
use crate::error::{Error, Result};
use clap::Args;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tether_protocol::manager_api::manager as api;
use tether_protocol::{validate_id, validate_namespace};

#[derive(Debug, Args)]
pub struct AttachArgs {
    pub id: String,
    /// Also copy our stdin to the container's (it must have been created with -i). The end
    /// of our stdin does not close the container's: it stays open for the next attach.
    #[arg(long)]
    pub stdin: bool,
    /// Forward SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 to the container (not
    /// with a terminal, where Ctrl-C is a key). With --sig-proxy=false they detach instead.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub sig_proxy: bool,
}

/// Ctrl-P then Ctrl-Q: docker's default detach keys.
const DETACH: [u8; 2] = [0x10, 0x11];
/// How long to keep asking a restarting daemon for the exit status.
const STATUS_LIMIT: Duration = Duration::from_secs(60);

pub fn attach(socket: &Path, ns: &str, a: &AttachArgs) -> Result<i32> {
    validate_namespace(ns)?;
    validate_id(&a.id)?;
    let client = Client::connect(socket)?;
    let c = logs::container(&client, ns, &a.id)?;
    if !matches!(c.status.as_str(), "CREATED" | "RUNNING" | "PAUSED") {
        return Err(Error::FailedPrecondition(format!(
            "container {}: cannot attach to a container that is {}",
            a.id, c.status
        )));
    }
    let dir = Path::new(&c.bundle);
    let terminal = has_terminal(dir)?;
    let stdin_fifo = dir.join(crate::names::STDIN_FIFO);
    let stdin = if a.stdin {
        Some(open_stdin(&a.id, &stdin_fifo)?)
    } else {
        None
    };
    let current = dir.join(crate::logger::cri_log::FILE_NAME);
    let Some(file) = logs::open(&current)? else {
        return Err(Error::NotFound(format!(
            "container {}: no output to attach to (it was started attached)",
            a.id
        )));
    };
    let lines = Lines::at_end(file)?;

    let detached = Arc::new(AtomicBool::new(false));
    let raw = (terminal && stdin.is_some()).then(RawMode::enter);
    let proxy = if terminal || a.sig_proxy {
        let mut t = sig_proxy::target(socket, ns, &a.id, "", terminal);
        t.signals = !terminal;
        let mut p = SignalProxy::install(t)?;
        p.started();
        Some(p)
    } else {
        None
    };
    // With a terminal the proxy's thread has sent the first size (in order with SIGWINCHes).
    if let Some(f) = stdin {
        let d = detached.clone();
        std::thread::spawn(move || copy_stdin(f, terminal, &d));
    }
    let mut printer = Printer::plain();
    let followed = logs::follow(socket, ns, &a.id, &current, lines, &mut printer, &|| {
        detached.load(Ordering::SeqCst)
    });
    if let Some(p) = proxy {
        p.stop();
    }
    drop(raw);
    followed?;
    if detached.load(Ordering::SeqCst) {
        return Ok(0);
    }
    exit_status(socket, ns, &a.id)
}

/// Whether the container's process has a terminal (its bundle's config.json says).
fn has_terminal(dir: &Path) -> Result<bool> {
    let spec = crate::bundle::from_bundle(dir)?;
    Ok(spec
        .process()
        .as_ref()
        .and_then(|p| p.terminal())
        .unwrap_or(false))
}

/// The container's stdin FIFO, opened for writing; an error if it has none.
fn open_stdin(id: &str, fifo: &Path) -> Result<File> {
    let is_fifo = std::fs::metadata(fifo)
        .map(|m| m.file_type().is_fifo())
        .unwrap_or(false);
    if !is_fifo {
        return Err(Error::FailedPrecondition(format!(
            "container {id}: its stdin is not open (create it with -i to use --stdin)"
        )));
    }
    // Non-blocking open: no reader (ENXIO) means nobody holds it, the container is ending.
    let f = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(fifo)
        .map_err(|e| {
            Error::FailedPrecondition(format!(
                "container {id}: its stdin is closed ({e}): it is not running"
            ))
        })?;
    // Writes then wait for the container to read, as a pipe does.
    let flags = nix::fcntl::fcntl(&f, nix::fcntl::FcntlArg::F_GETFL)
        .map_err(|e| Error::io(format!("fcntl {}", fifo.display()))(e.into()))?;
    let flags = nix::fcntl::OFlag::from_bits_truncate(flags) & !nix::fcntl::OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(&f, nix::fcntl::FcntlArg::F_SETFL(flags))
        .map_err(|e| Error::io(format!("fcntl {}", fifo.display()))(e.into()))?;
    Ok(f)
}

/// Copies our stdin into the container's until our stdin ends (the container's stays open),
/// or, with a terminal, the detach keys come (then `detached` is set).
fn copy_stdin(mut to: File, terminal: bool, detached: &AtomicBool) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut input = std::io::stdin().lock();
    let mut held_ctrl_p = false;
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        let out = if terminal {
            match scan_detach(&buf[..n], &mut held_ctrl_p) {
                Some(out) => out,
                None => {
                    detached.store(true, Ordering::SeqCst);
                    return;
                }
            }
        } else {
            buf[..n].to_vec()
        };
        if to.write_all(&out).is_err() {
            return;
        }
    }
}

/// What of `input` goes to the container, or `None` once the detach keys are seen. A Ctrl-P at
/// the end is held (`held`) until the next byte says what it was.
fn scan_detach(input: &[u8], held: &mut bool) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(input.len() + 1);
    for &b in input {
        if std::mem::take(held) {
            if b == DETACH[1] {
                return None;
            }
            out.push(DETACH[0]);
        }
        if b == DETACH[0] {
            *held = true;
        } else {
            out.push(b);
        }
    }
    Some(out)
}

/// The container's exit status, from a daemon that may be restarting meanwhile.
fn exit_status(socket: &Path, ns: &str, id: &str) -> Result<i32> {
    let req = api::WaitRequest {
        namespace: ns.into(),
        id: id.into(),
        ..Default::default()
    };
    let deadline = Instant::now() + STATUS_LIMIT;
    loop {
        let r =
            Client::connect(socket).and_then(|c| c.call(CALL_TIMEOUT, |m, ctx| m.wait(ctx, &req)));
        match r {
            Ok(s) => return Ok(i32::try_from(s.exit_status).unwrap_or(255).min(255)),
            Err(Error::Unavailable(_)) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detach_keys_end_the_copy_and_other_bytes_pass() {
        let mut held = false;
        assert_eq!(scan_detach(b"ab", &mut held), Some(b"ab".to_vec()));
        assert_eq!(scan_detach(b"a\x10", &mut held), Some(b"a".to_vec()));
        assert!(held);
        assert_eq!(scan_detach(b"x", &mut held), Some(b"\x10x".to_vec()));
        assert_eq!(scan_detach(b"\x10\x11", &mut held), None);
        held = false;
        assert_eq!(scan_detach(b"\x10", &mut held), Some(Vec::new()));
        assert_eq!(scan_detach(b"\x11", &mut held), None);
    }
}
