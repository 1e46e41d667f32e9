//! `tether wait [--exec-id EID] [--json] ID`: waits for a process to exit; prints its status
//! and exits with it.

use super::client::Client;
use super::{container_ref, exit_code};
use crate::error::Result;
use crate::output;
use clap::Args;
use std::path::Path;
use std::time::Duration;
use tether_protocol::manager_api::manager as api;

#[derive(Debug, Args)]
pub struct WaitArgs {
    pub id: String,
    #[arg(long, value_name = "EID", default_value = "")]
    pub exec_id: String,
    #[arg(long)]
    pub json: bool,
}

pub(super) fn wait(socket: &Path, ns: &str, w: &WaitArgs) -> Result<i32> {
    let r = container_ref(ns, &w.id)?;
    let req = api::WaitRequest {
        namespace: r.namespace,
        id: r.id,
        exec_id: w.exec_id.clone(),
        ..Default::default()
    };
    let s = Client::connect(socket)?.call(Duration::ZERO, |m, ctx| m.wait(ctx, &req))?;
    if w.json {
        println!(
            "{}",
            serde_json::json!({"exit_status": s.exit_status, "exited_at": output::time(s.exited_at)})
        );
    } else {
        println!("{}", s.exit_status);
    }
    Ok(exit_code(s.exit_status))
}
