//! The shim's admin service, served on the same socket as the task API: today one method,
//! `Upgrade` (docs/upgrade.md). Payloads are JSON, so a client needs no generated code.

use serde::{Deserialize, Serialize};
use std::time::Duration;

pub const ADMIN_SERVICE: &str = "tether.shim.admin.v1.Admin";
pub const UPGRADE_METHOD: &str = "Upgrade";
/// How long a shim waits for its runtime calls in flight to end before it refuses an upgrade
/// (measured from the request, the new binary's check included): a client waits longer than
/// this for the answer.
pub const UPGRADE_QUIET_DEADLINE: Duration = Duration::from_secs(10);

/// `Upgrade`: re-execute the binary now installed at the shim's path, in place.
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct UpgradeRequest {}

/// The answer, sent by the new image once it serves.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct UpgradeResponse {
    pub pid: u32,
    pub old_version: String,
    pub new_version: String,
    /// The binary the shim now runs.
    pub binary: String,
    /// From taking the request to serving again in the new image (the check included).
    pub took_micros: u64,
    /// The handover alone: from the old image's commit (record, `execve`) to the new one
    /// serving.
    #[serde(default)]
    pub handover_micros: u64,
}

/// The admin service answers JSON; a payload that is not is a refusal to decode.
pub fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upgrade_messages_round_trip() {
        let r = UpgradeResponse {
            pid: 7,
            old_version: "0.1.0".into(),
            new_version: "0.2.0".into(),
            binary: "/usr/bin/x".into(),
            took_micros: 12,
            handover_micros: 5,
        };
        let back: UpgradeResponse = serde_json::from_slice(&encode(&r)).expect("decode");
        assert_eq!(back, r);
        let _: UpgradeRequest = serde_json::from_slice(b"{}").expect("empty request");
    }
}
