//! Ctrl-C (SIGINT) or SIGTERM during `tether checkpoint` or `tether restore`: what the command
//! did so far is undone before it exits: its scratch directory removed (a CRIU image holds the
//! container's memory, secrets included), a container it froze for the dump thawed, one it
//! created for a restore and never started deleted.

use super::client::{Client, CALL_TIMEOUT};
use crate::error::{Error, Result};
use signal_hook::consts::signal::{SIGINT, SIGTERM};
use signal_hook::iterator::{Handle, Signals};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use tether_protocol::manager_api::manager as api;

/// What an interrupted command must undo, most recent step last.
#[derive(Default)]
struct Steps {
    scratch: Option<PathBuf>,
    thaw: Option<api::ContainerRef>,
    delete: Option<api::DeleteRequest>,
}

/// Armed from `install` until dropped.
pub struct Undo {
    steps: Arc<Mutex<Steps>>,
    handle: Handle,
}

fn lock(m: &Mutex<Steps>) -> MutexGuard<'_, Steps> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Undo {
    /// Catches SIGINT and SIGTERM from now on; on one, undoes the steps noted and exits with
    /// 128 + the signal.
    pub fn install(socket: &Path) -> Result<Undo> {
        let mut signals =
            Signals::new([SIGINT, SIGTERM]).map_err(Error::io("catch SIGINT and SIGTERM"))?;
        let handle = signals.handle();
        let steps = Arc::new(Mutex::new(Steps::default()));
        let (theirs, socket) = (steps.clone(), socket.to_path_buf());
        std::thread::Builder::new()
            .name("interrupt".into())
            .spawn(move || {
                if let Some(sig) = signals.forever().next() {
                    // Held to the end: the command's own steps wait, then the process exits.
                    let mut s = lock(&theirs);
                    undo(&socket, &mut s);
                    std::process::exit(128 + sig);
                }
            })
            .map_err(Error::io("spawn the interrupt watcher"))?;
        Ok(Undo { steps, handle })
    }

    pub fn scratch(&self, dir: Option<&Path>) {
        lock(&self.steps).scratch = dir.map(Path::to_path_buf);
    }

    pub fn thaw(&self, r: Option<&api::ContainerRef>) {
        lock(&self.steps).thaw = r.cloned();
    }

    pub fn delete(&self, r: Option<&api::DeleteRequest>) {
        lock(&self.steps).delete = r.cloned();
    }
}

impl Drop for Undo {
    fn drop(&mut self) {
        self.handle.close();
    }
}

fn undo(socket: &Path, s: &mut Steps) {
    if let Some(dir) = s.scratch.take() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    if s.thaw.is_none() && s.delete.is_none() {
        return;
    }
    let client = match Client::connect(socket) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tether: interrupted; cannot reach the daemon to undo: {e}");
            return;
        }
    };
    if let Some(r) = s.thaw.take() {
        if let Err(e) = client.call(CALL_TIMEOUT, |m, ctx| m.resume(ctx, &r)) {
            eprintln!("tether: interrupted; container {} stays paused: {e}", r.id);
        }
    }
    if let Some(r) = s.delete.take() {
        if let Err(e) = client.call(CALL_TIMEOUT, |m, ctx| m.delete(ctx, &r)) {
            eprintln!("tether: interrupted; container {} not deleted: {e}", r.id);
        }
    }
}
