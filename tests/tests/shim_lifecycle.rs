//! Our shim (`io.containerd.tether.v2`) through a real containerd 1.6 and runc: exit statuses,
//! the detached task lifecycle and what it leaves behind, and image (overlayfs) containers.

use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::time::Duration;
use tether_tests::shimtest::finish;
use tether_tests::shimtest::tether_run;
use tether_tests::shimtest::Scene;
use tether_tests::{
    busybox_image, mounts, procs, shim, unique_id, wait_until, Containerd, Ctr, SNAPSHOTTER,
    TETHER_RUNTIME,
};

const T: Duration = Duration::from_secs(20);

fn wait_status(ctr: &Ctr, id: &str, status: &str) {
    assert!(
        wait_until(T, || ctr.task(id).is_some_and(|t| t.status == status)),
        "task {id} not {status}: {:?}",
        ctr.task(id)
    );
}

#[test]
fn echo_hello_prints_hello_and_exits_0() {
    let cd = Containerd::start();
    let ctr = cd.ctr(&unique_id("ns"));
    let id = unique_id("c");
    let out = tether_run(&ctr, &id)
        .rm()
        .args(&["/bin/echo", "hello"])
        .output();
    assert_eq!(out.code, 0, "{out}\n{}", cd.log_excerpt());
    assert_eq!(out.stdout, "hello\n", "{out}");
    assert!(ctr.tasks().is_empty());
    assert!(ctr.containers().is_empty(), "--rm deleted the container");
    assert!(
        wait_until(T, || cd.shim_pids().is_empty()),
        "shim still running after `ctr run --rm`: {:?}",
        cd.shim_pids()
    );
    finish(cd, &[]);
}

#[test]
fn sh_exit_7_exits_7() {
    let cd = Containerd::start();
    let ctr = cd.ctr(&unique_id("ns"));
    let id = unique_id("c");
    let out = tether_run(&ctr, &id)
        .rm()
        .args(&["/bin/sh", "-c", "echo before; exit 7"])
        .output();
    assert_eq!(out.code, 7, "{out}\n{}", cd.log_excerpt());
    assert_eq!(out.stdout, "before\n", "{out}");
    finish(cd, &[]);
}

#[test]
fn container_killed_with_sigkill_reports_137() {
    let cd = Containerd::start();
    let ctr = cd.ctr(&unique_id("ns"));
    let id = unique_id("c");
    std::thread::scope(|s| {
        let run = s.spawn(|| {
            tether_run(&ctr, &id)
                .rm()
                .args(&["/bin/sleep", "1000"])
                .timeout(Duration::from_secs(60))
                .output()
        });
        wait_status(&ctr, &id, "RUNNING");
        let kill = ctr.task_kill(&id, "SIGKILL");
        assert!(kill.success(), "{kill}\n{}", cd.log_excerpt());
        let out = run.join().expect("the ctr run thread did not panic");
        assert_eq!(out.code, 137, "{out}\n{}", cd.log_excerpt());
    });
    assert!(ctr.tasks().is_empty());
    finish(cd, &[]);
}

#[test]
fn detached_task_lists_kills_deletes_and_leaves_no_shim_socket_mount_runc_state_or_zombie() {
    let Scene { cd, ns, ctr } = Scene::start();
    let id = unique_id("c");
    tether_run(&ctr, &id)
        .detach()
        .args(&["/bin/sleep", "1000"])
        .success();

    // ctr task ls: RUNNING, with the container's own pid.
    let row = ctr.task(&id).expect("the task is listed");
    assert_eq!(row.status, "RUNNING", "{row:?}");
    let pid = row.pid as i32;
    assert!(pid > 0, "{row:?}");
    assert!(
        procs::wait_cmdline(pid, &["/bin/sleep", "1000"], T),
        "pid {pid} is the container's: {:?}",
        procs::cmdline(pid)
    );
    let init_args = procs::cmdline(pid).expect("/proc/PID of the task's pid exists");
    assert_eq!(ctr.task_ps(&id), vec![row.pid], "ctr task ps");

    // The shim: one process, the init's parent (a subreaper), its socket where `address` says.
    let bundle = cd.bundle(&ns, &id);
    let shim_pid = shim::shim_pid(&cd, &ns, &id).expect("a shim serves the task");
    assert_eq!(cd.shim_pids(), vec![shim_pid], "one shim process");
    let shim_args = procs::cmdline(shim_pid).expect("shim cmdline");
    assert_eq!(
        procs::stat(pid).expect("init stat").ppid,
        shim_pid,
        "the init is reparented to the shim (subreaper)"
    );
    assert!(
        procs::zombie_children(shim_pid).is_empty(),
        "runc create/start were reaped: {:?}",
        procs::zombie_children(shim_pid)
    );
    let address = shim::address(&bundle).expect("the bundle has an address file");
    let sock = shim::socket_path(&bundle).expect("address is unix:///path");
    assert!(
        address.starts_with("unix:///run/tether/s/"),
        "socket under /run/tether/s: {address}"
    );
    let name = sock
        .file_name()
        .and_then(|n| n.to_str())
        .expect("socket name");
    assert!(
        name.len() == 64 && name.chars().all(|c| c.is_ascii_hexdigit()),
        "socket named by sha256: {name}"
    );
    assert_eq!(
        sock,
        tether_protocol::socket::shim_socket_path(
            Path::new(tether_protocol::socket::DEFAULT_SOCKET_DIR),
            &cd.address().display().to_string(),
            &ns,
            &id
        ),
        "named by sha256(containerd address, namespace, id)"
    );
    let meta = std::fs::symlink_metadata(&sock).expect("the socket exists");
    assert!(
        meta.file_type().is_socket(),
        "{} is a socket",
        sock.display()
    );
    assert!(shim::runc_list(&ns).contains(&id), "runc knows the task");
    assert!(shim::runc_state_dir(&ns, &id).is_dir());

    let kill = ctr.task_kill(&id, "SIGKILL");
    assert!(kill.success(), "{kill}");
    wait_status(&ctr, &id, "STOPPED");
    assert_eq!(
        ctr.task_delete_status(&id),
        137,
        "ctr task delete returns the exit status\n{}",
        cd.log_excerpt()
    );
    assert!(ctr.task(&id).is_none(), "the task is gone");

    assert!(
        shim::wait_reaped(shim_pid, &shim_args, T),
        "shim gone and reaped: {}",
        procs::describe(shim_pid)
    );
    assert!(
        shim::wait_reaped(pid, &init_args, T),
        "container process gone and reaped: {}",
        procs::describe(pid)
    );
    assert!(cd.shim_pids().is_empty(), "{:?}", cd.shim_pids());
    let daemon = cd.pid().expect("containerd runs");
    assert!(
        wait_until(T, || procs::zombie_children(daemon).is_empty()),
        "containerd reaped its shim actions: {:?}",
        procs::zombie_children(daemon)
    );
    assert!(
        std::fs::symlink_metadata(&sock).is_err(),
        "the shim socket {} is removed",
        sock.display()
    );
    assert!(
        wait_until(T, || !bundle.exists()),
        "bundle {} removed",
        bundle.display()
    );
    assert!(
        mounts::mounts_under(&bundle).is_empty(),
        "{:?}",
        mounts::mounts_under(&bundle)
    );
    assert!(
        !shim::runc_list(&ns).contains(&id),
        "runc forgot the task: {:?}",
        shim::runc_list(&ns)
    );
    assert!(!shim::runc_state_dir(&ns, &id).exists());

    let rm = ctr.container_delete(&id);
    assert!(rm.success(), "{rm}");
    // ctr removes its FIFOs through the stdio paths the shim's State reports.
    assert!(ctr_fifos(&id).is_empty(), "{:?}", ctr_fifos(&id));
    finish(cd, &[]);
}

/// ctr's stdio FIFOs of container `id` still in /run/containerd/fifo/*/.
fn ctr_fifos(id: &str) -> Vec<std::path::PathBuf> {
    let prefix = format!("{id}-std");
    std::fs::read_dir(tether_tests::containerd::CTR_FIFO_DIR)
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|d| std::fs::read_dir(d.path()).into_iter().flatten().flatten())
        .filter(|f| f.file_name().to_string_lossy().starts_with(&prefix))
        .map(|f| f.path())
        .collect()
}

fn overlay_at(path: &Path) -> bool {
    mounts::mounts()
        .iter()
        .any(|m| m.mount_point == path && m.fs_type == "overlay")
}

#[test]
fn image_container_gets_its_overlay_rootfs_from_create_and_it_is_unmounted_after() {
    tether_tests::shim_binary();
    let Scene { cd, ns, ctr } = Scene::start();
    let image = busybox_image();
    ctr.image_import(&image.path);
    let events = ctr.events();

    let id = unique_id("c");
    let out = ctr
        .run(&id)
        .runtime(TETHER_RUNTIME)
        .image(&image.reference)
        .flag("--snapshotter")
        .flag(SNAPSHOTTER)
        .rm()
        // The image's PATH applies: no absolute path needed.
        .args(&["sh", "-c", "echo hi; head -n 1 /etc/passwd"])
        .output();
    assert_eq!(out.code, 0, "{out}\n{}", cd.log_excerpt());
    assert_eq!(out.stdout, "hi\nroot:x:0:0:root:/root:/bin/sh\n", "{out}");
    // The rootfs came as an overlay mount in Create (containerd mounts nothing itself).
    let create = events.wait_for_topic(&id, "/tasks/create", T);
    let body = create.json().expect("TaskCreate is JSON");
    assert_eq!(body["rootfs"][0]["type"], "overlay", "{}", create.event);
    let bundle = cd.bundle(&ns, &id);
    assert!(!overlay_at(&bundle.join("rootfs")));

    // Detached: the overlay sits on the bundle's rootfs while the task runs, and goes with it.
    let id2 = unique_id("c");
    ctr.run(&id2)
        .runtime(TETHER_RUNTIME)
        .image(&image.reference)
        .flag("--snapshotter")
        .flag(SNAPSHOTTER)
        .detach()
        .args(&["sleep", "1000"])
        .success();
    wait_status(&ctr, &id2, "RUNNING");
    let bundle2 = cd.bundle(&ns, &id2);
    let rootfs2 = bundle2.join("rootfs");
    assert!(
        overlay_at(&rootfs2),
        "overlay on {}: {:?}",
        rootfs2.display(),
        mounts::mounts_under(&bundle2)
    );
    let kill = ctr.task_kill(&id2, "SIGKILL");
    assert!(kill.success(), "{kill}");
    wait_status(&ctr, &id2, "STOPPED");
    assert_eq!(ctr.task_delete_status(&id2), 137, "{}", cd.log_excerpt());
    assert!(
        !overlay_at(&rootfs2),
        "overlay on {} unmounted after delete",
        rootfs2.display()
    );
    assert!(
        mounts::mounts_under(&bundle2).is_empty(),
        "{:?}",
        mounts::mounts_under(&bundle2)
    );
    let task_dir = cd.state().join(tether_tests::containerd::TASK_STATE_DIR);
    assert!(
        mounts::mounts_under(&task_dir).is_empty(),
        "no mount left under {}: {:?}",
        task_dir.display(),
        mounts::mounts_under(&task_dir)
    );
    assert!(ctr.container_delete(&id2).success());
    drop(events);
    finish(cd, &[]);
}

#[test]
fn the_shims_oom_score_adj_is_one_above_containerds() {
    // As containerd's own shim (its `TestShimOOMScore`): under memory pressure the kernel
    // takes a shim before containerd. Raising a score needs no CAP_SYS_RESOURCE.
    let Scene { cd, ns, ctr } = Scene::start();
    let cd_pid = cd.pid().expect("containerd's pid");
    let path = format!("/proc/{cd_pid}/oom_score_adj");
    std::fs::write(&path, "500").expect("raise containerd's oom_score_adj");
    let id = tether_tests::shimtest::sleeper(&ctr);
    let shim = shim::shim_pid(&cd, &ns, &id).expect("the shim's pid");
    let score = std::fs::read_to_string(format!("/proc/{shim}/oom_score_adj")).expect("read");
    assert_eq!(score.trim(), "501", "containerd's 500 + 1");
    ctr.call(&["task", "kill", "-s", "KILL", &id]);
    finish(cd, &[&id]);
}

/// A shim containerd gave up on exits by itself. containerd could not reach it (here: it was
/// stopped), ran its `delete` action (which removes the container from runc) and removed the
/// bundle, as after a restart it does for a shim that does not answer. Once the shim runs
/// again, it finds its container exited and its bundle gone, and exits within seconds instead
/// of serving nobody forever.
#[test]
fn a_shim_whose_bundle_is_gone_and_that_serves_no_task_exits() {
    procs::become_subreaper();
    let Scene { cd, ns, ctr } = Scene::start();
    let id = tether_tests::shimtest::sleeper(&ctr);
    let bundle = cd.bundle(&ns, &id);
    let shim_pid = shim::shim_pid(&cd, &ns, &id).expect("the shim runs");
    let args = procs::cmdline(shim_pid).expect("the shim's command line");
    assert!(
        mounts::mounts_under(&bundle).is_empty(),
        "the bundle holds mounts: not removed by hand"
    );
    procs::signal(shim_pid, libc::SIGSTOP);
    let out = shim::run_delete_action(&cd, &ns, &id, &bundle);
    assert_eq!(out.code, 0, "the delete action: {out:?}");
    std::fs::remove_dir_all(&bundle).expect("remove the bundle, as containerd does");
    procs::signal(shim_pid, libc::SIGCONT);
    // It exits to us (the subreaper above containerd): a zombie is gone.
    let gone = wait_until(Duration::from_secs(15), || {
        procs::stat(shim_pid).is_none_or(|s| s.state == 'Z')
            || procs::cmdline(shim_pid)
                .as_deref()
                .is_some_and(|a| a != args)
    });
    if !gone {
        procs::signal(shim_pid, libc::SIGKILL);
    }
    procs::reap_orphans();
    // containerd still lists the task: its own clean-up of a dead shim runs in the bundle.
    std::fs::create_dir_all(&bundle).expect("recreate the bundle directory");
    // `ctr run -d` left its FIFOs for a task delete that containerd, having given up, skips.
    for f in ctr_fifos(&id) {
        let _ = std::fs::remove_file(&f);
        if let Some(dir) = f.parent() {
            let _ = std::fs::remove_dir(dir);
        }
    }
    assert!(
        gone,
        "the abandoned shim (pid {shim_pid}) still runs\n{}",
        cd.log_excerpt()
    );
    finish(cd, &[&id]);
}
