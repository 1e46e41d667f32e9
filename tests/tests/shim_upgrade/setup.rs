//! What the upgrade tests share: a container under a private copy of the shim, upgrades, waits.

use super::*;

pub const T: Duration = Duration::from_secs(30);
pub const SHIM_NAME: &str = "containerd-shim-tether-v2";
/// The container: prints a line, then on SIGTERM another and exits 7.
pub const SCRIPT: &str = "trap 'echo after-upgrade; exit 7' TERM; echo before-upgrade; \
                      while true; do sleep 0.1; done";

/// A containerd whose shim binary is a private copy in `dir` (first on its PATH), so a test
/// can install another binary there as a live system would.
pub struct Setup {
    pub cd: Containerd,
    pub ctr: Ctr,
    pub dir: ShimDir,
    pub id: String,
    pub log: PathBuf,
}

impl Setup {
    pub fn start() -> Setup {
        Self::start_with(SCRIPT, "before-upgrade", None)
    }

    /// A container running `script`, once its output shows `first`.
    /// `runc`: a script put first on the shims' PATH as `runc` (given the directory).
    pub fn start_with(script: &str, first: &str, runc: Option<&dyn Fn(&Path) -> String>) -> Setup {
        let s = Self::bare(runc);
        let uri = format!("file://{}", s.log.display());
        let run = s
            .ctr
            .run(&s.id)
            .runtime(TETHER_RUNTIME)
            .rootfs(busybox_rootfs())
            .flag("--read-only")
            .flag("--log-uri")
            .flag(&uri)
            .detach()
            .args(&["/bin/sh", "-c", script]);
        run.success();
        assert!(
            wait_until(T, || s.output().contains(first)),
            "the container's first line never came: {:?}\n{}",
            s.output(),
            s.cd.log_excerpt()
        );
        s
    }

    /// The containerd and the shim's directory, no container yet (`id` is the one to run).
    pub fn bare(runc: Option<&dyn Fn(&Path) -> String>) -> Setup {
        let dir = ShimDir::new(SHIM_NAME);
        if let Some(runc) = runc {
            let path = dir.dir().join("runc");
            tether_tests::cmd::write_executable(&path, runc(dir.dir()));
        }
        let cd = Containerd::start_with(Options {
            path_prefix: vec![dir.dir().to_path_buf()],
            ..Options::default()
        });
        let ctr = cd.ctr(&unique_id("ns"));
        let id = unique_id("c");
        let log = dir.dir().join("container.log");
        Setup {
            cd,
            ctr,
            dir,
            id,
            log,
        }
    }

    pub fn binary(&self) -> PathBuf {
        self.dir.binary()
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn shim_pid(&self) -> i32 {
        shim::shim_pid(&self.cd, self.ctr.namespace(), &self.id)
            .unwrap_or_else(|| panic!("no shim for {}\n{}", self.id, self.cd.log_excerpt()))
    }

    pub fn socket(&self) -> PathBuf {
        shim::socket_path(&self.cd.bundle(self.ctr.namespace(), &self.id))
            .expect("the bundle's address file")
    }

    /// Installs `contents` at the shim's path as a new file (a new inode, as a package
    /// manager's rename does); returns its inode.
    pub fn install(&self, contents: &[u8]) -> u64 {
        self.dir.install(contents)
    }

    pub fn upgrade(&self) -> ttrpc::Result<UpgradeResponse> {
        upgrade_at(&self.socket())
    }

    /// An upgrade asked now and answered on another thread.
    pub fn upgrade_in_background(&self) -> std::thread::JoinHandle<ttrpc::Result<UpgradeResponse>> {
        let socket = self.socket();
        std::thread::spawn(move || upgrade_at(&socket))
    }

    /// Installs a script at the shim's path that runs a copy of the real binary with `env`
    /// (so a test hook reaches the new image); returns the copy's path.
    pub fn install_with_env(&self, env: &str) -> PathBuf {
        let real = self.dir.dir().join("real-shim");
        std::fs::copy(shim_binary(), &real).expect("copy the shim binary");
        self.install(format!("#!/bin/sh\n{env} exec {} \"$@\"\n", real.display()).as_bytes());
        real
    }

    /// `containerd-shim-tether-v2 -namespace NS -address ADDR -id ID upgrade`, as an operator
    /// runs it: its exit code and output.
    pub fn upgrade_cli(&self) -> tether_tests::CmdOutput {
        let mut cmd = std::process::Command::new(shim_binary());
        cmd.arg("-namespace")
            .arg(self.ctr.namespace())
            .arg("-address")
            .arg(self.cd.address())
            .arg("-id")
            .arg(&self.id)
            .arg("upgrade");
        tether_tests::cmd::run(&mut cmd, None, T)
    }

    /// A `Wait` for the init, sent now and answered later on `conn`.
    pub fn park_wait(&self) -> UnixStream {
        let mut conn = UnixStream::connect(self.socket()).expect("connect to the shim");
        conn.set_read_timeout(Some(T)).expect("read timeout");
        let req = WaitRequest {
            id: self.id.clone(),
            ..Default::default()
        };
        let payload = protobuf::Message::write_to_bytes(&req).expect("encode Wait");
        let frame = rawttrpc::request_frame(1, TASK_SERVICE_V2, "Wait", payload, Duration::ZERO);
        std::io::Write::write_all(&mut conn, &frame).expect("send Wait");
        conn
    }

    /// `ctr task ls` still answers from the shim, with the container running.
    pub fn assert_running(&self) {
        let task = self.ctr.task(&self.id);
        assert!(
            task.as_ref().is_some_and(|t| t.status == "RUNNING"),
            "task after the upgrade: {task:?}\n{}",
            self.cd.log_excerpt()
        );
    }

    /// SIGTERM, the parked `Wait` answered 7, the second line once, then delete: all after
    /// the upgrade, and nothing left behind.
    pub fn finish(self, wait: UnixStream) {
        self.finish_with(wait, 7, |out| {
            assert_eq!(
                out, "before-upgrade\nafter-upgrade\n",
                "each line once, in order"
            )
        });
    }

    /// SIGTERM; the parked `Wait` and `ctr task delete` say `status`; the whole output then
    /// passes `check`; the container is deleted and nothing is left behind.
    pub fn finish_with(self, wait: UnixStream, status: u32, check: impl FnOnce(&str)) {
        self.ctr.task_kill(&self.id, "SIGTERM");
        self.end(wait, status);
        check(&self.output());
        self.clean_up();
    }

    /// The init has exited (or is about to): the parked `Wait` and `ctr task delete` say
    /// `status`; the container is deleted.
    pub fn end(&self, mut wait: UnixStream, status: u32) {
        assert_eq!(
            read_wait(&mut wait),
            status,
            "the exit code through a Wait parked before the upgrade"
        );
        self.delete(status);
    }

    /// `ctr task delete` says `status`; the container is deleted.
    pub fn delete(&self, status: u32) {
        assert_eq!(self.ctr.task_delete_status(&self.id), status);
        self.ctr.container_delete(&self.id);
    }

    /// containerd shut down; nothing is left behind and nothing needed killing.
    pub fn clean_up(self) {
        let check = self.cd.leak_check();
        let report = self.cd.shutdown();
        assert!(report.problems.is_empty(), "{report:#?}");
        assert!(
            report.killed.is_empty(),
            "nothing needed killing: {report:#?}"
        );
        check.assert_clean();
    }
}

/// The answer to the `Wait` sent on `wait` (stream 1): its exit code.
pub fn read_wait(wait: &mut UnixStream) -> u32 {
    let (stream, res) = rawttrpc::read_response(wait);
    assert_eq!(stream, 1);
    assert!(
        res.status
            .as_ref()
            .is_none_or(|s| s.code() == ttrpc::Code::OK),
        "Wait: {:?}",
        res.status
    );
    let w: WaitResponse =
        protobuf::Message::parse_from_bytes(&res.payload).expect("a WaitResponse");
    w.exit_status
}

/// A process the test stopped with SIGSTOP, continued (by pid) however the test ends.
pub struct Stopped(pub nix::unistd::Pid);

impl Stopped {
    pub fn new(pid: i32) -> Stopped {
        let pid = nix::unistd::Pid::from_raw(pid);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).expect("SIGSTOP");
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(self.0, nix::sys::signal::Signal::SIGCONT);
    }
}

pub fn upgrade_at(socket: &Path) -> ttrpc::Result<UpgradeResponse> {
    let bytes =
        tether_protocol::wire::call(socket, ADMIN_SERVICE, UPGRADE_METHOD, b"{}".to_vec(), T)?;
    Ok(serde_json::from_slice(&bytes).expect("an UpgradeResponse"))
}

/// The exit codes `ctr events` reported for process `process` (the container's id for its
/// init, else the exec id) of container `id`, in order.
pub fn exits_of(events: &Events, id: &str, process: &str) -> Vec<u64> {
    events
        .for_container(id)
        .iter()
        .filter(|e| e.topic == "/tasks/exit")
        .filter_map(Event::json)
        .filter(|v| v.get("id").and_then(|x| x.as_str()) == Some(process))
        // Go leaves a zero out of the JSON.
        .map(|v| v.get("exit_status").and_then(|x| x.as_u64()).unwrap_or(0))
        .collect()
}

/// The state letter of `/proc/PID/stat` (`Z`: exited, not yet reaped).
pub fn proc_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// The fds of `pid` without close-on-exec (what its next `exec` would hand on).
pub fn inheritable_fds(pid: i32) -> Vec<String> {
    const O_CLOEXEC: u32 = 0o2000000;
    let dir = format!("/proc/{pid}/fdinfo");
    let mut v: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("list {dir}: {e}"))
        .flatten()
        .filter_map(|e| {
            let info = std::fs::read_to_string(e.path()).ok()?;
            let flags = info.lines().find_map(|l| l.strip_prefix("flags:"))?;
            let flags = u32::from_str_radix(flags.trim(), 8).ok()?;
            (flags & O_CLOEXEC == 0).then(|| e.file_name().to_string_lossy().into_owned())
        })
        .collect();
    v.sort();
    v
}

/// A child the test started: killed (by pid) and reaped however the test ends.
pub struct Reaped(pub std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}
