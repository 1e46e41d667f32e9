//! Live upgrade (docs/upgrade.md): the shim re-executes the binary now installed at its path,
//! in place, and hands the new image everything it holds through a record.
//!
//! Here: whether the new binary can take over (`--handover-check`). The record is
//! `record.rs`; the memfd and the `exec`s are `exec.rs`; the old image's commit is
//! `handover.rs`, the new image's start `resume.rs`; the `upgrade` action is `client.rs`. The
//! service's side is `task/upgrade.rs` (the request, the wait for quiet) and `task/handover.rs`
//! (what goes in the record).

pub mod client;
pub mod exec;
mod handover;
pub mod record;
pub mod resume;

use crate::error::{Result, ShimError};
use crate::pid::Pid;
use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

/// How long the new binary has to answer `--handover-check`.
pub const CHECK_DEADLINE: Duration = Duration::from_secs(5);
/// The flag a binary is probed with, and what it must print first.
pub const CHECK_FLAG: &str = "--handover-check";
const CHECK_OK: &str = "ok";

/// `--handover-check VERSION`: this binary can resume from a record of VERSION.
pub fn answer_check(version: &str) -> ExitCode {
    match version.parse::<u32>() {
        Ok(v) if v == record::RECORD_VERSION => {
            println!("{CHECK_OK} {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        _ => {
            println!(
                "record version {version:?} unknown (this binary reads {})",
                record::RECORD_VERSION
            );
            ExitCode::FAILURE
        }
    }
}

/// The new binary at `binary`, opened once (`O_PATH`): the check runs this file and the
/// handover executes it, so a binary installed at the path in between is never executed
/// unchecked.
pub fn open_binary(binary: &Path) -> Result<std::os::fd::OwnedFd> {
    nix::fcntl::open(
        binary,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| {
        ShimError::FailedPrecondition(format!(
            "the new binary {} cannot be opened: {e}",
            binary.display()
        ))
    })
}

/// Starts `exe` (the binary opened from `binary`) with `--handover-check RECORD_VERSION`; its
/// exit comes through the reaper. Its stdout and stderr share one pipe, so a refusal shows
/// whatever the binary said on either.
pub fn start_check(binary: &Path, exe: &std::os::fd::OwnedFd) -> Result<(Pid, File)> {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    // Non-blocking: a binary that leaves a child holding the pipe must not make the read in
    // `verdict` wait.
    let (out, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)
        .map_err(ShimError::nix("pipe for the handover check"))?;
    let w2 = w
        .try_clone()
        .map_err(ShimError::io("dup the handover check's pipe"))?;
    let fd = exe.as_raw_fd();
    let mut cmd = Command::new(format!("/proc/self/fd/{fd}"));
    cmd.arg0(binary);
    // SAFETY: only fcntl (async-signal-safe) between fork and exec. A script's interpreter
    // opens the file by that /proc path after exec: the fd must outlive the exec.
    unsafe {
        cmd.pre_exec(move || {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    crate::signals::unblocked(&mut cmd);
    cmd.arg(CHECK_FLAG)
        .arg(record::RECORD_VERSION.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::from(w))
        .stderr(Stdio::from(w2));
    let child = cmd.spawn().map_err(|e| {
        ShimError::FailedPrecondition(format!(
            "the new binary {} does not start: {e}",
            binary.display()
        ))
    })?;
    // Our copies of the write end go with the command: the pipe ends when the check's do.
    drop(cmd);
    // Not waited for here: the reaper takes its exit.
    let pid = Pid::new(child.id() as i64)
        .ok_or_else(|| ShimError::Runtime(format!("the check got pid {}", child.id())))?;
    Ok((pid, File::from(out)))
}

/// The check exited with `status`: the new binary's version, or why it cannot take over.
pub fn verdict(binary: &Path, status: u32, out: &mut File, timed_out: bool) -> Result<String> {
    let refuse = |why: String| {
        ShimError::FailedPrecondition(format!(
            "the new binary {} cannot take over: {why}",
            binary.display()
        ))
    };
    if timed_out {
        return Err(refuse(format!(
            "no answer to {CHECK_FLAG} within {CHECK_DEADLINE:?}"
        )));
    }
    // The check has exited: what it printed is all in the pipe (a bounded read, never a wait).
    let mut text = String::new();
    let _ = out.take(4096).read_to_string(&mut text);
    let text = text.trim();
    // The answer is its own line; anything else the binary logged may stand around it.
    let version = text
        .lines()
        .find_map(|l| l.strip_prefix(CHECK_OK)?.strip_prefix(' '))
        .map(str::trim)
        .filter(|v| !v.is_empty() && status == 0);
    match version {
        Some(v) => Ok(v.to_string()),
        None => Err(refuse(format!(
            "{CHECK_FLAG} exited with {status}, saying {text:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A check's output as a pipe whose writer has gone (the check exited).
    fn said(text: &str) -> File {
        let (r, w) = nix::unistd::pipe().expect("pipe");
        File::from(w).write_all(text.as_bytes()).expect("write");
        File::from(r)
    }

    #[test]
    fn the_check_must_exit_0_and_say_ok() {
        let bin = Path::new("/new/shim");
        let ok = verdict(bin, 0, &mut said("ok 0.2.0\n"), false).expect("ok");
        assert_eq!(ok, "0.2.0");
        // A log line on stderr (the same pipe) around the answer changes nothing.
        let logged = "[WARN] something\nok 0.2.0\n";
        assert_eq!(
            verdict(bin, 0, &mut said(logged), false).expect("ok"),
            "0.2.0"
        );
        for (status, text, timed_out) in [
            (1, "record version \"1\" unknown", false),
            (0, "hello", false),
            (0, "ok", false),
            (0, "okay 0.2.0", false),
            (2, "ok 0.2.0", false),
            (137, "", true),
        ] {
            let e = verdict(bin, status, &mut said(text), timed_out)
                .expect_err(&format!("{status} {text:?} is refused"));
            assert!(e.to_string().contains("/new/shim cannot take over"), "{e}");
            if !timed_out {
                let said = format!("{text:?}");
                assert!(e.to_string().contains(&said), "says what it said: {e}");
            }
        }
    }

    #[test]
    fn this_binary_reads_its_own_record_version_only() {
        assert_eq!(
            answer_check(&record::RECORD_VERSION.to_string()),
            ExitCode::SUCCESS
        );
        assert_eq!(answer_check("999"), ExitCode::FAILURE);
        // An older record lacks what this one hands over (the event queue, deferred requests).
        assert_eq!(
            answer_check(&(record::RECORD_VERSION - 1).to_string()),
            ExitCode::FAILURE
        );
        assert_eq!(answer_check("x"), ExitCode::FAILURE);
    }
}
