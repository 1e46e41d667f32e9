//! `tether pause ID` and `tether resume ID`: freezes and thaws every process of a container.

use super::client::{Client, CALL_TIMEOUT};
use super::container_ref;
use crate::error::Result;
use std::path::Path;

pub(super) fn pause(socket: &Path, ns: &str, id: &str, pause: bool) -> Result<i32> {
    let req = container_ref(ns, id)?;
    let client = Client::connect(socket)?;
    if pause {
        client.call(CALL_TIMEOUT, |m, ctx| m.pause(ctx, &req))?;
    } else {
        client.call(CALL_TIMEOUT, |m, ctx| m.resume(ctx, &req))?;
    }
    Ok(0)
}
