//! `tether kill [-s SIGNAL] [--all] [--exec-id EID] ID`: signals a container's process.

use super::client::{Client, CALL_TIMEOUT};
use super::container_ref;
use crate::error::{Error, Result};
use clap::Args;
use std::path::Path;
use std::str::FromStr;
use tether_protocol::manager_api::manager as api;

#[derive(Debug, Args)]
pub struct KillArgs {
    /// The signal, by name (TERM, SIGKILL) or number.
    #[arg(short = 's', long, default_value = "TERM")]
    pub signal: String,
    /// Signal every process of the container.
    #[arg(long)]
    pub all: bool,
    /// Signal this exec instead of the init process.
    #[arg(long, value_name = "EID", default_value = "")]
    pub exec_id: String,
    pub id: String,
}

/// `TERM`, `SIGTERM`, `15`.
pub(super) fn parse_signal(s: &str) -> Result<u32> {
    if let Ok(n) = s.parse::<u32>() {
        if (1..=64).contains(&n) {
            return Ok(n);
        }
    }
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    nix::sys::signal::Signal::from_str(&name)
        .map(|sig| sig as u32)
        .map_err(|_| {
            Error::InvalidArgument(format!(
                "unknown signal {s:?} (use a name like TERM or KILL, or a number)"
            ))
        })
}

pub(super) fn kill(socket: &Path, ns: &str, k: &KillArgs) -> Result<i32> {
    let r = container_ref(ns, &k.id)?;
    let signal = parse_signal(&k.signal)?;
    let req = api::KillRequest {
        namespace: r.namespace,
        id: r.id,
        exec_id: k.exec_id.clone(),
        signal,
        all: k.all,
        ..Default::default()
    };
    Client::connect(socket)?.call(CALL_TIMEOUT, |m, ctx| m.kill(ctx, &req))?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_by_name_and_number() {
        assert_eq!(parse_signal("TERM").expect("ok"), 15);
        assert_eq!(parse_signal("sigkill").expect("ok"), 9);
        assert_eq!(parse_signal("2").expect("ok"), 2);
        assert!(parse_signal("BOGUS").is_err());
        assert!(parse_signal("0").is_err());
    }
}
