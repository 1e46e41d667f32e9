//! Launching shims exactly as containerd 1.6 does, and running their `delete` action.
//!
//! `containerd-shim-X-v2 -namespace NS -address ADDR -publish-binary BIN -id ID start`, with the
//! bundle as working directory, `TTRPC_ADDRESS` (where events go), `GRPC_ADDRESS` and
//! `NAMESPACE` in the environment, the runtime options on stdin, and stdout and stderr read
//! together as the shim's address. This is the one place the manager spawns processes.

use crate::error::{Error, Result};
use protobuf::Message;
use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use tether_protocol::api::task::DeleteResponse;

/// Where to look for shim binaries: the directory of the manager's own executable, then `PATH`.
pub fn search_path() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        dirs.push(dir);
    }
    if let Some(path) = std::env::var_os("PATH") {
        for d in std::env::split_paths(&path) {
            if !d.as_os_str().is_empty() && !dirs.contains(&d) {
                dirs.push(d);
            }
        }
    }
    dirs
}

/// The `PATH` shims are started with (so they find their runtime, and ours find themselves).
pub fn shim_env_path() -> OsString {
    std::env::join_paths(search_path()).unwrap_or_default()
}

/// The shim binary for `runtime`, found on [`search_path`].
pub fn find_shim(runtime: &str) -> Result<PathBuf> {
    let name = crate::names::binary_name(runtime)?;
    for dir in search_path() {
        let p = dir.join(&name);
        if is_executable(&p) {
            return Ok(p);
        }
    }
    Err(Error::NotFound(format!(
        "unknown runtime {runtime:?}: no {name} in the manager's directory or on PATH"
    )))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// One shim invocation's fixed parts.
#[derive(Debug, Clone)]
pub struct ShimCommand {
    pub binary: PathBuf,
    pub namespace: String,
    pub id: String,
    pub bundle: PathBuf,
    /// The manager's socket path: containerd's `-address` (part of the shim's socket name).
    pub address: String,
    /// Where shims publish events (`TTRPC_ADDRESS`): the same socket, as a plain path.
    pub ttrpc_address: String,
    pub debug: bool,
}

impl ShimCommand {
    fn command(&self, action: &str, with_bundle: bool) -> Command {
        let publish = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("tether"));
        let mut cmd = Command::new(&self.binary);
        cmd.arg("-namespace")
            .arg(&self.namespace)
            .arg("-address")
            .arg(&self.address)
            .arg("-publish-binary")
            .arg(publish)
            .arg("-id")
            .arg(&self.id);
        if with_bundle {
            cmd.arg("-bundle").arg(&self.bundle);
        }
        if self.debug {
            cmd.arg("-debug");
        }
        cmd.arg(action)
            .current_dir(&self.bundle)
            .env("TTRPC_ADDRESS", &self.ttrpc_address)
            .env("GRPC_ADDRESS", &self.address)
            .env("NAMESPACE", &self.namespace)
            .env("PATH", shim_env_path());
        // The daemon blocks SIGCHLD and the stop signals (it takes them through a signalfd and
        // sigwait); a shim must not inherit that mask, or it would never see its children exit.
        // SAFETY: only pthread_sigmask (async-signal-safe) runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                let mut empty = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
                libc::sigemptyset(empty.as_mut_ptr());
                libc::pthread_sigmask(libc::SIG_SETMASK, empty.as_ptr(), std::ptr::null_mut());
                Ok(())
            });
        }
        cmd
    }

    /// Runs `start` with `options` (an encoded `Any`, may be empty) on stdin and returns the
    /// address the shim printed, as a `unix://` ttrpc address.
    pub fn start(&self, options: &[u8]) -> Result<String> {
        let what = format!("start shim {}", self.binary.display());
        // Close-on-exec: a shim another thread starts meanwhile must not inherit the write end.
        let (reader, writer) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| Error::io(what.clone())(e.into()))?;
        let writer2: OwnedFd = writer.try_clone().map_err(Error::io(what.clone()))?;
        let mut cmd = self.command("start", false);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::from(writer))
            .stderr(Stdio::from(writer2));
        let mut child = crate::daemon::reaper::spawn(&mut cmd).map_err(Error::io(what.clone()))?;
        // The writers now belong to the child only: EOF comes when it (and whatever it left
        // holding them) is done.
        drop(cmd);
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(options);
        }
        let mut out = Vec::new();
        let read = std::fs::File::from(reader).read_to_end(&mut out);
        let status = child.wait();
        crate::daemon::reaper::release(child.id());
        let status = status.map_err(Error::io(what.clone()))?;
        read.map_err(Error::io(what.clone()))?;
        let text = String::from_utf8_lossy(&out).trim().to_string();
        if !status.success() {
            let first = text.lines().last().unwrap_or("no output").to_string();
            return Err(Error::Shim(format!("{what} failed ({status}): {first}")));
        }
        if text.is_empty() {
            return Err(Error::Shim(format!("{what}: the shim printed no address")));
        }
        normalize_address(&text)
    }

    /// SIGKILLs the serving shim of this container if a process of it is still there: one that
    /// did not answer (stopped, or stuck) is declared dead and its container cleaned up by the
    /// `delete` action; left alive, it would serve a container that no longer exists once it
    /// runs again (measured: every SIGSTOPped shim lived on after SIGCONT, under containerd too).
    /// The shim is the process started with this `-namespace` and `-id`, working in the bundle.
    /// Returns the pids killed.
    pub fn kill_lingering(&self) -> Vec<i32> {
        let me = std::process::id() as i32;
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        let mut killed = Vec::new();
        for pid in dir
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        {
            if pid == me || !self.is_shim_process(pid) {
                continue;
            }
            if nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            )
            .is_ok()
            {
                log::warn!(
                    "container {}/{}: killed its unresponsive shim (pid {pid})",
                    self.namespace,
                    self.id
                );
                killed.push(pid);
            }
        }
        killed
    }

    fn is_shim_process(&self, pid: i32) -> bool {
        let cwd = std::fs::read_link(format!("/proc/{pid}/cwd"));
        if !cwd.is_ok_and(|c| c == self.bundle) {
            return false;
        }
        let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            return false;
        };
        let args: Vec<&[u8]> = raw.split(|b| *b == 0).collect();
        let flag = |name: &str, value: &str| {
            args.windows(2)
                .any(|w| w[0] == name.as_bytes() && w[1] == value.as_bytes())
        };
        // Not the short-lived `start` or `delete` actions: the serving shim.
        let action = |a: &str| args.contains(&a.as_bytes());
        flag("-namespace", &self.namespace)
            && flag("-id", &self.id)
            && !action("delete")
            && !action("start")
    }

    /// Runs the shim's `delete` action (cleanup after a dead shim) and parses its answer. It
    /// runs the OCI runtime, which can hang: past [`delete_timeout`] its process group is killed
    /// and the action reported as timed out.
    pub fn delete(&self) -> Result<DeleteResponse> {
        let what = format!("run {} delete", self.binary.display());
        let limit = delete_timeout();
        let mut cmd = self.command("delete", true);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own group: on a timeout, what it started (the runtime) is killed with it.
            .process_group(0);
        let child = crate::daemon::reaper::spawn(&mut cmd).map_err(Error::io(what.clone()))?;
        let pid = child.id();
        let out = crate::daemon::shim::bounded::wait_with_output(child, limit);
        crate::daemon::reaper::release(pid);
        let out = out.map_err(Error::io(what.clone()))?;
        let last_line = |bytes: &[u8]| {
            String::from_utf8_lossy(bytes)
                .trim()
                .lines()
                .last()
                .unwrap_or("no output")
                .to_string()
        };
        let Some(status) = out.status else {
            return Err(Error::TimedOut(format!(
                "{what} (pid {pid}) did not finish in {} ms: killed with its process group; \
                 last error output: {}",
                limit.as_millis(),
                last_line(&out.stderr)
            )));
        };
        if !status.success() {
            return Err(Error::Shim(format!(
                "{what} failed ({status}): {}",
                last_line(&out.stderr)
            )));
        }
        DeleteResponse::parse_from_bytes(&out.stdout)
            .map_err(|e| Error::Shim(format!("{what}: not a DeleteResponse: {e}")))
    }
}

/// How long a shim's `delete` action may run: the runtime timeout the shim gives runc (60 s)
/// plus the margin the daemon allows any shim call. `TETHER_SHIM_DELETE_TIMEOUT_MS` overrides it
/// (tests with a shim that hangs on purpose).
pub fn delete_timeout() -> Duration {
    std::env::var("TETHER_SHIM_DELETE_TIMEOUT_MS")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|ms| *ms > 0)
        .map(Duration::from_millis)
        .unwrap_or(
            crate::daemon::containers::RUNTIME_TIMEOUT
                + tether_protocol::task_service::REPLY_MARGIN,
        )
}

/// A shim's printed address as a ttrpc client address (`unix:///path`): the bare address
/// (ours; containerd 1.x's shims), or the bootstrap JSON of containerd 2.x's shims
/// (`{"version":3,"address":"unix:///...","protocol":"ttrpc"}`). The version names the task
/// API served (`containerd.task.v3.Task` for 3), which the task client learns by itself.
pub fn normalize_address(text: &str) -> Result<String> {
    let text = text.trim();
    if !text.starts_with('{') {
        return Ok(plain_address(text));
    }
    #[derive(serde::Deserialize)]
    struct Bootstrap {
        address: String,
        #[serde(default)]
        protocol: String,
    }
    let b: Bootstrap = serde_json::from_str(text)
        .map_err(|e| Error::Shim(format!("the shim's bootstrap answer {text:?}: {e}")))?;
    if !b.protocol.is_empty() && b.protocol != "ttrpc" {
        return Err(Error::Shim(format!(
            "the shim serves {} at {}: only ttrpc is supported",
            b.protocol, b.address
        )));
    }
    Ok(plain_address(&b.address))
}

fn plain_address(text: &str) -> String {
    if text.starts_with('/') {
        format!("unix://{text}")
    } else {
        text.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_runtimes_and_addresses() {
        let e = find_shim("io.containerd.nosuchthing.v9").expect_err("unknown");
        assert!(e.to_string().starts_with("unknown runtime"), "{e}");
        assert_eq!(normalize_address("/run/x").expect("ok"), "unix:///run/x");
        assert_eq!(
            normalize_address("unix:///run/x").expect("ok"),
            "unix:///run/x"
        );
    }

    #[test]
    fn bootstrap_json_of_containerd_2_shims_gives_the_address() {
        let json = r#"{"version":3,"address":"unix:///run/containerd/s/ab","protocol":"ttrpc"}"#;
        assert_eq!(
            normalize_address(json).expect("ok"),
            "unix:///run/containerd/s/ab"
        );
        let grpc = r#"{"version":3,"address":"unix:///run/x","protocol":"grpc"}"#;
        let e = normalize_address(grpc).expect_err("grpc");
        assert!(e.to_string().contains("only ttrpc"), "{e}");
        assert!(normalize_address("{not json").is_err());
    }
}
