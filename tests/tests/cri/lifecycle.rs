//! Pods and containers through their life: run, exec, logs, stats, OOM, restart.

use super::*;

pub fn pod_run_stop_remove(handler: &str) {
    let cri = Cri::start();
    let pod = run_pod(&cri, handler, NamespaceMode::Container);
    let c = cri.client();
    assert_eq!(c.list_pods().expect("ListPodSandbox"), vec![pod.id.clone()]);

    c.stop_pod(&pod.id, POD_TIMEOUT).expect("StopPodSandbox");
    let st = c.pod_status(&pod.id).expect("PodSandboxStatus");
    assert_eq!(st.state, PodSandboxState::SandboxNotready as i32, "{st:?}");
    // Stopping twice is fine, as the kubelet may retry.
    c.stop_pod(&pod.id, POD_TIMEOUT)
        .expect("second StopPodSandbox");
    c.remove_pod(&pod.id, POD_TIMEOUT)
        .expect("RemovePodSandbox");
    let gone = c.pod_status(&pod.id).expect_err("status of a removed pod");
    assert_eq!(gone.code(), tonic::Code::NotFound, "{gone:?}");
    finish(cri, &[]);
}

pub fn container_create_start_stop_remove(handler: &str) {
    let cri = Cri::start();
    let pod = run_pod(&cri, handler, NamespaceMode::Container);
    let c = cri.client();
    let config = cri.container_config(&pod, "sleeper", 0, &["sleep", "1000"]);
    let id = c
        .create_container(&pod.id, &config, &pod.config)
        .expect("CreateContainer");
    let st = cri.wait_state(&id, ContainerState::ContainerCreated);
    assert_eq!(
        st.metadata.as_ref().map(|m| m.name.as_str()),
        Some("sleeper")
    );
    c.start_container(&id).expect("StartContainer");
    let st = cri.wait_state(&id, ContainerState::ContainerRunning);
    assert!(st.started_at > 0, "{st:?}");

    // `sleep` as PID 1 ignores SIGTERM: after the 1 s grace period it gets SIGKILL.
    c.stop_container(&id, 1).expect("StopContainer");
    let st = cri.wait_state(&id, ContainerState::ContainerExited);
    assert_eq!(st.exit_code, 137, "{st:?}");
    assert!(st.finished_at >= st.started_at, "{st:?}");
    c.remove_container(&id).expect("RemoveContainer");
    assert!(c.list_containers().expect("ListContainers").is_empty());
    let gone = c
        .container_status(&id)
        .expect_err("status of a removed container");
    assert_eq!(gone.code(), tonic::Code::NotFound, "{gone:?}");
    finish(cri, &[&pod]);
}

pub fn exit_codes(handler: &str) {
    let cri = Cri::start();
    let pod = run_pod(&cri, handler, NamespaceMode::Container);
    // (Death by a signal is in container_create_start_stop_remove: a container's PID 1 cannot
    // SIGKILL itself, the kernel ignores it.)
    let cases: [(&str, &[&str], i32, &str); 3] = [
        ("zero", &["true"], 0, "Completed"),
        ("seven", &["sh", "-c", "exit 7"], 7, "Error"),
        ("max", &["sh", "-c", "exit 255"], 255, "Error"),
    ];
    for (name, cmd, code, reason) in cases {
        let id = cri.run_container(&pod, name, cmd);
        let st = cri.wait_state(&id, ContainerState::ContainerExited);
        assert_eq!(
            (st.exit_code, st.reason.as_str()),
            (code, reason),
            "{name}: {st:?}"
        );
    }
    // StopContainer sends SIGTERM first: a shell that traps it exits with its own status.
    let id = cri.run_container(
        &pod,
        "trapper",
        &[
            "sh",
            "-c",
            "trap 'exit 42' TERM; echo ready; while :; do sleep 0.1; done",
        ],
    );
    cri.wait_state(&id, ContainerState::ContainerRunning);
    let log_file = cri.client().container_status(&id).expect("status").log_path;
    // Only once the trap is set does SIGTERM mean `exit 42`.
    assert!(
        wait_until(Duration::from_secs(20), || std::fs::read_to_string(
            &log_file
        )
        .is_ok_and(|l| l.contains("ready"))),
        "the trapping shell never started"
    );
    cri.client().stop_container(&id, 30).expect("StopContainer");
    let st = cri.wait_state(&id, ContainerState::ContainerExited);
    assert_eq!(st.exit_code, 42, "{st:?}");
    finish(cri, &[&pod]);
}

pub fn exec_sync_output_and_code(handler: &str) {
    let cri = Cri::start();
    let pod = run_pod(&cri, handler, NamespaceMode::Container);
    let id = cri.run_container(&pod, "target", &["sleep", "1000"]);
    cri.wait_state(&id, ContainerState::ContainerRunning);
    let c = cri.client();
    let r = c
        .exec_sync(&id, &["sh", "-c", "echo out; echo err >&2; exit 3"], 30)
        .expect("ExecSync");
    assert_eq!(
        (r.stdout.as_slice(), r.stderr.as_slice(), r.exit_code),
        (&b"out\n"[..], &b"err\n"[..], 3),
        "stdout {:?} stderr {:?}",
        String::from_utf8_lossy(&r.stdout),
        String::from_utf8_lossy(&r.stderr)
    );
    // 256 KiB: more than a pipe holds, so the output is copied while the process runs.
    let r = c
        .exec_sync(
            &id,
            &[
                "sh",
                "-c",
                "dd if=/dev/zero bs=1024 count=256 2>/dev/null | tr '\\0' a",
            ],
            30,
        )
        .unwrap_or_else(|e| panic!("ExecSync with large output: {e:?}\n{}", cri.log_excerpt()));
    assert_eq!(
        r.exit_code,
        0,
        "stderr {:?}",
        String::from_utf8_lossy(&r.stderr)
    );
    assert_eq!(r.stdout.len(), 256 * 1024);
    assert!(r.stdout.iter().all(|&b| b == b'a'));
    // The exec ran in the container: it sees the container's PID 1.
    let r = c
        .exec_sync(&id, &["cat", "/proc/1/cmdline"], 30)
        .expect("ExecSync");
    assert_eq!(r.stdout, b"sleep\x001000\x00");
    c.stop_container(&id, 0).expect("StopContainer");
    finish(cri, &[&pod]);
}

pub fn logs_in_cri_format(handler: &str) {
    let cri = Cri::start();
    let pod = run_pod(&cri, handler, NamespaceMode::Container);
    let id = cri.run_container(
        &pod,
        "talker",
        &[
            "sh",
            "-c",
            "for i in 1 2 3 4 5; do echo out$i; echo err$i >&2; done; printf 'no newline'",
        ],
    );
    let st = cri.wait_state(&id, ContainerState::ContainerExited);
    assert_eq!(st.exit_code, 0, "{st:?}");
    assert!(
        st.log_path
            .starts_with(&cri.log_dir().display().to_string()),
        "{st:?}"
    );
    let read = || std::fs::read_to_string(&st.log_path).unwrap_or_default();
    // The plugin writes the log from its own copy of the output: wait for all 11 records.
    wait_until(Duration::from_secs(20), || read().lines().count() >= 11);
    let text = read();
    let records = log::parse(&text).unwrap_or_else(|e| panic!("not CRI format: {e}\n{text}"));
    let expect = |p: &str| (1..=5).map(|i| format!("{p}{i}")).collect::<Vec<_>>();
    let mut out = expect("out");
    out.push("no newline".into());
    assert_eq!(log::lines(&records, log::Stream::Stdout), out, "{text}");
    assert_eq!(
        log::lines(&records, log::Stream::Stderr),
        expect("err"),
        "{text}"
    );
    assert_eq!(records.len(), 11, "every line once:\n{text}");
    finish(cri, &[&pod]);
}

pub fn container_stats(handler: &str) {
    let cri = Cri::start();
    let pod = run_pod(&cri, handler, NamespaceMode::Container);
    let id = cri.run_container(
        &pod,
        "busy",
        &[
            "sh",
            "-c",
            "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; sleep 1000",
        ],
    );
    cri.wait_state(&id, ContainerState::ContainerRunning);
    let s = cri.client().container_stats(&id).expect("ContainerStats");
    assert_eq!(
        s.attributes.as_ref().map(|a| a.id.as_str()),
        Some(id.as_str()),
        "{s:?}"
    );
    let cpu = s.cpu.as_ref().expect("cpu stats");
    assert!(cpu.timestamp > 0, "{s:?}");
    assert!(
        cpu.usage_core_nano_seconds.is_some_and(|v| v.value > 0),
        "CPU used by the shell: {s:?}"
    );
    let mem = s.memory.as_ref().expect("memory stats");
    assert!(mem.working_set_bytes.is_some_and(|v| v.value > 0), "{s:?}");
    assert!(
        mem.working_set_bytes.is_some_and(|v| v.value < 100 << 20),
        "a shell uses little memory: {s:?}"
    );
    cri.client().stop_container(&id, 0).expect("StopContainer");
    finish(cri, &[&pod]);
}

pub fn oom_killed(handler: &str) {
    let cri = Cri::start();
    let pod = run_pod(&cri, handler, NamespaceMode::Container);
    let mut config = cri.container_config(
        &pod,
        "hog",
        0,
        // `tail` buffers 100 MiB of lines that never end: over a 32 MiB limit.
        &[
            "sh",
            "-c",
            "dd if=/dev/zero bs=1M count=100 | tail > /dev/null",
        ],
    );
    if let Some(r) = config.linux.as_mut().and_then(|l| l.resources.as_mut()) {
        r.memory_limit_in_bytes = 32 << 20;
    }
    let id = cri.start_container(&pod, &config);
    let st = cri.wait_state(&id, ContainerState::ContainerExited);
    // containerd 1.6's own shim sometimes publishes the exit before the OOM (seen in CI: reason
    // "Error"); ours publishes a pending OOM before the exit it caused, always.
    let reasons: &[&str] = if handler == RUNC_HANDLER {
        &["OOMKilled", "Error"]
    } else {
        &["OOMKilled"]
    };
    assert!(
        st.exit_code == 137 && reasons.contains(&st.reason.as_str()),
        "{handler}: exit 137 with reason {reasons:?}: {st:?}"
    );
    finish(cri, &[&pod]);
}

pub fn container_restarted_in_the_same_pod(handler: &str) {
    let cri = Cri::start();
    let pod = run_pod(&cri, handler, NamespaceMode::Container);
    let c = cri.client();
    let first = cri.start_container(
        &pod,
        &cri.container_config(&pod, "app", 0, &["sh", "-c", "echo run0; exit 1"]),
    );
    let st0 = cri.wait_state(&first, ContainerState::ContainerExited);
    assert_eq!(st0.exit_code, 1, "{st0:?}");
    // As the kubelet restarts a container: the same name, the next attempt, the old one kept.
    let second = cri.start_container(
        &pod,
        &cri.container_config(&pod, "app", 1, &["sh", "-c", "echo run1; exec sleep 1000"]),
    );
    assert_ne!(first, second);
    let st1 = cri.wait_state(&second, ContainerState::ContainerRunning);
    assert_eq!(st1.metadata.as_ref().map(|m| m.attempt), Some(1), "{st1:?}");
    let st0 = c
        .container_status(&first)
        .expect("status of the first attempt");
    assert_eq!(
        (st0.state, st0.exit_code),
        (ContainerState::ContainerExited as i32, 1)
    );
    let log_of = |p: &str| {
        let mut text = String::new();
        wait_until(Duration::from_secs(20), || {
            text = std::fs::read_to_string(p).unwrap_or_default();
            !text.is_empty()
        });
        log::lines(&log::parse(&text).expect("CRI log"), log::Stream::Stdout)
    };
    assert_eq!(log_of(&st0.log_path), ["run0"]);
    assert_eq!(log_of(&st1.log_path), ["run1"]);
    c.remove_container(&first)
        .expect("RemoveContainer of the first attempt");
    let r = c
        .exec_sync(&second, &["echo", "alive"], 30)
        .expect("ExecSync");
    assert_eq!(r.stdout, b"alive\n");
    finish(cri, &[&pod]);
}
