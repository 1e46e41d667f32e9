//! `Checkpoint` on our shim through the runtime and CRIU: bad requests refused with their codes;
//! CRIU's own error reaching the caller with the container left running; and (where CRIU can
//! dump) a real image.

use tether_protocol::api::runc_options::CheckpointOptions;
use tether_protocol::api::task::CheckpointTaskRequest;
use tether_protocol::api::{pack_any, Any, Empty};
use tether_protocol::task_service::TaskCaller;
use tether_tests::criu::working_criu;
use tether_tests::shimtest::state;
use tether_tests::shimtest::Scene;
use tether_tests::shimtest::{finish, rpc_code, shim_client, T};
use tether_tests::{busybox_rootfs, unique_id, Ctr, TETHER_RUNTIME};

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

/// SIGKILLs the task through containerd, waits until it stopped, checks its status (137) and
/// deletes task and container.
fn kill_and_delete(ctr: &Ctr, id: &str) {
    assert!(ctr.task_kill(id, "SIGKILL").success());
    assert!(tether_tests::wait_until(T, || ctr
        .task(id)
        .is_some_and(|t| t.status == "STOPPED")));
    assert_eq!(ctr.task_delete_status(id), 137);
    assert!(ctr.container_delete(id).success());
}

/// The shim still answers, and containerd and the shim agree the task runs with its pid.
fn assert_still_running(shim: &TaskCaller, ctr: &Ctr, id: &str) {
    let state = state(shim, id, "");
    let task = ctr.task(id).expect("task listed");
    assert_eq!((task.status.as_str(), task.pid), ("RUNNING", state.pid));
}

#[test]
fn checkpoint_refuses_bad_requests() {
    let Scene { cd, ns, ctr } = Scene::start();
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
    let Scene { cd, ns, ctr } = Scene::start();
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

/// `--leave-running` (CheckpointOptions.exit false) with the CRIU of the `CriuPath` option (as
/// `ctr --runtime-config-path` passes it): an image, and the container runs on.
#[test]
fn checkpoint_writes_an_image_and_leaves_the_container_running() {
    let Scene { cd, ns, ctr } = Scene::start();
    let id = unique_id("c");
    let config = tempfile::tempdir().expect("tempdir");
    let toml = config.path().join("tether.toml");
    let criu = working_criu().display().to_string();
    std::fs::write(&toml, format!("CriuPath = {criu:?}\n")).expect("write tether.toml");
    sleeper(
        &ctr,
        &id,
        &[&format!("--runtime-config-path={}", toml.display())],
    );
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

/// `Create` with a checkpoint is restored at `Start` (as with containerd's shim). An image CRIU
/// cannot restore fails that Start with the runtime's error; the container stays created, with
/// no pid to signal, and can be deleted; the shim serves on.
#[test]
fn restore_from_an_unusable_image_fails_at_start_and_the_shim_serves_on() {
    use tether_protocol::api::task::{
        CreateTaskRequest, CreateTaskResponse, DeleteRequest, DeleteResponse, KillRequest,
        StartRequest, StartResponse, Status,
    };
    let Scene { cd, ns, ctr } = Scene::start();
    let first = unique_id("c");
    sleeper(&ctr, &first, &[]);
    let shim = shim_client(&cd, &ns, &first);
    let id = unique_id("r");
    let bundle = tether_tests::shim::second_bundle(&cd, &ns, &first, &id, &["/bin/sleep", "1000"]);
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
    let state = state(&shim, &id, "");
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
    kill_and_delete(&ctr, &first);
    finish(cd, &[&first, &id]);
}

fn lines_of(path: &std::path::Path) -> Vec<u64> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// The whole round trip through the task API, as containerd drives it: a counting container is
/// checkpointed (and exits), deleted, created again from its image under a new id and started:
/// it counts on from the next number, its output through the new container's stdio.
#[test]
fn checkpoint_then_restore_counts_on_where_it_stopped() {
    use tether_protocol::api::task::{
        CreateTaskRequest, CreateTaskResponse, DeleteRequest, DeleteResponse, KillRequest,
        StartRequest, StartResponse, WaitRequest, WaitResponse,
    };
    use tether_protocol::runtime_options::RuntimeOptions;
    let criu = working_criu();
    let Scene { cd, ns, ctr } = Scene::start();
    let first = unique_id("c");
    sleeper(&ctr, &first, &[]);
    let shim = shim_client(&cd, &ns, &first);
    let options = RuntimeOptions {
        config_body: format!("CriuPath = {:?}\n", criu.display().to_string()).into_bytes(),
        ..Default::default()
    }
    .to_any()
    .expect("encode the runtime options");
    let work = tempfile::tempdir().expect("tempdir");
    let image = work.path().join("image");
    let counter = |id: &str| {
        let count = "i=0; while :; do echo $i; i=$((i+1)); sleep 0.1; done";
        tether_tests::shim::second_bundle(&cd, &ns, &first, id, &["/bin/sh", "-c", count])
    };
    let run = |id: &str, bundle: &std::path::Path, out: &std::path::Path, checkpoint: &str| {
        let req = CreateTaskRequest {
            id: id.to_string(),
            bundle: bundle.display().to_string(),
            stdout: format!("file://{}", out.display()),
            checkpoint: checkpoint.to_string(),
            options: protobuf::MessageField::some(options.clone()),
            ..Default::default()
        };
        let _: CreateTaskResponse = shim
            .call("Create", &req, T)
            .unwrap_or_else(|e| panic!("Create {id}: {e:?}"));
        let start = StartRequest {
            id: id.to_string(),
            ..Default::default()
        };
        let started: StartResponse = shim
            .call("Start", &start, T)
            .unwrap_or_else(|e| panic!("Start {id}: {e:?}"));
        assert!(started.pid > 0, "{started:?}");
    };
    let end = |id: &str| {
        let wait = WaitRequest {
            id: id.to_string(),
            ..Default::default()
        };
        let _: WaitResponse = shim.call("Wait", &wait, T).expect("Wait");
        let del = DeleteRequest {
            id: id.to_string(),
            ..Default::default()
        };
        let _: DeleteResponse = shim.call("Delete", &del, T).expect("Delete");
    };

    let a = unique_id("n");
    let bundle_a = counter(&a);
    let out_a = work.path().join("a.log");
    run(&a, bundle_a.path(), &out_a, "");
    assert!(
        tether_tests::wait_until(T, || lines_of(&out_a).len() >= 5),
        "the counter counts: {:?}",
        lines_of(&out_a)
    );
    let opts = pack_any(&CheckpointOptions {
        exit: true,
        ..Default::default()
    })
    .expect("pack options");
    let req = checkpoint(&a, &image.display().to_string(), Some(opts));
    shim.call::<_, Empty>("Checkpoint", &req, T)
        .unwrap_or_else(|e| panic!("checkpoint with {}: {e:?}", criu.display()));
    end(&a);
    let before = lines_of(&out_a);
    let last = *before.last().expect("counted before the checkpoint");

    let b = unique_id("n");
    let bundle_b = counter(&b);
    let out_b = work.path().join("b.log");
    run(&b, bundle_b.path(), &out_b, &image.display().to_string());
    assert!(
        tether_tests::wait_until(T, || lines_of(&out_b).len() >= 3),
        "the restored counter counts on: {:?}",
        lines_of(&out_b)
    );
    assert_eq!(
        lines_of(&out_b)[0],
        last + 1,
        "it resumes after {last}, where it stopped"
    );
    let kill = KillRequest {
        id: b.clone(),
        signal: 9,
        ..Default::default()
    };
    shim.call::<_, Empty>("Kill", &kill, T).expect("Kill");
    end(&b);
    assert_still_running(&shim, &ctr, &first);
    drop(shim);
    kill_and_delete(&ctr, &first);
    finish(cd, &[&first, &a, &b]);
}

/// `ctr task checkpoint`: containerd's client pauses the task, has the shim dump it into a
/// directory of its own, resumes it, and stores the image in its content store (ctr 1.6 takes
/// `--image-path` only for runc's runtime types). A paused container must checkpoint, as with
/// containerd's shim.
#[test]
fn ctr_task_checkpoint_of_a_running_container_through_containerd() {
    let Scene { cd, ns, ctr } = Scene::start();
    let id = unique_id("c");
    let dir = tempfile::tempdir().expect("tempdir");
    let toml = dir.path().join("tether.toml");
    let criu = working_criu().display().to_string();
    std::fs::write(&toml, format!("CriuPath = {criu:?}\n")).expect("write tether.toml");
    sleeper(
        &ctr,
        &id,
        &[&format!("--runtime-config-path={}", toml.display())],
    );
    let out = ctr.call(&["task", "checkpoint", &id]);
    assert!(
        out.success(),
        "ctr task checkpoint: {out}\n{}",
        cd.log_excerpt()
    );
    let name = out.stdout.trim().to_string();
    assert!(
        name.contains("checkpoint"),
        "ctr names the checkpoint: {out}"
    );
    let images = ctr.call(&["images", "ls", "-q"]);
    assert!(
        images.stdout.lines().any(|l| l.trim() == name),
        "the checkpoint {name} is an image in containerd's store: {images}"
    );
    let shim = shim_client(&cd, &ns, &id);
    assert_still_running(&shim, &ctr, &id);
    drop(shim);
    finish(cd, &[&id]);
}

/// What `cat /count` in container `id` shows: the numbers the counter wrote, in order.
fn counted(ctr: &Ctr, id: &str, exec_id: &str) -> Vec<u64> {
    let out = ctr.call(&["task", "exec", "--exec-id", exec_id, id, "cat", "/count"]);
    out.stdout
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// `ctr container checkpoint --task --rw` and `ctr container restore --live --rw`, as a user of
/// containerd does it, on an image-based container: the counter writes into its own rootfs;
/// its checkpoint (memory and rw layer) is an image in containerd's store; after the original
/// is gone, the container restored under a new id counts on from the number after the last one
/// in the restored file (a fresh start would write 0 again, a restore without the rw layer would
/// lose the beginning), and is an ordinary task afterwards (exec, kill, delete).
#[test]
fn ctr_container_checkpoint_and_restore_count_on() {
    let Scene { cd, ns, ctr } = Scene::start();
    ctr.image_import(&tether_tests::busybox_image().path);
    let dir = tempfile::tempdir().expect("tempdir");
    let toml = dir.path().join("tether.toml");
    let criu = working_criu().display().to_string();
    std::fs::write(&toml, format!("CriuPath = {criu:?}\n")).expect("write tether.toml");
    let first = unique_id("c");
    ctr.run(&first)
        .runtime(TETHER_RUNTIME)
        .image(tether_tests::BUSYBOX_IMAGE)
        .flag(&format!("--runtime-config-path={}", toml.display()))
        .detach()
        .args(&[
            "sh",
            "-c",
            "i=0; while :; do echo $i >> /count; i=$((i+1)); sleep 0.1; done",
        ])
        .success();
    assert!(
        tether_tests::wait_until(T, || counted(&ctr, &first, "n1").len() >= 5),
        "the counter counts: {:?}",
        counted(&ctr, &first, "n2")
    );
    let reference = format!("tether.test/checkpoint/{first}:1");
    let out = ctr.call(&[
        "containers",
        "checkpoint",
        "--task",
        "--rw",
        &first,
        &reference,
    ]);
    assert!(
        out.success(),
        "ctr containers checkpoint: {out}\n{}",
        cd.log_excerpt()
    );
    assert!(
        ctr.images().contains(&reference),
        "the checkpoint is an image: {:?}",
        ctr.images()
    );
    // The original runs on after its checkpoint; then it is gone, snapshot and all.
    let shim = shim_client(&cd, &ns, &first);
    assert_still_running(&shim, &ctr, &first);
    drop(shim);
    kill_and_delete(&ctr, &first);

    let second = unique_id("c");
    let out = ctr.call(&[
        "containers",
        "restore",
        "--live",
        "--rw",
        &second,
        &reference,
    ]);
    assert!(
        out.success(),
        "ctr containers restore: {out}\n{}",
        cd.log_excerpt()
    );
    let task = ctr.task(&second).expect("the restored task is listed");
    assert_eq!(task.status, "RUNNING", "{task:?}");
    let mut seen = counted(&ctr, &second, "r1");
    let before = seen.len();
    assert!(before >= 5, "the rw layer came back: {seen:?}");
    assert!(
        tether_tests::wait_until(T, || {
            seen = counted(&ctr, &second, "r2");
            seen.len() >= before + 3
        }),
        "the restored counter counts on: {seen:?}"
    );
    let expected: Vec<u64> = (0..seen.len() as u64).collect();
    assert_eq!(
        seen, expected,
        "one run of numbers from 0: the rw layer came back and the count went on from it"
    );
    kill_and_delete(&ctr, &second);
    finish(cd, &[&first, &second]);
}
