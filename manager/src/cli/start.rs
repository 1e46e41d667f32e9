//! `tether start ID`: starts a created container; prints its pid.

use super::client::{Client, CALL_TIMEOUT};
use super::{container_ref, IdArg};
use crate::error::Result;
use std::path::Path;
use tether_protocol::manager_api::manager as api;

pub(super) fn start(socket: &Path, ns: &str, a: &IdArg) -> Result<i32> {
    let r = container_ref(ns, &a.id)?;
    let req = api::StartRequest {
        namespace: r.namespace,
        id: r.id,
        ..Default::default()
    };
    let s = Client::connect(socket)?.call(CALL_TIMEOUT, |m, ctx| m.start(ctx, &req))?;
    println!("{}", s.pid);
    Ok(0)
}
