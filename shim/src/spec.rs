//! The two pieces of the OCI runtime spec a request hands the shim: an exec's process and an
//! update's resources. The shim passes both to the runtime as they came (the runtime validates
//! them in full); it checks here, at the request, the fields that must be right for the runtime
//! to get anywhere, so a malformed one is InvalidArgument now rather than a failed `runc`
//! later. Unknown and unchecked fields pass through untouched.

use serde::Deserialize;
use serde_json::Value;
use std::collections::HashMap;

/// An exec's `Process`: what the runtime needs to start it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)] // Read by serde's checks only.
pub struct Process {
    #[serde(default)]
    terminal: Option<bool>,
    user: User,
    #[serde(default)]
    args: Option<Vec<String>>,
    #[serde(default)]
    env: Option<Vec<String>>,
    cwd: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
struct User {
    #[serde(default)]
    uid: u32,
    #[serde(default)]
    gid: u32,
    #[serde(default)]
    umask: Option<u32>,
    #[serde(default)]
    additional_gids: Option<Vec<u32>>,
}

/// An update's `LinuxResources`: the limits an update usually carries are typed; the rest
/// (devices, block I/O, hugepages, network, RDMA) only has to be JSON.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct Resources {
    #[serde(default)]
    memory: Option<Memory>,
    #[serde(default)]
    cpu: Option<Cpu>,
    #[serde(default)]
    pids: Option<Pids>,
    #[serde(default)]
    unified: Option<HashMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
struct Memory {
    limit: Option<i64>,
    reservation: Option<i64>,
    swap: Option<i64>,
    kernel: Option<i64>,
    #[serde(rename = "kernelTCP")]
    kernel_tcp: Option<i64>,
    swappiness: Option<u64>,
    #[serde(rename = "disableOOMKiller")]
    disable_oom_killer: Option<bool>,
    use_hierarchy: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
struct Cpu {
    shares: Option<u64>,
    quota: Option<i64>,
    idle: Option<i64>,
    burst: Option<u64>,
    period: Option<u64>,
    realtime_runtime: Option<i64>,
    realtime_period: Option<u64>,
    cpus: Option<String>,
    mems: Option<String>,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct Pids {
    #[serde(default)]
    limit: i64,
}

/// `json` as a `T`, which must be a JSON object (serde would take an array for a struct).
pub fn check<T: for<'de> Deserialize<'de>>(json: &Value) -> Result<(), String> {
    if !json.is_object() {
        return Err("not a JSON object".into());
    }
    T::deserialize(json).map(|_| ()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_process_needs_a_user_and_a_cwd_of_the_right_types() {
        let ok = json!({"user": {"uid": 0, "gid": 0}, "args": ["/bin/true"], "cwd": "/",
                        "capabilities": {"bounding": []}});
        assert_eq!(check::<Process>(&ok), Ok(()));
        for bad in [
            json!([1, 2]),
            json!({"args": ["/bin/true"], "cwd": "/"}),
            json!({"user": {"uid": 0, "gid": 0}, "args": ["/bin/true"]}),
            json!({"user": {"uid": -1, "gid": 0}, "cwd": "/"}),
            json!({"user": {}, "args": "/bin/true", "cwd": "/"}),
            json!({"user": {}, "env": [1], "cwd": "/"}),
        ] {
            assert!(check::<Process>(&bad).is_err(), "{bad} passed");
        }
    }

    #[test]
    fn resources_type_their_limits() {
        let ok = json!({"memory": {"limit": 33554432}, "cpu": {"shares": 512, "cpus": "0"},
                        "pids": {"limit": 10}, "blockIO": {"weight": 10}});
        assert_eq!(check::<Resources>(&ok), Ok(()));
        assert_eq!(check::<Resources>(&json!({})), Ok(()));
        for bad in [
            json!("memory"),
            json!({"memory": {"limit": "lots"}}),
            json!({"cpu": {"shares": -1}}),
            json!({"unified": {"memory.max": 5}}),
        ] {
            assert!(check::<Resources>(&bad).is_err(), "{bad} passed");
        }
    }
}
