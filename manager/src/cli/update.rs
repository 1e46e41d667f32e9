//! `tether update [--memory BYTES] [--cpus N] ID`: changes a running container's limits.

use super::client::{Client, CALL_TIMEOUT};
use super::{container_ref, parse_bytes};
use crate::error::{Error, Result};
use clap::Args;
use std::path::Path;
use tether_protocol::manager_api::manager as api;

#[derive(Debug, Args)]
pub struct UpdateArgs {
    #[arg(long, value_name = "BYTES", value_parser = parse_bytes)]
    pub memory: Option<i64>,
    #[arg(long, value_name = "N")]
    pub cpus: Option<f64>,
    pub id: String,
}

pub(super) fn update(socket: &Path, ns: &str, u: &UpdateArgs) -> Result<i32> {
    let r = container_ref(ns, &u.id)?;
    let mut res = serde_json::Map::new();
    if let Some(m) = u.memory {
        res.insert("memory".into(), serde_json::json!({ "limit": m }));
    }
    if let Some(c) = u.cpus {
        if !(c.is_finite() && c > 0.0) {
            return Err(Error::InvalidArgument(format!(
                "invalid --cpus {c}: must be positive"
            )));
        }
        let quota = (c * crate::bundle::CPU_PERIOD as f64).round() as i64;
        res.insert(
            "cpu".into(),
            serde_json::json!({ "quota": quota.max(1000), "period": crate::bundle::CPU_PERIOD }),
        );
    }
    if res.is_empty() {
        return Err(Error::InvalidArgument(
            "nothing to update: give --memory and/or --cpus".into(),
        ));
    }
    let req = api::UpdateRequest {
        namespace: r.namespace,
        id: r.id,
        resources: serde_json::Value::Object(res).to_string().into_bytes(),
        ..Default::default()
    };
    Client::connect(socket)?.call(CALL_TIMEOUT, |m, ctx| m.update(ctx, &req))?;
    Ok(0)
}
