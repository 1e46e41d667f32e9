//! `Checkpoint` on our shim through CRIU. On this machine CRIU cannot dump (its vDSO check fails
//! on this kernel), so what is tested is the error path: the runtime's own CRIU error reaches
//! the caller, the container keeps running, the shim serves on. Where CRIU works, the image is
//! checked instead.

mod shim2_util;

use shim2_util::{finish, rpc_code, shim_client, T};
use tether_protocol::api::runc_options::CheckpointOptions;
use tether_protocol::api::task::{CheckpointTaskRequest, StateRequest, StateResponse};
use tether_protocol::api::{pack_any, Any, Empty};
use tether_tests::{busybox_rootfs, unique_id, Containerd, TETHER_RUNTIME};

fn checkpoint(id: &str, path: &str, options: Option<Any>) -> CheckpointTaskRequest {
    CheckpointTaskRequest {
        id: id.to_string(),
        path: path.to_string(),
        options: options.into(),
        ..Default::default()
    }
}

#[test]
fn checkpoint_reports_criu_errors_and_leaves_the_container_running() {
    let cd = Containerd::start();
    let ns = unique_id("ns");
    let ctr = cd.ctr(&ns);
    let id = unique_id("c");
    ctr.run(&id)
        .runtime(TETHER_RUNTIME)
        .rootfs(busybox_rootfs())
        .detach()
        .args(&["/bin/sleep", "1000"])
        .success();
    let shim = shim_client(&cd, &ns, &id);
    let dir = tempfile::tempdir().expect("tempdir for the image");
    let image = dir.path().join("image");
    let image_s = image.display().to_string();

    // Bad requests first: each refused with its code, nothing touched.
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

    // The real thing, leaving the container running.
    let opts = pack_any(&CheckpointOptions::default()).expect("pack options");
    let result = shim.call::<_, Empty>("Checkpoint", &checkpoint(&id, &image_s, Some(opts)), T);
    match result {
        Ok(_) => {
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
        }
        Err(ttrpc::Error::RpcStatus(s)) => {
            // The runtime's own error, not a generic one: it names CRIU and where its log is.
            assert!(
                s.message().contains("criu") && s.message().contains("dump.log"),
                "checkpoint error: {s:?}"
            );
            assert!(
                image.join("dump.log").is_file(),
                "CRIU's log is kept in the work path"
            );
            println!(
                "SKIP: a successful checkpoint could not be exercised: CRIU cannot dump here ({})",
                s.message().lines().next().unwrap_or_default()
            );
        }
        Err(e) => panic!("checkpoint: {e:?}"),
    }
    let state: StateResponse = shim
        .call(
            "State",
            &StateRequest {
                id: id.clone(),
                ..Default::default()
            },
            T,
        )
        .expect("the shim still answers");
    let task = ctr.task(&id).expect("task listed");
    assert_eq!((task.status.as_str(), task.pid), ("RUNNING", state.pid));
    drop(shim);
    finish(cd, &[&id]);
}
