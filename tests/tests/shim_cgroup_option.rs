//! containerd's `ShimCgroup` runtime option (the CRI plugin sets it to the pod's cgroup): the
//! shim moves itself into that cgroup when it starts, as containerd's own shim does, so the
//! pod's cgroup accounts for it. Passed here as `ctr run --runtime-config-path` passes it.

use std::time::Duration;
use tether_tests::cgroups::TestCgroup;
use tether_tests::shimtest::Scene;
use tether_tests::{busybox_rootfs, procs, shim, unique_id, TETHER_RUNTIME};

const T: Duration = Duration::from_secs(20);

#[test]
fn shim_cgroup_option_moves_the_shim_into_that_cgroup() {
    tether_tests::cgroups::require_v1("pids");
    tether_tests::cgroups::require_v1("memory");
    let cg = TestCgroup::new(&["pids", "memory"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("tether.toml");
    std::fs::write(&config, format!("ShimCgroup = \"/{}\"\n", cg.name)).expect("write");
    let Scene { cd, ns, ctr } = Scene::start();
    let id = unique_id("c");
    ctr.run(&id)
        .runtime(TETHER_RUNTIME)
        .rootfs(busybox_rootfs())
        .flag("--read-only")
        .flag(&format!("--runtime-config-path={}", config.display()))
        .detach()
        .args(&["/bin/sleep", "1000"])
        .success();
    let pid = shim::shim_pid(&cd, &ns, &id).expect("the container's shim");
    let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("shim's cgroups");
    for controller in ["pids", "memory"] {
        let line = own
            .lines()
            .find(|l| {
                l.split(':')
                    .nth(1)
                    .is_some_and(|c| c.split(',').any(|c| c == controller))
            })
            .unwrap_or_else(|| panic!("no {controller} line in:\n{own}"));
        assert!(
            line.ends_with(&format!(":/{}", cg.name)),
            "the shim (pid {pid}) is in the ShimCgroup's {controller} cgroup: {line}"
        );
    }
    let procs_file = cg.dirs[0].join("cgroup.procs");
    let members = std::fs::read_to_string(&procs_file).expect("cgroup.procs");
    assert!(
        members.lines().any(|l| l.trim() == pid.to_string()),
        "{} lists the shim {pid}: {members}",
        procs_file.display()
    );
    ctr.call(&["task", "kill", "-s", "KILL", &id]);
    let check = cd.leak_check();
    drop(cd);
    check.assert_clean();
    assert!(procs::wait_gone(&[pid], T).is_empty(), "the shim is gone");
    drop(cg);
}
