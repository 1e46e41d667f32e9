//! Helpers shared by the shim feature tests (`shim_exec`, `shim_terminal`, `shim_pause`,
//! `shim_metrics_oom`, `shim_update`, `shim_checkpoint`, ...): a raw ttrpc client to one
//! container's shim, and the end-of-test check that nothing is left.

use crate::ctr::Run;
use crate::{busybox_rootfs, procs, unique_id, Containerd, Ctr, TETHER_RUNTIME};
use std::time::Duration;
use tether_protocol::api::task::{StateRequest, StateResponse};
use tether_protocol::task_service::TaskCaller;

/// The deadline of one wait in these tests.
pub const T: Duration = Duration::from_secs(20);

/// What most shim tests start with: a private containerd, a namespace of the test's own and a
/// `ctr` in it. Destructure it: `let Scene { cd, ns, ctr } = Scene::start();`.
pub struct Scene {
    pub cd: Containerd,
    pub ns: String,
    pub ctr: Ctr,
}

impl Scene {
    pub fn start() -> Scene {
        let cd = Containerd::start();
        let ns = unique_id("ns");
        let ctr = cd.ctr(&ns);
        Scene { cd, ns, ctr }
    }
}

/// A detached container under our shim on the busybox rootfs, running `cmd`; its (unique) id.
pub fn detached(ctr: &Ctr, cmd: &[&str]) -> String {
    let id = unique_id("c");
    ctr.run_detached_rootfs(TETHER_RUNTIME, busybox_rootfs(), &id, cmd);
    id
}

/// A detached, read-only `sleep 1000` container under our shim (the busybox rootfs is shared
/// by parallel tests); its (unique) id.
pub fn sleeper(ctr: &Ctr) -> String {
    let id = unique_id("c");
    tether_run(ctr, &id)
        .detach()
        .args(&["/bin/sleep", "1000"])
        .success();
    id
}

/// A [`sleeper`] whose shim is given the runtime options file `options` (as
/// `ctr run --runtime-config-path` gives it: e.g. a [`runtime_wrapper`]'s).
pub fn sleeper_with_options(ctr: &Ctr, options: &std::path::Path) -> String {
    let id = unique_id("c");
    tether_run(ctr, &id)
        .flag(&format!("--runtime-config-path={}", options.display()))
        .detach()
        .args(&["/bin/sleep", "1000"])
        .success();
    id
}

/// `ctr run --runtime io.containerd.tether.v2 --read-only --rootfs <busybox> ID`, to be given
/// its flags and command.
pub fn tether_run<'a>(ctr: &'a Ctr, id: &str) -> Run<'a> {
    crate::shim_binary();
    ctr.run(id)
        .runtime(TETHER_RUNTIME)
        .rootfs(busybox_rootfs())
        .flag("--read-only")
}

/// The shim's `State` of process `exec_id` ("" for the init) of task `id`; fails the test
/// unless the shim answers.
pub fn state(shim: &TaskCaller, id: &str, exec_id: &str) -> StateResponse {
    let req = StateRequest {
        id: id.to_string(),
        exec_id: exec_id.to_string(),
        ..Default::default()
    };
    shim.call("State", &req, T)
        .unwrap_or_else(|e| panic!("State of {id}/{exec_id}: {e:?}"))
}

/// The shim address of task `id` in `ns`, from the bundle's `address` file.
pub fn shim_address(cd: &Containerd, ns: &str, id: &str) -> String {
    let path = cd.bundle(ns, id).join("address");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .trim()
        .to_string()
}

/// A raw task API client to the shim of task `id` in `ns` (connected and `Connect`ed).
pub fn shim_client(cd: &Containerd, ns: &str, id: &str) -> TaskCaller {
    let address = shim_address(cd, ns, id);
    let (caller, _) = TaskCaller::connect(&address, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect to the shim at {address}: {e:?}"));
    caller
}

/// The long-lived shim process of task `id` (not a `start`/`delete` action).
pub fn serving_shim_pid(cd: &Containerd, id: &str) -> i32 {
    let found: Vec<i32> = cd
        .shim_pids()
        .into_iter()
        .filter(|&p| {
            procs::cmdline(p).is_some_and(|a| {
                a.windows(2).any(|w| w[0] == "-id" && w[1] == id)
                    && !matches!(a.last().map(String::as_str), Some("start" | "delete"))
            })
        })
        .collect();
    assert_eq!(found.len(), 1, "one shim serves {id}: {found:?}");
    found[0]
}

/// What the open file descriptors of `pid` point to.
pub fn open_files(pid: i32) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .map(|p| p.display().to_string())
        .collect()
}

/// The ttrpc status code of a failed call (panics if it is not a status).
pub fn rpc_code<T: std::fmt::Debug>(r: ttrpc::Result<T>, what: &str) -> ttrpc::Code {
    match r {
        Err(ttrpc::Error::RpcStatus(s)) => s.code(),
        other => panic!("{what}: expected an error status, got {other:?}"),
    }
}

pub use crate::rawttrpc::process_spec;

/// A runtime for the shim that is `script` (a shell script, `RUNC` standing for the real
/// runc) written as `dir/name`, and the runtime options file naming it as `BinaryName`: give
/// its path to `ctr run --runtime-config-path`. Returns the options file.
pub fn runtime_wrapper(dir: &std::path::Path, name: &str, script: &str) -> std::path::PathBuf {
    let runc = crate::cmd::which("runc").expect("runc on PATH");
    let wrapper = dir.join(name);
    crate::cmd::write_executable(
        &wrapper,
        script
            .replace("RUNC", &runc.display().to_string())
            .as_bytes(),
    );
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(
        &config,
        format!("BinaryName = {:?}\n", wrapper.display().to_string()),
    )
    .expect("write the runtime options");
    config
}

/// Stops `cd` and asserts it left nothing behind: no daemon, shim, container or exec process,
/// mount, cgroup, FIFO or runc state (the harness leak check), and no process naming any of
/// `ids` (a `ctr`, a shim, an exec). Tasks still there are deleted through containerd; when
/// the test deleted them all, their shims are given [`T`] to exit (`ctr run --rm` returns
/// before its shim is gone).
pub fn finish(cd: Containerd, ids: &[&str]) {
    if cd.task_bundles().is_empty() {
        assert!(
            crate::wait_until(T, || cd.shim_pids().is_empty()),
            "shims still running after every task was deleted: {:?}",
            cd.shim_pids()
        );
    }
    let check = cd.leak_check();
    let report = cd.shutdown();
    assert!(report.problems.is_empty(), "{report:#?}");
    assert!(
        report.killed.is_empty() && report.runc_deleted.is_empty(),
        "everything stopped by itself, nothing needed killing or deleting: {report:#?}"
    );
    check.assert_clean();
    for id in ids {
        let left: Vec<String> = procs::pids_with_cmdline(id)
            .into_iter()
            .map(procs::describe)
            .collect();
        assert!(left.is_empty(), "processes naming {id} survive: {left:#?}");
    }
}
