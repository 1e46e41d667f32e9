//! The `delete` action: containerd runs it after a task ends (1.6: after every task) and when a
//! shim died. It must be fast and idempotent, and answer the real exit status the shim persisted
//! when it reaped the init. Only when there is none (the shim died before it could reap the
//! init) is the answer 137, SIGKILL: the forced delete here kills an init still running, and one
//! that ended on its own with no shim to reap it left no status anyone can read.

use crate::cli::Flags;
use crate::container::{INIT_EXIT_FILE, INIT_PID_FILE, RUNTIME_FILE};
use crate::error::{Result, ShimError};
use crate::runtime::{Runtime, RuntimeConfig};
use crate::task::delete_response;
use std::path::{Path, PathBuf};
use tether_protocol::api::task::DeleteResponse;
use tether_protocol::time::now_nanos;
use tether_protocol::{store, validate_id, validate_namespace, ExitRecord};

/// How long the runtime may take to remove a container here.
const DELETE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

pub fn delete(flags: &Flags) -> Result<DeleteResponse> {
    validate_namespace(&flags.namespace)?;
    validate_id(&flags.id)?;
    let bundle = if flags.bundle.is_empty() {
        std::env::current_dir().map_err(ShimError::io("getcwd"))?
    } else {
        PathBuf::from(&flags.bundle)
    };
    let config = match store::read::<RuntimeConfig>(&bundle.join(RUNTIME_FILE)) {
        Ok(c) => c,
        Err(e) if e.is_not_found() => {
            RuntimeConfig::from_options(&Default::default(), &flags.namespace)?
        }
        Err(e) => return Err(e.into()),
    };
    // The container may still exist (its shim was killed): the runtime removes it, killing it.
    // After a clean delete (containerd 1.6 runs this action after every task) its state
    // directory is gone and a runtime exec would only cost time.
    if Path::new(&config.root).join(&flags.id).exists() {
        let runtime = Runtime::new(config, &bundle);
        let deleted = runtime
            .delete(&flags.id, true)
            .and_then(|call| call.wait_blocking(DELETE_TIMEOUT));
        if let Err(e) = deleted {
            log::warn!("{e}");
        }
    }
    crate::mount::unmount_all(&bundle.join("rootfs"))?;
    let exit = match store::read::<ExitRecord>(&bundle.join(INIT_EXIT_FILE)) {
        Ok(rec) => rec,
        Err(e) => {
            if !e.is_not_found() {
                log::warn!("{e}");
            }
            // No exit was recorded: the init outlived its shim and the delete above killed it
            // (or it ended unreaped, its status lost): SIGKILL, as containerd's shim answers.
            let pid = std::fs::read_to_string(bundle.join(INIT_PID_FILE))
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0);
            ExitRecord {
                id: flags.id.clone(),
                exec_id: String::new(),
                pid,
                exit_status: 128 + libc::SIGKILL as u32,
                exited_at: now_nanos(),
            }
        }
    };
    remove_dead_socket(&bundle);
    Ok(delete_response(exit.pid, exit.exit_status, exit.exited_at))
}

/// Removes the shim's socket if no shim answers on it any more.
fn remove_dead_socket(bundle: &std::path::Path) {
    let Ok(address) = std::fs::read_to_string(bundle.join("address")) else {
        return;
    };
    let Some(path) = tether_protocol::socket::from_address(address.trim()) else {
        return;
    };
    if std::os::unix::net::UnixStream::connect(&path).is_err() {
        let _ = std::fs::remove_file(&path);
    }
}
