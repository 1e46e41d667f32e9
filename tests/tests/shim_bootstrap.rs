//! The shim's command-line contract with containerd, played from containerd's side with the
//! messages each version sends: `start` with the old `Any` of runtime options (1.6-2.2) and with
//! 2.3's `BootstrapParams`, and `-info` (2.2+), which containerd runs before every create.

use protobuf::{Message, MessageField};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tether_protocol::api::bootstrap::{BootstrapParams, BootstrapResult, Extension, LogLevel};
use tether_protocol::api::introspection::RuntimeInfo;
use tether_protocol::api::runc_options::Options as RuncOptions;
use tether_protocol::api::task::ShutdownRequest;
use tether_protocol::api::Empty;
use tether_protocol::api::{pack_any, Any};
use tether_protocol::task_service::TaskCaller;
use tether_tests::cgroups::TestCgroup;
use tether_tests::shimtest::{finish, tether_run, Scene};
use tether_tests::{cmd, procs, shim_binary, unique_id};

const T: Duration = Duration::from_secs(20);

/// What `start` printed and how it ended.
struct Started {
    ok: bool,
    stdout: Vec<u8>,
    stderr: String,
}

/// A private bundle, socket directory and containerd address for one `start`.
struct Launch {
    _dir: tempfile::TempDir,
    bundle: PathBuf,
    sockets: PathBuf,
    address: String,
    id: String,
    ns: String,
}

impl Launch {
    fn new() -> Launch {
        let dir = tempfile::tempdir().expect("tempdir");
        let bundle = dir.path().join("bundle");
        let sockets = dir.path().join("s");
        std::fs::create_dir(&bundle).expect("mkdir bundle");
        Launch {
            address: dir.path().join("containerd.sock").display().to_string(),
            bundle,
            sockets,
            _dir: dir,
            id: unique_id("boot"),
            ns: unique_id("ns"),
        }
    }

    /// `start` as containerd runs it: the flags (still passed by 2.3), the bundle as the
    /// working directory, `TTRPC_ADDRESS`, and `stdin`; stdout and stderr read apart.
    fn start(&self, flag_id: &str, stdin: &[u8]) -> Started {
        let mut child = Command::new(shim_binary())
            .args(["-namespace", &self.ns, "-address", &self.address])
            .args([
                "-publish-binary",
                "/usr/bin/containerd",
                "-id",
                flag_id,
                "start",
            ])
            .current_dir(&self.bundle)
            .env("TTRPC_ADDRESS", format!("{}.ttrpc", self.address))
            .env("TETHER_SHIM_SOCKET_DIR", &self.sockets)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run the shim's start");
        let mut pipe = child.stdin.take().expect("stdin");
        pipe.write_all(stdin).expect("write stdin");
        drop(pipe);
        // start's output is a few bytes and the shim it launches does not inherit the pipes:
        // they are read after it exits.
        let (status, timed_out) = cmd::wait_deadline(
            &mut child,
            Instant::now() + T,
            "containerd-shim-tether-v2 start",
        );
        assert!(!timed_out, "start took more than {T:?}");
        let mut stdout = Vec::new();
        let mut stderr = String::new();
        use std::io::Read;
        child
            .stdout
            .take()
            .expect("stdout")
            .read_to_end(&mut stdout)
            .expect("stdout");
        child
            .stderr
            .take()
            .expect("stderr")
            .read_to_string(&mut stderr)
            .expect("stderr");
        Started {
            ok: status.success(),
            stdout,
            stderr,
        }
    }

    /// Dials the shim at `address`, returns its pid (from `Connect`), and shuts it down; the
    /// shim has no task, so it exits, and the test (its subreaper) reaps it.
    fn connect_and_shut_down(&self, address: &str, check: impl FnOnce(i32)) {
        let (caller, resp) = TaskCaller::connect(address, T)
            .unwrap_or_else(|e| panic!("connect to the shim at {address}: {e:?}"));
        let pid = resp.shim_pid as i32;
        assert!(pid > 1, "Connect names the shim's pid: {resp:?}");
        check(pid);
        let req = ShutdownRequest {
            id: self.id.clone(),
            now: true,
            ..Default::default()
        };
        let _: ttrpc::Result<Empty> = caller.call("Shutdown", &req, T);
        drop(caller);
        assert!(
            procs::wait_gone(&[pid], T).is_empty(),
            "the shim {pid} exited after Shutdown"
        );
        // Adopted by the test (a subreaper) once `start` exited: reaped by its pid alone, as
        // parallel tests here wait for their own children.
        let mut status = 0;
        // SAFETY: waitpid on one specific pid.
        unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        let left: Vec<_> = std::fs::read_dir(&self.sockets)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        for p in &left {
            let _ = std::fs::remove_file(p);
        }
    }

    /// `BootstrapParams` as containerd 2.3's `client.Command` fills it.
    fn params(&self, options: Option<Any>) -> BootstrapParams {
        let mut p = BootstrapParams {
            instance_id: self.id.clone(),
            namespace: self.ns.clone(),
            log_level: LogLevel::LOG_LEVEL_INFO.into(),
            containerd_version: "v2.3.4".into(),
            containerd_ttrpc_address: format!("{}.ttrpc", self.address),
            containerd_grpc_address: self.address.clone(),
            containerd_binary: "/usr/bin/containerd".into(),
            socket_dir: Some("/run/containerd/s".into()),
            ..Default::default()
        };
        if let Some(any) = options {
            p.extensions.push(Extension {
                value: MessageField::some(any),
                ..Default::default()
            });
        }
        p
    }

    fn read_address_file(&self) -> String {
        std::fs::read_to_string(self.bundle.join("address")).expect("the bundle's address file")
    }
}

fn shim_cgroup_options(cg: &TestCgroup) -> Any {
    pack_any(&RuncOptions {
        shim_cgroup: format!("/{}", cg.name),
        ..Default::default()
    })
    .expect("pack options")
}

#[test]
fn bootstrap_params_get_a_bootstrap_result_and_shim_cgroup_is_honoured() {
    tether_tests::cgroups::require_v1("pids");
    procs::become_subreaper();
    let cg = TestCgroup::new(&["pids"]);
    let l = Launch::new();
    let stdin = l
        .params(Some(shim_cgroup_options(&cg)))
        .write_to_bytes()
        .expect("encode");
    let out = l.start(&l.id, &stdin);
    assert!(out.ok, "start failed: {}", out.stderr);
    assert!(out.stderr.is_empty(), "nothing on stderr: {}", out.stderr);
    // What containerd 2.3's parseStartResponse decodes first.
    let r = BootstrapResult::parse_from_bytes(&out.stdout).expect("a BootstrapResult");
    assert_eq!(r.version, 2, "task API v2, never 3: {r:?}");
    assert_eq!(r.protocol, "ttrpc");
    let prefix = format!("unix://{}/", l.sockets.display());
    assert!(r.address.starts_with(&prefix), "{r:?}");
    assert_eq!(l.read_address_file(), r.address);
    l.connect_and_shut_down(&r.address, |pid| {
        assert!(
            cg.holds(pid, "pids"),
            "the shim {pid} moved into the ShimCgroup from the extensions"
        )
    });
    drop(cg);
}

#[test]
fn the_old_any_gets_the_bare_address_and_shim_cgroup_is_honoured() {
    tether_tests::cgroups::require_v1("pids");
    procs::become_subreaper();
    let cg = TestCgroup::new(&["pids"]);
    let l = Launch::new();
    let stdin = shim_cgroup_options(&cg).write_to_bytes().expect("encode");
    let out = l.start(&l.id, &stdin);
    assert!(out.ok, "start failed: {}", out.stderr);
    let address = String::from_utf8(out.stdout).expect("text");
    assert!(
        address.starts_with(&format!("unix://{}/", l.sockets.display())),
        "the bare address, as 1.6 reads it: {address:?}"
    );
    assert_eq!(l.read_address_file(), address);
    l.connect_and_shut_down(&address, |pid| {
        assert!(cg.holds(pid, "pids"), "the shim {pid} is in the ShimCgroup")
    });
    drop(cg);

    // No options at all (`ctr run` with none): still the bare address.
    let l = Launch::new();
    let out = l.start(&l.id, b"");
    assert!(out.ok, "start failed: {}", out.stderr);
    let address = String::from_utf8(out.stdout).expect("text");
    l.connect_and_shut_down(&address, |_| {});
}

#[test]
fn bootstrap_params_naming_another_task_are_refused_before_anything_starts() {
    let l = Launch::new();
    let stdin = l.params(None).write_to_bytes().expect("encode");
    let out = l.start("someone-else", &stdin);
    assert!(!out.ok, "start refused");
    assert!(
        out.stderr.contains(&l.id) && out.stderr.contains("someone-else"),
        "the error names both ids: {}",
        out.stderr
    );
    assert!(
        std::fs::read_dir(&l.sockets).map_or(true, |mut d| d.next().is_none()),
        "no socket was made"
    );
    assert!(!l.bundle.join("address").exists(), "no address written");
}

#[test]
fn info_prints_runtime_info_with_the_runtimes_own_features() {
    // What containerd 2.2+ runs before a create: `<shim> -info`, the options on stdin.
    let runc = cmd::which("runc").expect("runc on PATH");
    let stdin = pack_any(&RuncOptions {
        binary_name: runc.display().to_string(),
        ..Default::default()
    })
    .expect("pack")
    .write_to_bytes()
    .expect("encode");
    let mut c = Command::new(shim_binary());
    c.arg("-info");
    let out = run_bytes(&mut c, &stdin);
    let info = RuntimeInfo::parse_from_bytes(&out).expect("a RuntimeInfo on stdout");
    assert_eq!(info.name, "io.containerd.tether.v2");
    assert!(!info.version.version.is_empty(), "{info:?}");
    assert_eq!(
        info.options.write_to_bytes().expect("encode"),
        stdin,
        "the options, echoed"
    );
    let features = info.features.as_ref().expect("features");
    // The URL containerd's typeurl registers runtime-spec's features.Features under.
    assert_eq!(
        features.type_url,
        "types.containerd.io/opencontainers/runtime-spec/1/features/Features"
    );
    let ours: serde_json::Value = serde_json::from_slice(&features.value).expect("JSON");
    let runcs = run_bytes(Command::new(&runc).arg("features"), b"");
    let runcs: serde_json::Value = serde_json::from_slice(&runcs).expect("runc's JSON");
    assert_eq!(ours, runcs, "the runtime's own features, as CRI reads them");

    // A runtime that does not know `features` (youki, older runc): still an answer.
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = dir.path().join("oldruntime");
    tether_tests::cmd::write_executable(
        &fake,
        "#!/bin/sh\necho \"unknown command $1\" >&2\nexit 1\n",
    );
    let stdin = pack_any(&RuncOptions {
        binary_name: fake.display().to_string(),
        ..Default::default()
    })
    .expect("pack")
    .write_to_bytes()
    .expect("encode");
    let out = run_bytes(Command::new(shim_binary()).arg("-info"), &stdin);
    let info = RuntimeInfo::parse_from_bytes(&out).expect("RuntimeInfo");
    assert!(info.features.is_none());
}

/// Runs `c` with `stdin`, asserts success, returns its stdout bytes.
fn run_bytes(c: &mut Command, stdin: &[u8]) -> Vec<u8> {
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin)
        .expect("write");
    let what = cmd::describe(c);
    let reader = {
        let mut so = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = std::io::Read::read_to_end(&mut so, &mut v);
            v
        })
    };
    let (status, timed_out) = cmd::wait_deadline(&mut child, Instant::now() + T, &what);
    assert!(!timed_out && status.success(), "{what}: {status:?}");
    reader.join().expect("reader")
}

#[test]
fn containerd_creates_tasks_without_a_runtime_info_error() {
    // From 2.2 containerd runs `-info` before each create of a runtime that is not runc's and
    // logs `failed to load runtime info` when it fails; 2.3 also speaks BootstrapParams to
    // `start`. Older versions do neither: there the run alone is checked.
    let Scene { cd, ns: _, ctr } = Scene::start();
    for _ in 0..2 {
        let id = unique_id("c");
        let out = tether_run(&ctr, &id)
            .rm()
            .args(&["/bin/echo", "hi"])
            .output();
        assert_eq!(out.stdout, "hi\n", "{out}\n{}", cd.log_excerpt());
    }
    let log = cd.log();
    assert!(
        !log.contains("failed to load runtime info"),
        "containerd {} could not read our -info:\n{}",
        tether_tests::flavor().version,
        cd.log_excerpt()
    );
    finish(cd, &[]);
}
