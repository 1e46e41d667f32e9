//! containerd's own scenarios, terminals and undelivered events across an upgrade.

use super::*;

/// containerd's scenarios through `ctr` across an upgrade: an exec started before it ends
/// after it (killed by `ctr task kill --exec-id`) with its code, reported once; after it an
/// exec with its output and code, pause and resume, kill and delete, each seen by `ctr events`.
#[test]
fn containerds_own_scenarios_pass_across_an_upgrade() {
    let s = Setup::start();
    let events = s.ctr.events();
    let pid = s.shim_pid();
    let wait = s.park_wait();
    let mut before = Reaped(
        s.ctr
            .command(&[
                "task",
                "exec",
                "--exec-id",
                "before",
                s.id.as_str(),
                "/bin/sh",
                "-c",
                "trap 'exit 5' TERM; while true; do sleep 0.1; done",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn ctr task exec"),
    );
    events.wait_for(
        |e| {
            e.is(&s.id, "/tasks/exec-started")
                && e.json()
                    .is_some_and(|v| v.get("exec_id").and_then(|x| x.as_str()) == Some("before"))
        },
        T,
    );
    s.install(&std::fs::read(shim_binary()).expect("read the shim binary"));
    let r = s
        .upgrade()
        .unwrap_or_else(|e| panic!("upgrade refused: {e:?}\n{}", s.cd.log_excerpt()));
    assert_eq!(r.pid as i32, pid);

    s.ctr.call_ok(&[
        "task",
        "kill",
        "--exec-id",
        "before",
        "--signal",
        "SIGTERM",
        s.id.as_str(),
    ]);
    let (done, killed) =
        tether_tests::cmd::wait_deadline(&mut before.0, Instant::now() + T, "ctr task exec");
    assert!(!killed, "the exec started before the upgrade did not end");
    assert_eq!(done.code(), Some(5), "ctr task exec's code");
    events.wait_for(
        |e| {
            e.is(&s.id, "/tasks/exit")
                && e.json()
                    .is_some_and(|v| v.get("id").and_then(|x| x.as_str()) == Some("before"))
        },
        T,
    );

    let out = s.ctr.call(&[
        "task",
        "exec",
        "--exec-id",
        "after",
        s.id.as_str(),
        "/bin/sh",
        "-c",
        "echo exec-after-upgrade; exit 3",
    ]);
    assert_eq!(out.code, 3, "{out}");
    assert!(out.stdout.contains("exec-after-upgrade"), "{out}");

    s.ctr.call_ok(&["task", "pause", s.id.as_str()]);
    let task = s.ctr.task(&s.id);
    assert_eq!(task.map(|t| t.status).as_deref(), Some("PAUSED"));
    events.wait_for_topic(&s.id, "/tasks/paused", T);
    s.ctr.call_ok(&["task", "resume", s.id.as_str()]);
    s.assert_running();
    events.wait_for_topic(&s.id, "/tasks/resumed", T);

    s.ctr.task_kill(&s.id, "SIGTERM");
    s.end(wait, 7);
    events.wait_for_topic(&s.id, "/tasks/delete", T);
    assert_eq!(
        exits_of(&events, &s.id, "before"),
        vec![5],
        "the exec's exit, once"
    );
    assert_eq!(exits_of(&events, &s.id, "after"), vec![3]);
    assert_eq!(
        exits_of(&events, &s.id, &s.id),
        vec![7],
        "the init's exit, once"
    );
    assert_eq!(
        s.output(),
        "before-upgrade\nafter-upgrade\n",
        "each line once, in order"
    );
    s.clean_up();
}

/// `ctr run --tty` on a terminal: the shell in the container reads what is typed and writes
/// to the terminal before and after its shim's upgrade, and a resize after it reaches the
/// container's terminal.
#[test]
fn a_terminal_container_keeps_its_terminal_across_an_upgrade() {
    let s = Setup::bare(None);
    let run = s
        .ctr
        .run(&s.id)
        .runtime(TETHER_RUNTIME)
        .rootfs(busybox_rootfs())
        .flag("--read-only")
        .flag("--tty")
        .rm()
        .args(&["/bin/sh"]);
    let (child, term) = Terminal::spawn(s.ctr.command(&run.to_args()), 24, 80);
    let mut child = Reaped(child);
    // The typed line holds an expression: only the shell's answer shows its value.
    term.send(b"echo one-$((20+22))\n");
    assert!(
        term.saw("one-42", T),
        "before the upgrade: {:?}\n{}",
        term.output(),
        s.cd.log_excerpt()
    );
    let pid = s.shim_pid();
    s.install(&std::fs::read(shim_binary()).expect("read the shim binary"));
    let r = s
        .upgrade()
        .unwrap_or_else(|e| panic!("upgrade refused: {e:?}\n{}", s.cd.log_excerpt()));
    assert_eq!(r.pid as i32, pid);
    term.send(b"echo two-$((40+3))\n");
    assert!(
        term.saw("two-43", T),
        "after the upgrade: {:?}",
        term.output()
    );
    term.resize(33, 101);
    // ctr forwards the size on SIGWINCH; the shell asks until it shows.
    assert!(
        wait_until(T, || {
            term.send(b"stty size\n");
            term.saw("33 101", Duration::from_millis(500))
        }),
        "the resize after the upgrade: {:?}",
        term.output()
    );
    term.send(b"exit 4\n");
    let (done, killed) =
        tether_tests::cmd::wait_deadline(&mut child.0, Instant::now() + T, "ctr run");
    assert!(!killed, "ctr run did not end: {:?}", term.output());
    assert_eq!(done.code(), Some(4), "{:?}", term.output());
    term.close();
    assert!(s.ctr.containers().is_empty(), "--rm removed the container");
    s.clean_up();
}

/// An exit event containerd has not yet answered (containerd held stopped) crosses the
/// upgrade with the shim's event connection: once containerd runs again, the new image gets
/// the reply to the old one's request, and `ctr events` shows the exit once.
#[test]
fn an_exit_event_containerd_has_not_taken_yet_is_published_once_across_the_upgrade() {
    let s = Setup::start();
    let events = s.ctr.events();
    let pid = s.shim_pid();
    let mut wait = s.park_wait();
    let init = s.ctr.task(&s.id).expect("the task").pid as i32;
    s.install(&std::fs::read(shim_binary()).expect("read the shim binary"));
    let daemon = s.cd.pid().expect("containerd's pid");
    let stopped = Stopped::new(daemon);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(init),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the container's init");
    // The shim answers the Wait as it publishes the exit: the event is sent (or queued) and
    // containerd, stopped, has not answered it.
    assert_eq!(read_wait(&mut wait), 137);
    let r = s
        .upgrade()
        .unwrap_or_else(|e| panic!("upgrade with an event in flight: {e:?}"));
    assert_eq!(r.pid as i32, pid);
    drop(stopped);
    events.wait_for_topic(&s.id, "/tasks/exit", T);
    s.delete(137);
    events.wait_for_topic(&s.id, "/tasks/delete", T);
    assert_eq!(
        exits_of(&events, &s.id, &s.id),
        vec![137],
        "one exit, code 137"
    );
    s.clean_up();
}
