//! Driving the OCI runtime CLI (runc by default; crun or another through `binary_name`).
//!
//! A command is spawned, never waited for here: it is a [`RuntimeCall`] whose exit the reaper
//! collects on the event loop (see `reaper.rs`), so a slow or hung runtime stops nothing else.
//! Its stdout and stderr go to memfds, read once it has exited. The runtime logs JSON to
//! `<bundle>/log.json`; when a command fails, its last error there is what the caller sees.

use crate::error::{Result, ShimError};
use crate::options::RuntimeOptions;
use crate::pid::Pid;
use nix::sys::memfd::{memfd_create, MFdFlags};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// A request that names no deadline gets none, as with containerd's shim, which sets none on
/// its runtime calls (a CRIU dump of a large container takes minutes): this far one stands for
/// it, and a live upgrade's record carries it like any other. A `Delete` of the container ends
/// such a call (`task/queue.rs`); `Kill` never waits for it.
pub const NO_DEADLINE: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Whether `deadline` is [`NO_DEADLINE`]'s rather than one a caller named.
pub fn is_unbounded(deadline: std::time::Instant, now: std::time::Instant) -> bool {
    deadline.saturating_duration_since(now) > NO_DEADLINE / 2
}

/// The runtime options the shim keeps per container (see `options.rs` for where they come
/// from). Persisted in the bundle: fields added later default when an older record is read.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RuntimeConfig {
    pub binary: String,
    pub root: String,
    #[serde(default)]
    pub systemd_cgroup: bool,
    #[serde(default)]
    pub no_pivot_root: bool,
    #[serde(default)]
    pub no_new_keyring: bool,
    /// CRIU for checkpoint (runc's `--criu`); empty: the runtime's default.
    #[serde(default)]
    pub criu_path: String,
    #[serde(default)]
    pub criu_image_path: String,
    #[serde(default)]
    pub criu_work_path: String,
    /// The cgroup containerd's own shim moves itself into; kept for the service to use.
    #[serde(default)]
    pub shim_cgroup: String,
    /// Owner of the stdio FIFOs (user-namespaced containers); kept for the service to use.
    #[serde(default)]
    pub io_uid: u32,
    #[serde(default)]
    pub io_gid: u32,
}

impl RuntimeConfig {
    pub const DEFAULT_BINARY: &'static str = "runc";
    pub const DEFAULT_ROOT: &'static str = "/run/containerd/runc";

    /// From containerd's options (`binary_name`, `root`, ...); the root gets the namespace.
    /// Paths must be absolute (programs may also be bare names looked up on `PATH`): a
    /// relative one would resolve against the shim's working directory, a bundle that holds
    /// the container's rootfs, and run or write image content as root.
    pub fn from_options(opts: &RuntimeOptions, namespace: &str) -> Result<Self> {
        program_name("BinaryName", &opts.binary_name)?;
        program_name("CriuPath", &opts.criu_path)?;
        absolute_path("Root", &opts.root)?;
        absolute_path("CriuImagePath", &opts.criu_image_path)?;
        absolute_path("CriuWorkPath", &opts.criu_work_path)?;
        let root = if opts.root.is_empty() {
            Self::DEFAULT_ROOT
        } else {
            &opts.root
        };
        Ok(RuntimeConfig {
            binary: if opts.binary_name.is_empty() {
                Self::DEFAULT_BINARY.into()
            } else {
                opts.binary_name.clone()
            },
            root: Path::new(root).join(namespace).display().to_string(),
            systemd_cgroup: opts.systemd_cgroup,
            no_pivot_root: opts.no_pivot_root,
            no_new_keyring: opts.no_new_keyring,
            criu_path: opts.criu_path.clone(),
            criu_image_path: opts.criu_image_path.clone(),
            criu_work_path: opts.criu_work_path.clone(),
            shim_cgroup: opts.shim_cgroup.clone(),
            io_uid: opts.io_uid,
            io_gid: opts.io_gid,
        })
    }
}

/// An absolute path, or a bare name (no `/`) for `PATH` to find; empty means the default.
fn program_name(option: &str, value: &str) -> Result<()> {
    let bare = !value.contains('/') && value != "." && value != "..";
    if value.is_empty() || value.starts_with('/') || bare {
        return Ok(());
    }
    Err(ShimError::InvalidArgument(format!(
        "runtime option {option} {value:?}: give an absolute path or a bare name found on PATH"
    )))
}

/// An absolute path; empty means the default.
fn absolute_path(option: &str, value: &str) -> Result<()> {
    if value.is_empty() || value.starts_with('/') {
        return Ok(());
    }
    Err(ShimError::InvalidArgument(format!(
        "runtime option {option} {value:?}: the path must be absolute"
    )))
}

/// The stdio a runtime command hands to the process it creates.
#[derive(Default)]
pub struct ProcessStdio {
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
}

pub struct Runtime {
    pub config: RuntimeConfig,
    log: PathBuf,
}

/// A runtime command in flight. Its exit comes from the reaper; [`RuntimeCall::finish`] turns
/// it into the command's stdout or the runtime's own error.
pub struct RuntimeCall {
    pub pid: Pid,
    /// "runc create", for messages.
    pub what: String,
    out: File,
    err: File,
    log: PathBuf,
}

/// One line of the runtime's JSON log.
#[derive(Deserialize)]
struct LogLine {
    #[serde(default)]
    level: String,
    #[serde(default)]
    msg: String,
}

fn memfd(name: &str) -> Result<File> {
    let fd = memfd_create(name, MFdFlags::MFD_CLOEXEC).map_err(ShimError::nix("memfd_create"))?;
    Ok(File::from(fd))
}

fn read_all(mut f: &File) -> String {
    let mut s = String::new();
    let _ = f.seek(SeekFrom::Start(0));
    let _ = f.read_to_string(&mut s);
    s
}

impl Runtime {
    pub fn new(config: RuntimeConfig, bundle: &Path) -> Self {
        Runtime {
            config,
            log: bundle.join("log.json"),
        }
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.config.binary);
        crate::signals::unblocked(&mut cmd);
        cmd.arg("--root").arg(&self.config.root);
        cmd.arg("--log").arg(&self.log);
        cmd.arg("--log-format").arg("json");
        if self.config.systemd_cgroup {
            cmd.arg("--systemd-cgroup");
        }
        if !self.config.criu_path.is_empty() {
            cmd.arg("--criu").arg(&self.config.criu_path);
        }
        cmd
    }

    /// Starts the runtime with `args`. The caller owns the returned call until its exit.
    fn spawn(&self, op: &str, args: &[&str], stdio: ProcessStdio) -> Result<RuntimeCall> {
        let out = memfd("runtime-stdout")?;
        let err = memfd("runtime-stderr")?;
        let mut cmd = self.command();
        cmd.args(args);
        let dup = |f: &File| {
            f.try_clone()
                .map(Stdio::from)
                .map_err(ShimError::io("dup memfd"))
        };
        cmd.stdin(stdio.stdin.map(Stdio::from).unwrap_or_else(Stdio::null));
        cmd.stdout(match stdio.stdout {
            Some(fd) => Stdio::from(fd),
            None => dup(&out)?,
        });
        cmd.stderr(match stdio.stderr {
            Some(fd) => Stdio::from(fd),
            None => dup(&err)?,
        });
        let what = format!("{} {op}", self.config.binary);
        let child = cmd.spawn().map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                ShimError::Runtime(format!(
                    "runtime binary {:?} not found (on PATH or as a path): {e}",
                    self.config.binary
                ))
            } else {
                ShimError::Io {
                    context: format!("{what}: cannot execute {:?}", self.config.binary),
                    source: e,
                }
            }
        })?;
        // The child is reaped by the reaper (waitpid(-1)); `Child` is dropped without a wait.
        let pid = Pid::new(child.id() as i64).ok_or_else(|| {
            ShimError::Runtime(format!("{what}: the kernel gave pid {}", child.id()))
        })?;
        Ok(RuntimeCall {
            pid,
            what,
            out,
            err,
            log: self.log.clone(),
        })
    }

    #[allow(clippy::too_many_arguments)]
    pub fn create(
        &self,
        id: &str,
        bundle: &Path,
        pid_file: &Path,
        console_socket: Option<&Path>,
        stdio: ProcessStdio,
    ) -> Result<RuntimeCall> {
        let bundle = bundle.display().to_string();
        let pid_file = pid_file.display().to_string();
        let mut args = vec!["create", "--bundle", &bundle, "--pid-file", &pid_file];
        let console;
        if let Some(c) = console_socket {
            console = c.display().to_string();
            args.extend(["--console-socket", &console]);
        }
        if self.config.no_pivot_root {
            args.push("--no-pivot");
        }
        if self.config.no_new_keyring {
            args.push("--no-new-keyring");
        }
        args.push(id);
        self.spawn("create", &args, stdio)
    }

    /// `restore --detach`: the container comes back from the CRIU image in `image`, running;
    /// its init's pid goes to `pid_file`. The shim stays the subreaper (`--no-subreaper`).
    #[allow(clippy::too_many_arguments)]
    pub fn restore(
        &self,
        id: &str,
        bundle: &Path,
        pid_file: &Path,
        image: &Path,
        work: &Path,
        console_socket: Option<&Path>,
        stdio: ProcessStdio,
    ) -> Result<RuntimeCall> {
        let bundle = bundle.display().to_string();
        let pid_file = pid_file.display().to_string();
        let image = image.display().to_string();
        let work = work.display().to_string();
        let mut args = vec![
            "restore",
            "--detach",
            "--no-subreaper",
            "--bundle",
            &bundle,
            "--pid-file",
            &pid_file,
            "--image-path",
            &image,
            "--work-path",
            &work,
        ];
        let console;
        if let Some(c) = console_socket {
            console = c.display().to_string();
            args.extend(["--console-socket", &console]);
        }
        if self.config.no_pivot_root {
            args.push("--no-pivot");
        }
        args.push(id);
        self.spawn("restore", &args, stdio)
    }

    pub fn start(&self, id: &str) -> Result<RuntimeCall> {
        self.spawn("start", &["start", id], ProcessStdio::default())
    }

    pub fn exec(
        &self,
        id: &str,
        spec: &Path,
        pid_file: &Path,
        console_socket: Option<&Path>,
        stdio: ProcessStdio,
    ) -> Result<RuntimeCall> {
        let spec = spec.display().to_string();
        let pid_file = pid_file.display().to_string();
        let mut args = vec![
            "exec",
            "--detach",
            "--process",
            &spec,
            "--pid-file",
            &pid_file,
        ];
        let console;
        if let Some(c) = console_socket {
            console = c.display().to_string();
            args.extend(["--console-socket", &console]);
        }
        args.push(id);
        self.spawn("exec", &args, stdio)
    }

    pub fn kill(&self, id: &str, signal: u32, all: bool) -> Result<RuntimeCall> {
        let sig = signal.to_string();
        let mut args = vec!["kill"];
        if all {
            args.push("--all");
        }
        args.extend([id, &sig]);
        self.spawn("kill", &args, ProcessStdio::default())
    }

    pub fn delete(&self, id: &str, force: bool) -> Result<RuntimeCall> {
        let mut args = vec!["delete"];
        if force {
            args.push("--force");
        }
        args.push(id);
        self.spawn("delete", &args, ProcessStdio::default())
    }

    pub fn pause(&self, id: &str) -> Result<RuntimeCall> {
        self.spawn("pause", &["pause", id], ProcessStdio::default())
    }

    pub fn resume(&self, id: &str) -> Result<RuntimeCall> {
        self.spawn("resume", &["resume", id], ProcessStdio::default())
    }

    /// `checkpoint`: dumps the container with CRIU into `image` (`work` for CRIU's logs).
    pub fn checkpoint(
        &self,
        id: &str,
        image: &Path,
        work: &Path,
        opts: &tether_protocol::api::runc_options::CheckpointOptions,
    ) -> Result<RuntimeCall> {
        let image = image.display().to_string();
        let work = work.display().to_string();
        // `--criu` (the `CriuPath` option) is a global flag: `command()` puts it first.
        let mut args = vec!["checkpoint", "--image-path", &image, "--work-path", &work];
        if !opts.exit {
            args.push("--leave-running");
        }
        for (on, flag) in [
            (opts.open_tcp, "--tcp-established"),
            (opts.external_unix_sockets, "--ext-unix-sk"),
            (opts.terminal, "--shell-job"),
            (opts.file_locks, "--file-locks"),
        ] {
            if on {
                args.push(flag);
            }
        }
        let manage;
        if !opts.cgroups_mode.is_empty() {
            manage = opts.cgroups_mode.clone();
            args.extend(["--manage-cgroups-mode", &manage]);
        }
        let empty: Vec<String> = opts
            .empty_namespaces
            .iter()
            .map(|ns| format!("--empty-ns={ns}"))
            .collect();
        args.extend(empty.iter().map(String::as_str));
        args.push(id);
        self.spawn("checkpoint", &args, ProcessStdio::default())
    }

    pub fn update(&self, id: &str, resources: &Path) -> Result<RuntimeCall> {
        let r = resources.display().to_string();
        self.spawn(
            "update",
            &["update", "--resources", &r, id],
            ProcessStdio::default(),
        )
    }

    /// The pids in the container (`ps --format json`); [`parse_ps`] reads the output.
    pub fn ps(&self, id: &str) -> Result<RuntimeCall> {
        self.spawn(
            "ps",
            &["ps", "--format", "json", id],
            ProcessStdio::default(),
        )
    }
}

impl RuntimeCall {
    /// The command's stdout after it exited with `status`; on failure, the runtime's own last
    /// error (its log, then its stderr).
    pub fn finish(self, status: u32) -> Result<String> {
        if status != 0 {
            let why = last_log_error(&self.log)
                .or_else(|| Some(read_all(&self.err).trim().to_string()).filter(|s| !s.is_empty()))
                .unwrap_or_else(|| format!("exit status {status}"));
            // runc logs its own "runc create failed: ..." line; do not say it twice.
            let prefix = format!("{} failed", self.what);
            let message = if why.starts_with(&prefix) {
                why
            } else {
                format!("{prefix}: {why}")
            };
            return Err(ShimError::Runtime(message));
        }
        Ok(read_all(&self.out))
    }

    /// Ends a call that ran past its deadline; its exit still comes through the reaper.
    pub fn kill(&self) {
        let _ = self.pid.signal(nix::sys::signal::Signal::SIGKILL);
    }

    /// Waits for the call here, for the short-lived `delete` action only (not the event loop,
    /// which never waits): polls `waitpid` on this pid until `timeout`, then kills it.
    pub fn wait_blocking(self, timeout: Duration) -> Result<String> {
        use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
        let pid = nix::unistd::Pid::from_raw(self.pid.raw());
        let deadline = std::time::Instant::now() + timeout;
        loop {
            match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(_, code)) => return self.finish(code as u32),
                Ok(WaitStatus::Signaled(_, sig, _)) => return self.finish(128 + sig as u32),
                Ok(_) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Ok(_) => {
                    self.kill();
                    let _ = waitpid(pid, None);
                    return Err(ShimError::DeadlineExceeded(format!(
                        "{}: still running after {timeout:?}; killed pid {}",
                        self.what, self.pid
                    )));
                }
                Err(e) => return Err(ShimError::nix(format!("waitpid {}", self.what))(e)),
            }
        }
    }
}

/// How much of the end of the runtime's log is read for its last error: the log grows with
/// every call over the container's life, and is read on the loop.
const LOG_TAIL: u64 = 64 << 10;

/// The last error the runtime logged, if any.
fn last_log_error(log: &Path) -> Option<String> {
    let tail = crate::files::read_tail(log, LOG_TAIL, "runtime log").ok()?;
    String::from_utf8_lossy(&tail)
        .lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<LogLine>(l).ok())
        .find(|l| l.level == "error" || l.level == "fatal")
        .map(|l| l.msg)
}

/// `ps --format json` output: a JSON array of pids (or `null`).
pub fn parse_ps(binary: &str, out: &str) -> Result<Vec<u32>> {
    let out = out.trim();
    if out.is_empty() || out == "null" {
        return Ok(Vec::new());
    }
    serde_json::from_str(out)
        .map_err(|e| ShimError::Runtime(format!("{binary} ps: unreadable output {out:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn the_last_error_comes_from_the_log_tail_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("log.json");
        let mut f = std::fs::File::create(&log).expect("create");
        // What came long before (here: bytes that are not even text) is never read.
        f.write_all(b"\xff\xfe not utf-8 from an old call\n")
            .expect("write");
        let line = br#"{"level":"info","msg":"filler","time":"2026-12-05T00:00:00Z"}"#;
        for _ in 0..(4 * LOG_TAIL as usize / line.len()) {
            f.write_all(line)
                .and_then(|_| f.write_all(b"\n"))
                .expect("write");
        }
        f.write_all(br#"{"level":"error","msg":"runc exec failed: boom","time":"x"}"#)
            .and_then(|_| f.write_all(b"\n"))
            .expect("write");
        f.write_all(line)
            .and_then(|_| f.write_all(b"\n"))
            .expect("write");
        drop(f);
        assert_eq!(
            last_log_error(&log).as_deref(),
            Some("runc exec failed: boom")
        );
    }
}
