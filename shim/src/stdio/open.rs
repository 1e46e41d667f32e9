//! Opening what a stdio URI names: the FIFO, `file://` or `binary://` logger behind each
//! stream, and the pipes the container gets instead.

use super::{Who, CHUNK};
use crate::error::{Result, ShimError};
use nix::fcntl::{fcntl, open, FcntlArg, OFlag};
use nix::sys::stat::Mode;
use nix::unistd::pipe2;
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

#[derive(Debug, PartialEq, Eq)]
pub(super) enum Target {
    Null,
    Fifo(String),
    File(String),
    Binary(String),
}

impl Target {
    pub(super) fn parse(s: &str) -> Result<Target> {
        if s.is_empty() {
            return Ok(Target::Null);
        }
        let Some((scheme, rest)) = s.split_once("://") else {
            return Ok(Target::Fifo(s.to_string()));
        };
        let path = rest.split('?').next().unwrap_or_default();
        if !path.starts_with('/') {
            return Err(ShimError::InvalidArgument(format!(
                "stdio URI {s:?}: the path must be absolute"
            )));
        }
        match scheme {
            "fifo" => Ok(Target::Fifo(path.to_string())),
            "file" => Ok(Target::File(path.to_string())),
            "binary" => Ok(Target::Binary(rest.to_string())),
            _ => Err(ShimError::InvalidArgument(format!(
                "stdio URI {s:?}: unsupported scheme {scheme:?} (fifo, file or binary)"
            ))),
        }
    }
}

pub(super) fn new_pipe() -> Result<(OwnedFd, OwnedFd)> {
    let (r, w) = pipe2(OFlag::O_CLOEXEC).map_err(ShimError::nix("pipe2 for stdio"))?;
    grow_pipe(&r);
    // Both ends stay blocking (the container's must: a process may not expect EAGAIN). Ours
    // are only ever spliced with SPLICE_F_NONBLOCK, which makes the pipe side of each splice
    // non-blocking; the other side is a FIFO opened O_NONBLOCK or a regular file.
    Ok((r, w))
}

/// Larger pipes mean fewer wake-ups per MiB; failure (pipe-max-size) only costs speed.
pub(super) fn grow_pipe(fd: &OwnedFd) {
    let _ = fcntl(fd, FcntlArg::F_SETPIPE_SZ(CHUNK as i32));
}

pub(super) fn open_fifo(path: &str, mode: OFlag) -> Result<OwnedFd> {
    open(
        Path::new(path),
        mode | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(ShimError::nix(format!("open stdio FIFO {path}")))
}

pub(super) fn dev_null() -> Result<OwnedFd> {
    open(
        "/dev/null",
        OFlag::O_WRONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(ShimError::nix("open /dev/null"))
}

/// splice(2) refuses files opened with O_APPEND, so append by seeking to the end. A regular
/// file only, opened without blocking: a FIFO with no reader would hold `open(2)` (and the
/// loop) until someone opened its other end.
pub(super) fn open_log_file(path: &str) -> Result<File> {
    crate::files::open_append(Path::new(path), "log file")
}

/// containerd's binary logging protocol: the logger gets the container's stdout and stderr as
/// fds 3 and 4 and closes fd 5 once it is ready; `CONTAINER_ID` and `CONTAINER_NAMESPACE` are in
/// its environment and the URI's query becomes its arguments. Nothing waits for it here: the
/// container's output waits in the pipes until the logger reads, and the readiness pipe (the
/// third fd returned) is watched on the loop. Its exit is reaped like any other child's.
pub(super) fn start_binary_logger(uri: &str, who: &Who) -> Result<(OwnedFd, OwnedFd, OwnedFd)> {
    let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
    let mut args = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        args.push(k.to_string());
        if !v.is_empty() {
            args.push(v.to_string());
        }
    }
    let (out_r, out_w) = pipe2(OFlag::O_CLOEXEC).map_err(ShimError::nix("pipe2"))?;
    let (err_r, err_w) = pipe2(OFlag::O_CLOEXEC).map_err(ShimError::nix("pipe2"))?;
    let (ready_r, ready_w) =
        pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).map_err(ShimError::nix("pipe2"))?;
    let fds = [out_r.as_raw_fd(), err_r.as_raw_fd(), ready_w.as_raw_fd()];
    let mut cmd = Command::new(path);
    crate::signals::unblocked(&mut cmd)
        .args(&args)
        .env("CONTAINER_ID", who.id)
        .env("CONTAINER_NAMESPACE", who.namespace);
    // SAFETY: only async-signal-safe calls (dup2) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            for (i, fd) in fds.iter().enumerate() {
                if libc::dup2(*fd, 3 + i as i32) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    cmd.spawn()
        .map_err(ShimError::io(format!("start binary logger {path}")))?;
    drop((out_r, err_r, ready_w));
    Ok((out_w, err_w, ready_r))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::test_support::*;

    #[test]
    fn a_log_file_that_is_a_fifo_with_no_reader_is_refused_at_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = fifo(dir.path(), "log");
        let q = p.display().to_string();
        let r = must_not_block(move || open_log_file(&q).map(|_| ()), open_peer(&p, false));
        let e = r.expect_err("a FIFO is not a log file");
        assert!(e.to_string().contains(&p.display().to_string()), "{e}");
    }
}
