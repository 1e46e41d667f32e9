//! Driving the OCI runtime CLI (runc by default; crun or another through `binary_name`).
//!
//! Every command runs through the reaper (see `reaper.rs`). The runtime logs JSON to
//! `<bundle>/log.json`; when a command fails, its last error there is what the caller sees.

use crate::error::{Result, ShimError};
use crate::options::RuntimeOptions;
use crate::reaper::Reaper;
use nix::sys::memfd::{memfd_create, MFdFlags};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// How long a runtime command may take before it is killed.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

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
    pub fn from_options(opts: &RuntimeOptions, namespace: &str) -> Self {
        let root = if opts.root.is_empty() {
            Self::DEFAULT_ROOT
        } else {
            &opts.root
        };
        RuntimeConfig {
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
        }
    }
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
        cmd.arg("--root").arg(&self.config.root);
        cmd.arg("--log").arg(&self.log);
        cmd.arg("--log-format").arg("json");
        if self.config.systemd_cgroup {
            cmd.arg("--systemd-cgroup");
        }
        cmd
    }

    /// The last error the runtime logged, if any.
    fn last_log_error(&self) -> Option<String> {
        let text = std::fs::read_to_string(&self.log).ok()?;
        text.lines()
            .rev()
            .filter_map(|l| serde_json::from_str::<LogLine>(l).ok())
            .find(|l| l.level == "error" || l.level == "fatal")
            .map(|l| l.msg)
    }

    /// Runs the runtime with `args`; returns its stdout. On failure the error carries the
    /// runtime's own last error (log, then stderr).
    fn run(
        &self,
        reaper: &mut Reaper,
        op: &str,
        args: &[&str],
        stdio: ProcessStdio,
    ) -> Result<String> {
        let out = memfd("runtime-stdout")?;
        let err = memfd("runtime-stderr")?;
        let mut cmd = self.command();
        cmd.args(args);
        let to_stdio = |fd: Option<OwnedFd>| fd.map(Stdio::from);
        cmd.stdin(to_stdio(stdio.stdin).unwrap_or_else(Stdio::null));
        match stdio.stdout {
            Some(fd) => cmd.stdout(Stdio::from(fd)),
            None => cmd.stdout(Stdio::from(
                out.try_clone().map_err(ShimError::io("dup memfd"))?,
            )),
        };
        match stdio.stderr {
            Some(fd) => cmd.stderr(Stdio::from(fd)),
            None => cmd.stderr(Stdio::from(
                err.try_clone().map_err(ShimError::io("dup memfd"))?,
            )),
        };
        let what = format!("{} {op}", self.config.binary);
        let status = reaper
            .run(&mut cmd, &what, COMMAND_TIMEOUT)
            .map_err(|e| match e {
                ShimError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                    ShimError::Runtime(format!(
                        "runtime binary {:?} not found (on PATH or as a path): {source}",
                        self.config.binary
                    ))
                }
                other => other,
            })?;
        drop(cmd);
        if status != 0 {
            let stderr = read_all(&err);
            let why = self
                .last_log_error()
                .or_else(|| Some(stderr.trim().to_string()).filter(|s| !s.is_empty()))
                .unwrap_or_else(|| format!("exit status {status}"));
            // runc logs its own "runc create failed: ..." line; do not say it twice.
            let prefix = format!("{what} failed");
            let message = if why.starts_with(&prefix) {
                why
            } else {
                format!("{prefix}: {why}")
            };
            return Err(ShimError::Runtime(message));
        }
        Ok(read_all(&out))
    }

    #[allow(clippy::too_many_arguments)]
    pub fn create(
        &self,
        reaper: &mut Reaper,
        id: &str,
        bundle: &Path,
        pid_file: &Path,
        console_socket: Option<&Path>,
        stdio: ProcessStdio,
    ) -> Result<()> {
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
        self.run(reaper, "create", &args, stdio).map(drop)
    }

    pub fn start(&self, reaper: &mut Reaper, id: &str) -> Result<()> {
        self.run(reaper, "start", &["start", id], ProcessStdio::default())
            .map(drop)
    }

    pub fn exec(
        &self,
        reaper: &mut Reaper,
        id: &str,
        spec: &Path,
        pid_file: &Path,
        console_socket: Option<&Path>,
        stdio: ProcessStdio,
    ) -> Result<()> {
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
        self.run(reaper, "exec", &args, stdio).map(drop)
    }

    pub fn kill(&self, reaper: &mut Reaper, id: &str, signal: u32, all: bool) -> Result<()> {
        let sig = signal.to_string();
        let mut args = vec!["kill"];
        if all {
            args.push("--all");
        }
        args.extend([id, &sig]);
        self.run(reaper, "kill", &args, ProcessStdio::default())
            .map(drop)
    }

    pub fn delete(&self, reaper: &mut Reaper, id: &str, force: bool) -> Result<()> {
        let mut args = vec!["delete"];
        if force {
            args.push("--force");
        }
        args.push(id);
        self.run(reaper, "delete", &args, ProcessStdio::default())
            .map(drop)
    }

    pub fn pause(&self, reaper: &mut Reaper, id: &str) -> Result<()> {
        self.run(reaper, "pause", &["pause", id], ProcessStdio::default())
            .map(drop)
    }

    pub fn resume(&self, reaper: &mut Reaper, id: &str) -> Result<()> {
        self.run(reaper, "resume", &["resume", id], ProcessStdio::default())
            .map(drop)
    }

    /// `checkpoint`: dumps the container with CRIU into `image` (`work` for CRIU's logs).
    pub fn checkpoint(
        &self,
        reaper: &mut Reaper,
        id: &str,
        image: &Path,
        work: &Path,
        opts: &tether_protocol::api::runc_options::CheckpointOptions,
    ) -> Result<()> {
        let image = image.display().to_string();
        let work = work.display().to_string();
        // `--criu` is a global flag of runc's: it goes before the command.
        let mut args = Vec::new();
        if !self.config.criu_path.is_empty() {
            args.extend(["--criu", self.config.criu_path.as_str()]);
        }
        args.extend(["checkpoint", "--image-path", &image, "--work-path", &work]);
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
        self.run(reaper, "checkpoint", &args, ProcessStdio::default())
            .map(drop)
    }

    pub fn update(&self, reaper: &mut Reaper, id: &str, resources: &Path) -> Result<()> {
        let r = resources.display().to_string();
        self.run(
            reaper,
            "update",
            &["update", "--resources", &r, id],
            ProcessStdio::default(),
        )
        .map(drop)
    }

    /// The pids in the container (`ps --format json`).
    pub fn ps(&self, reaper: &mut Reaper, id: &str) -> Result<Vec<u32>> {
        let out = self.run(
            reaper,
            "ps",
            &["ps", "--format", "json", id],
            ProcessStdio::default(),
        )?;
        let out = out.trim();
        if out.is_empty() || out == "null" {
            return Ok(Vec::new());
        }
        serde_json::from_str(out).map_err(|e| {
            ShimError::Runtime(format!(
                "{} ps: unreadable output {out:?}: {e}",
                self.config.binary
            ))
        })
    }
}
