//! One container the shim holds: its bundle, runtime, init process and execs.

use crate::cgroup::Cgroup;
use crate::error::{Result, ShimError};
use crate::pid::Pid;
use crate::process::Process;
use crate::runtime::{Runtime, RuntimeConfig};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tether_protocol::store::{self, Durability};
use tether_protocol::ExitRecord;

/// Files the shim keeps in the bundle (containerd removes the bundle after the task is gone).
pub const RUNTIME_FILE: &str = "tether-runtime.json";
pub const INIT_EXIT_FILE: &str = "init-exit.json";
pub const INIT_PID_FILE: &str = "init.pid";

pub struct Container {
    pub id: String,
    pub bundle: PathBuf,
    pub runtime: Runtime,
    pub rootfs_mounted: bool,
    pub init: Process,
    pub execs: BTreeMap<String, Process>,
    /// The init exited but its exit event waits: for the execs' exits, or for the kill of the
    /// container's other processes.
    pub init_exit_held: bool,
    /// The container shares a PID namespace (the host's, a pod's, another container's): when
    /// its init exits, the rest of its processes are killed before the exit is published.
    pub kill_all_on_exit: bool,
    /// That kill is in flight: the init's exit event waits for it.
    pub killing_all: bool,
    /// `runc start` of the init is in flight: an exit of the init waits for the start event.
    pub starting: bool,
    /// Created from a checkpoint: `Start` restores it from this CRIU image (as containerd's
    /// shim does); until then the runtime has no such container.
    pub restore_from: Option<PathBuf>,
    /// The init's cgroup once resolved, with the pid it was resolved for: `Stats` then reads
    /// the cgroup's files alone instead of the node's whole mount table each time (with a
    /// few hundred pods `/proc/self/mountinfo` has thousands of lines, and the kubelet's
    /// stats poll asks every container's shim in turn).
    pub cgroup: Option<(u32, Cgroup)>,
}

impl Container {
    pub fn new(id: &str, bundle: &Path, config: RuntimeConfig, init: Process) -> Self {
        Container {
            id: id.to_string(),
            bundle: bundle.to_path_buf(),
            runtime: Runtime::new(config, bundle),
            rootfs_mounted: false,
            init,
            execs: BTreeMap::new(),
            init_exit_held: false,
            kill_all_on_exit: false,
            killing_all: false,
            starting: false,
            restore_from: None,
            cgroup: None,
        }
    }

    pub fn rootfs(&self) -> PathBuf {
        self.bundle.join("rootfs")
    }

    /// The process `exec_id` names: the init for "".
    pub fn process(&self, exec_id: &str) -> Result<&Process> {
        if exec_id.is_empty() {
            return Ok(&self.init);
        }
        self.execs.get(exec_id).ok_or_else(|| {
            ShimError::NotFound(format!("container {}: no exec {exec_id:?}", self.id))
        })
    }

    pub fn process_mut(&mut self, exec_id: &str) -> Result<&mut Process> {
        if exec_id.is_empty() {
            return Ok(&mut self.init);
        }
        let id = &self.id;
        self.execs
            .get_mut(exec_id)
            .ok_or_else(|| ShimError::NotFound(format!("container {id}: no exec {exec_id:?}")))
    }

    /// Which process of this container has `pid`, as its exec id ("" for init).
    pub fn exec_id_of(&self, pid: Pid) -> Option<String> {
        if self.init.pid == Some(pid) && !self.init.is_stopped() {
            return Some(String::new());
        }
        self.execs
            .iter()
            .find(|(_, p)| p.pid == Some(pid) && !p.is_stopped())
            .map(|(id, _)| id.clone())
    }

    pub fn running_execs(&self) -> impl Iterator<Item = &Process> {
        self.execs
            .values()
            .filter(|p| p.pid.is_some() && !p.is_stopped())
    }

    /// Where the exit of `exec_id` ("" for the init) is persisted.
    pub fn exit_file(&self, exec_id: &str) -> PathBuf {
        if exec_id.is_empty() {
            self.bundle.join(INIT_EXIT_FILE)
        } else {
            self.bundle.join(format!("exec-{exec_id}-exit.json"))
        }
    }

    /// Persists a process's exit before it is published, for `shim delete` and restarts.
    pub fn persist_exit(&self, exec_id: &str) -> Result<()> {
        let p = self.process(exec_id)?;
        let Some((status, at)) = p.exit() else {
            return Ok(());
        };
        let rec = ExitRecord {
            id: self.id.clone(),
            exec_id: exec_id.to_string(),
            pid: p.wire_pid(),
            exit_status: status,
            exited_at: at,
        };
        // The bundle is runtime state under /run: atomic is what matters, not power-loss safety.
        store::write_with(&self.exit_file(exec_id), &rec, Durability::Atomic)?;
        Ok(())
    }
}

/// Reads a pid file the runtime wrote.
pub fn read_pid_file(path: &Path) -> Result<Pid> {
    let text = std::fs::read_to_string(path)
        .map_err(ShimError::io(format!("read pid file {}", path.display())))?;
    let raw = text
        .trim()
        .parse::<i64>()
        .map_err(|e| ShimError::Runtime(format!("pid file {}: {text:?}: {e}", path.display())))?;
    Pid::new(raw).ok_or_else(|| {
        ShimError::Runtime(format!(
            "pid file {}: {raw} is not a process id",
            path.display()
        ))
    })
}

/// The bundle's `config.json`, parsed; `None` when it cannot be read or is not JSON (the
/// runtime then says what is wrong with it).
pub fn read_spec(config_json: &Path) -> Option<serde_json::Value> {
    let text = std::fs::read(config_json).ok()?;
    // Only the parts the shim decides by are built: the rest of a CRI spec (mounts, masked
    // paths, capabilities, resources) would be a tree of small allocations freed at once but
    // left scattered through the heap of a process that lives as long as its pod. A spec
    // those parts do not fit is parsed whole, so the answers stay those of the whole spec.
    match serde_json::from_slice::<SpecFacts>(&text) {
        Ok(facts) => Some(facts.into_value()),
        Err(_) => serde_json::from_slice(&text).ok(),
    }
}

/// What the shim reads of a spec: `linux.namespaces` and `linux.cgroupsPath`.
#[derive(serde::Deserialize)]
struct SpecFacts {
    linux: Option<LinuxFacts>,
}

#[derive(serde::Deserialize)]
struct LinuxFacts {
    namespaces: Option<serde_json::Value>,
    #[serde(rename = "cgroupsPath")]
    cgroups_path: Option<serde_json::Value>,
}

impl SpecFacts {
    /// The spec with only those parts, as the readers below take it.
    fn into_value(self) -> serde_json::Value {
        let Some(l) = self.linux else {
            return serde_json::Value::Object(serde_json::Map::new());
        };
        let mut linux = serde_json::Map::new();
        if let Some(ns) = l.namespaces {
            linux.insert("namespaces".into(), ns);
        }
        if let Some(path) = l.cgroups_path {
            linux.insert("cgroupsPath".into(), path);
        }
        serde_json::json!({ "linux": linux })
    }
}

/// Whether a container must have its other processes killed when its init exits: it does not
/// own a PID namespace (no `pid` namespace in its spec: the host's; or one with a path: a pod's
/// or another container's), as containerd's runc shim decides. No spec says no.
pub fn shares_pid_namespace(spec: Option<&serde_json::Value>) -> bool {
    let Some(spec) = spec else {
        return false;
    };
    let Some(namespaces) = spec.pointer("/linux/namespaces").and_then(|n| n.as_array()) else {
        return true;
    };
    !namespaces.iter().any(|ns| {
        ns.get("type").and_then(|t| t.as_str()) == Some("pid")
            && ns
                .get("path")
                .and_then(|p| p.as_str())
                .is_none_or(str::is_empty)
    })
}

/// Whether the spec's `linux.cgroupsPath` is in the systemd driver's form, `slice:prefix:name`
/// (`kubepods-besteffort-pod<uid>.slice:cri-containerd:<id>` from kubelet's systemd driver
/// through containerd's CRI). Such a path means nothing to the runtime's cgroupfs driver (runc
/// makes a directory of that very name), and containerd's CRI plugin passes `SystemdCgroup` only
/// to runc's own shim (containerd 1.6 drops it from the options of any other runtime): the
/// path itself says which driver the node uses.
pub fn has_systemd_cgroups_path(spec: Option<&serde_json::Value>) -> bool {
    let Some(path) = spec
        .and_then(|s| s.pointer("/linux/cgroupsPath"))
        .and_then(|p| p.as_str())
    else {
        return false;
    };
    let parts: Vec<&str> = path.split(':').collect();
    parts.len() == 3
        && !path.starts_with('/')
        && (parts[0].is_empty() || parts[0].ends_with(".slice"))
        && !parts[2].is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_namespace_ownership_from_the_spec() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.json");
        let cases = [
            (
                r#"{"linux":{"namespaces":[{"type":"pid"},{"type":"mount"}]}}"#,
                false,
            ),
            (
                r#"{"linux":{"namespaces":[{"type":"pid","path":""}]}}"#,
                false,
            ),
            (
                r#"{"linux":{"namespaces":[{"type":"pid","path":"/proc/9/ns/pid"}]}}"#,
                true,
            ),
            (r#"{"linux":{"namespaces":[{"type":"mount"}]}}"#, true),
            (r#"{"linux":{}}"#, true),
            (r#"{"linux":null}"#, true),
            (
                r#"{"process":{"args":["sleep"]},"linux":{"resources":{"memory":{}},"namespaces":[{"type":"pid"}],"maskedPaths":["/proc/kcore"]}}"#,
                false,
            ),
            (r#"{"linux":{"namespaces":"not a list"}}"#, true),
            ("not json", false),
        ];
        for (spec, shared) in cases {
            std::fs::write(&path, spec).expect("write");
            assert_eq!(
                shares_pid_namespace(read_spec(&path).as_ref()),
                shared,
                "{spec}"
            );
        }
        assert!(!shares_pid_namespace(
            read_spec(&dir.path().join("missing.json")).as_ref()
        ));
    }

    #[test]
    fn systemd_cgroups_paths_are_told_from_cgroupfs_ones() {
        let cases = [
            ("kubepods-besteffort-pod1_2.slice:cri-containerd:abc", true),
            ("system.slice:docker:abc", true),
            (":cri-containerd:abc", true),
            ("/kubepods/besteffort/pod1/abc", false),
            ("kubepods/abc", false),
            ("/a.slice:b:c", false),
            ("a.slice:b:", false),
            ("a:b:c", false),
            ("a.slice:b:c:d", false),
        ];
        for (path, systemd) in cases {
            let spec = serde_json::json!({ "linux": { "cgroupsPath": path } });
            assert_eq!(has_systemd_cgroups_path(Some(&spec)), systemd, "{path}");
        }
        assert!(!has_systemd_cgroups_path(Some(&serde_json::json!({}))));
        assert!(!has_systemd_cgroups_path(None));
    }
}
