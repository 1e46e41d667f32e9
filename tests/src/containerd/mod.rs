//! A private containerd per test.
//!
//! [`Containerd::start`] makes a fresh directory `/run/tt-PID-N-RAND` (short: unix socket paths
//! must fit in 108 bytes) holding its `config.toml` ([`config_toml`]: version 2, or 3 for
//! containerd 2.x; CRI disabled unless [`Options::cri`] enables it ([`crate::cri`]),
//! NRI disabled, every other plugin at its default), `root/`, `state/`,
//! `tmp/`, `opt/`, the gRPC socket `c.sock`, the ttrpc socket `c.sock.ttrpc` and the log
//! `containerd.log`. Nothing is shared with another instance or with a system containerd, so
//! tests run in parallel. Which containerd runs is [`crate::flavor`]'s choice (the system's by
//! default). Its `PATH` starts with [`bin_dir`], so the runtime `io.containerd.tether.v2` finds
//! our `containerd-shim-tether-v2`; containerd's own `io.containerd.runc.v2` is the one of the
//! same package (the system's from /usr/bin).
//!
//! Dropping it (or [`Containerd::shutdown`]) leaves nothing behind, whatever state the test left:
//! 1. if the daemon answers: every task of every namespace is force-deleted through ctr;
//! 2. the daemon is stopped by pid (SIGTERM, SIGKILL after 5 s) and reaped;
//! 3. every process of its shims (`-address <our socket>` on their command line), their
//!    descendants and whatever is still in the containers' cgroups are SIGKILLed by pid;
//! 4. leftover shim sockets (from the bundles' `address` files) are removed;
//! 5. everything mounted under the directory is unmounted (`MNT_DETACH`, deepest first);
//! 6. the namespaces' cgroups and (empty) runc state roots are removed, then the directory.
//!
//! Containers and namespaces must be named uniquely ([`crate::unique_id`]): cgroups are named
//! after them and are shared by every containerd on the machine.
//!
//! [`bin_dir`]: crate::bins::bin_dir

mod cleanup;

use crate::bins::bin_dir;
use crate::cmd::{self, exit_code};
use crate::ctr::{parse_task_ls, Ctr};
use crate::flavor::flavor;
use crate::ids::unique_id;
use crate::procs::{self, describe};
use crate::{cgroups, mounts};
pub use cleanup::{Cleanup, LeakCheck};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// containerd's own shim (Go), installed with Debian's containerd.
pub const RUNC_RUNTIME: &str = "io.containerd.runc.v2";
/// Our shim, `containerd-shim-tether-v2`.
pub const TETHER_RUNTIME: &str = "io.containerd.tether.v2";
/// The snapshotter images are unpacked with (containerd's default; works on this machine).
pub const SNAPSHOTTER: &str = "overlayfs";
/// Where ctr (the containerd client) makes each task's stdio FIFOs: `<this>/<random>/<id>-stdin`...
pub const CTR_FIFO_DIR: &str = "/run/containerd/fifo";
/// Where the task plugin keeps bundles, under the state dir: `<this>/<namespace>/<id>`.
pub const TASK_STATE_DIR: &str = "io.containerd.runtime.v2.task";

/// How to start a [`Containerd`]; `Options::default()` is what [`Containerd::start`] uses.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Directories put on containerd's `PATH` before [`bin_dir`].
    pub path_prefix: Vec<PathBuf>,
    /// TOML tables appended to the generated config (for example a `[plugins."..."]` section).
    pub extra_config: String,
    /// containerd's log level (default `info`); `debug` also makes it pass `-debug` to shims.
    pub log_level: Option<String>,
    /// How long to wait for the socket to answer (default 30 s).
    pub start_timeout: Option<Duration>,
    /// The CRI plugin, enabled with this config; disabled when `None`.
    pub cri: Option<crate::cri::CriConfig>,
    /// More variables in containerd's environment (what a service manager would set).
    pub env: Vec<(String, String)>,
}

/// A running private containerd; stopped and cleaned on drop.
pub struct Containerd {
    dir: PathBuf,
    opts: Options,
    child: Option<Child>,
    done: bool,
}

impl Containerd {
    /// Starts one with default [`Options`]; panics (with the log tail) if it does not come up.
    pub fn start() -> Containerd {
        Self::start_with(Options::default())
    }

    /// Starts one with `opts`.
    pub fn start_with(opts: Options) -> Containerd {
        let base = if is_writable_dir(Path::new("/run")) {
            PathBuf::from("/run")
        } else {
            PathBuf::from("/tmp")
        };
        let dir = base.join(unique_id("tt"));
        fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        // From here on, a panic drops `me`, which cleans up.
        let mut me = Containerd {
            dir,
            opts,
            child: None,
            done: false,
        };
        for d in ["root", "state", "tmp", "opt"] {
            fs::create_dir(me.dir.join(d)).unwrap_or_else(|e| panic!("mkdir {d}: {e}"));
        }
        fs::write(me.config_path(), me.config_toml()).expect("write config.toml");
        me.start_daemon();
        me
    }

    /// The generated config, in the file version the selected containerd reads natively.
    fn config_toml(&self) -> String {
        let mut extra = self.opts.extra_config.clone();
        if let Some(cri) = &self.opts.cri {
            extra.push_str(&cri.config_toml(&self.dir, flavor().version));
        }
        config_toml(
            &self.dir,
            flavor().version.file_version(),
            self.opts.log_level.as_deref().unwrap_or("info"),
            &extra,
            self.opts.cri.is_some(),
        )
    }

    /// The `PATH` containerd (and so every shim it starts) gets.
    fn daemon_path(&self) -> String {
        let mut parts: Vec<String> = self
            .opts
            .path_prefix
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        parts.push(bin_dir().display().to_string());
        // A containerd from the cache runs the runc shim of its own package.
        parts.extend(flavor().path_dir.iter().map(|p| p.display().to_string()));
        if let Some(p) = std::env::var_os("PATH") {
            parts.extend(p.to_string_lossy().split(':').map(String::from));
        }
        for p in [
            "/usr/local/sbin",
            "/usr/local/bin",
            "/usr/sbin",
            "/usr/bin",
            "/sbin",
            "/bin",
        ] {
            if !parts.iter().any(|x| x == p) {
                parts.push(p.to_string());
            }
        }
        parts.retain(|p| !p.is_empty());
        parts.join(":")
    }

    /// Starts the daemon process on the existing config and waits until it answers.
    fn start_daemon(&mut self) {
        assert!(self.child.is_none(), "containerd already running");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open containerd.log");
        let child = Command::new(&flavor().containerd)
            .arg("--config")
            .arg(self.config_path())
            .env("PATH", self.daemon_path())
            .envs(self.opts.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log fd"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start containerd: {e} (install Debian's containerd: `make deps`)")
            });
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let timeout = self.opts.start_timeout.unwrap_or(Duration::from_secs(30));
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                panic!(
                    "containerd exited during start-up with status {}\n{}",
                    exit_code(status),
                    self.log_excerpt()
                );
            }
            if self.address().exists() {
                let mut c = Command::new(&flavor().ctr);
                c.arg("--address").arg(self.address()).arg("version");
                match cmd::try_run(&mut c, None, Duration::from_secs(5)) {
                    Ok(out) if out.success() => return,
                    Ok(out) => last = out.to_string(),
                    Err(t) => last = t.to_string(),
                }
            }
            if Instant::now() >= deadline {
                panic!(
                    "containerd did not answer on {} within {timeout:?}; last `ctr version`: {last}\n{}",
                    self.address().display(),
                    self.log_excerpt()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The instance's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The gRPC socket (what `ctr --address` and shims' `-address` take).
    pub fn address(&self) -> PathBuf {
        self.dir.join("c.sock")
    }

    /// The ttrpc socket (the shims' `TTRPC_ADDRESS`).
    pub fn ttrpc_address(&self) -> PathBuf {
        self.dir.join("c.sock.ttrpc")
    }

    pub fn root(&self) -> PathBuf {
        self.dir.join("root")
    }

    pub fn state(&self) -> PathBuf {
        self.dir.join("state")
    }

    /// The bundle directory of task `id` in `namespace`.
    pub fn bundle(&self, namespace: &str, id: &str) -> PathBuf {
        self.state().join(TASK_STATE_DIR).join(namespace).join(id)
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("config.toml")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("containerd.log")
    }

    /// The daemon's pid, while it runs.
    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }

    /// Whether the daemon process is still running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(None)) => true,
            Some(_) => {
                // Exited on its own: reaped by try_wait.
                self.child = None;
                false
            }
            None => false,
        }
    }

    /// `ctr` against this daemon, in `namespace`.
    pub fn ctr(&self, namespace: &str) -> Ctr {
        Ctr::new(self.address(), namespace)
    }

    /// The whole log.
    pub fn log(&self) -> String {
        fs::read(self.log_path())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The last `lines` lines of the log (reads at most the last 64 KiB).
    pub fn log_tail(&self, lines: usize) -> String {
        let Ok(mut f) = File::open(self.log_path()) else {
            return String::new();
        };
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = f.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
        let mut buf = Vec::new();
        let _ = f.read_to_end(&mut buf);
        let text = String::from_utf8_lossy(&buf);
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The log tail, framed for a panic message.
    pub fn log_excerpt(&self) -> String {
        format!(
            "--- last lines of {} ---\n{}",
            self.log_path().display(),
            self.log_tail(40)
        )
    }

    /// Pids of the shims this daemon started that are still running.
    pub fn shim_pids(&self) -> Vec<i32> {
        procs::shim_pids(&self.address().display().to_string())
    }

    /// Stops only the daemon with `signal` (SIGKILL simulates a crash), waiting up to 5 s
    /// before SIGKILL, and reaps it. Shims and containers live on; [`Containerd::restart`]
    /// brings the daemon back on the same state.
    pub fn kill_daemon(&mut self, signal: i32) {
        if let Some(mut child) = self.child.take() {
            if let Ok(None) = child.try_wait() {
                // Not reaped yet, so the pid is still the daemon's.
                procs::signal(child.id() as i32, signal);
            }
            cmd::wait_deadline(
                &mut child,
                Instant::now() + Duration::from_secs(5),
                "containerd",
            );
        }
    }

    /// Stops the daemon (SIGTERM) if it runs and starts it again on the same config and state.
    pub fn restart(&mut self) {
        self.kill_daemon(libc::SIGTERM);
        self.start_daemon();
    }

    /// `namespace/id` of the tasks whose bundles are still there (not deleted yet).
    pub fn task_bundles(&self) -> Vec<String> {
        self.task_namespaces()
            .iter()
            .flat_map(|ns| {
                dir_names(&self.state().join(TASK_STATE_DIR).join(ns))
                    .into_iter()
                    .map(move |id| format!("{ns}/{id}"))
            })
            .collect()
    }

    /// Namespaces that had tasks (their directories in the task state dir).
    fn task_namespaces(&self) -> Vec<String> {
        dir_names(&self.state().join(TASK_STATE_DIR))
    }
}

impl std::fmt::Debug for Containerd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Containerd")
            .field("dir", &self.dir)
            .field("pid", &self.pid())
            .finish()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let report = self.cleanup();
        if !report.problems.is_empty() {
            eprintln!(
                "containerd at {}: cleanup problems: {:#?}",
                self.dir.display(),
                report.problems
            );
        }
    }
}

/// Names of the directories in `dir`, sorted (none if it cannot be read).
pub(crate) fn dir_names(dir: &Path) -> Vec<String> {
    let Ok(rd) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<String> = rd
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().to_str().map(String::from))
        .collect();
    v.sort();
    v
}

fn is_writable_dir(p: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    p.is_dir() && unsafe { libc::access(c.as_ptr(), libc::W_OK) } == 0
}

/// Plugins no test needs. Each containerd needs its own list: 2.x split the CRI plugin in three
/// and added a pod-sandbox controller which, without CRI, fails to load (2.1.9 warns: "no
/// plugins registered for io.containerd.transfer.v1"), and the sandbox-controllers API that
/// then fails for want of it.
fn disabled_plugins(config_version: u32) -> &'static [&'static str] {
    if config_version >= 3 {
        &[
            "io.containerd.grpc.v1.cri",
            "io.containerd.cri.v1.runtime",
            "io.containerd.cri.v1.images",
            "io.containerd.podsandbox.controller.v1.podsandbox",
            "io.containerd.grpc.v1.sandbox-controllers",
        ]
    } else {
        &["io.containerd.grpc.v1.cri"]
    }
}

/// A private containerd's `config.toml` under `dir`: file version 2 (containerd 1.6/1.7), 3
/// (2.0-2.2) or 4 (2.3+), CRI disabled, everything else at its default but NRI, whose socket is machine-wide
/// (on by default in 2.x): parallel daemons would fight over it.
pub fn config_toml(
    dir: &Path,
    config_version: u32,
    log_level: &str,
    extra: &str,
    cri: bool,
) -> String {
    let d = dir.display();
    let none: &[&str] = &[];
    let disabled = if cri {
        none
    } else {
        disabled_plugins(config_version)
    };
    let disabled = disabled
        .iter()
        .map(|p| format!("{p:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    // Version 4 (2.3) has the servers' sockets in their plugins' tables; the top-level tables
    // of earlier versions would be migrated, with a warning.
    let (servers, server_plugins) = if config_version >= 4 {
        (
            String::new(),
            format!(
                r#"  [plugins."io.containerd.server.v1.grpc"]
    address = "{d}/c.sock"
  [plugins."io.containerd.server.v1.ttrpc"]
    address = "{d}/c.sock.ttrpc"
"#
            ),
        )
    } else {
        (
            format!(
                r#"[grpc]
  address = "{d}/c.sock"

[ttrpc]
  address = "{d}/c.sock.ttrpc"

"#
            ),
            String::new(),
        )
    };
    format!(
        r#"version = {config_version}
root = "{d}/root"
state = "{d}/state"
temp = "{d}/tmp"
disabled_plugins = [{disabled}]

{servers}[debug]
  level = "{log_level}"

[plugins]
{server_plugins}  [plugins."io.containerd.internal.v1.opt"]
    path = "{d}/opt"
  [plugins."io.containerd.nri.v1.nri"]
    disable = true

{extra}
"#
    )
}
