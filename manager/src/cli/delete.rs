//! `tether delete [-f] ID`: deletes a container (its task, shim and directory).

use super::client::{Client, CALL_TIMEOUT};
use super::container_ref;
use crate::error::Result;
use clap::Args;
use std::path::Path;
use tether_protocol::manager_api::manager as api;

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// Kill the container first if it is still running.
    #[arg(short = 'f', long)]
    pub force: bool,
    pub id: String,
}

pub(super) fn delete(socket: &Path, ns: &str, d: &DeleteArgs) -> Result<i32> {
    let r = container_ref(ns, &d.id)?;
    let req = api::DeleteRequest {
        namespace: r.namespace,
        id: r.id,
        force: d.force,
        ..Default::default()
    };
    Client::connect(socket)?.call(CALL_TIMEOUT, |m, ctx| m.delete(ctx, &req))?;
    Ok(0)
}
