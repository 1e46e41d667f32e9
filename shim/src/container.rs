//! One container the shim holds: its bundle, runtime, init process and execs.

use crate::error::{Result, ShimError};
use crate::process::Process;
use crate::runtime::{Runtime, RuntimeConfig};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tether_protocol::store::{self, Durability};
use tether_protocol::ExitRecord;

/// Files the shim keeps in the bundle (containerd removes the bundle after the task is gone).
pub const RUNTIME_FILE: &str = "tether-runtime.json";
pub const INIT_EXIT_FILE: &str = "init-exit.json";
pub const INIT_PID_FILE: &str = "init.pid";

pub struct Container {
    pub id: String,
    pub bundle: PathBuf,
    pub runtime: Runtime,
    pub rootfs_mounted: bool,
    pub init: Process,
    pub execs: BTreeMap<String, Process>,
    /// The init exited while execs still ran: its exit event waits for theirs.
    pub init_exit_held: bool,
}

impl Container {
    pub fn new(id: &str, bundle: &Path, config: RuntimeConfig, init: Process) -> Self {
        Container {
            id: id.to_string(),
            bundle: bundle.to_path_buf(),
            runtime: Runtime::new(config, bundle),
            rootfs_mounted: false,
            init,
            execs: BTreeMap::new(),
            init_exit_held: false,
        }
    }

    pub fn rootfs(&self) -> PathBuf {
        self.bundle.join("rootfs")
    }

    /// The process `exec_id` names: the init for "".
    pub fn process(&self, exec_id: &str) -> Result<&Process> {
        if exec_id.is_empty() {
            return Ok(&self.init);
        }
        self.execs.get(exec_id).ok_or_else(|| {
            ShimError::NotFound(format!("container {}: no exec {exec_id:?}", self.id))
        })
    }

    pub fn process_mut(&mut self, exec_id: &str) -> Result<&mut Process> {
        if exec_id.is_empty() {
            return Ok(&mut self.init);
        }
        let id = &self.id;
        self.execs
            .get_mut(exec_id)
            .ok_or_else(|| ShimError::NotFound(format!("container {id}: no exec {exec_id:?}")))
    }

    /// Which process of this container has `pid`, as its exec id ("" for init).
    pub fn exec_id_of(&self, pid: u32) -> Option<String> {
        if pid == 0 {
            return None;
        }
        if self.init.pid == pid && !self.init.is_stopped() {
            return Some(String::new());
        }
        self.execs
            .iter()
            .find(|(_, p)| p.pid == pid && !p.is_stopped())
            .map(|(id, _)| id.clone())
    }

    pub fn running_execs(&self) -> impl Iterator<Item = &Process> {
        self.execs
            .values()
            .filter(|p| p.pid != 0 && !p.is_stopped())
    }

    /// Persists the init's exit before it is published, for `shim delete` and restarts.
    pub fn persist_init_exit(&self) -> Result<()> {
        let Some((status, at)) = self.init.exit() else {
            return Ok(());
        };
        let rec = ExitRecord {
            id: self.id.clone(),
            exec_id: String::new(),
            pid: self.init.pid,
            exit_status: status,
            exited_at: at,
        };
        // The bundle is runtime state under /run: atomic is what matters, not power-loss safety.
        store::write_with(&self.bundle.join(INIT_EXIT_FILE), &rec, Durability::Atomic)?;
        Ok(())
    }
}

/// Reads a pid file the runtime wrote.
pub fn read_pid_file(path: &Path) -> Result<u32> {
    let text = std::fs::read_to_string(path)
        .map_err(ShimError::io(format!("read pid file {}", path.display())))?;
    text.trim()
        .parse::<u32>()
        .map_err(|e| ShimError::Runtime(format!("pid file {}: {text:?}: {e}", path.display())))
}
