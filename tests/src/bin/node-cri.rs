//! `node-cri`: the node lane's CRI scenarios, the calls kubelet makes, against a node's own
//! containerd (`/run/containerd/containerd.sock`, a systemd service), for one runtime handler
//! and one cgroup driver.
//!
//!   node-cri images DIR                         (on the host) the pause and busybox images as
//!                                               DIR/pause.tar and DIR/busybox.tar
//!   node-cri run HANDLER systemd|cgroupfs [SOCKET]   (in the guest) the scenarios; exit 1 on
//!                                               the first failure, saying which step
//!
//! The scenarios: a pod and a container that runs, an ExecSync, its stats, the container in
//! the cgroup kubelet's driver names (`kubepods-besteffort-pod<uid>.slice` and a
//! `cri-containerd-<id>.scope` with systemd, `/kubepods/besteffort/pod<uid>/<id>` with
//! cgroupfs); a pod whose containers share one PID namespace; StopPodSandbox and
//! RemovePodSandbox that succeed at their first call, and no container cgroup left.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;
use tether_tests::cri::api::{ContainerState, NamespaceMode};
use tether_tests::cri::{container_config, pod_config, CriClient};
use tether_tests::pause::pause_image;
use tether_tests::{busybox_image, unique_id, wait_until};

const DEFAULT_SOCKET: &str = "/run/containerd/containerd.sock";
const T: Duration = Duration::from_secs(60);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match words.as_slice() {
        ["images", dir] => images(Path::new(dir)),
        ["run", handler, driver] => run(handler, driver, Path::new(DEFAULT_SOCKET)),
        ["run", handler, driver, socket] => run(handler, driver, Path::new(socket)),
        _ => Err(
            "usage: node-cri images DIR | node-cri run HANDLER systemd|cgroupfs [SOCKET]".into(),
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("node-cri: {e}");
            ExitCode::FAILURE
        }
    }
}

fn images(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
    for (image, name) in [
        (pause_image(), "pause.tar"),
        (busybox_image(), "busybox.tar"),
    ] {
        std::fs::copy(&image.path, dir.join(name))
            .map_err(|e| format!("copy {} to {}: {e}", image.path.display(), dir.display()))?;
        println!("{name} {}", image.reference);
    }
    Ok(())
}

/// The cgroup parent kubelet gives a best-effort pod with `driver`.
fn cgroup_parent(driver: &str, uid: &str) -> Result<String, String> {
    // kubelet's systemd driver turns the pod uid's dashes into underscores: a dash in a slice
    // name is a level of the hierarchy.
    match driver {
        "systemd" => Ok(format!(
            "kubepods-besteffort-pod{}.slice",
            uid.replace('-', "_")
        )),
        "cgroupfs" => Ok(format!("/kubepods/besteffort/pod{uid}")),
        _ => Err(format!("unknown cgroup driver {driver:?}")),
    }
}

/// The cgroup v2 directory of the first process whose cgroup path names `id`.
fn cgroup_of(id: &str) -> Option<PathBuf> {
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(text) = std::fs::read_to_string(entry.path().join("cgroup")) else {
            continue;
        };
        if let Some(path) = text.lines().find_map(|l| l.strip_prefix("0::")) {
            if path.contains(id) {
                return Some(Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/')));
            }
        }
    }
    None
}

fn step<T, E: std::fmt::Display>(what: &str, r: Result<T, E>) -> Result<T, String> {
    println!("node-cri: {what}");
    r.map_err(|e| format!("{what}: {e}"))
}

fn run(handler: &str, driver: &str, socket: &Path) -> Result<(), String> {
    let c = CriClient::connect(socket)?;
    let logs = PathBuf::from("/var/log/pods").join(unique_id("lane"));
    std::fs::create_dir_all(&logs).map_err(|e| format!("mkdir {}: {e}", logs.display()))?;

    // One pod, one container: it runs, answers an ExecSync, has stats, and sits in the cgroup
    // the driver names.
    let uid = unique_id("uid");
    let parent = cgroup_parent(driver, &uid)?;
    let pod_cfg = pod_config(
        &unique_id("pod"),
        &uid,
        &parent,
        &logs,
        NamespaceMode::Container,
    );
    let pod = step("RunPodSandbox", c.run_pod(&pod_cfg, handler))?;
    let cfg = container_config(
        NamespaceMode::Container,
        "sleeper",
        0,
        &["/bin/sleep", "1000"],
    );
    let id = step("CreateContainer", c.create_container(&pod, &cfg, &pod_cfg))?;
    step("StartContainer", c.start_container(&id))?;
    let running = wait_until(T, || {
        c.container_status(&id)
            .is_ok_and(|s| s.state == ContainerState::ContainerRunning as i32)
    });
    if !running {
        return Err(format!(
            "container {id} not RUNNING: {:?}",
            c.container_status(&id)
        ));
    }
    let out = step("ExecSync", c.exec_sync(&id, &["/bin/echo", "hi"], 30))?;
    if String::from_utf8_lossy(&out.stdout).trim() != "hi" || out.exit_code != 0 {
        return Err(format!("ExecSync echo: {out:?}"));
    }
    let stats = step("ContainerStats", c.container_stats(&id))?;
    let memory = stats
        .memory
        .as_ref()
        .and_then(|m| m.working_set_bytes.as_ref())
        .map_or(0, |v| v.value);
    if memory == 0 {
        return Err(format!("ContainerStats: no memory working set: {stats:?}"));
    }
    let cgroup = cgroup_of(&id).ok_or(format!("no process in a cgroup naming {id}"))?;
    let want = match driver {
        "systemd" => format!("{parent}/cri-containerd-{id}.scope"),
        _ => format!("{}/{id}", parent.trim_start_matches('/')),
    };
    println!("node-cri: container cgroup {}", cgroup.display());
    if !cgroup.display().to_string().ends_with(&want) {
        return Err(format!(
            "container cgroup {} does not end with {want}",
            cgroup.display()
        ));
    }

    // A pod whose containers share one PID namespace: each sees the other's processes.
    let shared_cfg = pod_config(
        &unique_id("pod"),
        &unique_id("uid"),
        &cgroup_parent(driver, &unique_id("uid"))?,
        &logs,
        NamespaceMode::Pod,
    );
    let shared = step(
        "RunPodSandbox (shared PID)",
        c.run_pod(&shared_cfg, handler),
    )?;
    let mut ids = Vec::new();
    for (name, secs) in [("one", "1234"), ("two", "1000")] {
        let cfg = container_config(NamespaceMode::Pod, name, 0, &["/bin/sleep", secs]);
        let id = step(
            "CreateContainer (shared PID)",
            c.create_container(&shared, &cfg, &shared_cfg),
        )?;
        step("StartContainer (shared PID)", c.start_container(&id))?;
        ids.push(id);
    }
    let mut ps = String::new();
    let sees = wait_until(T, || {
        ps = c
            .exec_sync(&ids[1], &["/bin/ps"], 30)
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        ps.contains("sleep 1234")
    });
    if !sees {
        return Err(format!(
            "the second container does not see the first's process:\n{ps}"
        ));
    }

    // Stop and remove, each at its first call; nothing of theirs left.
    for (what, p) in [("pod", &pod), ("shared-PID pod", &shared)] {
        step(&format!("StopPodSandbox ({what})"), c.stop_pod(p, T))?;
        step(&format!("RemovePodSandbox ({what})"), c.remove_pod(p, T))?;
    }
    let ours: Vec<String> = [pod.clone(), shared.clone(), id.clone()]
        .into_iter()
        .chain(ids)
        .collect();
    let listed: Vec<String> = step("ListContainers", c.list_containers())?
        .into_iter()
        .chain(step("ListPodSandbox", c.list_pods())?)
        .filter(|i| ours.contains(i))
        .collect();
    if !listed.is_empty() {
        return Err(format!("still listed after removal: {listed:?}"));
    }
    if !wait_until(T, || !cgroup.exists()) {
        return Err(format!(
            "the container's cgroup {} is left",
            cgroup.display()
        ));
    }
    let _ = std::fs::remove_dir_all(&logs);
    println!("node-cri: {handler} with the {driver} driver: every step passed");
    Ok(())
}
