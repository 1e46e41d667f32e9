//! Live shim upgrade (docs/upgrade.md) through a real containerd and runc: the shim serving a
//! running container re-executes the binary newly installed at its path, keeps its pid, its
//! container, its output and a `Wait` parked before the upgrade; a binary that cannot take over
//! is refused (before `execve`, or after it by going back to the old binary) and the old code
//! serves on.

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
use tether_tests::{busybox_rootfs, rawttrpc, shim, unique_id, wait_until, Containerd, Ctr};
use tether_tests::{shim_binary, TETHER_RUNTIME};

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
        let uri = format!("file://{}", log.display());
        let run = ctr
            .run(&id)
            .runtime(TETHER_RUNTIME)
            .rootfs(busybox_rootfs())
            .flag("--read-only")
            .flag("--log-uri")
            .flag(&uri)
            .detach()
            .args(&["/bin/sh", "-c", script]);
        run.success();
        let s = Setup {
            cd,
            ctr,
            dir,
            id,
            log,
        };
        assert!(
            wait_until(T, || s.output().contains(first)),
            "the container's first line never came: {:?}\n{}",
            s.output(),
            s.cd.log_excerpt()
        );
        s
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
        let bytes = tether_protocol::wire::call(
            &self.socket(),
            ADMIN_SERVICE,
            UPGRADE_METHOD,
            b"{}".to_vec(),
            T,
        )?;
        Ok(serde_json::from_slice(&bytes).expect("an UpgradeResponse"))
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
    fn finish_with(self, mut wait: UnixStream, status: u32, check: impl FnOnce(&str)) {
        self.ctr.task_kill(&self.id, "SIGTERM");
        let (stream, res) = rawttrpc::read_response(&mut wait);
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
        assert_eq!(
            w.exit_status, status,
            "the exit code through a Wait parked before the upgrade"
        );
        assert_eq!(self.ctr.task_delete_status(&self.id), status);
        check(&self.output());
        self.ctr.container_delete(&self.id);
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
/// it go) is refused with that reason, and the old image serves on; once the command is done,
/// the upgrade goes through.
#[test]
fn an_upgrade_during_a_runtime_call_is_refused_until_it_is_done() {
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
    let mut ps = s.ctr.command(&["task", "ps", s.id.as_str()]);
    let mut ps = Reaped(
        ps.stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn ctr task ps"),
    );
    assert!(
        wait_until(T, || s.dir.path().join("ps-started").exists()),
        "runc ps never started\n{}",
        s.cd.log_excerpt()
    );
    let e = s.upgrade().expect_err("refused while runc ps runs");
    let status = rawttrpc::rpc_status("upgrade during runc ps", Err::<(), _>(e));
    assert_eq!(
        status.code(),
        ttrpc::Code::FAILED_PRECONDITION,
        "{status:?}"
    );
    assert!(
        status.message().contains("a runtime call is in flight"),
        "{status:?}"
    );
    assert_eq!(exe_inode(pid), old, "the old image serves on");

    std::fs::write(s.dir.path().join("ps-release"), b"").expect("release runc ps");
    let mut done = None;
    assert!(
        wait_until(T, || {
            done = ps.0.try_wait().expect("wait for ctr task ps");
            done.is_some()
        }),
        "ctr task ps did not end"
    );
    assert!(done.is_some_and(|st| st.success()), "ctr task ps: {done:?}");
    let r = s.upgrade().expect("the upgrade once runc ps is done");
    assert_eq!(r.pid as i32, pid);
    assert_eq!(exe_inode(pid), new);
    s.assert_running();
    s.finish(wait);
}
