//! Live shim upgrade (docs/upgrade.md) through a real containerd and runc: the shim serving a
//! running container re-executes the binary newly installed at its path, keeps its pid, its
//! container, its output, its terminal, its execs and a `Wait` parked before the upgrade; an
//! exit during the handover is reaped by the new image and reported once; an upgrade asked
//! during a runtime call waits for it; containerd's own `ctr` scenarios pass after it; a binary
//! that cannot take over is refused (before `execve`, or after it by going back to the old
//! binary) and the old code serves on.

use std::os::unix::fs::MetadataExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tether_protocol::admin::{UpgradeResponse, ADMIN_SERVICE, UPGRADE_METHOD};
use tether_protocol::api::task::{WaitRequest, WaitResponse};
use tether_protocol::api::ttrpc;
use tether_protocol::task_service::TASK_SERVICE_V2;
use tether_tests::containerd::Options;
use tether_tests::pty::Terminal;
use tether_tests::{busybox_rootfs, rawttrpc, shim, unique_id, wait_until, Containerd, Ctr};
use tether_tests::{shim_binary, TETHER_RUNTIME};
use tether_tests::{Event, Events};

const T: Duration = Duration::from_secs(30);
const SHIM_NAME: &str = "containerd-shim-tether-v2";
/// The container: prints a line, then on SIGTERM another and exits 7.
const SCRIPT: &str = "trap 'echo after-upgrade; exit 7' TERM; echo before-upgrade; \
                      while true; do sleep 0.1; done";

/// A containerd whose shim binary is a private copy in `dir` (first on its PATH), so a test
/// can install another binary there as a live system would.
struct Setup {
    cd: Containerd,
    ctr: Ctr,
    dir: tempfile::TempDir,
    id: String,
    log: PathBuf,
}

impl Setup {
    fn start() -> Setup {
        Self::start_with(SCRIPT, "before-upgrade", None)
    }

    /// A container running `script`, once its output shows `first`.
    /// `runc`: a script put first on the shims' PATH as `runc` (given the directory).
    fn start_with(script: &str, first: &str, runc: Option<&dyn Fn(&Path) -> String>) -> Setup {
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
    fn bare(runc: Option<&dyn Fn(&Path) -> String>) -> Setup {
        let dir = tempfile::tempdir().expect("tempdir for the shim binary");
        std::fs::copy(shim_binary(), dir.path().join(SHIM_NAME)).expect("copy the shim binary");
        if let Some(runc) = runc {
            let path = dir.path().join("runc");
            std::fs::write(&path, runc(dir.path())).expect("write the runc wrapper");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                .expect("chmod the runc wrapper");
        }
        let cd = Containerd::start_with(Options {
            path_prefix: vec![dir.path().to_path_buf()],
            ..Options::default()
        });
        let ctr = cd.ctr(&unique_id("ns"));
        let id = unique_id("c");
        let log = dir.path().join("container.log");
        Setup {
            cd,
            ctr,
            dir,
            id,
            log,
        }
    }

    fn binary(&self) -> PathBuf {
        self.dir.path().join(SHIM_NAME)
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn shim_pid(&self) -> i32 {
        shim::shim_pid(&self.cd, self.ctr.namespace(), &self.id)
            .unwrap_or_else(|| panic!("no shim for {}\n{}", self.id, self.cd.log_excerpt()))
    }

    fn socket(&self) -> PathBuf {
        shim::socket_path(&self.cd.bundle(self.ctr.namespace(), &self.id))
            .expect("the bundle's address file")
    }

    /// Installs `contents` at the shim's path as a new file (a new inode, as a package
    /// manager's rename does); returns its inode.
    fn install(&self, contents: &[u8]) -> u64 {
        let tmp = self.dir.path().join("incoming");
        std::fs::write(&tmp, contents).expect("write the new binary");
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::fs::rename(&tmp, self.binary()).expect("install the new binary");
        inode(&self.binary())
    }

    fn upgrade(&self) -> ttrpc::Result<UpgradeResponse> {
        upgrade_at(&self.socket())
    }

    /// An upgrade asked now and answered on another thread.
    fn upgrade_in_background(&self) -> std::thread::JoinHandle<ttrpc::Result<UpgradeResponse>> {
        let socket = self.socket();
        std::thread::spawn(move || upgrade_at(&socket))
    }

    /// Installs a script at the shim's path that runs a copy of the real binary with `env`
    /// (so a test hook reaches the new image); returns the copy's path.
    fn install_with_env(&self, env: &str) -> PathBuf {
        let real = self.dir.path().join("real-shim");
        std::fs::copy(shim_binary(), &real).expect("copy the shim binary");
        self.install(format!("#!/bin/sh\n{env} exec {} \"$@\"\n", real.display()).as_bytes());
        real
    }

    /// `containerd-shim-tether-v2 -namespace NS -address ADDR -id ID upgrade`, as an operator
    /// runs it: its exit code and output.
    fn upgrade_cli(&self) -> tether_tests::CmdOutput {
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
    fn park_wait(&self) -> UnixStream {
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
    fn assert_running(&self) {
        let task = self.ctr.task(&self.id);
        assert!(
            task.as_ref().is_some_and(|t| t.status == "RUNNING"),
            "task after the upgrade: {task:?}\n{}",
            self.cd.log_excerpt()
        );
    }

    /// SIGTERM, the parked `Wait` answered 7, the second line once, then delete: all after
    /// the upgrade, and nothing left behind.
    fn finish(self, wait: UnixStream) {
        self.finish_with(wait, 7, |out| {
            assert_eq!(
                out, "before-upgrade\nafter-upgrade\n",
                "each line once, in order"
            )
        });
    }

    /// SIGTERM; the parked `Wait` and `ctr task delete` say `status`; the whole output then
    /// passes `check`; the container is deleted and nothing is left behind.
    fn finish_with(self, wait: UnixStream, status: u32, check: impl FnOnce(&str)) {
        self.ctr.task_kill(&self.id, "SIGTERM");
        self.end(wait, status);
        check(&self.output());
        self.clean_up();
    }

    /// The init has exited (or is about to): the parked `Wait` and `ctr task delete` say
    /// `status`; the container is deleted.
    fn end(&self, mut wait: UnixStream, status: u32) {
        assert_eq!(
            read_wait(&mut wait),
            status,
            "the exit code through a Wait parked before the upgrade"
        );
        self.delete(status);
    }

    /// `ctr task delete` says `status`; the container is deleted.
    fn delete(&self, status: u32) {
        assert_eq!(self.ctr.task_delete_status(&self.id), status);
        self.ctr.container_delete(&self.id);
    }

    /// containerd shut down; nothing is left behind and nothing needed killing.
    fn clean_up(self) {
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
fn read_wait(wait: &mut UnixStream) -> u32 {
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
struct Stopped(nix::unistd::Pid);

impl Stopped {
    fn new(pid: i32) -> Stopped {
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

fn upgrade_at(socket: &Path) -> ttrpc::Result<UpgradeResponse> {
    let bytes =
        tether_protocol::wire::call(socket, ADMIN_SERVICE, UPGRADE_METHOD, b"{}".to_vec(), T)?;
    Ok(serde_json::from_slice(&bytes).expect("an UpgradeResponse"))
}

/// The exit codes `ctr events` reported for process `process` (the container's id for its
/// init, else the exec id) of container `id`, in order.
fn exits_of(events: &Events, id: &str, process: &str) -> Vec<u64> {
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
fn proc_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// The fds of `pid` without close-on-exec (what its next `exec` would hand on).
fn inheritable_fds(pid: i32) -> Vec<String> {
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
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

fn inode(path: &Path) -> u64 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .ino()
}

/// The inode `/proc/PID/exe` runs (the link resolves even to a replaced, deleted file).
fn exe_inode(pid: i32) -> u64 {
    inode(Path::new(&format!("/proc/{pid}/exe")))
}

#[test]
fn a_running_containers_shim_moves_to_the_new_binary_in_place() {
    let s = Setup::start();
    let pid = s.shim_pid();
    let old = exe_inode(pid);
    let inheritable = inheritable_fds(pid);
    let wait = s.park_wait();
    let new = s.install(&std::fs::read(shim_binary()).expect("read the shim binary"));
    assert_ne!(old, new, "a new inode at the shim's path");

    let r = s
        .upgrade()
        .unwrap_or_else(|e| panic!("upgrade refused: {e:?}\n{}", s.cd.log_excerpt()));
    eprintln!(
        "upgrade {} -> {} took {} µs, the handover {} µs",
        r.old_version, r.new_version, r.took_micros, r.handover_micros
    );
    assert_eq!(r.pid as i32, pid, "{r:?}");
    assert_eq!(r.binary, s.binary().display().to_string());
    assert_eq!(s.shim_pid(), pid, "the same shim process serves");
    assert_eq!(exe_inode(pid), new, "the shim runs the new binary");
    let after = inheritable_fds(pid);
    assert!(
        after.iter().all(|fd| inheritable.contains(fd)),
        "the handed-over fds are close-on-exec again in the new image: {after:?}, \
         before {inheritable:?}"
    );
    s.assert_running();
    // A second upgrade, from the upgraded image and through the command line, works as well.
    let out = s.upgrade_cli();
    assert_eq!(out.code, 0, "{out}");
    let line = format!("{}: upgraded (0.1.0 -> 0.1.0, ", s.socket().display());
    assert!(out.stdout.starts_with(&line), "{out}");
    assert!(
        out.stdout.trim_end().ends_with(&format!("pid {pid})")),
        "{out}"
    );
    assert_eq!(s.shim_pid(), pid);
    s.assert_running();
    s.finish(wait);
}

#[test]
fn a_binary_that_cannot_take_over_is_refused_and_the_old_code_serves_on() {
    let s = Setup::start();
    let pid = s.shim_pid();
    let old = exe_inode(pid);
    let wait = s.park_wait();
    let real = std::fs::read(s.binary()).expect("read the installed binary");
    s.install(b"#!/bin/sh\necho 'not a shim' >&2\nexit 1\n");

    let e = s
        .upgrade()
        .expect_err("a binary that exits 1 cannot take over");
    let status = rawttrpc::rpc_status("upgrade to a broken binary", Err::<(), _>(e));
    assert_eq!(
        status.code(),
        ttrpc::Code::FAILED_PRECONDITION,
        "{status:?}"
    );
    assert!(status.message().contains("cannot take over"), "{status:?}");
    let out = s.upgrade_cli();
    assert_eq!(out.code, 1, "a refusal fails the command: {out}");
    assert!(
        out.stdout
            .starts_with(&format!("{}: refused (", s.socket().display()))
            && out.stdout.contains("cannot take over"),
        "{out}"
    );
    assert_eq!(s.shim_pid(), pid);
    assert_eq!(exe_inode(pid), old, "the old image serves on");
    s.assert_running();
    // A working binary again, for containerd's own clean-up.
    s.install(&real);
    s.finish(wait);
}

#[test]
fn a_new_image_that_fails_after_execve_goes_back_to_the_old_binary() {
    let s = Setup::start();
    let pid = s.shim_pid();
    let old = exe_inode(pid);
    let wait = s.park_wait();
    // Passes the check, then refuses to resume (the shim's test hook): the fallback path.
    let real = s.dir.path().join("real-shim");
    std::fs::copy(shim_binary(), &real).expect("copy the shim binary");
    s.install(
        format!(
            "#!/bin/sh\n{}=1 exec {} \"$@\"\n",
            "TETHER_SHIM_TEST_FAIL_RESUME",
            real.display()
        )
        .as_bytes(),
    );

    let e = s.upgrade().expect_err("the new image fails after execve");
    let status = rawttrpc::rpc_status("upgrade that fails after execve", Err::<(), _>(e));
    assert_eq!(
        status.code(),
        ttrpc::Code::FAILED_PRECONDITION,
        "{status:?}"
    );
    assert!(
        status.message().contains("failed after execve"),
        "{status:?}"
    );
    assert_eq!(s.shim_pid(), pid);
    assert_eq!(exe_inode(pid), old, "back on the old binary");
    s.assert_running();
    s.install(&std::fs::read(&real).expect("read the real binary"));
    s.finish(wait);
}

/// A container writing numbered lines without pause while its shim is upgraded ten times in a
/// row, `ctr task ls` asked between each: every line arrives once and in order.
#[test]
fn numbered_lines_survive_ten_upgrades_in_a_row() {
    let s = Setup::start_with(
        "trap 'echo end; exit 3' TERM; i=0; while true; do echo $i; i=$((i+1)); usleep 500; done",
        "\n",
        None,
    );
    let pid = s.shim_pid();
    let wait = s.park_wait();
    let new = s.install(&std::fs::read(shim_binary()).expect("read the shim binary"));
    let mut handovers = Vec::new();
    for n in 0..10 {
        let r = s
            .upgrade()
            .unwrap_or_else(|e| panic!("upgrade {n} refused: {e:?}\n{}", s.cd.log_excerpt()));
        assert_eq!(r.pid as i32, pid);
        handovers.push((r.handover_micros, r.took_micros));
        s.assert_running();
    }
    eprintln!("10 upgrades, (handover, total) µs: {handovers:?}");
    assert_eq!(exe_inode(pid), new);
    s.finish_with(wait, 3, |text| {
        let mut lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.pop(), Some("end"), "the last line");
        assert!(
            lines.len() > 10,
            "lines written across the upgrades: {}",
            lines.len()
        );
        for (i, l) in lines.iter().enumerate() {
            assert_eq!(*l, i.to_string(), "line {i} (each number once, in order)");
        }
    });
}

/// An upgrade asked while a runtime command is in flight (`runc ps`, held until the test lets
/// it go) waits for it: refused with that reason if the command outlives the wait, else done
/// once the command ends; meanwhile the shim serves, and a request that would start another
/// runtime command (`ctr task pause`) waits for the upgrade and is run by the new image.
#[test]
fn an_upgrade_during_a_runtime_call_waits_for_it_to_end() {
    let hold = |dir: &Path| {
        format!(
            "#!/bin/sh\n\
             for a in \"$@\"; do\n\
               if [ \"$a\" = ps ]; then\n\
                 touch {dir}/ps-started\n\
                 i=0; while [ ! -e {dir}/ps-release ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done\n\
               fi\n\
             done\n\
             exec /usr/sbin/runc \"$@\"\n",
            dir = dir.display()
        )
    };
    let s = Setup::start_with(SCRIPT, "before-upgrade", Some(&hold));
    let pid = s.shim_pid();
    let old = exe_inode(pid);
    let wait = s.park_wait();
    let new = s.install(&std::fs::read(shim_binary()).expect("read the shim binary"));
    let quiet = |cmd: &mut std::process::Command| {
        cmd.stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn ctr")
    };
    let mut ps = Reaped(quiet(&mut s.ctr.command(&["task", "ps", s.id.as_str()])));
    assert!(
        wait_until(T, || s.dir.path().join("ps-started").exists()),
        "runc ps never started\n{}",
        s.cd.log_excerpt()
    );
    // runc ps outlives the upgrade's wait (10 s): refused, saying what it waited for.
    let e = s.upgrade().expect_err("refused while runc ps runs on");
    let status = rawttrpc::rpc_status("upgrade during runc ps", Err::<(), _>(e));
    assert_eq!(
        status.code(),
        ttrpc::Code::FAILED_PRECONDITION,
        "{status:?}"
    );
    assert!(
        status.message().contains("not quiet within")
            && status.message().contains("a runtime call is in flight"),
        "{status:?}"
    );
    assert_eq!(exe_inode(pid), old, "the old image serves on");

    // Asked again; runc ps still held: the shim serves (State) and defers the pause.
    let upgrading = s.upgrade_in_background();
    s.assert_running();
    let mut pause = Reaped(quiet(&mut s.ctr.command(&["task", "pause", s.id.as_str()])));
    assert!(
        wait_until(T, || s.cd.log().contains("Pause waits for the upgrade")),
        "the pause never reached the shim\n{}",
        s.cd.log_excerpt()
    );
    assert_eq!(exe_inode(pid), old, "no handover while runc ps runs");
    std::fs::write(s.dir.path().join("ps-release"), b"").expect("release runc ps");
    let r = upgrading
        .join()
        .expect("the upgrade's thread")
        .unwrap_or_else(|e| panic!("the upgrade once runc ps is done: {e:?}"));
    eprintln!(
        "upgrade after a runtime call: took {} µs, the handover {} µs",
        r.took_micros, r.handover_micros
    );
    assert_eq!(r.pid as i32, pid);
    assert_eq!(exe_inode(pid), new);
    for (what, child) in [("ps", &mut ps), ("pause", &mut pause)] {
        let mut done = None;
        assert!(
            wait_until(T, || {
                done = child.0.try_wait().expect("wait for ctr");
                done.is_some()
            }),
            "ctr task {what} did not end"
        );
        assert!(
            done.is_some_and(|st| st.success()),
            "ctr task {what}: {done:?}"
        );
    }
    let task = s.ctr.task(&s.id);
    assert_eq!(task.map(|t| t.status).as_deref(), Some("PAUSED"));
    s.ctr.call_ok(&["task", "resume", s.id.as_str()]);
    s.assert_running();
    s.finish(wait);
}

/// A container that exits while its shim is between images (the new image held before its
/// first reap by a test hook): the exit waits as a zombie, the new image reaps it, and it is
/// reported once, with its code, to the `Wait` parked before the upgrade, `ctr task delete`
/// and `ctr events`.
#[test]
fn an_exit_during_the_handover_is_reaped_by_the_new_image_and_reported_once() {
    let s = Setup::start();
    let events = s.ctr.events();
    let pid = s.shim_pid();
    let wait = s.park_wait();
    let init = s.ctr.task(&s.id).expect("the task").pid as i32;
    let hold = s.dir.path().join("hold");
    std::fs::create_dir(&hold).expect("mkdir hold");
    let real = s.install_with_env(&format!("TETHER_SHIM_TEST_PAUSE_RESUME={}", hold.display()));
    let upgrading = s.upgrade_in_background();
    assert!(
        wait_until(T, || hold.join("resume-paused").exists()),
        "the new image never reached its pause\n{}",
        s.cd.log_excerpt()
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(init),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the container's init");
    assert!(
        wait_until(T, || proc_state(init) == Some('Z')),
        "the init exits and waits, unreaped, during the handover: {:?}",
        proc_state(init)
    );
    std::fs::write(hold.join("resume-go"), b"").expect("let the new image go on");
    let r = upgrading
        .join()
        .expect("the upgrade's thread")
        .unwrap_or_else(|e| panic!("upgrade: {e:?}\n{}", s.cd.log_excerpt()));
    assert_eq!(r.pid as i32, pid);
    assert_eq!(s.shim_pid(), pid);
    // containerd's own clean-up runs the binary at the shim's path: the real one again.
    s.install(&std::fs::read(&real).expect("read the real binary"));
    s.end(wait, 137);
    events.wait_for_topic(&s.id, "/tasks/delete", T);
    assert_eq!(
        exits_of(&events, &s.id, &s.id),
        vec![137],
        "one exit, code 137"
    );
    s.clean_up();
}

/// containerd's scenarios through `ctr` across an upgrade: an exec started before it ends
/// after it (killed by `ctr task kill --exec-id`) with its code, reported once; after it an
/// exec with its output and code, pause and resume, kill and delete, each seen by `ctr events`.
#[test]
fn containerds_own_scenarios_pass_across_an_upgrade() {
    let s = Setup::start();
    let events = s.ctr.events();
    let pid = s.shim_pid();
    let wait = s.park_wait();
    let mut before = Reaped(
        s.ctr
            .command(&[
                "task",
                "exec",
                "--exec-id",
                "before",
                s.id.as_str(),
                "/bin/sh",
                "-c",
                "trap 'exit 5' TERM; while true; do sleep 0.1; done",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn ctr task exec"),
    );
    events.wait_for(
        |e| {
            e.is(&s.id, "/tasks/exec-started")
                && e.json()
                    .is_some_and(|v| v.get("exec_id").and_then(|x| x.as_str()) == Some("before"))
        },
        T,
    );
    s.install(&std::fs::read(shim_binary()).expect("read the shim binary"));
    let r = s
        .upgrade()
        .unwrap_or_else(|e| panic!("upgrade refused: {e:?}\n{}", s.cd.log_excerpt()));
    assert_eq!(r.pid as i32, pid);

    s.ctr.call_ok(&[
        "task",
        "kill",
        "--exec-id",
        "before",
        "--signal",
        "SIGTERM",
        s.id.as_str(),
    ]);
    let mut done = None;
    assert!(
        wait_until(T, || {
            done = before.0.try_wait().expect("wait for ctr task exec");
            done.is_some()
        }),
        "the exec started before the upgrade did not end"
    );
    assert_eq!(
        done.and_then(|st| st.code()),
        Some(5),
        "ctr task exec's code"
    );
    events.wait_for(
        |e| {
            e.is(&s.id, "/tasks/exit")
                && e.json()
                    .is_some_and(|v| v.get("id").and_then(|x| x.as_str()) == Some("before"))
        },
        T,
    );

    let out = s.ctr.call(&[
        "task",
        "exec",
        "--exec-id",
        "after",
        s.id.as_str(),
        "/bin/sh",
        "-c",
        "echo exec-after-upgrade; exit 3",
    ]);
    assert_eq!(out.code, 3, "{out}");
    assert!(out.stdout.contains("exec-after-upgrade"), "{out}");

    s.ctr.call_ok(&["task", "pause", s.id.as_str()]);
    let task = s.ctr.task(&s.id);
    assert_eq!(task.map(|t| t.status).as_deref(), Some("PAUSED"));
    events.wait_for_topic(&s.id, "/tasks/paused", T);
    s.ctr.call_ok(&["task", "resume", s.id.as_str()]);
    s.assert_running();
    events.wait_for_topic(&s.id, "/tasks/resumed", T);

    s.ctr.task_kill(&s.id, "SIGTERM");
    s.end(wait, 7);
    events.wait_for_topic(&s.id, "/tasks/delete", T);
    assert_eq!(
        exits_of(&events, &s.id, "before"),
        vec![5],
        "the exec's exit, once"
    );
    assert_eq!(exits_of(&events, &s.id, "after"), vec![3]);
    assert_eq!(
        exits_of(&events, &s.id, &s.id),
        vec![7],
        "the init's exit, once"
    );
    assert_eq!(
        s.output(),
        "before-upgrade\nafter-upgrade\n",
        "each line once, in order"
    );
    s.clean_up();
}

/// `ctr run --tty` on a terminal: the shell in the container reads what is typed and writes
/// to the terminal before and after its shim's upgrade, and a resize after it reaches the
/// container's terminal.
#[test]
fn a_terminal_container_keeps_its_terminal_across_an_upgrade() {
    let s = Setup::bare(None);
    let run = s
        .ctr
        .run(&s.id)
        .runtime(TETHER_RUNTIME)
        .rootfs(busybox_rootfs())
        .flag("--read-only")
        .flag("--tty")
        .rm()
        .args(&["/bin/sh"]);
    let (child, term) = Terminal::spawn(s.ctr.command(&run.to_args()), 24, 80);
    let mut child = Reaped(child);
    // The typed line holds an expression: only the shell's answer shows its value.
    term.send(b"echo one-$((20+22))\n");
    assert!(
        term.saw("one-42", T),
        "before the upgrade: {:?}\n{}",
        term.output(),
        s.cd.log_excerpt()
    );
    let pid = s.shim_pid();
    s.install(&std::fs::read(shim_binary()).expect("read the shim binary"));
    let r = s
        .upgrade()
        .unwrap_or_else(|e| panic!("upgrade refused: {e:?}\n{}", s.cd.log_excerpt()));
    assert_eq!(r.pid as i32, pid);
    term.send(b"echo two-$((40+3))\n");
    assert!(
        term.saw("two-43", T),
        "after the upgrade: {:?}",
        term.output()
    );
    term.resize(33, 101);
    // ctr forwards the size on SIGWINCH; the shell asks until it shows.
    assert!(
        wait_until(T, || {
            term.send(b"stty size\n");
            term.saw("33 101", Duration::from_millis(500))
        }),
        "the resize after the upgrade: {:?}",
        term.output()
    );
    term.send(b"exit 4\n");
    let mut done = None;
    assert!(
        wait_until(T, || {
            done = child.0.try_wait().expect("wait for ctr run");
            done.is_some()
        }),
        "ctr run did not end: {:?}",
        term.output()
    );
    assert_eq!(
        done.and_then(|st| st.code()),
        Some(4),
        "{:?}",
        term.output()
    );
    term.close();
    assert!(s.ctr.containers().is_empty(), "--rm removed the container");
    s.clean_up();
}

/// An exit event containerd has not yet answered (containerd held stopped) crosses the
/// upgrade with the shim's event connection: once containerd runs again, the new image gets
/// the reply to the old one's request, and `ctr events` shows the exit once.
#[test]
fn an_exit_event_containerd_has_not_taken_yet_is_published_once_across_the_upgrade() {
    let s = Setup::start();
    let events = s.ctr.events();
    let pid = s.shim_pid();
    let mut wait = s.park_wait();
    let init = s.ctr.task(&s.id).expect("the task").pid as i32;
    s.install(&std::fs::read(shim_binary()).expect("read the shim binary"));
    let daemon = s.cd.pid().expect("containerd's pid");
    let stopped = Stopped::new(daemon);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(init),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the container's init");
    // The shim answers the Wait as it publishes the exit: the event is sent (or queued) and
    // containerd, stopped, has not answered it.
    assert_eq!(read_wait(&mut wait), 137);
    let r = s
        .upgrade()
        .unwrap_or_else(|e| panic!("upgrade with an event in flight: {e:?}"));
    assert_eq!(r.pid as i32, pid);
    drop(stopped);
    events.wait_for_topic(&s.id, "/tasks/exit", T);
    s.delete(137);
    events.wait_for_topic(&s.id, "/tasks/delete", T);
    assert_eq!(
        exits_of(&events, &s.id, &s.id),
        vec![137],
        "one exit, code 137"
    );
    s.clean_up();
}
