//! `tether stats [--json] ID`: a container's resource usage.

use super::client::{Client, CALL_TIMEOUT};
use super::{container_ref, IdJson};
use crate::error::Result;
use crate::output;
use std::path::Path;

pub(super) fn stats(socket: &Path, ns: &str, a: &IdJson) -> Result<i32> {
    let req = container_ref(ns, &a.id)?;
    let s = Client::connect(socket)?.call(CALL_TIMEOUT, |m, ctx| m.stats(ctx, &req))?;
    if a.json {
        println!("{}", output::stats_json(&s));
    } else {
        print!("{}", output::stats_text(&s));
    }
    Ok(0)
}
