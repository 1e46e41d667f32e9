//! One container's shim seen from outside: its bundle's `address` file and socket, the shim
//! process serving it, the runtime's state, and the `delete` action run by hand.
//!
//! Works for any runtime v2 shim; the socket and runc paths are those our shim and containerd's
//! use by default.

use crate::cmd;
use crate::containerd::Containerd;
use crate::procs;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// runc's state root for containerd's shims, before the namespace (`<this>/<ns>/<id>/state.json`).
pub const RUNC_ROOT: &str = "/run/containerd/runc";

/// The shim address written in `bundle/address` (`unix:///run/...`), if the file is there.
pub fn address(bundle: &Path) -> Option<String> {
    std::fs::read_to_string(bundle.join("address"))
        .ok()
        .map(|s| s.trim().to_string())
}

/// The socket path of the shim serving `bundle`, from its `address` file.
pub fn socket_path(bundle: &Path) -> Option<PathBuf> {
    tether_protocol::socket::from_address(&address(bundle)?)
}

/// The long-lived shim process of container `id` in `namespace` of `cd` (not its transient
/// `start`/`delete` actions).
pub fn shim_pid(cd: &Containerd, namespace: &str, id: &str) -> Option<i32> {
    let has = |args: &[String], flag: &str, value: &str| {
        args.windows(2).any(|w| w[0] == flag && w[1] == value)
    };
    cd.shim_pids().into_iter().find(|&p| {
        procs::cmdline(p).is_some_and(|args| {
            has(&args, "-namespace", namespace)
                && has(&args, "-id", id)
                && !matches!(
                    args.last().map(String::as_str),
                    Some("start") | Some("delete")
                )
        })
    })
}

/// runc's state directory of container `id` in `namespace` (gone once the task is deleted).
pub fn runc_state_dir(namespace: &str, id: &str) -> PathBuf {
    Path::new(RUNC_ROOT).join(namespace).join(id)
}

/// `runc --root /run/containerd/runc/<ns> list -q`: the containers runc knows in `namespace`.
pub fn runc_list(namespace: &str) -> Vec<String> {
    runc_list_in(&Path::new(RUNC_ROOT).join(namespace))
}

/// `runc --root ROOT list -q` (a root runc never created lists nothing).
pub fn runc_list_in(root: &Path) -> Vec<String> {
    let out = cmd::run(
        Command::new("runc")
            .arg("--root")
            .arg(root)
            .args(["list", "-q"]),
        None,
        Duration::from_secs(10),
    );
    assert!(out.success(), "runc --root {} list: {out}", root.display());
    out.stdout
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

/// What the `delete` action said: its stdout is a protobuf `DeleteResponse`, so raw bytes.
#[derive(Debug, Clone)]
pub struct DeleteOutput {
    pub code: i32,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

/// Runs `SHIM -namespace NS -address A -id ID -bundle B delete` in `bundle`, as containerd does
/// after a task ends or its shim died, with containerd's environment (its PATH finds runc).
/// Panics if it does not finish within 20 s.
pub fn run_delete_action(
    cd: &Containerd,
    namespace: &str,
    id: &str,
    bundle: &Path,
) -> DeleteOutput {
    let out = tempfile::tempfile().expect("temp file for the delete action's stdout");
    let err = tempfile::tempfile().expect("temp file for the delete action's stderr");
    let mut c = Command::new(crate::bins::shim_binary());
    c.arg("-namespace")
        .arg(namespace)
        .arg("-address")
        .arg(cd.address())
        .arg("-publish-binary")
        .arg("containerd")
        .arg("-id")
        .arg(id)
        .arg("-bundle")
        .arg(bundle)
        .arg("delete")
        .current_dir(bundle)
        .env("TTRPC_ADDRESS", cd.ttrpc_address())
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("dup temp file"))
        .stderr(err.try_clone().expect("dup temp file"));
    let what = cmd::describe(&c);
    let mut child = c
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start `{what}`: {e}"));
    let deadline = Instant::now() + Duration::from_secs(20);
    let (status, timed_out) = cmd::wait_deadline(&mut child, deadline, &what);
    let read = |mut f: std::fs::File| {
        let mut buf = Vec::new();
        f.seek(SeekFrom::Start(0)).expect("rewind temp file");
        f.read_to_end(&mut buf).expect("read temp file");
        buf
    };
    let output = DeleteOutput {
        code: cmd::exit_code(status),
        stdout: read(out),
        stderr: String::from_utf8_lossy(&read(err)).into_owned(),
    };
    assert!(!timed_out, "`{what}` did not finish within 20s: {output:?}");
    output
}

/// Waits until `pid` is neither running nor a zombie (its parent reaped it), telling pid reuse
/// apart by the command line it had (`args`). Says whether that happened within `timeout`.
pub fn wait_reaped(pid: i32, args: &[String], timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let gone = match procs::stat(pid) {
            None => true,
            // A zombie has no command line left: it is ours until reaped.
            Some(s) => s.state != 'Z' && procs::cmdline(pid).as_deref() != Some(args),
        };
        if gone {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A bundle for a second container of the shim serving `first` (through its task API, as CRI
/// groups a pod's containers in one shim): `first`'s spec with the read-only busybox rootfs, its
/// own cgroup and `args` as its process.
pub fn second_bundle(
    cd: &crate::Containerd,
    ns: &str,
    first: &str,
    id: &str,
    args: &[&str],
) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp bundle dir");
    let config = cd.bundle(ns, first).join("config.json");
    let text = std::fs::read_to_string(&config).expect("the first container's config.json");
    let mut spec: serde_json::Value = serde_json::from_str(&text).expect("config.json is JSON");
    spec["root"] = serde_json::json!({ "path": crate::busybox_rootfs(), "readonly": true });
    spec["process"]["args"] = serde_json::json!(args);
    spec["linux"]["cgroupsPath"] = serde_json::json!(format!("/{ns}/{id}"));
    std::fs::write(
        dir.path().join("config.json"),
        serde_json::to_vec(&spec).expect("serialize the spec"),
    )
    .expect("write config.json");
    dir
}
