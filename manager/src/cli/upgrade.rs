//! `tether upgrade [ID...]`: asks the daemon to move shims to the binary now installed at their
//! path (the daemon calls each shim, a few at a time: `upgrade.rs`), and prints one line per
//! shim: `ID: upgraded (OLD -> NEW, N ms)` or `ID: refused (WHY)`; asked for every shim, one
//! with no live upgrade (another runtime's) is `ID: skipped (WHY)`, not a refusal.

use super::client::{Client, CALL_TIMEOUT};
use crate::error::Result;
use clap::Args;
use serde_json::json;
use std::path::Path;
use tether_protocol::manager_api::manager as api;
use tether_protocol::{validate_id, validate_namespace};

#[derive(Debug, Args)]
pub struct UpgradeArgs {
    /// One JSON object per shim (with the shim's pid and the handover's own time).
    #[arg(long)]
    pub json: bool,
    /// Containers whose shims to upgrade (in --namespace, default "default"); none: all.
    pub ids: Vec<String>,
}

/// `namespace`: the `--namespace` given, if any.
pub fn upgrade(socket: &Path, namespace: Option<&str>, a: &UpgradeArgs) -> Result<i32> {
    // Ids live in a namespace; "every shim" means every namespace unless one is named.
    let ns = match namespace {
        Some(ns) => ns,
        None if a.ids.is_empty() => "",
        None => "default",
    };
    if !ns.is_empty() {
        validate_namespace(ns)?;
    }
    for id in &a.ids {
        validate_id(id)?;
    }
    let req = api::UpgradeRequest {
        namespace: ns.to_string(),
        ids: a.ids.clone(),
        ..Default::default()
    };
    let resp = Client::connect(socket)?.call(CALL_TIMEOUT, |m, ctx| m.upgrade(ctx, &req))?;
    let mut refused = false;
    for r in &resp.results {
        refused |= !r.upgraded && !r.skipped;
        if a.json {
            println!("{}", result_json(r));
        } else {
            // Across namespaces an id alone may be ambiguous.
            let name = if ns.is_empty() {
                format!("{}/{}", r.namespace, r.id)
            } else {
                r.id.clone()
            };
            println!("{name}: {}", describe(r));
        }
    }
    Ok(i32::from(refused))
}

fn describe(r: &api::UpgradeResult) -> String {
    if r.upgraded {
        format!(
            "upgraded ({} -> {}, {:.1} ms)",
            r.old_version,
            r.new_version,
            r.took_micros as f64 / 1000.0
        )
    } else if r.skipped {
        format!("skipped ({})", r.reason)
    } else {
        format!("refused ({})", r.reason)
    }
}

fn result_json(r: &api::UpgradeResult) -> serde_json::Value {
    let mut v = json!({
        "namespace": r.namespace,
        "id": r.id,
        "upgraded": r.upgraded,
        "shim_pid": r.shim_pid,
    });
    if r.upgraded {
        v["old_version"] = json!(r.old_version);
        v["new_version"] = json!(r.new_version);
        v["took_micros"] = json!(r.took_micros);
        v["handover_micros"] = json!(r.handover_micros);
        v["wall_micros"] = json!(r.wall_micros);
    } else {
        v["skipped"] = json!(r.skipped);
        v["reason"] = json!(r.reason);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_say_what_happened() {
        let up = api::UpgradeResult {
            id: "c1".into(),
            upgraded: true,
            old_version: "0.1.0".into(),
            new_version: "0.2.0".into(),
            took_micros: 4_250,
            ..Default::default()
        };
        assert_eq!(describe(&up), "upgraded (0.1.0 -> 0.2.0, 4.2 ms)");
        let no = api::UpgradeResult {
            id: "c2".into(),
            reason: "the new binary cannot take over: exit status 1".into(),
            ..Default::default()
        };
        assert_eq!(
            describe(&no),
            "refused (the new binary cannot take over: exit status 1)"
        );
        assert_eq!(result_json(&no)["reason"], no.reason);
        let other = api::UpgradeResult {
            skipped: true,
            reason: "its shim has no live upgrade (service not found)".into(),
            ..Default::default()
        };
        assert_eq!(
            describe(&other),
            "skipped (its shim has no live upgrade (service not found))"
        );
        assert_eq!(result_json(&up)["took_micros"], 4_250);
    }
}
