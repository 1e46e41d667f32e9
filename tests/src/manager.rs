//! A private `tether daemon` per test, and `tether` CLI calls against it.
//!
//! [`Daemon::start`] runs `target/release/tether daemon` with its own root, state and socket in
//! a temp dir; [`Daemon::tether`] builds a CLI command with `TETHER_SOCKET` pointing at it.
//! Dropping the daemon stops it by pid, kills whatever shims (and their containers) it left,
//! removes their cgroups and unmounts anything left under its directory.

use crate::cmd::{self, CmdOutput};
use crate::containerd::dir_names;
use crate::{cgroups, mounts, procs, wait_until};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// containerd's Go shim, run by the manager unchanged.
pub const RUNC_RUNTIME: &str = "io.containerd.runc.v2";
/// Our shim.
pub const TETHER_RUNTIME: &str = "io.containerd.tether.v2";

/// How long one CLI call may take before the test fails with its output.
pub const CLI_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Daemon {
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// Namespaces named in CLI calls: their (empty) cgroup parents are removed on drop.
    namespaces: Mutex<Vec<String>>,
    /// More `tether daemon` flags (kept for restarts).
    extra: Vec<String>,
    /// More environment for the daemon (and so its shims), kept for restarts.
    env: Vec<(String, String)>,
}

impl Daemon {
    /// Starts a daemon and waits until its socket answers.
    pub fn start() -> Daemon {
        Daemon::start_with(&[])
    }

    /// Starts a daemon with more flags (`--log-max-size 4096`), kept across restarts.
    pub fn start_with(extra: &[&str]) -> Daemon {
        Daemon::start_env(extra, &[])
    }

    /// Starts a daemon with more flags and environment variables (`PATH` with a test's own
    /// shim), both kept across restarts.
    pub fn start_env(extra: &[&str], env: &[(&str, &str)]) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("tether-mgr-")
            .tempdir()
            .expect("create the daemon's temp dir");
        let mut d = Daemon {
            dir,
            child: None,
            namespaces: Mutex::new(Vec::new()),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        d.spawn();
        d
    }

    /// Runs `tether daemon` on this daemon's directories (its log appended to `daemon.log`)
    /// and waits until it answers: after rediscovery, which comes before the socket.
    fn spawn(&mut self) {
        let d = self;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.dir().join("daemon.log"))
            .expect("open daemon.log");
        let child = Command::new(crate::tether_binary())
            .arg("daemon")
            .arg("--root")
            .arg(d.root())
            .arg("--state")
            .arg(d.state())
            .arg("--socket")
            .arg(d.socket())
            .args(&d.extra)
            .envs(d.env.iter().map(|(k, v)| (k, v)))
            .env_remove("TETHER_SOCKET")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("start tether daemon");
        d.child = Some(child);
        let socket = d.socket();
        let up = wait_until(Duration::from_secs(60), || {
            std::os::unix::net::UnixStream::connect(&socket).is_ok()
        });
        assert!(up, "tether daemon did not come up; log:\n{}", d.log());
    }

    /// Sets an environment variable for the daemon's next start (kept for later restarts).
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_string(), value.to_string()));
    }

    /// SIGKILLs the daemon (its shims live on) and reaps it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the daemon again on the same state (after [`Daemon::kill9`] or
    /// [`Daemon::stop`]) and waits until it serves.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart: the daemon is still running");
        self.spawn();
    }

    /// The daemon's event journal.
    pub fn journal(&self) -> PathBuf {
        self.state().join("events.journal")
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
    pub fn root(&self) -> PathBuf {
        self.dir().join("root")
    }
    pub fn state(&self) -> PathBuf {
        self.dir().join("state")
    }
    /// The OCI runtime root this daemon's shims use (`<--root>/runc`).
    pub fn runc_root(&self) -> PathBuf {
        self.root().join("runc")
    }
    /// `runc --root <runc_root>/<ns> list -q`: the containers runc keeps for this daemon.
    pub fn runc_list(&self, namespace: &str) -> Vec<String> {
        crate::shim::runc_list_in(&self.runc_root().join(namespace))
    }
    pub fn socket(&self) -> PathBuf {
        self.dir().join("run").join("tether.sock")
    }
    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir().join("daemon.log")).unwrap_or_default()
    }

    /// A `tether` CLI command talking to this daemon.
    pub fn tether(&self) -> Command {
        let mut c = Command::new(crate::tether_binary());
        c.env("TETHER_SOCKET", self.socket());
        c
    }

    /// Runs `tether ARGS` (stdin /dev/null) and returns what it said.
    pub fn run(&self, args: &[&str]) -> CmdOutput {
        if let Some(w) = args
            .windows(2)
            .find(|w| w[0] == "--namespace" || w[0] == "-n")
        {
            let mut seen = self.namespaces.lock().unwrap_or_else(|p| p.into_inner());
            if !seen.iter().any(|n| n == w[1]) {
                seen.push(w[1].to_string());
            }
        }
        cmd::run(self.tether().args(args), None, CLI_TIMEOUT)
    }

    /// Like [`Daemon::run`], and fails the test (with the daemon's log) unless it succeeds.
    pub fn ok(&self, args: &[&str]) -> CmdOutput {
        let out = self.run(args);
        assert!(
            out.success(),
            "`tether {}` failed:\n{out}\n--- daemon log ---\n{}",
            args.join(" "),
            self.log()
        );
        out
    }

    /// `tether run` on the shared busybox rootfs, built up with [`RunCmd`]'s flags.
    pub fn run_cmd(&self) -> RunCmd<'_> {
        RunCmd {
            d: self,
            verb: "run",
            ns: None,
            flags: Vec::new(),
        }
    }

    /// `tether create` on the shared busybox rootfs (see [`Daemon::run_cmd`]).
    pub fn create_cmd(&self) -> RunCmd<'_> {
        RunCmd {
            verb: "create",
            ..self.run_cmd()
        }
    }

    /// `tether -n NS run -d --runtime R --rootfs <busybox> ID -- CMD...`: a detached container
    /// on the shared busybox rootfs; its init's pid. Fails the test unless it starts.
    pub fn run_detached(&self, ns: &str, runtime: &str, id: &str, cmd: &[&str]) -> i32 {
        let out = self
            .run_cmd()
            .ns(ns)
            .runtime(runtime)
            .flag("-d")
            .ok(id, cmd);
        out.stdout
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("`tether run -d` printed no pid ({e}): {out}"))
    }

    /// Shim processes this daemon launched (their `-address` is its socket).
    pub fn shim_pids(&self) -> Vec<i32> {
        procs::shim_pids(&self.socket().display().to_string())
    }

    /// `tether events ARGS` in the background.
    pub fn events(&self, args: &[&str]) -> EventStream {
        EventStream::start(self.tether().arg("events").args(args))
    }

    /// (namespace, id) of every container directory in the state dir.
    fn containers_on_disk(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for ns in std::fs::read_dir(self.state())
            .into_iter()
            .flatten()
            .flatten()
        {
            for c in std::fs::read_dir(ns.path()).into_iter().flatten().flatten() {
                out.push((
                    ns.file_name().to_string_lossy().into_owned(),
                    c.file_name().to_string_lossy().into_owned(),
                ));
            }
        }
        out
    }

    /// What the test's containers left: shims still running (after a grace of `grace`),
    /// container directories in the state dir, containers in runc's roots, and container
    /// cgroups under the namespaces the test named. Empty when every container was removed.
    pub fn leftovers(&self, grace: Duration) -> Vec<String> {
        wait_until(grace, || self.shim_pids().is_empty());
        let mut left: Vec<String> = self
            .shim_pids()
            .into_iter()
            .map(|p| format!("shim: {}", procs::describe(p)))
            .collect();
        for (ns, id) in self.containers_on_disk() {
            left.push(format!("container directory: {ns}/{id}"));
        }
        let runc_root = self.runc_root();
        for ns in dir_names(&runc_root) {
            for id in dir_names(&runc_root.join(&ns)) {
                left.push(format!("runc state: {ns}/{id}"));
            }
        }
        let namespaces = self
            .namespaces
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for ns in namespaces.iter().filter(|n| *n != "default") {
            for parent in cgroups::existing(ns) {
                for id in dir_names(&parent) {
                    left.push(format!("cgroup: {}", parent.join(id).display()));
                }
            }
        }
        left
    }

    /// Ends a test whose containers were all removed: fails listing whatever they left (see
    /// [`Daemon::leftovers`]), then stops the daemon and cleans up as on drop.
    pub fn finish(self) {
        let left = self.leftovers(Duration::from_secs(20));
        assert!(
            left.is_empty(),
            "left behind:\n{}\n--- daemon log ---\n{}",
            left.join("\n"),
            self.log()
        );
    }

    /// Stops the daemon (SIGTERM, then SIGKILL) and reaps it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            procs::signal(child.id() as i32, libc::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            cmd::wait_deadline(&mut child, deadline, "tether daemon");
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let leftovers = self.containers_on_disk();
        let shims = self.shim_pids();
        self.stop();
        // Containers first (their shims would restart nothing, but they are the shims' children).
        for &s in &shims {
            for p in procs::descendants(s) {
                procs::signal(p, libc::SIGKILL);
            }
            procs::signal(s, libc::SIGKILL);
        }
        procs::wait_gone(&shims, Duration::from_secs(10));
        // After a restart, shims (and a killed shim's processes) may be the test's orphans.
        procs::reap_orphans();
        let mut namespaces = self
            .namespaces
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for (ns, id) in leftovers {
            for cg in cgroups::existing(&format!("{ns}/{id}")) {
                cgroups::kill_all(&cg);
                let _ = cgroups::remove_tree(&cg, Duration::from_secs(5));
            }
            namespaces.push(ns);
        }
        // runc removes a container's cgroup, not the namespace's parent. "default" is shared
        // by parallel tests: left alone.
        for ns in namespaces.iter().filter(|n| *n != "default") {
            for cg in cgroups::existing(ns) {
                let _ = std::fs::remove_dir(cg);
            }
        }
        let _ = mounts::unmount_under(self.dir());
    }
}

/// The `/tasks/exit` events of namespace `ns` in a daemon's journal file (readable after the
/// daemon was killed): each line's JSON, with its exit decoded.
pub fn journaled_exits(
    journal: &Path,
    ns: &str,
) -> Vec<(serde_json::Value, tether_protocol::api::events::TaskExit)> {
    use protobuf::Message;
    let text = std::fs::read_to_string(journal).expect("read the journal");
    let mut out = Vec::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("a journal line is JSON");
        if v["namespace"] != ns || v["topic"] != "/tasks/exit" {
            continue;
        }
        let hex = v["value"].as_str().expect("value");
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
            .collect();
        let e =
            tether_protocol::api::events::TaskExit::parse_from_bytes(&bytes).expect("a TaskExit");
        out.push((v, e));
    }
    out
}

/// A `tether [-n NS] run|create [FLAGS] --rootfs <busybox> ID -- CMD...` being built: the
/// argument list that most manager tests start with, written once.
pub struct RunCmd<'d> {
    d: &'d Daemon,
    verb: &'static str,
    ns: Option<String>,
    flags: Vec<String>,
}

impl RunCmd<'_> {
    /// `--namespace NS` (default: the CLI's, "default").
    pub fn ns(mut self, ns: &str) -> Self {
        self.ns = Some(ns.to_string());
        self
    }

    /// `--runtime R` (default: the CLI's).
    pub fn runtime(self, runtime: &str) -> Self {
        self.flag("--runtime").flag(runtime)
    }

    /// One more flag or flag value before the id (`--rm`, `-d`, `-t`, `--log-path`, `P`).
    pub fn flag(mut self, flag: &str) -> Self {
        self.flags.push(flag.to_string());
        self
    }

    /// The whole argument list for container `id` running `cmd`.
    pub fn args(&self, id: &str, cmd: &[&str]) -> Vec<String> {
        let mut v = Vec::new();
        if let Some(ns) = &self.ns {
            v.extend(["--namespace".to_string(), ns.clone()]);
        }
        v.push(self.verb.to_string());
        v.extend(self.flags.iter().cloned());
        v.push("--rootfs".into());
        v.push(crate::busybox_rootfs().display().to_string());
        v.extend([id.to_string(), "--".to_string()]);
        v.extend(cmd.iter().map(|s| s.to_string()));
        v
    }

    /// Runs it (stdin /dev/null) and returns what it said.
    pub fn run(&self, id: &str, cmd: &[&str]) -> CmdOutput {
        let args = self.args(id, cmd);
        self.d
            .run(&args.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// Runs it and fails the test (with the daemon's log) unless it succeeds.
    pub fn ok(&self, id: &str, cmd: &[&str]) -> CmdOutput {
        let args = self.args(id, cmd);
        self.d
            .ok(&args.iter().map(String::as_str).collect::<Vec<_>>())
    }
}

/// `tether events` running in the background, its lines collected.
pub struct EventStream {
    child: Option<Child>,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<thread::JoinHandle<()>>,
}

impl EventStream {
    fn start(cmd: &mut Command) -> EventStream {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tether events");
        let stdout = child.stdout.take().expect("stdout piped");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let reader = thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap_or_else(|p| p.into_inner()).push(line);
            }
        });
        EventStream {
            child: Some(child),
            lines,
            reader: Some(reader),
        }
    }

    /// Every line so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Every line so far, parsed as JSON (for `--json`).
    pub fn json(&self) -> Vec<serde_json::Value> {
        self.lines()
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
            .collect()
    }

    /// Waits until `pred` holds for the JSON lines so far.
    pub fn wait_for(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(&[serde_json::Value]) -> bool,
    ) -> bool {
        wait_until(timeout, || pred(&self.json()))
    }

    /// Stops the stream (by pid) and returns its exit code and stderr.
    pub fn stop(&mut self) -> (i32, String) {
        let Some(mut child) = self.child.take() else {
            return (0, String::new());
        };
        let exited = child.try_wait().ok().flatten();
        if exited.is_none() {
            let _ = child.kill();
        }
        let status = child.wait().expect("reap tether events");
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        (cmd::exit_code(status), err)
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        self.stop();
    }
}
