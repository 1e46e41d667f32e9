//! Runtime options in the form containerd's CRI plugin sends them for a runtime that is not
//! runc's: `runtimeoptions.v1.Options`, its TOML in `config_path` (what `ctr
//! --runtime-config-path` and containerd 1.6 send) or `config_body` (containerd 1.7 and 2.x).
//! Each test proves the options reach the runtime: `BinaryName` is a wrapper that records its
//! arguments and execs runc, and `Root` a private state root.

use std::path::PathBuf;
use std::time::Duration;
use tether_protocol::api::task::{
    CreateTaskRequest, CreateTaskResponse, DeleteRequest, DeleteResponse, Status as TaskStatus,
};
use tether_protocol::api::ttrpc::{self, Code};
use tether_protocol::runtime_options::RuntimeOptions;
use tether_protocol::task_service::TaskCaller;
use tether_tests::shimtest::sleeper;
use tether_tests::shimtest::state;
use tether_tests::shimtest::Scene;
use tether_tests::{busybox_rootfs, shim, unique_id, wait_until, Containerd, TETHER_RUNTIME};

const T: Duration = Duration::from_secs(20);

/// A runtime wrapper that logs each call's arguments, one line each, then runs runc, and a
/// private runc root for it.
struct Wrapper {
    dir: tempfile::TempDir,
}

impl Wrapper {
    fn new() -> Wrapper {
        let dir = tempfile::tempdir().expect("temp dir");
        let runc = which("runc").expect("runc on PATH (`make deps`)");
        let script = format!(
            "#!/bin/sh\necho \"$*\" >> {log}\nexec {runc} \"$@\"\n",
            log = dir.path().join("calls").display(),
            runc = runc.display()
        );
        let w = Wrapper { dir };
        tether_tests::cmd::write_executable(&w.binary(), script);
        std::fs::create_dir(w.root()).expect("mkdir root");
        w
    }

    fn binary(&self) -> PathBuf {
        self.dir.path().join("runc-wrapper")
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// The options table, as a cluster operator writes it.
    fn toml(&self) -> String {
        format!(
            "BinaryName = {:?}\nRoot = {:?}\nSomeOtherRuntimesKey = [1, 2]\n",
            self.binary().display().to_string(),
            self.root().display().to_string()
        )
    }

    /// The wrapper's calls: `(command, its arguments)` per line, after runc's global flags.
    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("calls"))
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    }

    /// Whether the wrapper ran `command` for `id` with the private root of `namespace`.
    fn ran(&self, command: &str, namespace: &str, id: &str) -> bool {
        let root = format!("--root {}", self.root().join(namespace).display());
        self.calls().iter().any(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            l.starts_with(&root) && words.contains(&command) && words.last() == Some(&id)
        })
    }
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .chain(["/usr/sbin".into(), "/usr/bin".into(), "/sbin".into()])
        .map(|d: PathBuf| d.join(name))
        .find(|p| p.is_file())
}

#[test]
fn runtime_config_path_reaches_the_runtime() {
    tether_tests::shim_binary();
    let w = Wrapper::new();
    let config = w.dir.path().join("tether.toml");
    std::fs::write(&config, w.toml()).expect("write tether.toml");
    let Scene { cd, ns, ctr } = Scene::start();
    let id = unique_id("c");
    let out = ctr
        .run(&id)
        .runtime(TETHER_RUNTIME)
        .rootfs(busybox_rootfs())
        .flag("--read-only")
        .flag(&format!("--runtime-config-path={}", config.display()))
        .rm()
        .args(&["/bin/echo", "hello"])
        .success();
    assert_eq!(out.stdout, "hello\n", "{out}");
    for command in ["create", "start", "delete"] {
        assert!(
            w.ran(command, &ns, &id),
            "the wrapper ran `{command}` with --root {}: {:#?}",
            w.root().join(&ns).display(),
            w.calls()
        );
    }
    assert!(
        !w.root().join(&ns).join(&id).exists(),
        "runc's state under the private root is gone"
    );
    assert!(
        !shim::runc_state_dir(&ns, &id).exists(),
        "nothing under the default root"
    );

    // A key of the wrong type: the run fails, saying which key, and leaves nothing.
    std::fs::write(&config, "BinaryName = 1\n").expect("rewrite tether.toml");
    let bad = unique_id("c");
    let out = ctr
        .run(&bad)
        .runtime(TETHER_RUNTIME)
        .rootfs(busybox_rootfs())
        .flag("--read-only")
        .flag(&format!("--runtime-config-path={}", config.display()))
        .rm()
        .args(&["/bin/true"])
        .output();
    assert!(!out.success(), "{out}");
    assert!(
        out.stderr.contains("BinaryName must be a string"),
        "ctr shows the shim's reason: {out}"
    );
    let _ = ctr.container_delete(&bad);
    assert!(wait_until(T, || cd.shim_pids().is_empty()));

    tether_tests::shimtest::finish(cd, &[]);
}

#[test]
fn config_body_options_reach_the_runtime_through_the_task_api() {
    tether_tests::shim_binary();
    let w = Wrapper::new();
    let Scene { cd, ns, ctr } = Scene::start();
    let first = sleeper(&ctr);
    let address = shim::address(&cd.bundle(&ns, &first)).expect("the shim's address file");
    let (caller, _) = TaskCaller::connect(&address, T).expect("connect to the shim");

    // A second container through the same shim, with the options as containerd 1.7/2.x's CRI
    // plugin sends them for our runtime type.
    let id = unique_id("c");
    let bundle = shim::second_bundle(&cd, &ns, &first, &id, &["/bin/true"]);
    let options = RuntimeOptions {
        config_body: w.toml().into_bytes(),
        ..Default::default()
    };
    let req = CreateTaskRequest {
        id: id.clone(),
        bundle: bundle.path().display().to_string(),
        options: protobuf::MessageField::some(options.to_any().expect("encode the options")),
        ..Default::default()
    };
    let created: CreateTaskResponse = caller
        .call("Create", &req, T)
        .unwrap_or_else(|e| panic!("Create with runtimeoptions.v1.Options: {e:?}"));
    assert!(created.pid > 0, "{created:?}");
    assert!(
        w.ran("create", &ns, &id),
        "the wrapper ran `create` with the private root: {:#?}",
        w.calls()
    );
    assert!(w.root().join(&ns).join(&id).join("state.json").is_file());
    let state = state(&caller, &id, "");
    assert_eq!(
        state.status.enum_value(),
        Ok(TaskStatus::CREATED),
        "{state:?}"
    );

    let deleted: DeleteResponse = caller
        .call(
            "Delete",
            &DeleteRequest {
                id: id.clone(),
                ..Default::default()
            },
            T,
        )
        .unwrap_or_else(|e| panic!("Delete of the second container: {e:?}"));
    assert_eq!(deleted.pid, created.pid, "{deleted:?}");
    assert!(
        w.ran("delete", &ns, &id),
        "the wrapper ran `delete`: {:#?}",
        w.calls()
    );
    assert!(!w.root().join(&ns).join(&id).exists());

    // Options of the wrong type are refused, naming the key; the shim serves on.
    let bad = RuntimeOptions {
        config_body: b"NoPivotRoot = \"yes\"\n".to_vec(),
        ..Default::default()
    };
    let req = CreateTaskRequest {
        id: unique_id("c"),
        bundle: bundle.path().display().to_string(),
        options: protobuf::MessageField::some(bad.to_any().expect("encode")),
        ..Default::default()
    };
    match caller.call::<_, CreateTaskResponse>("Create", &req, T) {
        Err(ttrpc::Error::RpcStatus(s)) => {
            assert_eq!(s.code(), Code::INVALID_ARGUMENT, "{s:?}");
            assert!(s.message().contains("NoPivotRoot"), "{s:?}");
        }
        other => panic!("Create with NoPivotRoot = \"yes\": {other:?}"),
    }
    drop(caller);

    // The first container still runs under the same shim; end it through containerd.
    assert_eq!(
        ctr.task(&first).map(|t| t.status),
        Some("RUNNING".to_string())
    );
    assert!(ctr.task_kill(&first, "SIGKILL").success());
    assert!(wait_until(T, || ctr
        .task(&first)
        .is_some_and(|t| t.status == "STOPPED")));
    assert_eq!(ctr.task_delete_status(&first), 137);
    assert!(ctr.container_delete(&first).success());
    assert!(wait_until(T, || cd.shim_pids().is_empty()));
    tether_tests::shimtest::finish(cd, &[]);
    assert!(
        tether_tests::cgroups::existing(&format!("{ns}/{id}")).is_empty(),
        "the second container's cgroup is gone"
    );
}

/// Runs `stat` of its own stdout pipe as uid/gid 1000 in a second container of the shim serving
/// `first`, its stdout to a file; returns its exit status and what reached the file.
fn stdout_owner_as_user(
    cd: &Containerd,
    caller: &TaskCaller,
    ns: &str,
    first: &str,
    options: &str,
) -> (u32, String) {
    use tether_protocol::api::task::{StartRequest, StartResponse, WaitRequest, WaitResponse};
    let id = unique_id("c");
    let bundle = shim::second_bundle(cd, ns, first, &id, &["/bin/true"]);
    let config = bundle.path().join("config.json");
    let mut spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config).expect("read spec")).expect("spec");
    spec["process"]["user"] = serde_json::json!({ "uid": 1000, "gid": 1000 });
    // No capabilities: CAP_DAC_OVERRIDE would open any pipe whoever owns it.
    spec["process"]["capabilities"] = serde_json::json!({});
    spec["process"]["terminal"] = false.into();
    spec["process"]["args"] =
        serde_json::json!(["/bin/stat", "-L", "-c", "%u:%g", "/proc/self/fd/1"]);
    std::fs::write(&config, serde_json::to_vec(&spec).expect("encode")).expect("write spec");
    let out = bundle.path().join("out.log");
    let options = RuntimeOptions {
        config_body: options.as_bytes().to_vec(),
        ..Default::default()
    };
    let req = CreateTaskRequest {
        id: id.clone(),
        bundle: bundle.path().display().to_string(),
        stdout: format!("file://{}", out.display()),
        options: protobuf::MessageField::some(options.to_any().expect("encode the options")),
        ..Default::default()
    };
    let _: CreateTaskResponse = caller
        .call("Create", &req, T)
        .unwrap_or_else(|e| panic!("Create: {e:?}"));
    let task = |exec_id: &str| (id.clone(), exec_id.to_string());
    let (tid, eid) = task("");
    let _: StartResponse = caller
        .call(
            "Start",
            &StartRequest {
                id: tid.clone(),
                exec_id: eid.clone(),
                ..Default::default()
            },
            T,
        )
        .unwrap_or_else(|e| panic!("Start: {e:?}"));
    let waited: WaitResponse = caller
        .call(
            "Wait",
            &WaitRequest {
                id: tid.clone(),
                exec_id: eid,
                ..Default::default()
            },
            T,
        )
        .unwrap_or_else(|e| panic!("Wait: {e:?}"));
    let _: DeleteResponse = caller
        .call(
            "Delete",
            &DeleteRequest {
                id: tid,
                ..Default::default()
            },
            T,
        )
        .unwrap_or_else(|e| panic!("Delete: {e:?}"));
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    (waited.exit_status, text)
}

/// `IoUid`/`IoGid`: the container's ends of its stdio pipes belong to that user and group, as
/// with containerd's shim, so a user-namespaced container (whose runtime cannot chown a pipe
/// of the host's root) may reopen them. runc itself gives the pipe's uid to the process's user
/// where it can, never its gid: the gid is what shows the option took effect.
#[test]
fn io_uid_and_gid_own_the_container_stdio_pipes() {
    tether_tests::shim_binary();
    let Scene { cd, ns, ctr } = Scene::start();
    let first = sleeper(&ctr);
    let address = shim::address(&cd.bundle(&ns, &first)).expect("the shim's address file");
    let (caller, _) = TaskCaller::connect(&address, T).expect("connect to the shim");

    let with = "IoUid = 1000\nIoGid = 1001\n";
    let (status, text) = stdout_owner_as_user(&cd, &caller, &ns, &first, with);
    assert_eq!(
        (status, text.as_str()),
        (0, "1000:1001\n"),
        "with IoUid/IoGid"
    );
    let (status, text) = stdout_owner_as_user(&cd, &caller, &ns, &first, "");
    assert_eq!(
        (status, text.as_str()),
        (0, "1000:0\n"),
        "without: root's group"
    );
    drop(caller);

    assert!(ctr.task_kill(&first, "SIGKILL").success());
    assert!(wait_until(T, || ctr
        .task(&first)
        .is_some_and(|t| t.status == "STOPPED")));
    assert_eq!(ctr.task_delete_status(&first), 137);
    assert!(ctr.container_delete(&first).success());
    assert!(wait_until(T, || cd.shim_pids().is_empty()));
    let check = cd.leak_check();
    let report = cd.shutdown();
    assert!(report.problems.is_empty(), "{report:#?}");
    check.assert_clean();
}
