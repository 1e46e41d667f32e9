//! Upgrades while the shim is busy: a runtime call in flight, an exit during the handover.

use super::*;

/// An upgrade asked while a runtime command is in flight (`runc ps`, held until the test lets
/// it go) waits for it: refused with that reason if the command outlives the wait, else done
/// once the command ends; meanwhile the shim serves, and a request that would start another
/// runtime command (`ctr task pause`) waits for the upgrade and is run by the new image.
#[test]
fn an_upgrade_during_a_runtime_call_waits_for_it_to_end() {
    let hold = |dir: &Path| {
        format!(
            "#!/bin/sh\n\
             for a in \"$@\"; do\n\
               if [ \"$a\" = ps ]; then\n\
                 touch {dir}/ps-started\n\
                 i=0; while [ ! -e {dir}/ps-release ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done\n\
               fi\n\
             done\n\
             exec /usr/sbin/runc \"$@\"\n",
            dir = dir.display()
        )
    };
    let s = Setup::start_with(SCRIPT, "before-upgrade", Some(&hold));
    let pid = s.shim_pid();
    let old = exe_inode(pid);
    let wait = s.park_wait();
    let new = s.install(&std::fs::read(shim_binary()).expect("read the shim binary"));
    let quiet = |cmd: &mut std::process::Command| {
        cmd.stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn ctr")
    };
    let mut ps = Reaped(quiet(&mut s.ctr.command(&["task", "ps", s.id.as_str()])));
    assert!(
        wait_until(T, || s.dir.dir().join("ps-started").exists()),
        "runc ps never started\n{}",
        s.cd.log_excerpt()
    );
    // runc ps outlives the upgrade's wait (10 s): refused, saying what it waited for.
    let e = s.upgrade().expect_err("refused while runc ps runs on");
    let status = rawttrpc::rpc_status("upgrade during runc ps", Err::<(), _>(e));
    assert_eq!(
        status.code(),
        ttrpc::Code::FAILED_PRECONDITION,
        "{status:?}"
    );
    assert!(
        status.message().contains("not quiet within")
            && status.message().contains("a runtime call is in flight"),
        "{status:?}"
    );
    assert_eq!(exe_inode(pid), old, "the old image serves on");

    // Asked again; runc ps still held: the shim serves (State) and defers the pause.
    let upgrading = s.upgrade_in_background();
    s.assert_running();
    let mut pause = Reaped(quiet(&mut s.ctr.command(&["task", "pause", s.id.as_str()])));
    assert!(
        wait_until(T, || s.cd.log().contains("Pause waits for the upgrade")),
        "the pause never reached the shim\n{}",
        s.cd.log_excerpt()
    );
    assert_eq!(exe_inode(pid), old, "no handover while runc ps runs");
    std::fs::write(s.dir.dir().join("ps-release"), b"").expect("release runc ps");
    let r = upgrading
        .join()
        .expect("the upgrade's thread")
        .unwrap_or_else(|e| panic!("the upgrade once runc ps is done: {e:?}"));
    eprintln!(
        "upgrade after a runtime call: took {} µs, the handover {} µs",
        r.took_micros, r.handover_micros
    );
    assert_eq!(r.pid as i32, pid);
    assert_eq!(exe_inode(pid), new);
    for (what, child) in [("ps", &mut ps), ("pause", &mut pause)] {
        let (done, killed) =
            tether_tests::cmd::wait_deadline(&mut child.0, Instant::now() + T, "ctr task");
        assert!(!killed, "ctr task {what} did not end");
        assert!(done.success(), "ctr task {what}: {done:?}");
    }
    let task = s.ctr.task(&s.id);
    assert_eq!(task.map(|t| t.status).as_deref(), Some("PAUSED"));
    s.ctr.call_ok(&["task", "resume", s.id.as_str()]);
    s.assert_running();
    s.finish(wait);
}

/// The binary checked is the binary executed: one installed after the check passed (a
/// package manager installing vN+1 then vN+2 while the shim waited to be quiet) is not what
/// the shim becomes.
#[test]
fn the_binary_executed_is_the_one_checked() {
    let hold = |dir: &Path| {
        format!(
            "#!/bin/sh\n\
             for a in \"$@\"; do\n\
               if [ \"$a\" = ps ]; then\n\
                 touch {dir}/ps-started\n\
                 i=0; while [ ! -e {dir}/ps-release ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done\n\
               fi\n\
             done\n\
             exec /usr/sbin/runc \"$@\"\n",
            dir = dir.display()
        )
    };
    let s = Setup::start_with(SCRIPT, "before-upgrade", Some(&hold));
    let pid = s.shim_pid();
    let wait = s.park_wait();
    let real = s.dir.dir().join("real-shim");
    std::fs::copy(shim_binary(), &real).expect("copy the shim binary");
    let ran = s.dir.dir().join("ran");
    let version = |name: &str| {
        format!(
            "#!/bin/sh\n[ \"$1\" = --handover-check ] || echo {name} >> {ran}\nexec {real} \"$@\"\n",
            ran = ran.display(),
            real = real.display()
        )
    };
    let mut ps = Reaped(
        s.ctr
            .command(&["task", "ps", s.id.as_str()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn ctr"),
    );
    assert!(
        wait_until(T, || s.dir.dir().join("ps-started").exists()),
        "runc ps never started\n{}",
        s.cd.log_excerpt()
    );
    s.install(version("checked").as_bytes());
    let upgrading = s.upgrade_in_background();
    assert!(
        wait_until(T, || s.cd.log().contains("can take over")),
        "the check never passed\n{}",
        s.cd.log_excerpt()
    );
    // Installed while the shim waits for runc ps to end.
    s.install(version("unchecked").as_bytes());
    std::fs::write(s.dir.dir().join("ps-release"), b"").expect("release runc ps");
    let r = upgrading
        .join()
        .expect("the upgrade's thread")
        .unwrap_or_else(|e| panic!("the upgrade: {e:?}\n{}", s.cd.log_excerpt()));
    assert_eq!(r.pid as i32, pid);
    let (done, killed) =
        tether_tests::cmd::wait_deadline(&mut ps.0, Instant::now() + T, "ctr task ps");
    assert!(!killed && done.success(), "ctr task ps: {done:?}");
    assert_eq!(
        std::fs::read_to_string(&ran).unwrap_or_default(),
        "checked\n",
        "the image that took over"
    );
    s.assert_running();
    s.install(&std::fs::read(&real).expect("read the real binary"));
    s.finish(wait);
}

/// A container that exits while its shim is between images (the new image held before its
/// first reap by a test hook): the exit waits as a zombie, the new image reaps it, and it is
/// reported once, with its code, to the `Wait` parked before the upgrade, `ctr task delete`
/// and `ctr events`.
#[test]
fn an_exit_during_the_handover_is_reaped_by_the_new_image_and_reported_once() {
    let s = Setup::start();
    let events = s.ctr.events();
    let pid = s.shim_pid();
    let wait = s.park_wait();
    let init = s.ctr.task(&s.id).expect("the task").pid as i32;
    let hold = s.dir.dir().join("hold");
    std::fs::create_dir(&hold).expect("mkdir hold");
    let real = s.install_with_env(&format!("TETHER_SHIM_TEST_PAUSE_RESUME={}", hold.display()));
    let upgrading = s.upgrade_in_background();
    assert!(
        wait_until(T, || hold.join("resume-paused").exists()),
        "the new image never reached its pause\n{}",
        s.cd.log_excerpt()
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(init),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the container's init");
    assert!(
        wait_until(T, || proc_state(init) == Some('Z')),
        "the init exits and waits, unreaped, during the handover: {:?}",
        proc_state(init)
    );
    std::fs::write(hold.join("resume-go"), b"").expect("let the new image go on");
    let r = upgrading
        .join()
        .expect("the upgrade's thread")
        .unwrap_or_else(|e| panic!("upgrade: {e:?}\n{}", s.cd.log_excerpt()));
    assert_eq!(r.pid as i32, pid);
    assert_eq!(s.shim_pid(), pid);
    // containerd's own clean-up runs the binary at the shim's path: the real one again.
    s.install(&std::fs::read(&real).expect("read the real binary"));
    s.end(wait, 137);
    events.wait_for_topic(&s.id, "/tasks/delete", T);
    assert_eq!(
        exits_of(&events, &s.id, &s.id),
        vec![137],
        "one exit, code 137"
    );
    s.clean_up();
}
