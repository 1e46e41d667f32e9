//! Terminals for tests that drive `tether` as a user at a terminal would.

use std::os::fd::AsRawFd;

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
