//! Issue 12, signals: an attached `tether run` forwards SIGINT, SIGTERM, SIGHUP, SIGQUIT,
//! SIGUSR1 and SIGUSR2 to the container's init (which decides what they mean), and returns the
//! exit status the container chose.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::mpsc::channel;
use std::thread;
use std::time::{Duration, Instant};
use tether_tests::manager::{Daemon, RUNC_RUNTIME, TETHER_RUNTIME};
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
    let traps: String = TRAPS
        .iter()
        .map(|(_, name, code)| format!("trap 'exit {code}' {name}; "))
        .collect();
    // `wait` returns as soon as a trapped signal arrives; the sleep goes with the container.
    let script = format!("{traps}echo ready; sleep 300 & wait");
    let id = unique_id("sig");
    let rootfs = busybox_rootfs().display().to_string();
    let mut child = d
        .tether()
        .args([
            "--namespace",
            ns,
            "run",
            "--rm",
            "--runtime",
            runtime,
            "--rootfs",
        ])
        .args([rootfs.as_str(), &id, "--", "sh", "-c", &script])
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
    let (status, timed_out) = cmd::wait_deadline(&mut child, Instant::now() + T, "tether run");
    let _ = reader.join();
    assert!(
        !timed_out,
        "tether run did not exit after signal {sig}\n{}",
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
}

#[test]
fn run_forwards_signals_to_the_container_with_our_shim() {
    forwards_every_signal(TETHER_RUNTIME);
}

#[test]
fn run_forwards_signals_to_the_container_with_containerds_go_shim() {
    forwards_every_signal(RUNC_RUNTIME);
}
