//! Attaching the CLI to a container's stdio, as containerd's `cio` does: the CLI makes FIFOs in
//! a private directory, the daemon passes their paths to the shim, and the CLI copies between
//! them and its own stdin/stdout/stderr. With `-t` the shim holds the pty master and the FIFOs
//! carry the terminal's bytes; the CLI puts its own terminal in raw mode meanwhile.

use super::client::{Client, CALL_TIMEOUT};
use crate::error::{Error, Result};
use nix::sys::termios::{self, SetArg, Termios};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::thread;
use std::time::{Duration, Instant};
use tether_protocol::manager_api::manager as api;

/// The FIFOs of one attached process, removed on drop.
pub struct Fifos {
    dir: PathBuf,
    pub stdin: PathBuf,
    pub stdout: PathBuf,
    pub stderr: Option<PathBuf>,
    pub terminal: bool,
}

impl Fifos {
    pub fn new(namespace: &str, id: &str, terminal: bool) -> Result<Fifos> {
        let base = std::env::temp_dir().join(format!("tether-fifo-{namespace}-{id}-XXXXXX"));
        let dir = nix::unistd::mkdtemp(&base).map_err(|e| {
            Error::io(format!(
                "create a FIFO directory in {}",
                std::env::temp_dir().display()
            ))(e.into())
        })?;
        let mk = |name: &str| -> Result<PathBuf> {
            let p = dir.join(name);
            nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600))
                .map_err(|e| Error::io(format!("mkfifo {}", p.display()))(e.into()))?;
            Ok(p)
        };
        let fifos = Fifos {
            stdin: mk("stdin")?,
            stdout: mk("stdout")?,
            stderr: if terminal { None } else { Some(mk("stderr")?) },
            terminal,
            dir,
        };
        Ok(fifos)
    }

    pub fn stdio(&self) -> api::Stdio {
        let s = |p: &Path| p.display().to_string();
        api::Stdio {
            stdin: s(&self.stdin),
            stdout: s(&self.stdout),
            stderr: self.stderr.as_deref().map(s).unwrap_or_default(),
            terminal: self.terminal,
            ..Default::default()
        }
    }
}

impl Drop for Fifos {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The copy threads of one attached process.
pub struct Copiers {
    done: Receiver<()>,
    outputs: usize,
    started: Option<Sender<()>>,
    /// Holds a terminal's stdin FIFO open after our stdin ended (see `spawn`).
    _kept_stdin: Receiver<File>,
}

impl Copiers {
    /// Starts copying. `close_stdin` is called once our stdin is at EOF and the process has
    /// started ([`Copiers::started`]): it tells the shim to close the process's stdin. Never
    /// with a terminal (see below).
    pub fn spawn(fifos: &Fifos, close_stdin: impl FnOnce() + Send + 'static) -> Copiers {
        let (done_tx, done) = channel();
        let mut outputs = 0;
        let mut out = |path: PathBuf, to_stderr: bool| {
            let tx = done_tx.clone();
            outputs += 1;
            // Opened now, before the process is created: a shim that writes and closes its
            // end before a reader opened would leave the bytes in a FIFO nobody holds, and the
            // kernel frees them with the last descriptor (a short exec's output was lost so
            // under load). Non-blocking, so the open does not wait for the shim.
            let fifo = open_output(&path);
            thread::spawn(move || {
                if let Ok(f) = fifo {
                    copy_output(f, to_stderr);
                }
                let _ = tx.send(());
            });
        };
        out(fifos.stdout.clone(), false);
        if let Some(p) = &fifos.stderr {
            out(p.clone(), true);
        }
        let (started_tx, started_rx) = channel::<()>();
        let stdin_path = fifos.stdin.clone();
        let terminal = fifos.terminal;
        let (keep_tx, kept_stdin) = channel::<File>();
        thread::spawn(move || {
            let Ok(mut f) = OpenOptions::new().write(true).open(&stdin_path) else {
                return;
            };
            {
                let mut buf = vec![0u8; 64 * 1024];
                let mut input = std::io::stdin().lock();
                loop {
                    match input.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => {
                            if f.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(_) => break,
                    }
                }
            }
            // A terminal's end of input is a byte (^D, passed through in raw mode), not the
            // end of our stdin: with `-t` and a stdin that ends (a pipe, /dev/null), closing
            // the container's stdin would tear its terminal down under it (containerd's Go
            // shim shuts the console when its stdin FIFO ends), losing what it prints after.
            // As with `docker run -t`, the terminal stays open until the process exits: the
            // FIFO's write end is kept until the copiers are dropped.
            if terminal {
                let _ = keep_tx.send(f);
            } else if started_rx.recv().is_ok() {
                close_stdin();
            }
        });
        Copiers {
            done,
            outputs,
            started: Some(started_tx),
            _kept_stdin: kept_stdin,
        }
    }

    /// Tells the stdin copier the process runs (so closing its stdin means something).
    pub fn started(&mut self) {
        if let Some(tx) = self.started.take() {
            let _ = tx.send(());
        }
    }

    /// Waits until the outputs are copied to the end (the shim closes them after the process
    /// exits), or `limit` passes: a safety net against a shim that never closes them.
    pub fn finish(self, limit: Duration) {
        let deadline = Instant::now() + limit;
        for _ in 0..self.outputs {
            let left = deadline.saturating_duration_since(Instant::now());
            if self.done.recv_timeout(left).is_err() {
                break;
            }
        }
    }
}

/// Opens an output FIFO for reading without waiting for a writer.
fn open_output(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
}

/// Copies an output FIFO to our stdout or stderr until its writers are gone. The FIFO is
/// non-blocking and may have had no writer yet: `poll` waits for data or for the hang-up that
/// follows the last writer's close (Linux reports no hang-up before a first writer came).
fn copy_output(mut f: File, to_stderr: bool) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let mut fds = [PollFd::new(f.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return,
        }
        match f.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                let r = if to_stderr {
                    let mut e = std::io::stderr().lock();
                    e.write_all(&buf[..n]).and_then(|_| e.flush())
                } else {
                    let mut o = std::io::stdout().lock();
                    o.write_all(&buf[..n]).and_then(|_| o.flush())
                };
                if r.is_err() {
                    return;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::Interrupted | std::io::ErrorKind::WouldBlock
                ) => {}
            Err(_) => return,
        }
    }
}

/// Our terminal in raw mode while a container's terminal is attached; restored on drop.
pub struct RawMode {
    saved: Option<Termios>,
}

impl RawMode {
    pub fn enter() -> RawMode {
        let stdin = std::io::stdin();
        let Ok(saved) = termios::tcgetattr(stdin.as_fd()) else {
            return RawMode { saved: None };
        };
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        if termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw).is_err() {
            return RawMode { saved: None };
        }
        RawMode { saved: Some(saved) }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(saved) = &self.saved {
            let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, saved);
        }
    }
}

/// The size of the terminal on `fd`, if it is one: (width, height).
pub fn terminal_size(fd: BorrowedFd<'_>) -> Option<(u32, u32)> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes a winsize into the struct we pass.
    let r = unsafe {
        libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            libc::TIOCGWINSZ,
            &mut ws,
        )
    };
    (r == 0 && ws.ws_col > 0).then_some((u32::from(ws.ws_col), u32::from(ws.ws_row)))
}

/// How long output may keep flowing after the process exited before the CLI stops copying.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(10);

/// What ends the container's stdin when ours ends: the daemon's `CloseIO` for the process.
pub fn close_stdin(
    socket: &Path,
    ns: &str,
    id: &str,
    exec_id: &str,
) -> impl FnOnce() + Send + 'static {
    let (socket, req) = (
        socket.to_path_buf(),
        api::ProcessRef {
            namespace: ns.into(),
            id: id.into(),
            exec_id: exec_id.into(),
            ..Default::default()
        },
    );
    move || {
        if let Ok(c) = Client::connect(&socket) {
            let _ = c.call(CALL_TIMEOUT, |m, ctx| m.close_io(ctx, &req));
        }
    }
}
