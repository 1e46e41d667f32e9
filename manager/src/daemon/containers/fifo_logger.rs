//! A `-i` container's stdio: FIFOs in its directory (`stdin`, `stdout`, `stderr`), and our
//! logger (`log_driver`) started by the daemon on the output FIFOs' read ends, holding the stdin
//! FIFO open.
//!
//! Why not `binary://` as for other detached containers: containerd's Go shim gives a process
//! whose output goes to a `binary://` logger no stdin at all (its `binaryIO.Stdin()` is nil; with
//! a terminal it does copy stdin). With FIFOs both shims copy stdin, and they keep a reader on
//! each output FIFO themselves, so output waits in the FIFO if our logger falls behind.
//!
//! The logger is our child only until a daemon restart: it runs in its own session, so it lives
//! with the container, not with the daemon; it ends when the shim closes the output FIFOs (the
//! process exited), and is killed if the container's creation fails.

use crate::error::{Error, Result};
use crate::logger::Extras;
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use tether_protocol::manager_api::manager as api;

/// Creates the FIFOs and starts the logger; the stdio for the shim and the logger's pid.
pub fn start(
    exe: &Path,
    dir: &Path,
    terminal: bool,
    max_size: u64,
    max_files: u32,
) -> Result<(api::Stdio, u32)> {
    // The logger's arguments are built from its URI's query, as a shim would split it.
    if !crate::logger::uri_safe(exe) || !crate::logger::uri_safe(dir) {
        return Err(Error::InvalidArgument(format!(
            "cannot keep a stdin open for {}: the paths of {} and the container's directory \
             must be plain (letters, digits, '/', '.', '_', '-')",
            dir.display(),
            exe.display()
        )));
    }
    let stdin = dir.join(crate::names::STDIN_FIFO);
    let stdout = dir.join("stdout");
    let stderr = dir.join("stderr");
    let out = open_read_end(&stdout)?;
    // A terminal has one output; the logger's stderr input then ends at once.
    let err = if terminal {
        None
    } else {
        Some(open_read_end(&stderr)?)
    };
    let uri = crate::logger::uri(
        exe,
        dir,
        max_size,
        max_files,
        Extras {
            stdin: Some(&stdin),
            flush: terminal,
        },
    );
    let query = uri.split_once('?').map(|(_, q)| q).unwrap_or_default();
    let args: Vec<&str> = query
        .split('&')
        .flat_map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            [k, v]
        })
        .collect();
    let fds = [
        Some(out.as_raw_fd()),
        err.as_ref().map(|e: &OwnedFd| e.as_raw_fd()),
    ];
    // Fd 5 is the logger's readiness pipe, which it closes at once; a stand-in, so the fd
    // number is not free for the log file it opens next.
    let ready = File::open("/dev/null").map_err(Error::io("open /dev/null"))?;
    let ready_fd = ready.as_raw_fd();
    let mut cmd = Command::new(exe);
    cmd.args(&args).stdin(Stdio::null()).stdout(Stdio::null());
    // SAFETY: only async-signal-safe calls (setsid, fcntl, dup2, close) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            libc::setsid();
            // Out of the way of 3, 4 and 5 first, so no dup2 overwrites another's source.
            let null = libc::fcntl(ready_fd, libc::F_DUPFD, 10);
            if null < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let mut high = [-1; 2];
            for (i, fd) in fds.iter().enumerate() {
                if let Some(fd) = fd {
                    high[i] = libc::fcntl(*fd, libc::F_DUPFD, 10);
                    if high[i] < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
            }
            for (i, fd) in high.iter().enumerate() {
                let target = 3 + i as i32;
                // Without stderr (a terminal): /dev/null, an input that ends at once, so the
                // number is not free for the log file either.
                let fd = if *fd < 0 { &null } else { fd };
                if libc::dup2(*fd, target) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if libc::dup2(null, 5) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Nothing else of the daemon's goes with the logger (it outlives the daemon).
            libc::syscall(libc::SYS_close_range, 6u32, u32::MAX, 0u32);
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .map_err(Error::io(format!("start the logger of {}", dir.display())))?;
    let pid = child.id();
    drop(ready);
    // Reaped by the daemon's orphan reaper (or whoever adopts it after a restart).
    drop(child);
    let s = |p: &Path| p.display().to_string();
    let stdio = api::Stdio {
        stdin: s(&stdin),
        stdout: s(&stdout),
        stderr: if terminal { String::new() } else { s(&stderr) },
        terminal,
        ..Default::default()
    };
    Ok((stdio, pid))
}

/// Makes an output FIFO and opens its read end without waiting for a writer. The logger reads
/// it blocking, after poll(2): that says nothing until a writer came (and HUP once all left).
fn open_read_end(path: &Path) -> Result<OwnedFd> {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600))
        .map_err(|e| Error::io(format!("mkfifo {}", path.display()))(e.into()))?;
    let f: File = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(Error::io(format!("open {}", path.display())))?;
    let fd = OwnedFd::from(f);
    let flags = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_GETFL)
        .map_err(|e| Error::io(format!("fcntl {}", path.display()))(e.into()))?;
    let flags = nix::fcntl::OFlag::from_bits_truncate(flags) & !nix::fcntl::OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_SETFL(flags))
        .map_err(|e| Error::io(format!("fcntl {}", path.display()))(e.into()))?;
    Ok(fd)
}
