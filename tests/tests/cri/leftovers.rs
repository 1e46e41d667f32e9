//! Kill-all on exit when the PID namespace is shared: what a shared-PID-namespace container leaves is killed at its exit.

use super::*;

/// A container that shares the pod's PID namespace leaves a background `sleep`. When
/// its init exits, the shim must kill what is left (as containerd's does) before it publishes
/// `/tasks/exit`; otherwise the leftover holds the output open and, on containerd 1.7/2.x,
/// wedges the pod. containerd 1.6 hides the bug in CRI's status (its `runc delete`, after the
/// exit, kills the cgroup's processes), so the check is made when `/tasks/exit` arrives.
pub fn shared_pid_namespace_leftovers_killed_on_exit(handler: &str) {
    let cri = Cri::start();
    let events = cri.containerd().ctr(CRI_NAMESPACE).events();
    let pod = run_pod(&cri, handler, NamespaceMode::Pod);
    let id = cri.run_container(
        &pod,
        "forker",
        &[
            "sh",
            "-c",
            "sleep 1000 & while [ ! -e /tmp/go ]; do sleep 0.05; done; exit 0",
        ],
    );
    cri.wait_state(&id, ContainerState::ContainerRunning);
    let mut sleeper = None;
    let found = wait_until(Duration::from_secs(20), || {
        sleeper = cri
            .containerd()
            .shim_pids()
            .into_iter()
            .flat_map(procs::descendants)
            .find(|&p| procs::cmdline(p).is_some_and(|a| a == ["sleep", "1000"]));
        sleeper.is_some()
    });
    assert!(found, "the background sleep never started");
    let sleeper = sleeper.unwrap_or_default();
    let args = procs::cmdline(sleeper).unwrap_or_default();
    let r = cri
        .client()
        .exec_sync(&id, &["touch", "/tmp/go"], 30)
        .expect("ExecSync touch");
    assert_eq!(r.exit_code, 0, "{r:?}");
    // The init's exit (the exec's has the exec's id in `id`).
    events.wait_for(
        |e| e.is(&id, "/tasks/exit") && e.json().is_some_and(|j| j["id"] == id.as_str()),
        POD_TIMEOUT,
    );
    // SIGKILL is delivered asynchronously: sent before the event is enough.
    assert!(
        killed_or_dying(sleeper, &args),
        "/tasks/exit was published while the container's background process lives on: {}",
        procs::describe(sleeper)
    );
    let st = cri.wait_state(&id, ContainerState::ContainerExited);
    assert_eq!(st.exit_code, 0, "{st:?}");
    // Stop and remove succeed (within the generous deadline) with no process left to wait for.
    finish(cri, &[&pod]);
}

/// Whether `pid` (which had command line `args`) is gone, a zombie, or has SIGKILL pending.
pub fn killed_or_dying(pid: i32, args: &[String]) -> bool {
    if !procs::is_alive(pid) || procs::cmdline(pid).as_deref() != Some(args) {
        return true;
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().any(|l| {
        let Some((key, mask)) = l.split_once(':') else {
            return false;
        };
        matches!(key, "SigPnd" | "ShdPnd")
            && u64::from_str_radix(mask.trim(), 16)
                .is_ok_and(|m| m & (1 << (libc::SIGKILL - 1)) != 0)
    })
}
