//! Run one child process to completion with a deadline, capturing its output.
//!
//! The child is always reaped here. On timeout it is killed by its pid (SIGKILL; it is still our
//! unreaped child then, so the pid cannot have been reused) and the output read so far is
//! returned in the error, so a hang shows what the program had said.

use std::fmt;
use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// What a finished command said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CmdOutput {
    /// The exit code; 128 + N when the process died of signal N (as a shell reports it).
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl CmdOutput {
    pub fn success(&self) -> bool {
        self.code == 0
    }
}

impl fmt::Display for CmdOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "exit code {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code,
            self.stdout.trim_end(),
            self.stderr.trim_end()
        )
    }
}

/// The command did not finish in time; it was killed and reaped.
#[derive(Debug, Clone)]
pub struct TimedOut {
    pub command: String,
    pub timeout: Duration,
    /// What it had written before it was killed (`code` is the kill's status).
    pub partial: CmdOutput,
}

impl fmt::Display for TimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` did not finish within {:?}; killed it. Output so far:\n{}",
            self.command, self.timeout, self.partial
        )
    }
}

/// A printable form of a command line, for messages.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// The shell-style exit code of a status: the code, or 128 + signal.
pub fn exit_code(status: ExitStatus) -> i32 {
    match (status.code(), status.signal()) {
        (Some(c), _) => c,
        (None, Some(sig)) => 128 + sig,
        (None, None) => -1,
    }
}

/// Runs `cmd` with `stdin` (or /dev/null) and returns its output, or [`TimedOut`].
///
/// Panics only if the program cannot be started at all.
pub fn try_run(
    cmd: &mut Command,
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> Result<CmdOutput, TimedOut> {
    let what = describe(cmd);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start `{what}`: {e}"));
    let writer = stdin.map(|bytes| {
        let mut pipe = child.stdin.take().expect("stdin was piped");
        let bytes = bytes.to_vec();
        // A child that never reads must not block us: write from a thread; EPIPE is fine.
        thread::spawn(move || {
            let _ = pipe.write_all(&bytes);
        })
    });
    let out = Collector::start(child.stdout.take().expect("stdout was piped"));
    let err = Collector::start(child.stderr.take().expect("stderr was piped"));

    let deadline = Instant::now() + timeout;
    let (status, timed_out) = wait_deadline(&mut child, deadline, &what);
    // The pipes close when the child exits, unless it passed them on to a process that lives
    // on: give the readers a short grace period, then take what they have.
    let grace = Instant::now() + Duration::from_millis(500);
    let output = CmdOutput {
        code: exit_code(status),
        stdout: out.finish(grace),
        stderr: err.finish(grace),
    };
    if let Some(w) = writer {
        if w.is_finished() {
            let _ = w.join();
        }
    }
    if timed_out {
        Err(TimedOut {
            command: what,
            timeout,
            partial: output,
        })
    } else {
        Ok(output)
    }
}

/// Like [`try_run`], but a timeout panics with the output so far.
pub fn run(cmd: &mut Command, stdin: Option<&[u8]>, timeout: Duration) -> CmdOutput {
    try_run(cmd, stdin, timeout).unwrap_or_else(|t| panic!("{t}"))
}

/// Waits for `child` until `deadline`; past it kills it by pid and reaps it.
/// Returns the status and whether it had to be killed.
pub fn wait_deadline(child: &mut Child, deadline: Instant, what: &str) -> (ExitStatus, bool) {
    let mut nap = Duration::from_micros(200);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return (status, false),
            Ok(None) => {}
            Err(e) => panic!("waiting for `{what}`: {e}"),
        }
        let now = Instant::now();
        if now >= deadline {
            // Not reaped yet, so the pid is still this child's.
            let _ = child.kill();
            let status = child
                .wait()
                .unwrap_or_else(|e| panic!("reaping killed `{what}`: {e}"));
            return (status, true);
        }
        thread::sleep(nap.min(deadline - now));
        nap = (nap * 2).min(Duration::from_millis(5));
    }
}

/// Reads a pipe to the end on a thread, keeping what it read visible to the caller.
struct Collector {
    buf: Arc<Mutex<Vec<u8>>>,
    thread: JoinHandle<()>,
}

impl Collector {
    fn start(mut pipe: impl Read + Send + 'static) -> Collector {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&buf);
        let thread = thread::spawn(move || {
            let mut chunk = [0u8; 8192];
            loop {
                match pipe.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => sink
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .extend_from_slice(&chunk[..n]),
                }
            }
        });
        Collector { buf, thread }
    }

    /// What was read, once the pipe closed or `deadline` passed.
    fn finish(self, deadline: Instant) -> String {
        while !self.thread.is_finished() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(1));
        }
        if self.thread.is_finished() {
            let _ = self.thread.join();
        }
        let bytes = self.buf.lock().unwrap_or_else(|p| p.into_inner());
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// The first executable called `name` on `PATH`, as a shell would find it.
pub fn which(name: &str) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Writes `contents` to `path` as an executable (0755) without this process ever holding the
/// file open for writing: a `cat` child writes it. The test process forks children from many
/// threads, and a child between its fork and its exec holds copies of every fd; a file some
/// process holds open for writing cannot be executed (ETXTBSY), so a script or binary written
/// here directly could fail to start, at random, on a loaded machine.
pub fn write_executable(path: &std::path::Path, contents: impl AsRef<[u8]>) {
    use std::io::Write;
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("cat > \"$1\" && chmod 755 \"$1\"")
        .arg("sh")
        .arg(path)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn sh to write {}: {e}", path.display()));
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(contents.as_ref())
            .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }
    let status = child
        .wait()
        .unwrap_or_else(|e| panic!("wait for the writer of {}: {e}", path.display()));
    assert!(
        status.success(),
        "writing {} failed: {status}",
        path.display()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_both_streams_and_code() {
        let out = run(
            Command::new("/bin/sh").args(["-c", "echo out; echo err >&2; exit 3"]),
            None,
            Duration::from_secs(10),
        );
        assert_eq!(out.code, 3);
        assert_eq!(out.stdout, "out\n");
        assert_eq!(out.stderr, "err\n");
    }

    #[test]
    fn feeds_stdin() {
        let out = run(
            &mut Command::new("/bin/cat"),
            Some(b"abc"),
            Duration::from_secs(10),
        );
        assert_eq!(out.stdout, "abc");
    }

    #[test]
    fn timeout_kills_and_keeps_partial_output() {
        let t0 = Instant::now();
        let err = try_run(
            Command::new("/bin/sh").args(["-c", "echo started; exec sleep 30"]),
            None,
            Duration::from_millis(300),
        )
        .expect_err("sleep 30 must time out");
        assert!(t0.elapsed() < Duration::from_secs(5));
        assert_eq!(err.partial.code, 128 + libc::SIGKILL);
        assert_eq!(err.partial.stdout, "started\n");
    }
}
