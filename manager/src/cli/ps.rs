//! `tether ps [--json]`: the namespace's containers, as a table or JSON.

use super::client::{Client, CALL_TIMEOUT};
use super::JsonArg;
use crate::error::Result;
use crate::output;
use std::path::Path;
use tether_protocol::manager_api::manager as api;
use tether_protocol::validate_namespace;

pub(super) fn ps(socket: &Path, ns: &str, a: &JsonArg) -> Result<i32> {
    validate_namespace(ns)?;
    let req = api::ListRequest {
        namespace: ns.into(),
        ..Default::default()
    };
    let list = Client::connect(socket)?.call(CALL_TIMEOUT, |m, ctx| m.list(ctx, &req))?;
    if a.json {
        let v: Vec<_> = list.containers.iter().map(output::container_json).collect();
        println!("{}", serde_json::Value::Array(v));
    } else {
        print!("{}", output::container_table(&list.containers));
    }
    Ok(0)
}
