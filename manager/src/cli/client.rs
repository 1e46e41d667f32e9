//! The CLI's connection to the daemon.

use crate::error::{is_disconnected, ttrpc_message, Error, Result};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tether_protocol::api::ttrpc;
use tether_protocol::manager_api::manager_ttrpc::ManagerClient;

pub struct Client {
    inner: ManagerClient,
    socket: PathBuf,
}

/// How long a call may take unless it waits on purpose (`Wait`, `Events`).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(180);

impl Client {
    pub fn connect(socket: &Path) -> Result<Client> {
        if !socket.exists() {
            return Err(Error::Unavailable(format!(
                "no tether daemon at {}: start one with `tether daemon` (or set TETHER_SOCKET)",
                socket.display()
            )));
        }
        let client =
            ttrpc::Client::connect(&format!("unix://{}", socket.display())).map_err(|e| {
                Error::Unavailable(format!(
                    "cannot connect to the tether daemon at {}: {} (is `tether daemon` running?)",
                    socket.display(),
                    ttrpc_message(&e)
                ))
            })?;
        Ok(Client {
            inner: ManagerClient::new(client),
            socket: socket.to_path_buf(),
        })
    }

    /// Calls the daemon; `timeout` zero waits for ever.
    pub fn call<T>(
        &self,
        timeout: Duration,
        f: impl FnOnce(&ManagerClient, ttrpc::context::Context) -> ttrpc::Result<T>,
    ) -> Result<T> {
        let ctx = ttrpc::context::with_timeout(timeout.as_nanos().min(i64::MAX as u128) as i64);
        f(&self.inner, ctx).map_err(|e| {
            if is_disconnected(&e) {
                Error::Unavailable(format!(
                    "lost the connection to the tether daemon at {}: {}",
                    self.socket.display(),
                    ttrpc_message(&e)
                ))
            } else {
                Error::Remote(ttrpc_message(&e))
            }
        })
    }
}
