//! Terminals for tests that drive `tether` as a user at a terminal would.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Sets the size of the pty `fd` (the kernel then signals SIGWINCH to the terminal's
/// foreground process group: the CLI whose controlling terminal it is).
pub fn set_size(fd: &impl AsRawFd, rows: u16, cols: u16) {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads the winsize we pass.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    assert_eq!(r, 0, "TIOCSWINSZ: {}", std::io::Error::last_os_error());
}

/// A command running with a new pty as its controlling terminal, as from a shell (so resizing
/// the pty sends it SIGWINCH), and everything written to that terminal.
pub struct Terminal {
    master: std::fs::File,
    seen: Arc<Mutex<String>>,
    reader: Option<JoinHandle<()>>,
}

impl Terminal {
    /// Opens a `rows` x `cols` pty and starts `command` on it (stdin, stdout, stderr, `setsid`
    /// and `TIOCSCTTY`). `command` is dropped here, so the terminal's only slave is the child's.
    pub fn spawn(mut command: Command, rows: u16, cols: u16) -> (Child, Terminal) {
        let pty = nix::pty::openpty(None, None).expect("openpty");
        set_size(&pty.master, rows, cols);
        let slave = std::fs::File::from(pty.slave);
        command
            .stdin(slave.try_clone().expect("dup pty"))
            .stdout(slave.try_clone().expect("dup pty"))
            .stderr(slave);
        // SAFETY: setsid and ioctl are async-signal-safe; the pty becomes the child's
        // controlling terminal.
        unsafe {
            command.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("start {:?} on a pty: {e}", command.get_program()));
        drop(command);
        let seen = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&seen);
        let mut master = std::fs::File::from(pty.master);
        let kept = master.try_clone().expect("dup master");
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // Ends with EIO once every slave is closed (the child exited).
            while let Ok(n) = master.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                sink.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push_str(&text);
            }
        });
        let terminal = Terminal {
            master: kept,
            seen,
            reader: Some(reader),
        };
        (child, terminal)
    }

    /// Everything written to the terminal so far.
    pub fn output(&self) -> String {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether the terminal shows `what` within `timeout`.
    pub fn saw(&self, what: &str, timeout: Duration) -> bool {
        crate::wait_until(timeout, || self.output().contains(what))
    }

    /// Types `bytes` at the terminal (they reach its process as keyboard input).
    pub fn send(&self, bytes: &[u8]) {
        use std::io::Write;
        (&self.master)
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("write to the pty: {e}"));
    }

    /// Resizes the terminal (its process gets SIGWINCH).
    pub fn resize(&self, rows: u16, cols: u16) {
        set_size(&self.master, rows, cols);
    }

    /// Waits until the reader has seen the end (call once the child has exited).
    pub fn close(mut self) {
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}
