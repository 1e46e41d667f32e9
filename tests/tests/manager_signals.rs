//! Signals: an attached `tether run` forwards SIGINT, SIGTERM, SIGHUP, SIGQUIT,
//! SIGUSR1 and SIGUSR2 to the container's init (which decides what they mean), and returns the
//! exit status the container chose. An attached `tether exec` does the same for its process.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::mpsc::channel;
use std::thread;
use std::time::{Duration, Instant};
use tether_tests::manager::{Daemon, RUNC_RUNTIME, TETHER_RUNTIME};
use tether_tests::pty::Terminal;
use tether_tests::{busybox_rootfs, cmd, procs, unique_id};

const T: Duration = Duration::from_secs(30);

/// Each forwarded signal and the exit code the container's trap answers it with.
const TRAPS: [(i32, &str, i32); 6] = [
    (libc::SIGINT, "INT", 41),
    (libc::SIGTERM, "TERM", 42),
    (libc::SIGHUP, "HUP", 43),
    (libc::SIGQUIT, "QUIT", 44),
    (libc::SIGUSR1, "USR1", 45),
    (libc::SIGUSR2, "USR2", 46),
];

/// Kills (by pid) and reaps a `tether run` the test did not see through.
struct Reaped(Option<Child>);

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `tether run` (attached) of a shell that traps every forwarded signal; sends it `sig` once the
/// trap is set and returns the CLI's exit code.
fn run_and_signal(d: &Daemon, runtime: &str, ns: &str, sig: i32) -> i32 {
    let id = unique_id("sig");
    let rootfs = busybox_rootfs().display().to_string();
    let verb = [
        "--namespace",
        ns,
        "run",
        "--rm",
        "--runtime",
        runtime,
        "--rootfs",
        &rootfs,
        &id,
    ];
    attached_and_signal(d, &verb, sig)
}

/// `tether exec` (attached) of the same trapping shell in running container `id`.
fn exec_and_signal(d: &Daemon, ns: &str, id: &str, sig: i32) -> i32 {
    let exec_id = unique_id("e");
    let verb = ["--namespace", ns, "exec", "--exec-id", &exec_id, id];
    attached_and_signal(d, &verb, sig)
}

/// `tether VERB -- sh -c SCRIPT`, where the shell traps every forwarded signal; sends the CLI
/// `sig` once the trap is set and returns the CLI's exit code.
fn attached_and_signal(d: &Daemon, verb: &[&str], sig: i32) -> i32 {
    let traps: String = TRAPS
        .iter()
        .map(|(_, name, code)| format!("trap 'exit {code}' {name}; "))
        .collect();
    // `wait` returns as soon as a trapped signal arrives; the sleep goes with the container.
    let script = format!("{traps}echo ready; sleep 300 & wait");
    let mut child = d
        .tether()
        .args(verb)
        .args(["--", "sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start tether run");
    let stdout = child.stdout.take().expect("piped");
    let pid = child.id() as i32;
    let mut guard = Reaped(Some(child));
    let (tx, rx) = channel();
    let reader = thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let first = rx.recv_timeout(T);
    assert_eq!(
        first.as_deref(),
        Ok("ready"),
        "the container never said ready\n{}",
        d.log()
    );
    assert!(procs::signal(pid, sig), "signal tether run ({pid})");
    let mut child = guard.0.take().expect("not reaped yet");
    let (status, timed_out) = cmd::wait_deadline(&mut child, Instant::now() + T, "tether");
    let _ = reader.join();
    assert!(
        !timed_out,
        "tether {verb:?} did not exit after signal {sig}\n{}",
        d.log()
    );
    cmd::exit_code(status)
}

fn forwards_every_signal(runtime: &str) {
    let d = Daemon::start();
    let ns = unique_id("ns");
    thread::scope(|s| {
        let runs: Vec<_> = TRAPS
            .iter()
            .map(|&(sig, name, code)| {
                let (d, ns) = (&d, &ns);
                s.spawn(move || (name, code, run_and_signal(d, runtime, ns, sig)))
            })
            .collect();
        for r in runs {
            let (name, want, got) = r.join().expect("run thread");
            assert_eq!(
                got, want,
                "SIG{name}: the container's trap decides the exit code"
            );
        }
    });
    // --rm removed every one of them.
    let ps = d.ok(&["--namespace", &ns, "ps", "--json"]);
    assert_eq!(ps.stdout.trim(), "[]", "{ps}");
    d.finish();
}

#[test]
fn run_forwards_signals_to_the_container_with_our_shim() {
    forwards_every_signal(TETHER_RUNTIME);
}

#[test]
fn run_forwards_signals_to_the_container_with_containerds_go_shim() {
    forwards_every_signal(RUNC_RUNTIME);
}

/// An attached `tether exec` forwards every signal to its process, not to the container's init:
/// each exec's trap decides its exit code, and the container runs on.
fn exec_forwards_signals(runtime: &str) {
    let d = Daemon::start();
    let ns = unique_id("ns");
    let id = unique_id("c");
    d.run_detached(&ns, runtime, &id, &["sleep", "300"]);
    thread::scope(|s| {
        let execs: Vec<_> = TRAPS
            .iter()
            .map(|&(sig, name, code)| {
                let (d, ns, id) = (&d, &ns, &id);
                s.spawn(move || (name, code, exec_and_signal(d, ns, id, sig)))
            })
            .collect();
        for e in execs {
            let (name, want, got) = e.join().expect("exec thread");
            assert_eq!(
                got, want,
                "SIG{name}: the exec's trap decides the exit code"
            );
        }
    });
    let state = d.ok(&["--namespace", &ns, "state", &id, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&state.stdout).expect("state json");
    assert_eq!(v["status"], "RUNNING", "the init got none of them: {v}");
    d.ok(&["--namespace", &ns, "delete", "-f", &id]);
    d.finish();
}

fn resizes_follow_the_terminal(runtime: &str) {
    resizes_follow(runtime, false);
}

/// A terminal's resizes reach the container's process: through `tether run -t`, or (`exec`)
/// through `tether exec -t` into a running container.
fn resizes_follow(runtime: &str, exec: bool) {
    let d = Daemon::start();
    let ns = unique_id("ns");
    let id = unique_id("tty");
    // Every SIGWINCH the container's shell gets, it prints its terminal's size.
    let script = "trap 'stty size' WINCH; trap 'exit 7' TERM; echo ready; \
                  while :; do sleep 300 & wait; done";
    let mut command = d.tether();
    if exec {
        d.run_detached(&ns, runtime, &id, &["sleep", "300"]);
        command.args([
            "--namespace",
            &ns,
            "exec",
            "-t",
            "--exec-id",
            "tty",
            &id,
            "--",
        ]);
    } else {
        let run = d.run_cmd().ns(&ns).flag("--rm").flag("-t").runtime(runtime);
        command.args(run.args(&id, &[]));
    }
    command.args(["sh", "-c", script]);
    let (child, terminal) = Terminal::spawn(command, 24, 80);
    let pid = child.id() as i32;
    let mut guard = Reaped(Some(child));
    assert!(
        terminal.saw("ready", T),
        "no ready: {:?}\n{}",
        terminal.output(),
        d.log()
    );
    for (rows, cols) in [(50, 132), (30, 100)] {
        terminal.resize(rows, cols);
        let want = format!("{rows} {cols}");
        assert!(
            terminal.saw(&want, T),
            "the container never saw {want}: {:?}\n{}",
            terminal.output(),
            d.log()
        );
    }
    assert!(procs::signal(pid, libc::SIGTERM));
    let mut child = guard.0.take().expect("not reaped yet");
    let (status, timed_out) = cmd::wait_deadline(&mut child, Instant::now() + T, "tether run");
    assert!(!timed_out, "tether run -t did not exit\n{}", d.log());
    assert_eq!(cmd::exit_code(status), 7, "{:?}", terminal.output());
    terminal.close();
    if exec {
        d.ok(&["--namespace", &ns, "delete", "-f", &id]);
    }
    d.finish();
}

#[test]
fn every_resize_reaches_the_container_with_our_shim() {
    resizes_follow_the_terminal(TETHER_RUNTIME);
}

#[test]
fn every_resize_reaches_the_container_with_containerds_go_shim() {
    resizes_follow_the_terminal(RUNC_RUNTIME);
}

#[test]
fn every_resize_reaches_an_exec_with_our_shim() {
    resizes_follow(TETHER_RUNTIME, true);
}

#[test]
fn every_resize_reaches_an_exec_with_containerds_go_shim() {
    resizes_follow(RUNC_RUNTIME, true);
}

#[test]
fn exec_forwards_signals_to_its_process_with_our_shim() {
    exec_forwards_signals(TETHER_RUNTIME);
}

#[test]
fn exec_forwards_signals_to_its_process_with_containerds_go_shim() {
    exec_forwards_signals(RUNC_RUNTIME);
}
