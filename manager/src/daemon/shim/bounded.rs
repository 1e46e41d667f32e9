//! Waiting for a child and collecting its output, for a bounded time. Past the deadline the
//! child's whole process group is SIGKILLed (what it started may hold the output pipes, or be the
//! part that hangs) and the child reaped. Used for shims' `delete` action, which runs the OCI
//! runtime and may hang with it.

use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

/// What a bounded wait found.
#[derive(Debug)]
pub struct Finished {
    /// `None`: the deadline passed first and the process group was killed.
    pub status: Option<ExitStatus>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// Waits up to `limit` for `child` to exit and for its piped stdout and stderr to close,
/// collecting both. `child` must lead its own process group (`Command::process_group(0)`) and
/// must not be reaped by anyone else meanwhile (see `reaper::spawn`).
pub fn wait_with_output(mut child: Child, limit: Duration) -> std::io::Result<Finished> {
    let deadline = Instant::now() + limit;
    let pid = child.id();
    let pidfd = crate::daemon::monitor::pidfd_open(pid)?;
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let mut exited = false;
    loop {
        if exited && stdout.is_none() && stderr.is_none() {
            let status = child.wait()?;
            return Ok(Finished {
                status: Some(status),
                stdout: out,
                stderr: err,
            });
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let mut fds: Vec<libc::pollfd> = Vec::with_capacity(3);
        let mut push = |fd: Option<BorrowedFd<'_>>| {
            fds.push(libc::pollfd {
                // A negative fd is ignored by poll(2): a closed pipe or a seen exit.
                fd: fd.map_or(-1, |f| f.as_raw_fd()),
                events: libc::POLLIN,
                revents: 0,
            })
        };
        push(stdout.as_ref().map(AsFd::as_fd));
        push(stderr.as_ref().map(AsFd::as_fd));
        push((!exited).then(|| pidfd.as_fd()));
        let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
        // SAFETY: `fds` is a valid array of pollfd for the duration of the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            kill_group(&mut child);
            return Err(e);
        }
        let ready = |i: usize| fds[i].revents != 0;
        if ready(0) {
            read_some(&mut stdout, &mut out);
        }
        if ready(1) {
            read_some(&mut stderr, &mut err);
        }
        if ready(2) {
            exited = true;
        }
    }
    kill_group(&mut child);
    Ok(Finished {
        status: None,
        stdout: out,
        stderr: err,
    })
}

/// One read from a pipe poll said is ready (it does not block); EOF or an error closes it.
fn read_some<R: Read>(pipe: &mut Option<R>, into: &mut Vec<u8>) {
    let Some(p) = pipe.as_mut() else { return };
    let mut buf = [0u8; 8192];
    match p.read(&mut buf) {
        Ok(0) | Err(_) => *pipe = None,
        Ok(n) => into.extend_from_slice(&buf[..n]),
    }
}

/// SIGKILLs the child's process group and reaps the child. Its pid (and so the group's id)
/// cannot have been reused: the child is not reaped before this.
fn kill_group(child: &mut Child) {
    let pid = child.id() as libc::pid_t;
    // SAFETY: kill(2) with a negative pid signals that process group only.
    unsafe { libc::kill(-pid, libc::SIGKILL) };
    let _ = child.wait();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};

    fn sh(script: &str) -> Child {
        Command::new("/bin/sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("spawn sh")
    }

    fn alive(pid: i32) -> bool {
        // SAFETY: signal 0 only checks that the process exists.
        unsafe { libc::kill(pid, 0) == 0 }
    }

    #[test]
    fn collects_the_output_and_status_of_a_child_that_finishes() {
        let f = wait_with_output(
            sh("echo out; echo err >&2; exit 3"),
            Duration::from_secs(60),
        )
        .expect("wait");
        assert_eq!(f.status.and_then(|s| s.code()), Some(3));
        assert_eq!(f.stdout, b"out\n");
        assert_eq!(f.stderr, b"err\n");
    }

    /// A child that answers, then leaves a process behind holding its stdout (as a hanging
    /// runtime would): past the deadline the whole group is killed, and what it wrote is kept.
    #[test]
    fn a_hanging_group_is_killed_at_the_deadline() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pidfile = dir.path().join("sleeper");
        let script = format!(
            "echo answer; sleep 1000 & echo $! > {}; wait",
            pidfile.display()
        );
        let f = wait_with_output(sh(&script), Duration::from_millis(500)).expect("wait");
        assert!(f.status.is_none(), "reported as timed out: {f:?}");
        assert_eq!(f.stdout, b"answer\n");
        let sleeper: i32 = std::fs::read_to_string(&pidfile)
            .expect("pidfile")
            .trim()
            .parse()
            .expect("pid");
        // Killed with its group; it was the test's grandchild, reparented away and reaped by
        // init (or a subreaper), so it may linger as a zombie briefly: wait for it to go.
        let gone = (0..200).any(|_| {
            let zombie = std::fs::read_to_string(format!("/proc/{sleeper}/stat"))
                .map(|s| {
                    s.rsplit(')')
                        .next()
                        .is_some_and(|r| r.trim_start().starts_with('Z'))
                })
                .unwrap_or(true);
            if !alive(sleeper) || zombie {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
            false
        });
        assert!(gone, "the sleeper {sleeper} survived");
    }
}
