//! Attach: `tether attach ID` streams a running container's output from the moment it
//! attaches until the container exits (and exits with its status), keeps streaming across a
//! daemon SIGKILL and restart, feeds a `run -d -i` container's stdin with `--stdin` (whose end
//! does not close the container's), attaches to a `-d -t` container's terminal, and detaching
//! leaves the container running. Errors are one line and change nothing.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};
use tether_tests::manager::{Daemon, RUNC_RUNTIME, TETHER_RUNTIME};
use tether_tests::pty::Terminal;
use tether_tests::{cmd, tether_binary, unique_id, wait_until};

const T: Duration = Duration::from_secs(30);

/// Prints `before`, then `tick N` every 0.2 s; SIGUSR1 makes it print `bye` and exit 7.
const TICKER: &str = "trap 'echo bye; exit 7' USR1; echo before; i=0; \
                      while true; do echo tick $i; i=$((i+1)); sleep 0.2; done";

/// A container of this test (by its daemon's socket: the daemon restarts meanwhile), deleted
/// (forced) when dropped.
struct Ctr {
    socket: PathBuf,
    ns: String,
    id: String,
}

impl Ctr {
    /// `tether run -d [FLAGS] ... -- sh -c SCRIPT`.
    fn run(d: &Daemon, runtime: &str, flags: &[&str], script: &str) -> Ctr {
        let (ns, id) = (unique_id("ns"), unique_id("att"));
        let mut run = d.run_cmd().ns(&ns).runtime(runtime).flag("-d");
        for f in flags {
            run = run.flag(f);
        }
        run.ok(&id, &["sh", "-c", script]);
        Ctr {
            socket: d.socket(),
            ns,
            id,
        }
    }

    fn tether(&self) -> Command {
        let mut c = Command::new(tether_binary());
        c.env("TETHER_SOCKET", &self.socket)
            .args(["--namespace", &self.ns]);
        c
    }

    /// `tether --namespace NS ARGS` for this container; fails the test unless it succeeds.
    fn ok(&self, args: &[&str]) -> cmd::CmdOutput {
        let out = cmd::run(self.tether().args(args), None, T);
        assert!(out.success(), "`tether {}` failed:\n{out}", args.join(" "));
        out
    }

    fn status(&self) -> String {
        let out = self.ok(&["state", &self.id, "--json"]);
        let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("state JSON");
        v["status"].as_str().unwrap_or_default().to_string()
    }

    fn logs(&self) -> String {
        self.ok(&["logs", &self.id]).stdout
    }

    fn kill(&self, sig: &str) {
        self.ok(&["kill", "-s", sig, &self.id]);
    }

    fn attach(&self, flags: &[&str], stdin: bool) -> Attached {
        let mut c = self.tether();
        c.arg("attach")
            .args(flags)
            .arg(&self.id)
            .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        Attached::spawn(c)
    }
}

impl Drop for Ctr {
    fn drop(&mut self) {
        let _ = cmd::run(self.tether().args(["delete", "-f", &self.id]), None, T);
    }
}

/// A running `tether attach`: its output lines as they come; killed by pid if not waited for.
struct Attached {
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Attached {
    fn spawn(mut c: Command) -> Attached {
        let mut child = c.spawn().expect("start tether attach");
        let stdin = child.stdin.take();
        let out = child.stdout.take().expect("stdout");
        let (tx, lines) = channel();
        thread::spawn(move || {
            for l in BufReader::new(out).lines() {
                let Ok(l) = l else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Attached {
            child: Some(child),
            stdin,
            lines,
            seen: Vec::new(),
        }
    }

    /// The next line that contains `want` (the lines before it are kept in `seen`).
    fn expect(&mut self, want: &str) -> String {
        let deadline = Instant::now() + T;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if l.contains(want) {
                        return l;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!("attach printed no {want:?}; it printed {:?}", self.seen)
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("attach ended before {want:?}; it printed {:?}", self.seen)
                }
            }
        }
    }

    fn write(&mut self, bytes: &[u8]) {
        let w = self.stdin.as_mut().expect("attached with a stdin pipe");
        w.write_all(bytes).expect("write to attach's stdin");
        w.flush().expect("flush");
    }

    fn close_stdin(&mut self) {
        self.stdin = None;
    }

    fn signal(&self, sig: i32) {
        let pid = self.child.as_ref().expect("running").id() as i32;
        // SAFETY: kill(2) on the pid of our own child, not yet reaped.
        assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
    }

    /// Waits for the CLI's exit: its code, every line it printed, and its stderr.
    fn wait(mut self) -> (i32, Vec<String>, String) {
        let mut child = self.child.take().expect("running");
        self.stdin = None;
        let (status, timed_out) = cmd::wait_deadline(&mut child, Instant::now() + T, "attach");
        assert!(!timed_out, "attach did not exit; printed {:?}", self.seen);
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(l);
        }
        (cmd::exit_code(status), std::mem::take(&mut self.seen), err)
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The tick numbers in `lines`, which must follow each other without a gap or repeat.
fn assert_consecutive_ticks(lines: &[String]) -> Vec<u64> {
    let ticks: Vec<u64> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("tick "))
        .map(|n| n.parse().expect("tick number"))
        .collect();
    for w in ticks.windows(2) {
        assert_eq!(w[1], w[0] + 1, "ticks lost or repeated: {lines:?}");
    }
    ticks
}

fn streams_from_now_and_returns_the_exit_code(runtime: &str) {
    let d = Daemon::start();
    let c = Ctr::run(&d, runtime, &[], TICKER);
    assert!(
        wait_until(T, || c.logs().contains("tick 1")),
        "{}",
        c.logs()
    );
    let mut a = c.attach(&[], false);
    a.expect("tick ");
    c.kill("USR1");
    let (code, lines, err) = a.wait();
    assert_eq!(code, 7, "attach exits with the container's status; {err}");
    assert!(
        !lines.iter().any(|l| l == "before"),
        "only output from the attach on: {lines:?}"
    );
    assert_eq!(lines.last().map(String::as_str), Some("bye"), "{lines:?}");
    assert_consecutive_ticks(&lines);
    drop(c);
    d.finish();
}

#[test]
fn streams_from_now_and_returns_the_exit_code_with_our_shim() {
    streams_from_now_and_returns_the_exit_code(TETHER_RUNTIME);
}

#[test]
fn streams_from_now_and_returns_the_exit_code_with_containerds_go_shim() {
    streams_from_now_and_returns_the_exit_code(RUNC_RUNTIME);
}

/// The daemon is SIGKILLed while attached: the output keeps coming (read from the container's
/// log files, which its logger writes), and after the restart the exit status comes back.
fn keeps_streaming_across_a_daemon_sigkill(runtime: &str) {
    let mut d = Daemon::start();
    let c = Ctr::run(&d, runtime, &[], TICKER);
    let mut a = c.attach(&[], false);
    let first: u64 = a.expect("tick ")["tick ".len()..].parse().expect("n");
    d.kill9();
    // Printed while no daemon runs.
    a.expect(&format!("tick {}", first + 3));
    d.restart();
    a.expect(&format!("tick {}", first + 5));
    c.kill("USR1");
    let (code, lines, err) = a.wait();
    assert_eq!(code, 7, "{err}");
    assert_eq!(lines.last().map(String::as_str), Some("bye"), "{lines:?}");
    assert_consecutive_ticks(&lines);
    drop(c);
    d.finish();
}

#[test]
fn keeps_streaming_across_a_daemon_sigkill_with_our_shim() {
    keeps_streaming_across_a_daemon_sigkill(TETHER_RUNTIME);
}

#[test]
fn keeps_streaming_across_a_daemon_sigkill_with_containerds_go_shim() {
    keeps_streaming_across_a_daemon_sigkill(RUNC_RUNTIME);
}

/// `run -d -i`: `attach --stdin` feeds a read loop and its answers come back; the end of our
/// stdin does not end the container's, which the next attach feeds again, also after a daemon
/// SIGKILL and restart.
fn stdin_feeds_the_container_and_stays_open(runtime: &str) {
    let mut d = Daemon::start();
    let c = Ctr::run(
        &d,
        runtime,
        &["-i"],
        "while read l; do echo \"got $l\"; done; echo stdin-ended; exit 5",
    );
    let mut a = c.attach(&["--stdin"], true);
    a.write(b"one\n");
    a.expect("got one");
    a.close_stdin();
    // Our stdin's end is not the container's: attach goes on streaming.
    let mut b = c.attach(&["--stdin"], true);
    b.write(b"two\n");
    b.expect("got two");
    a.expect("got two");
    drop(a);
    drop(b);
    d.kill9();
    d.restart();
    assert_eq!(c.status(), "RUNNING");
    let mut e = c.attach(&["--stdin"], true);
    e.write(b"three\n");
    e.expect("got three");
    drop(e);
    assert!(
        !c.logs().contains("stdin-ended"),
        "the container's stdin stayed open: {}",
        c.logs()
    );
    assert_eq!(c.status(), "RUNNING");
    drop(c);
    d.finish();
}

#[test]
fn stdin_feeds_the_container_and_stays_open_with_our_shim() {
    stdin_feeds_the_container_and_stays_open(TETHER_RUNTIME);
}

#[test]
fn stdin_feeds_the_container_and_stays_open_with_containerds_go_shim() {
    stdin_feeds_the_container_and_stays_open(RUNC_RUNTIME);
}

/// Ctrl-C (SIGINT) goes to the container by default; with --sig-proxy=false it detaches, and
/// the container runs on.
fn sigint_is_forwarded_or_detaches(runtime: &str) {
    let d = Daemon::start();
    let script = "trap 'echo int; exit 9' INT; echo ready; \
                  while true; do echo tick; sleep 0.2; done";
    let c = Ctr::run(&d, runtime, &[], script);
    let mut a = c.attach(&["--sig-proxy=false"], false);
    a.expect("tick");
    a.signal(libc::SIGINT);
    let (code, lines, _) = a.wait();
    assert_eq!(code, 128 + libc::SIGINT, "the CLI died of SIGINT");
    assert!(!lines.iter().any(|l| l == "int"), "{lines:?}");
    assert_eq!(c.status(), "RUNNING", "detaching leaves it running");

    let mut a = c.attach(&[], false);
    a.expect("tick");
    a.signal(libc::SIGINT);
    let (code, lines, err) = a.wait();
    assert_eq!(code, 9, "the container's trap chose the status; {err}");
    assert_eq!(lines.last().map(String::as_str), Some("int"), "{lines:?}");
    drop(c);
    d.finish();
}

#[test]
fn sigint_is_forwarded_or_detaches_with_our_shim() {
    sigint_is_forwarded_or_detaches(TETHER_RUNTIME);
}

#[test]
fn sigint_is_forwarded_or_detaches_with_containerds_go_shim() {
    sigint_is_forwarded_or_detaches(RUNC_RUNTIME);
}

/// `run -d -t -i`: attach reaches the container's terminal (its echo and its shell's answers);
/// Ctrl-P Ctrl-Q detaches and leaves the shell running; its output is in `tether logs` too.
fn terminal_attach_and_detach_keys(runtime: &str) {
    let d = Daemon::start();
    let c = Ctr::run(&d, runtime, &["-t", "-i"], "exec sh");
    let mut a = c.attach(&["--stdin"], true);
    a.write(b"echo answer-$((40+2))\n");
    a.expect("answer-42");
    a.write(&[0x10, 0x11]);
    let (code, _, err) = a.wait();
    assert_eq!(code, 0, "detached; {err}");
    assert_eq!(c.status(), "RUNNING");
    assert!(c.logs().contains("answer-42"), "{}", c.logs());
    // The terminal is still there for the next attach; `exit 4` ends the shell.
    let mut b = c.attach(&["--stdin"], true);
    b.write(b"exit 4\n");
    let (code, _, err) = b.wait();
    assert_eq!(code, 4, "{err}");
    drop(c);
    d.finish();
}

#[test]
fn terminal_attach_and_detach_keys_with_our_shim() {
    terminal_attach_and_detach_keys(TETHER_RUNTIME);
}

#[test]
fn terminal_attach_and_detach_keys_with_containerds_go_shim() {
    terminal_attach_and_detach_keys(RUNC_RUNTIME);
}

/// `run -d -t` (no stdin): the terminal's output goes to the logger (`binary://` with a
/// terminal) and attach streams it, ending with the container's status.
fn terminal_output_is_logged_and_attached(runtime: &str) {
    let d = Daemon::start();
    let c = Ctr::run(&d, runtime, &["-t"], TICKER);
    let mut a = c.attach(&[], false);
    a.expect("tick ");
    c.kill("USR1");
    let (code, lines, err) = a.wait();
    assert_eq!(code, 7, "{err}");
    assert!(lines.iter().any(|l| l.contains("bye")), "{lines:?}");
    let logs = c.logs();
    assert!(logs.contains("before") && logs.contains("bye"), "{logs}");
    drop(c);
    d.finish();
}

#[test]
fn terminal_output_is_logged_and_attached_with_our_shim() {
    terminal_output_is_logged_and_attached(TETHER_RUNTIME);
}

#[test]
fn terminal_output_is_logged_and_attached_with_containerds_go_shim() {
    terminal_output_is_logged_and_attached(RUNC_RUNTIME);
}

/// Attached from a terminal to a `-d -t` container: the container's terminal takes our size
/// at once, and every resize after (SIGWINCH to the CLI becomes a ResizePty).
fn resizes_reach_the_container(runtime: &str) {
    let d = Daemon::start();
    let script = "trap 'stty size' WINCH; echo ready; while :; do sleep 300 & wait; done";
    let c = Ctr::run(&d, runtime, &["-t"], script);
    assert!(wait_until(T, || c.logs().contains("ready")), "{}", c.logs());
    let mut command = c.tether();
    command.args(["attach", &c.id]);
    let (child, terminal) = Terminal::spawn(command, 24, 80);
    let attached = Attached {
        child: Some(child),
        stdin: None,
        lines: channel().1,
        seen: Vec::new(),
    };
    assert!(
        terminal.saw("24 80", T),
        "attach did not pass its size on: {:?}",
        terminal.output()
    );
    terminal.resize(50, 132);
    assert!(
        terminal.saw("50 132", T),
        "the resize did not reach it: {:?}",
        terminal.output()
    );
    // A terminal's attach does not forward SIGTERM: it ends the CLI, and the container runs on.
    attached.signal(libc::SIGTERM);
    let (code, _, _) = attached.wait();
    assert_eq!(code, 128 + libc::SIGTERM);
    assert_eq!(c.status(), "RUNNING");
    terminal.close();
    drop(c);
    d.finish();
}

#[test]
fn resizes_reach_the_container_with_our_shim() {
    resizes_reach_the_container(TETHER_RUNTIME);
}

#[test]
fn resizes_reach_the_container_with_containerds_go_shim() {
    resizes_reach_the_container(RUNC_RUNTIME);
}

/// Unknown id, a stopped container, `--stdin` without `-i`: one line on stderr, a non-zero
/// exit, and the container is as it was.
fn errors_are_one_line_and_change_nothing(runtime: &str) {
    let d = Daemon::start();
    let ns = unique_id("ns");
    let one_line_error = |out: &cmd::CmdOutput, want: &str| {
        assert!(!out.success(), "{out}");
        assert_eq!(out.stderr.lines().count(), 1, "{out}");
        assert!(out.stderr.contains(want), "{out}");
    };
    let out = d.run(&["--namespace", &ns, "attach", "nosuch"]);
    one_line_error(&out, "not found");

    let running = Ctr::run(&d, runtime, &[], "echo hi; sleep 300");
    let out = d.run(&["--namespace", &running.ns, "attach", "--stdin", &running.id]);
    one_line_error(&out, "-i");
    assert_eq!(running.status(), "RUNNING");

    let stopped = Ctr::run(&d, runtime, &[], "exit 3");
    let w = d.run(&["--namespace", &stopped.ns, "wait", &stopped.id]);
    assert_eq!(w.code, 3, "{w}");
    let out = d.run(&["--namespace", &stopped.ns, "attach", &stopped.id]);
    one_line_error(&out, "EXITED");
    assert_eq!(stopped.status(), "EXITED");
    drop(stopped);
    drop(running);
    d.finish();
}

#[test]
fn errors_are_one_line_and_change_nothing_with_our_shim() {
    errors_are_one_line_and_change_nothing(TETHER_RUNTIME);
}

#[test]
fn errors_are_one_line_and_change_nothing_with_containerds_go_shim() {
    errors_are_one_line_and_change_nothing(RUNC_RUNTIME);
}
