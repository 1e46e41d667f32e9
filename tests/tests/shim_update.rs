//! `Update` of a running container's resources, called on our shim directly (ctr 1.6 has no
//! `task update`), seen in the container's cgroup files; and bad updates refused with the shim
//! living on.

use std::path::Path;
use tether_protocol::api::task::UpdateTaskRequest;
use tether_protocol::api::{Any, Empty};
use tether_tests::shimtest::state;
use tether_tests::shimtest::Scene;
use tether_tests::shimtest::{finish, rpc_code, shim_client, T};
use tether_tests::{busybox_rootfs, cgroups, unique_id, TETHER_RUNTIME};

fn cgroup_file(controller: &str, ns: &str, id: &str, file: &str) -> String {
    let path = Path::new("/sys/fs/cgroup")
        .join(controller)
        .join(ns)
        .join(id)
        .join(file);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .trim()
        .to_string()
}

fn update(id: &str, json: &[u8]) -> UpdateTaskRequest {
    UpdateTaskRequest {
        id: id.to_string(),
        resources: Some(Any {
            type_url: "opencontainers/runtime-spec/1/LinuxResources".into(),
            value: json.to_vec(),
            ..Default::default()
        })
        .into(),
        ..Default::default()
    }
}

#[test]
fn update_changes_the_cgroup_limits() {
    for controller in ["memory", "pids", "cpu"] {
        cgroups::require_v1(controller);
    }
    let Scene { cd, ns, ctr } = Scene::start();
    let id = unique_id("c");
    ctr.run(&id)
        .runtime(TETHER_RUNTIME)
        .rootfs(busybox_rootfs())
        .detach()
        .flag("--memory-limit")
        .flag("33554432")
        .args(&["/bin/sleep", "1000"])
        .success();
    assert_eq!(
        cgroup_file("memory", &ns, &id, "memory.limit_in_bytes"),
        "33554432"
    );

    let shim = shim_client(&cd, &ns, &id);
    shim.call::<_, Empty>(
        "Update",
        &update(&id, br#"{"memory":{"limit":50331648}}"#),
        T,
    )
    .expect("Update memory limit");
    assert_eq!(
        cgroup_file("memory", &ns, &id, "memory.limit_in_bytes"),
        "50331648"
    );

    shim.call::<_, Empty>(
        "Update",
        &update(&id, br#"{"pids":{"limit":42},"cpu":{"shares":512}}"#),
        T,
    )
    .expect("Update pids and cpu");
    assert_eq!(cgroup_file("pids", &ns, &id, "pids.max"), "42");
    assert_eq!(cgroup_file("cpu", &ns, &id, "cpu.shares"), "512");
    assert_eq!(
        cgroup_file("memory", &ns, &id, "memory.limit_in_bytes"),
        "50331648",
        "what an update leaves out stays as it was"
    );

    // Bad updates are refused; the shim and the container live on.
    let code = rpc_code(
        shim.call::<_, Empty>("Update", &update(&id, b"not json"), T),
        "Update with resources that are not JSON",
    );
    assert_eq!(code, ttrpc::Code::INVALID_ARGUMENT);
    let no_resources = UpdateTaskRequest {
        id: id.clone(),
        ..Default::default()
    };
    let code = rpc_code(
        shim.call::<_, Empty>("Update", &no_resources, T),
        "Update without resources",
    );
    assert_eq!(code, ttrpc::Code::INVALID_ARGUMENT);
    let code = rpc_code(
        shim.call::<_, Empty>(
            "Update",
            &update("nosuch", br#"{"memory":{"limit":50331648}}"#),
            T,
        ),
        "Update of an unknown container",
    );
    assert_eq!(code, ttrpc::Code::NOT_FOUND);
    let state = state(&shim, &id, "");
    assert_eq!(state.pid, ctr.task(&id).expect("task listed").pid);
    assert_eq!(ctr.task(&id).expect("task listed").status, "RUNNING");
    assert_eq!(
        cgroup_file("memory", &ns, &id, "memory.limit_in_bytes"),
        "50331648"
    );
    drop(shim);
    finish(cd, &[&id]);
}
