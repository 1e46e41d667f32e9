//! The harness proven against containerd's own shim (`io.containerd.runc.v2`), so these pass
//! whatever the state of ours.

use std::time::Duration;
use tether_tests::procs;
use tether_tests::shimtest::Scene;
use tether_tests::{
    busybox_image, busybox_rootfs, unique_id, Containerd, RUNC_RUNTIME, SNAPSHOTTER,
};

const T: Duration = Duration::from_secs(20);

#[test]
fn private_containerd_runs_rootfs_container_and_leaves_nothing() {
    let cd = Containerd::start();
    let ctr = cd.ctr(&unique_id("ns"));
    let pid = cd.pid().expect("daemon running");
    assert!(procs::is_alive(pid));
    assert!(
        cd.address().as_os_str().len() < 100,
        "socket path fits sun_path"
    );
    // Our shim's directory comes first on containerd's PATH.
    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("containerd environ");
    let path = environ
        .split(|&b| b == 0)
        .find_map(|kv| kv.strip_prefix(b"PATH="))
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .expect("containerd has a PATH");
    let first = tether_tests::bin_dir().display().to_string();
    assert!(path.starts_with(&format!("{first}:")), "{path}");
    let version = ctr.call_ok(&["version"]);
    assert!(version.stdout.contains("Server:"), "{version}");

    let id = unique_id("c");
    let out = ctr.run_rm_rootfs(RUNC_RUNTIME, busybox_rootfs(), &id, &["/bin/echo", "hello"]);
    assert!(out.success(), "{out}");
    assert_eq!(out.stdout, "hello\n");
    // ctr run --rm returns once the task is deleted; containerd's shim exits right after.
    assert!(
        tether_tests::wait_until(T, || cd.shim_pids().is_empty()),
        "shim still running after `ctr run --rm`: {:?}",
        cd.shim_pids()
    );
    assert!(ctr.tasks().is_empty());

    let check = cd.leak_check();
    let dir = cd.dir().to_path_buf();
    let report = cd.shutdown();
    assert!(report.problems.is_empty(), "{report:#?}");
    assert!(
        report.killed.is_empty(),
        "nothing needed killing: {report:#?}"
    );
    assert!(!procs::is_alive(pid), "containerd {pid} stopped");
    assert!(!dir.exists());
    check.assert_clean();
}

#[test]
fn imported_image_runs_on_overlayfs() {
    let cd = Containerd::start();
    let ctr = cd.ctr(&unique_id("ns"));
    let image = busybox_image();
    ctr.image_import(&image.path);
    assert!(
        ctr.images().contains(&image.reference),
        "imported as {}: {:?}",
        image.reference,
        ctr.images()
    );

    let id = unique_id("c");
    let out = ctr
        .run(&id)
        .runtime(RUNC_RUNTIME)
        .image(&image.reference)
        .flag("--snapshotter")
        .flag(SNAPSHOTTER)
        .rm()
        // The image's PATH applies: no absolute path needed.
        .args(&["sh", "-c", "echo hi; cat /etc/passwd | head -n 1"])
        .success();
    assert_eq!(out.stdout, "hi\nroot:x:0:0:root:/root:/bin/sh\n");

    // The default command is /bin/sh (which would wait on the stdin ctr keeps open): read it
    // from the imported config.
    let config = ctr.call_ok(&["content", "get", &image.config_digest]);
    assert!(config.stdout.contains(r#""Cmd":["/bin/sh"]"#), "{config}");

    let check = cd.leak_check();
    drop(cd);
    check.assert_clean();
}

#[test]
fn events_show_task_lifecycle_in_order() {
    let Scene { cd, ns, ctr } = Scene::start();
    let events = ctr.events();
    let id = unique_id("c");
    let out = ctr.run_rm_rootfs(RUNC_RUNTIME, busybox_rootfs(), &id, &["/bin/true"]);
    assert!(out.success(), "{out}");
    let exit = events.wait_for_topic(&id, "/tasks/exit", T);
    // containerd 2.1.9's own runc shim loses its /tasks/delete now and then (3 `ctr run --rm`
    // of 15 here): it is shut down right after Delete, before the event is forwarded. So on 2.x
    // it is not required of that shim; ours must publish it on every version (shim_events).
    let runc_shim_loses_delete = tether_tests::flavor().version.major >= 2;
    if !runc_shim_loses_delete {
        events.wait_for_topic(&id, "/tasks/delete", T);
    }
    events.wait_for_topic(&id, "/containers/delete", T);
    assert_eq!(exit.namespace, ns);
    assert_eq!(exit.json().expect("exit event is JSON")["id"], id.as_str());

    let tasks: Vec<String> = events
        .topics_for(&id)
        .into_iter()
        .filter(|t| t.starts_with("/tasks/"))
        .collect();
    let mut want = vec![
        "/tasks/create",
        "/tasks/start",
        "/tasks/exit",
        "/tasks/delete",
    ];
    if runc_shim_loses_delete && tasks.len() == 3 {
        want.pop();
    }
    assert_eq!(tasks, want);
    assert_eq!(
        events.topics_for(&id).first().map(String::as_str),
        Some("/containers/create")
    );
    drop(events);
    let check = cd.leak_check();
    drop(cd);
    check.assert_clean();
}

#[test]
fn drop_cleans_running_containers_after_daemon_crash() {
    let mut cd = Containerd::start();
    let ctr = cd.ctr(&unique_id("ns"));
    ctr.image_import(&busybox_image().path);
    let from_image = unique_id("c");
    ctr.run(&from_image)
        .runtime(RUNC_RUNTIME)
        .image(tether_tests::BUSYBOX_IMAGE)
        .detach()
        .args(&["sleep", "1000"])
        .success();
    let from_rootfs = unique_id("c");
    ctr.run_detached_rootfs(
        RUNC_RUNTIME,
        busybox_rootfs(),
        &from_rootfs,
        &["/bin/sleep", "1000"],
    );
    let running: Vec<String> = ctr.tasks().into_iter().map(|t| t.status).collect();
    assert_eq!(running, ["RUNNING", "RUNNING"]);
    let container_pids: Vec<i32> = [&from_image, &from_rootfs]
        .iter()
        .flat_map(|id| ctr.task_ps(id))
        .map(|p| p as i32)
        .collect();
    assert_eq!(cd.shim_pids().len(), 2);
    let overlays: Vec<_> = tether_tests::mounts::mounts()
        .into_iter()
        .filter(|m| m.mount_point.starts_with(cd.dir()) && m.fs_type == "overlay")
        .collect();
    assert_eq!(
        overlays.len(),
        1,
        "the image container's overlay rootfs is mounted under the state dir"
    );

    // containerd dies; shims and containers live on.
    cd.kill_daemon(libc::SIGKILL);
    assert_eq!(cd.shim_pids().len(), 2);
    assert!(container_pids.iter().all(|&p| procs::is_alive(p)));

    let check = cd.leak_check();
    assert!(container_pids.iter().all(|p| check.pids().contains(p)));
    // The check sees all of it while it is there.
    let left = check.leftovers();
    for kind in [
        "shim process",
        "process",
        "mount",
        "directory",
        "cgroup",
        "ctr FIFO",
    ] {
        assert!(
            left.iter().any(|l| l.starts_with(&format!("{kind}: "))),
            "leak check misses {kind}: {left:#?}"
        );
    }
    assert!(!left.iter().any(|l| l.starts_with("containerd process")));
    let report = cd.shutdown();
    assert!(report.problems.is_empty(), "{report:#?}");
    assert!(
        report.killed.len() >= 4,
        "2 shims and 2 containers: {report:#?}"
    );
    assert!(!report.unmounted.is_empty(), "{report:#?}");
    assert_eq!(report.removed_fifos.len(), 2, "{report:#?}");
    check.assert_clean();
}

#[test]
fn drop_deletes_running_tasks_through_a_live_daemon() {
    let cd = Containerd::start();
    let ctr = cd.ctr(&unique_id("ns"));
    let id = unique_id("c");
    ctr.run_detached_rootfs(RUNC_RUNTIME, busybox_rootfs(), &id, &["/bin/sleep", "1000"]);
    assert_eq!(ctr.task(&id).expect("task listed").status, "RUNNING");
    let check = cd.leak_check();
    let left = check.leftovers();
    for kind in [
        "containerd process",
        "shim process",
        "process",
        "directory",
        "cgroup",
    ] {
        assert!(
            left.iter().any(|l| l.starts_with(&format!("{kind}: "))),
            "leak check misses {kind}: {left:#?}"
        );
    }
    let report = cd.shutdown();
    assert!(report.problems.is_empty(), "{report:#?}");
    assert_eq!(report.deleted_tasks.len(), 1, "{report:#?}");
    assert!(
        report.killed.is_empty(),
        "the shim exited by itself: {report:#?}"
    );
    check.assert_clean();
}

#[test]
fn parallel_instances_are_independent() {
    let a = Containerd::start();
    let b = Containerd::start();
    assert_ne!(a.address(), b.address());
    let ns = unique_id("ns");
    let id = unique_id("c");
    a.ctr(&ns)
        .run_detached_rootfs(RUNC_RUNTIME, busybox_rootfs(), &id, &["/bin/sleep", "1000"]);
    assert_eq!(a.ctr(&ns).tasks().len(), 1);
    assert!(b.ctr(&ns).tasks().is_empty(), "b sees nothing of a");
    assert!(b.shim_pids().is_empty());
    assert_eq!(a.shim_pids().len(), 1);
}

#[test]
fn start_failure_shows_the_log_and_cleans_up() {
    let opts = tether_tests::Options {
        extra_config: "this is not toml".into(),
        ..Default::default()
    };
    let err = std::panic::catch_unwind(|| Containerd::start_with(opts))
        .expect_err("containerd refuses a broken config");
    let msg = err
        .downcast_ref::<String>()
        .expect("panic message is a String");
    assert!(msg.contains("exited during start-up"), "{msg}");
    assert!(msg.contains("--- last lines of "), "{msg}");
    // The message names the log in the instance's dir, which is gone.
    let log = msg
        .split("--- last lines of ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .expect("log path in message");
    let dir = std::path::Path::new(log).parent().expect("log has a dir");
    assert!(dir.starts_with("/run") || dir.starts_with("/tmp"), "{msg}");
    assert!(
        !dir.exists(),
        "{} removed after the failed start",
        dir.display()
    );
}

#[test]
fn ctr_timeout_kills_ctr_and_reports_output_so_far() {
    let cd = Containerd::start();
    let ctr = cd.ctr(&unique_id("ns"));
    let id = unique_id("c");
    let hung = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        ctr.run(&id)
            .runtime(RUNC_RUNTIME)
            .rootfs(busybox_rootfs())
            .rm()
            .args(&["/bin/sh", "-c", "echo started; exec sleep 1000"])
            .timeout(Duration::from_secs(1))
            .output()
    }))
    .expect_err("a container that sleeps outlives the deadline");
    let msg = hung
        .downcast_ref::<String>()
        .expect("panic message is a String");
    assert!(msg.contains("did not finish within 1s"), "{msg}");
    assert!(msg.contains("started"), "output so far is shown: {msg}");
    let ctrs: Vec<i32> = procs::pids_with_cmdline(&id)
        .into_iter()
        .filter(|&p| procs::cmdline(p).is_some_and(|a| a[0].rsplit('/').next() == Some("ctr")))
        .collect();
    assert!(ctrs.is_empty(), "the timed-out ctr was killed: {ctrs:?}");
    // The task outlives its ctr; dropping the daemon deletes it.
    assert_eq!(ctr.task(&id).expect("task still there").status, "RUNNING");
    let check = cd.leak_check();
    drop(cd);
    check.assert_clean();
}

#[test]
fn restarted_daemon_reconnects_to_running_shim() {
    let mut cd = Containerd::start();
    let ctr = cd.ctr(&unique_id("ns"));
    let id = unique_id("c");
    ctr.run_detached_rootfs(RUNC_RUNTIME, busybox_rootfs(), &id, &["/bin/sleep", "1000"]);
    let before = ctr.task(&id).expect("task listed");
    let shims = cd.shim_pids();
    let old = cd.pid().expect("daemon running");

    cd.kill_daemon(libc::SIGKILL);
    assert!(!cd.is_running());
    cd.restart();
    assert_ne!(cd.pid(), Some(old));
    assert_eq!(
        ctr.task(&id),
        Some(before),
        "same task, same pid, still running"
    );
    assert_eq!(cd.shim_pids(), shims, "the shim survived the daemon");
    assert!(cd.log().contains("loading plugin"), "one log for both runs");

    let check = cd.leak_check();
    let report = cd.shutdown();
    assert!(report.problems.is_empty(), "{report:#?}");
    check.assert_clean();
}

/// The daemon and ctr are the selected containerd (`TETHER_CONTAINERD_VERSION`), and it reads
/// the generated config as its own version: no migration warning, no plugin that failed to load.
#[test]
fn runs_the_selected_containerd_on_its_own_config_version() {
    let flavor = tether_tests::flavor();
    let cd = Containerd::start();
    let out = cd.ctr("default").call_ok(&["version"]);
    let server = out
        .stdout
        .split("Server:")
        .nth(1)
        .unwrap_or_else(|| panic!("`ctr version` shows the server: {out}"));
    let version = tether_tests::flavor::Version::parse(
        server
            .lines()
            .find_map(|l| l.trim().strip_prefix("Version:"))
            .unwrap_or_else(|| panic!("a server version: {out}")),
    )
    .expect("server version parses");
    assert_eq!(version, flavor.version, "{out}");
    let client =
        tether_tests::flavor::Version::parse(out.stdout.split("Server:").next().unwrap_or(""));
    assert_eq!(client, Some(flavor.version), "ctr is the same build: {out}");
    let config = std::fs::read_to_string(cd.config_path()).expect("config.toml");
    assert!(
        config.starts_with(&format!("version = {}\n", flavor.version.file_version())),
        "{config}"
    );
    let log = cd.log();
    // 1.6 warns that devmapper is not configured: it is not, and no test uses it.
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("level=warning") || l.contains("level=error"))
        .filter(|l| !l.contains("devmapper not configured"))
        // 2.3 checks whether its content store's filesystem has fs-verity: a fact of the
        // machine's filesystem, not of the config.
        .filter(|l| !l.contains("failed check for fsverity support"))
        .collect();
    assert!(
        warnings.is_empty(),
        "containerd {} warns about its config: {warnings:#?}",
        flavor.version
    );
}
