//! The CRI path end to end: containerd's CRI plugin, driven with a CRI client as the kubelet
//! drives it, runs pods with the `runc` handler (containerd's shim, proving each test right)
//! and the `tether` handler (our shim), configured from `deploy/containerd/tether-v2.toml`
//! (containerd 1.6/1.7) or `tether-v3.toml` (2.x, `TETHER_CONTAINERD_VERSION=2`).
//!
//! Every case runs once per handler: `runc::NAME` and `tether::NAME`. Each ends by removing
//! its pods and checking that nothing is left: no shim, socket, bundle, runc state, mount or
//! cgroup, then the harness's leak check once containerd is gone.

use std::time::Duration;
use tether_tests::cri::api::ImageSpec;
use tether_tests::cri::api::{ContainerState, NamespaceMode, PodSandboxState};
use tether_tests::cri::{
    log, tables_of, Cri, CriConfig, Pod, CRI_NAMESPACE, RUNC_HANDLER, TETHER_HANDLER,
};
use tether_tests::criu::{working_criu, working_criu_dir};
use tether_tests::registry::Registry;
use tether_tests::{flavor, procs, wait_until};

mod checkpoint;
mod leftovers;
mod lifecycle;
mod readme;

use checkpoint::*;
use leftovers::*;
use lifecycle::*;

/// Generous: a stop or remove that hangs (the failure mode of a shared-PID container whose leftovers were not killed) shows as an error.
const POD_TIMEOUT: Duration = Duration::from_secs(60);

/// One `#[test]` per case and handler, in modules `runc` and `tether`; attributes before a
/// case apply to its `tether` test only (an `ignore` for a known bug of our shim).
macro_rules! for_both_handlers {
    ($( $(#[$tether_only:meta])* $case:ident ),* $(,)?) => {
        mod runc {
            $( #[test] fn $case() { super::$case(super::RUNC_HANDLER) } )*
        }
        mod tether {
            $( #[test] $(#[$tether_only])* fn $case() { super::$case(super::TETHER_HANDLER) } )*
        }
    };
}

for_both_handlers!(
    pod_run_stop_remove,
    container_create_start_stop_remove,
    exit_codes,
    exec_sync_output_and_code,
    logs_in_cri_format,
    container_stats,
    oom_killed,
    container_restarted_in_the_same_pod,
    shared_pid_namespace_leftovers_killed_on_exit,
    checkpoint_container_archive_restores,
);

/// The shim binary a handler must run.
fn shim_binary(handler: &str) -> &'static str {
    match handler {
        TETHER_HANDLER => "containerd-shim-tether-v2",
        _ => "containerd-shim-runc-v2",
    }
}

/// Runs a pod and checks it is served by the handler's shim (so a misconfigured handler cannot
/// make the `tether` tests silently run containerd's shim).
fn run_pod(cri: &Cri, handler: &str, pid: NamespaceMode) -> Pod {
    let pod = cri.run_pod(handler, pid);
    let st = cri.client().pod_status(&pod.id).expect("PodSandboxStatus");
    assert_eq!(st.state, PodSandboxState::SandboxReady as i32, "{st:?}");
    assert_eq!(st.runtime_handler, handler, "{st:?}");
    let shims: Vec<Vec<String>> = cri
        .containerd()
        .shim_pids()
        .into_iter()
        .filter_map(procs::cmdline)
        .filter(|a| a.windows(2).any(|w| w[0] == "-id" && w[1] == pod.id))
        .collect();
    assert!(
        shims.iter().any(|a| a[0].ends_with(shim_binary(handler))),
        "pod {} with handler {handler} is not served by {}: {shims:?}",
        pod.id,
        shim_binary(handler)
    );
    pod
}

/// Removes the pod, checks nothing is left, stops containerd and runs the leak check.
fn finish(cri: Cri, pods: &[&Pod]) {
    for p in pods {
        cri.remove_pod(p, POD_TIMEOUT);
    }
    let left = cri.client().list_pods().expect("ListPodSandbox");
    assert!(left.is_empty(), "pods still listed: {left:?}");
    cri.assert_nothing_left();
    cri.finish();
}
