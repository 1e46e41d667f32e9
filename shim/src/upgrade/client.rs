//! `containerd-shim-tether-v2 upgrade`: asks running shims to upgrade in place (docs/upgrade.md),
//! one (`-namespace NS -address ADDR -id ID`, the flags containerd gives a shim; ID is the
//! shim's group: the sandbox id for a pod) or every shim in the socket directory. Prints one
//! line per shim; false if any was refused.

use crate::cli::Flags;
use crate::error::{Result, ShimError};
use std::os::unix::fs::FileTypeExt;
use std::path::PathBuf;
use std::time::Duration;
use tether_protocol::admin::{UpgradeResponse, ADMIN_SERVICE, UPGRADE_METHOD};
use tether_protocol::api::ttrpc;

/// The check's deadline, plus the handover itself.
const UPGRADE_TIMEOUT: Duration = Duration::from_secs(30);

/// The sockets of the shims to upgrade.
fn targets(flags: &Flags) -> Result<Vec<PathBuf>> {
    let dir = crate::start::socket_dir();
    if !flags.id.is_empty() {
        tether_protocol::validate_id(&flags.id)?;
        tether_protocol::validate_namespace(&flags.namespace)?;
        return Ok(vec![tether_protocol::socket::shim_socket_path(
            &dir,
            &flags.address,
            &flags.namespace,
            &flags.id,
        )]);
    }
    let entries =
        std::fs::read_dir(&dir).map_err(ShimError::io(format!("list {}", dir.display())))?;
    let mut sockets: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_socket()))
        .map(|e| e.path())
        .collect();
    sockets.sort();
    Ok(sockets)
}

/// Upgrades each shim in turn; true if every one was upgraded.
pub fn run(flags: &Flags) -> Result<bool> {
    let mut all = true;
    for socket in targets(flags)? {
        let r = tether_protocol::wire::call(
            &socket,
            ADMIN_SERVICE,
            UPGRADE_METHOD,
            b"{}".to_vec(),
            UPGRADE_TIMEOUT,
        );
        let line = match r.map(|b| serde_json::from_slice::<UpgradeResponse>(&b)) {
            Ok(Ok(u)) => format!(
                "upgraded ({} -> {}, {:.1} ms, handover {:.1} ms, pid {})",
                u.old_version,
                u.new_version,
                u.took_micros as f64 / 1000.0,
                u.handover_micros as f64 / 1000.0,
                u.pid
            ),
            Ok(Err(e)) => {
                all = false;
                format!("refused (unreadable answer: {e})")
            }
            Err(ttrpc::Error::RpcStatus(s)) => {
                all = false;
                format!("refused ({})", s.message())
            }
            Err(e) => {
                all = false;
                format!("refused ({e})")
            }
        };
        println!("{}: {line}", socket.display());
    }
    Ok(all)
}
