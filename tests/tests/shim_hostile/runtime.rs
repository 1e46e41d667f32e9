//! A runtime call past its deadline: a fake runtime whose `pause` hangs.

use super::*;

/// A fake runtime: runc for every verb but `pause`, where it records its pid in `pid_file` and
/// sleeps 600 s.
pub fn hanging_runtime_script(dir: &std::path::Path, pid_file: &std::path::Path) -> PathBuf {
    let runc = tether_tests::cmd::which("runc").expect("runc on PATH");
    let script = dir.join("hanging-runc");
    let text = format!(
        "#!/bin/sh\nfor a in \"$@\"; do\n  if [ \"$a\" = pause ]; then echo $$ > '{}'; exec sleep 600; fi\ndone\nexec '{}' \"$@\"\n",
        pid_file.display(),
        runc.display()
    );
    tether_tests::cmd::write_executable(&script, text.as_bytes());
    script
}

/// A second container in `t`'s shim, created through a runtime whose `pause` hangs. A Pause
/// with a 2 s ttrpc deadline: meanwhile State answers; then DeadlineExceeded; the container runs
/// on. Returns the Pause's answer (or what else went wrong).
pub fn hanging_runtime(t: &Target) -> Got {
    let dir = tempfile::tempdir().expect("temp dir");
    let pid_file = dir.path().join("hung.pid");
    let script = hanging_runtime_script(dir.path(), &pid_file);
    let id = unique_id("hang");
    let bundle = second::bundle_like(t, dir.path(), &id, |_| {});
    let opts = Options {
        binary_name: script.display().to_string(),
        ..Default::default()
    };
    let create = second::create_second_req(&id, &bundle, Some(opts));
    let created: CreateTaskResponse = must(t, "Create", &create);
    let _: StartResponse = must(t, "Start", &start_req(&id, ""));
    let b = Target {
        ns: t.ns.clone(),
        id: id.clone(),
        pid: created.pid,
        shim_pid: t.shim_pid,
        address: t.address.clone(),
        bundle: bundle.clone(),
    };

    let mut s = rawttrpc::connect(&t.address, T);
    let pause = PauseRequest {
        id: id.clone(),
        ..Default::default()
    }
    .write_to_bytes()
    .expect("encode");
    s.write_all(&request_frame(
        1,
        TASK_SERVICE_V2,
        "Pause",
        pause,
        Duration::from_secs(2),
    ))
    .expect("send Pause");
    // While the runtime hangs, the shim serves: State of both containers.
    let mut problems = Vec::new();
    for who in [&b, t] {
        if let Err(e) = check_after(who, Setup::Running) {
            problems.push(format!("while Pause hung, container {}: {e}", who.id));
        }
    }
    let got = match rawttrpc::try_read_response(&mut s) {
        Ok((1, res)) => Got::Code(res.status.code()),
        Ok((n, _)) => Got::Failed(format!("answered on stream {n}")),
        Err(e) => Got::Failed(format!("Pause: {e}")),
    };
    if let Err(e) = check_after(&b, Setup::Running) {
        problems.push(format!("after the deadline, container {id}: {e}"));
    }

    // Clean up: the sleeping runtime (if the shim left it), then the container.
    if let Some(pid) = std::fs::read_to_string(&pid_file)
        .ok()
        .and_then(|p| p.trim().parse::<i32>().ok())
    {
        // The shim answers right after its SIGKILL; dying takes a moment on a busy machine.
        let sleeping = || procs::cmdline(pid).is_some_and(|a| a.iter().any(|x| x == "sleep"));
        if !tether_tests::wait_until(Duration::from_secs(5), || !sleeping()) {
            problems.push(format!("the hung runtime (pid {pid}) was left running"));
            procs::signal(pid, libc::SIGKILL);
        }
    }
    for (method, payload) in [
        ("Kill", kill_req(&id, "").write_to_bytes()),
        ("Wait", wait_req(&id, "").write_to_bytes()),
        ("Delete", delete_req(&id, "").write_to_bytes()),
    ] {
        let r = raw(t, TASK_SERVICE_V2, method, payload.expect("encode"), T);
        if r != OK {
            problems.push(format!("cleaning up {id}: {method}: {r:?}"));
        }
    }
    match (got, problems.is_empty()) {
        (got, true) => got,
        (got, false) => Got::Failed(format!("{got:?}; {}", problems.join("; "))),
    }
}
