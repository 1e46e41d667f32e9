//! Metrics and OOM through our shim: `ctr task metrics` of a running container, and a container
//! over its memory limit that gets `/tasks/oom` and then exits with 137.

use std::collections::HashMap;
use tether_tests::shimtest::{detached, Scene};
use tether_tests::shimtest::{finish, T};
use tether_tests::{busybox_rootfs, cgroups, unique_id, wait_until, RUNC_RUNTIME, TETHER_RUNTIME};

/// Parses `ctr task metrics` (table): `METRIC VALUE` rows after the header.
fn parse_metrics(out: &str) -> HashMap<String, String> {
    out.lines()
        .skip_while(|l| !l.starts_with("METRIC"))
        .skip(1)
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some((f.next()?.to_string(), f.collect::<Vec<_>>().join(" ")))
        })
        .collect()
}

fn number(m: &HashMap<String, String>, key: &str, raw: &str) -> u64 {
    m.get(key)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no numeric {key} in `ctr task metrics`:\n{raw}"))
}

#[test]
fn metrics_of_a_running_container() {
    let Scene { cd, ctr, .. } = Scene::start();
    let id = detached(&ctr, &["/bin/sleep", "1000"]);
    let out = ctr.call_ok(&["task", "metrics", &id]);
    let m = parse_metrics(&out.stdout);
    let usage = number(&m, "memory.usage_in_bytes", &out.stdout);
    assert!(usage > 0, "memory in use:\n{out}");
    assert!(usage < 100 << 20, "a sleeping busybox uses little:\n{out}");
    let pids = number(&m, "pids.current", &out.stdout);
    assert!(pids >= 1, "{out}");

    // The JSON form carries the same figures.
    let json = ctr.call_ok(&["task", "metrics", "--format", "json", &id]);
    let v: serde_json::Value =
        serde_json::from_str(&json.stdout).unwrap_or_else(|e| panic!("{e}: {json}"));
    assert!(
        v["memory"]["usage"]["usage"].as_u64().unwrap_or(0) > 0,
        "{json}"
    );
    assert!(v["pids"]["current"].as_u64().unwrap_or(0) >= 1, "{json}");

    // The same container under containerd's own shim reports the same metrics, and the same
    // limits (none set: what each figure says for "unlimited").
    let theirs = unique_id("c");
    ctr.run_detached_rootfs(
        RUNC_RUNTIME,
        busybox_rootfs(),
        &theirs,
        &["/bin/sleep", "1000"],
    );
    let out_theirs = ctr.call_ok(&["task", "metrics", &theirs]);
    let m_theirs = parse_metrics(&out_theirs.stdout);
    let mut names: Vec<&String> = m.keys().collect();
    let mut names_theirs: Vec<&String> = m_theirs.keys().collect();
    names.sort();
    names_theirs.sort();
    assert_eq!(
        names, names_theirs,
        "ours:\n{out}\ncontainerd's:\n{out_theirs}"
    );
    let json_theirs = ctr.call_ok(&["task", "metrics", "--format", "json", &theirs]);
    let v_theirs: serde_json::Value =
        serde_json::from_str(&json_theirs.stdout).unwrap_or_else(|e| panic!("{e}: {json_theirs}"));
    for limit in [
        "/memory/usage/limit",
        "/memory/swap/limit",
        "/memory/kernel/limit",
        "/memory/kernel_tcp/limit",
        "/memory/hierarchical_memory_limit",
        "/memory/hierarchical_swap_limit",
        "/pids/limit",
    ] {
        assert_eq!(
            v.pointer(limit),
            v_theirs.pointer(limit),
            "{limit}: ours:\n{json}\ncontainerd's:\n{json_theirs}"
        );
    }
    for limit in ["memory.limit_in_bytes", "pids.limit"] {
        assert_eq!(
            m.get(limit),
            m_theirs.get(limit),
            "{limit}: ours:\n{out}\ncontainerd's:\n{out_theirs}"
        );
    }

    // A task whose init has exited has no metrics: an error, and the shim answers on.
    let kill = ctr.task_kill(&id, "SIGKILL");
    assert!(kill.success(), "{kill}");
    assert!(
        wait_until(T, || ctr.task(&id).is_some_and(|t| t.status == "STOPPED")),
        "{:?}",
        ctr.task(&id)
    );
    let after = ctr.call(&["task", "metrics", &id]);
    assert!(!after.success(), "metrics of an exited task: {after}");
    assert_eq!(ctr.task(&id).expect("task listed").status, "STOPPED");
    finish(cd, &[&id, &theirs]);
}

/// The body of the OOM tests: 32 MiB limit, 100 MiB buffered by `tail`.
fn oom_then_exit_137() {
    let Scene { cd, ctr, .. } = Scene::start();
    let events = ctr.events();
    let id = unique_id("c");
    let out = ctr
        .run(&id)
        .runtime(TETHER_RUNTIME)
        .rootfs(busybox_rootfs())
        .rm()
        .flag("--memory-limit")
        .flag("33554432")
        .args(&[
            "/bin/sh",
            "-c",
            "/bin/dd if=/dev/zero bs=1M count=100 | /bin/tail > /dev/null",
        ])
        .output();
    assert_eq!(out.code, 137, "killed by the OOM killer: {out}");
    let exit = events.wait_for_topic(&id, "/tasks/exit", T);
    assert_eq!(exit.json().expect("exit is JSON")["exit_status"], 137);
    let topics: Vec<String> = events
        .topics_for(&id)
        .into_iter()
        .filter(|t| t == "/tasks/oom" || t == "/tasks/exit")
        .collect();
    assert_eq!(
        topics.first().map(String::as_str),
        Some("/tasks/oom"),
        "the OOM is published before the exit it caused: {topics:?}"
    );
    assert_eq!(
        topics.last().map(String::as_str),
        Some("/tasks/exit"),
        "{topics:?}"
    );
    drop(events);
    finish(cd, &[&id]);
}

#[test]
fn oom_event_before_exit_137_cgroup_v1() {
    cgroups::require_v1("memory");
    oom_then_exit_137();
}

/// An OOM that kills a child while the init lives on is published as it happens (from the
/// eventfd on the loop, not only when an exit makes the shim look).
#[test]
fn oom_event_while_the_container_survives() {
    cgroups::require_v1("memory");
    let Scene { cd, ctr, .. } = Scene::start();
    let events = ctr.events();
    let id = unique_id("c");
    ctr.run(&id)
        .runtime(TETHER_RUNTIME)
        .rootfs(busybox_rootfs())
        .detach()
        .flag("--memory-limit")
        .flag("33554432")
        .args(&[
            "/bin/sh",
            "-c",
            "/bin/dd if=/dev/zero bs=1M count=100 | /bin/tail > /dev/null; exec /bin/sleep 1000",
        ])
        .success();
    events.wait_for_topic(&id, "/tasks/oom", T);
    let task = ctr.task(&id).expect("task listed");
    assert_eq!(task.status, "RUNNING", "only the pipeline was killed");
    assert!(
        !events.topics_for(&id).iter().any(|t| t == "/tasks/exit"),
        "no exit: {:?}",
        events.topics_for(&id)
    );
    drop(events);
    finish(cd, &[&id]);
}

/// Reported as ignored, not passed: hosts like ours are hybrid, where v2 has no controllers, so
/// the shim's `memory.events` watcher cannot be exercised. The node lane (`make test-node`) runs
/// it with `--ignored` in every guest (cgroup v2 with every controller); so can any v2 host.
#[test]
#[ignore = "cgroup v2 OOM: this host's v2 hierarchy has no controllers (hybrid cgroups)"]
fn oom_event_before_exit_137_cgroup_v2() {
    assert!(
        cgroups::v2_has("memory"),
        "this test needs a unified (v2) hierarchy with the memory controller; this host has none"
    );
    oom_then_exit_137();
}
