//! `tether state [--json] ID`: one container.

use super::client::{Client, CALL_TIMEOUT};
use super::{container_ref, IdJson};
use crate::error::Result;
use crate::output;
use std::path::Path;

pub(super) fn state(socket: &Path, ns: &str, a: &IdJson) -> Result<i32> {
    let req = container_ref(ns, &a.id)?;
    let c = Client::connect(socket)?.call(CALL_TIMEOUT, |m, ctx| m.state(ctx, &req))?;
    if a.json {
        println!("{}", output::container_json(&c));
    } else {
        print!("{}", output::container_text(&c));
    }
    Ok(0)
}
