//! `Checkpoint` on our shim through the runtime and CRIU: bad requests refused with their codes;
//! CRIU's own error reaching the caller with the container left running; and (where CRIU can
//! dump) a real image.

mod shim2_util;

use shim2_util::{finish, rpc_code, shim_client, T};
use tether_protocol::api::runc_options::CheckpointOptions;
use tether_protocol::api::task::{CheckpointTaskRequest, StateRequest, StateResponse};
use tether_protocol::api::{pack_any, Any, Empty};
use tether_protocol::task_service::TaskCaller;
use tether_tests::{busybox_rootfs, unique_id, Containerd, Ctr, TETHER_RUNTIME};

fn checkpoint(id: &str, path: &str, options: Option<Any>) -> CheckpointTaskRequest {
    CheckpointTaskRequest {
        id: id.to_string(),
        path: path.to_string(),
        options: options.into(),
        ..Default::default()
    }
}

/// A detached `sleep` container; `flags` go to `ctr run`.
fn sleeper(ctr: &Ctr, id: &str, flags: &[&str]) {
    let mut run = ctr
        .run(id)
        .runtime(TETHER_RUNTIME)
        .rootfs(busybox_rootfs())
        .detach();
    for f in flags {
        run = run.flag(f);
    }
    run.args(&["/bin/sleep", "1000"]).success();
}

/// The shim still answers, and containerd and the shim agree the task runs with its pid.
fn assert_still_running(shim: &TaskCaller, ctr: &Ctr, id: &str) {
    let state: StateResponse = shim
        .call(
            "State",
            &StateRequest {
                id: id.to_string(),
                ..Default::default()
            },
            T,
        )
        .expect("the shim still answers");
    let task = ctr.task(id).expect("task listed");
    assert_eq!((task.status.as_str(), task.pid), ("RUNNING", state.pid));
}

#[test]
fn checkpoint_refuses_bad_requests() {
    let cd = Containerd::start();
    let ns = unique_id("ns");
    let ctr = cd.ctr(&ns);
    let id = unique_id("c");
    sleeper(&ctr, &id, &[]);
    let shim = shim_client(&cd, &ns, &id);
    let dir = tempfile::tempdir().expect("tempdir for the image");
    let image_s = dir.path().join("image").display().to_string();

    let wrong_type = Any {
        type_url: "containerd.runc.v1.Options".into(),
        value: Vec::new(),
        ..Default::default()
    };
    let code = rpc_code(
        shim.call::<_, Empty>(
            "Checkpoint",
            &checkpoint(&id, &image_s, Some(wrong_type)),
            T,
        ),
        "Checkpoint with options of another type",
    );
    assert_eq!(code, ttrpc::Code::INVALID_ARGUMENT);
    let code = rpc_code(
        shim.call::<_, Empty>("Checkpoint", &checkpoint(&id, "relative/dir", None), T),
        "Checkpoint to a relative path",
    );
    assert_eq!(code, ttrpc::Code::INVALID_ARGUMENT);
    let code = rpc_code(
        shim.call::<_, Empty>("Checkpoint", &checkpoint("nosuch", &image_s, None), T),
        "Checkpoint of an unknown container",
    );
    assert_eq!(code, ttrpc::Code::NOT_FOUND);
    assert!(
        !dir.path().join("image").exists(),
        "a refused checkpoint writes nothing"
    );
    assert_still_running(&shim, &ctr, &id);
    drop(shim);
    finish(cd, &[&id]);
}

/// CRIU fails to dump a container whose stdout is a host file (an external file it cannot
/// restore), with any CRIU version; here it also fails on this kernel's vDSO. Either way the
/// error that reaches the caller is CRIU's, its log is kept, and the container runs on.
#[test]
fn checkpoint_reports_criu_errors_and_leaves_the_container_running() {
    let cd = Containerd::start();
    let ns = unique_id("ns");
    let ctr = cd.ctr(&ns);
    let id = unique_id("c");
    let logs = tempfile::tempdir().expect("tempdir for the log");
    let uri = format!("file://{}", logs.path().join("out.log").display());
    sleeper(&ctr, &id, &["--log-uri", &uri]);
    let shim = shim_client(&cd, &ns, &id);
    let dir = tempfile::tempdir().expect("tempdir for the image");
    let image = dir.path().join("image");

    let opts = pack_any(&CheckpointOptions::default()).expect("pack options");
    let req = checkpoint(&id, &image.display().to_string(), Some(opts));
    let s = match shim.call::<_, Empty>("Checkpoint", &req, T) {
        Err(ttrpc::Error::RpcStatus(s)) => s,
        other => panic!("checkpoint of a container with a host file as stdout: {other:?}"),
    };
    // The runtime's own error, not a generic one: it names CRIU and where its log is.
    assert!(
        s.message().contains("criu") && s.message().contains("dump.log"),
        "checkpoint error: {s:?}"
    );
    assert!(
        image.join("dump.log").is_file(),
        "CRIU's log is kept in the work path"
    );
    assert_still_running(&shim, &ctr, &id);
    drop(shim);
    finish(cd, &[&id]);
}

#[test]
#[ignore = "CRIU 3.17 (Debian 12's) cannot dump on this kernel (`criu check`: vDSO area bounds); \
            run with --ignored where `criu check` passes (CRIU 4.x built from source works)"]
fn checkpoint_writes_an_image_and_leaves_the_container_running() {
    let cd = Containerd::start();
    let ns = unique_id("ns");
    let ctr = cd.ctr(&ns);
    let id = unique_id("c");
    sleeper(&ctr, &id, &[]);
    let shim = shim_client(&cd, &ns, &id);
    let dir = tempfile::tempdir().expect("tempdir for the image");
    let image = dir.path().join("image");

    let opts = pack_any(&CheckpointOptions::default()).expect("pack options");
    let req = checkpoint(&id, &image.display().to_string(), Some(opts));
    shim.call::<_, Empty>("Checkpoint", &req, T)
        .unwrap_or_else(|e| panic!("checkpoint: {e:?}"));
    let files: Vec<_> = std::fs::read_dir(&image)
        .expect("the image directory exists")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        files.iter().any(|f| f.ends_with(".img")),
        "CRIU image files in {}: {files:?}",
        image.display()
    );
    assert_still_running(&shim, &ctr, &id);
    drop(shim);
    finish(cd, &[&id]);
}

/// A bundle for a second container of the shim serving `first`: its spec, the read-only busybox
/// rootfs, its own cgroup.
fn second_bundle(cd: &Containerd, ns: &str, first: &str, id: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp bundle dir");
    let config = cd.bundle(ns, first).join("config.json");
    let text = std::fs::read_to_string(&config).expect("the first container's config.json");
    let mut spec: serde_json::Value = serde_json::from_str(&text).expect("config.json is JSON");
    spec["root"] = serde_json::json!({ "path": busybox_rootfs(), "readonly": true });
    spec["linux"]["cgroupsPath"] = serde_json::json!(format!("/{ns}/{id}"));
    std::fs::write(
        dir.path().join("config.json"),
        serde_json::to_vec(&spec).expect("serialize the spec"),
    )
    .expect("write config.json");
    dir
}

/// `Create` with a checkpoint is restored at `Start` (as with containerd's shim). An image CRIU
/// cannot restore fails that Start with the runtime's error; the container stays created, with
/// no pid to signal, and can be deleted; the shim serves on.
#[test]
fn restore_from_an_unusable_image_fails_at_start_and_the_shim_serves_on() {
    use tether_protocol::api::task::{
        CreateTaskRequest, CreateTaskResponse, DeleteRequest, DeleteResponse, KillRequest,
        StartRequest, StartResponse, Status,
    };
    let cd = Containerd::start();
    let ns = unique_id("ns");
    let ctr = cd.ctr(&ns);
    let first = unique_id("c");
    sleeper(&ctr, &first, &[]);
    let shim = shim_client(&cd, &ns, &first);
    let id = unique_id("r");
    let bundle = second_bundle(&cd, &ns, &first, &id);
    let create = |checkpoint: &str| CreateTaskRequest {
        id: id.clone(),
        bundle: bundle.path().display().to_string(),
        checkpoint: checkpoint.to_string(),
        ..Default::default()
    };
    let code = rpc_code(
        shim.call::<_, CreateTaskResponse>("Create", &create("/nonexistent/image"), T),
        "Create from a checkpoint that does not exist",
    );
    assert_eq!(code, tether_protocol::api::ttrpc::Code::INVALID_ARGUMENT);

    let image = tempfile::tempdir().expect("an empty image dir");
    let created: CreateTaskResponse = shim
        .call("Create", &create(&image.path().display().to_string()), T)
        .expect("Create from a checkpoint is accepted; the restore comes at Start");
    assert_eq!(created.pid, 0, "nothing runs before the restore");
    let state: StateResponse = shim
        .call(
            "State",
            &StateRequest {
                id: id.clone(),
                ..Default::default()
            },
            T,
        )
        .expect("State");
    assert_eq!(state.status.enum_value(), Ok(Status::CREATED), "{state:?}");

    let start = StartRequest {
        id: id.clone(),
        ..Default::default()
    };
    let failed = shim.call::<_, StartResponse>("Start", &start, T);
    let status = match failed {
        Err(tether_protocol::api::ttrpc::Error::RpcStatus(s)) => s,
        other => panic!("Start of an empty image must fail: {other:?}"),
    };
    assert!(
        status.message().contains("restore"),
        "the runtime's restore error: {status:?}"
    );
    let kill = KillRequest {
        id: id.clone(),
        signal: 9,
        ..Default::default()
    };
    let code = rpc_code(
        shim.call::<_, Empty>("Kill", &kill, T),
        "Kill of a container that was never restored",
    );
    assert_eq!(code, tether_protocol::api::ttrpc::Code::FAILED_PRECONDITION);
    let _: DeleteResponse = shim
        .call(
            "Delete",
            &DeleteRequest {
                id: id.clone(),
                ..Default::default()
            },
            T,
        )
        .expect("Delete of a container never restored");
    assert_still_running(&shim, &ctr, &first);
    drop(shim);
    assert!(ctr.task_kill(&first, "SIGKILL").success());
    assert!(tether_tests::wait_until(T, || ctr
        .task(&first)
        .is_some_and(|t| t.status == "STOPPED")));
    assert_eq!(ctr.task_delete_status(&first), 137);
    assert!(ctr.container_delete(&first).success());
    finish(cd, &[&first, &id]);
}
