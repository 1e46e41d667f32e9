//! Terminals: the console socket the runtime sends the pty master over (`SCM_RIGHTS`), and the
//! operations on a master (resize, end of input).

use crate::error::{Result, ShimError};
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
use nix::sys::termios::{tcgetattr, SpecialCharacterIndices};
use std::io::IoSliceMut;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

/// Console sockets live in a root-only directory beside the shim sockets.
fn console_dir() -> PathBuf {
    crate::start::socket_dir().with_file_name("console")
}

/// A listening console socket; removed when dropped.
pub struct ConsoleSocket {
    listener: UnixListener,
    pub path: PathBuf,
}

static SEQ: AtomicU64 = AtomicU64::new(0);

impl ConsoleSocket {
    pub fn new() -> Result<Self> {
        let dir = console_dir();
        std::fs::create_dir_all(&dir)
            .map_err(ShimError::io(format!("create {}", dir.display())))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .map_err(ShimError::io(format!("chmod {}", dir.display())))?;
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!("{}-{n}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener =
            UnixListener::bind(&path).map_err(ShimError::io(format!("bind {}", path.display())))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(ShimError::io(format!("chmod {}", path.display())))?;
        Ok(ConsoleSocket { listener, path })
    }

    /// Takes the pty master the runtime sent. Called once the runtime command has exited: by
    /// then its connection and message wait in the socket's queue, so nothing here waits; a
    /// runtime that exited without sending one is an error, not a reason to block the loop.
    pub fn receive_master(&self) -> Result<OwnedFd> {
        let fail = |why: String| ShimError::Runtime(format!("console socket: {why}"));
        self.listener
            .set_nonblocking(true)
            .map_err(ShimError::io("console socket O_NONBLOCK"))?;
        let (stream, _) = self
            .listener
            .accept()
            .map_err(|e| fail(format!("the runtime never connected: {e}")))?;
        stream
            .set_nonblocking(true)
            .map_err(ShimError::io("console stream O_NONBLOCK"))?;
        let mut name = [0u8; 4096];
        let mut iov = [IoSliceMut::new(&mut name)];
        let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        let msg = recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(|e| fail(format!("recvmsg: {e}")))?;
        let cmsgs = msg
            .cmsgs()
            .map_err(|e| fail(format!("control message: {e}")))?;
        for cmsg in cmsgs {
            if let ControlMessageOwned::ScmRights(fds) = cmsg {
                let mut owned: Vec<OwnedFd> = fds
                    .into_iter()
                    // SAFETY: SCM_RIGHTS hands us new descriptors that nothing else owns.
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
                    .collect();
                if let Some(master) = owned.pop() {
                    return Ok(master);
                }
            }
        }
        Err(fail("no file descriptor in the runtime's message".into()))
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Sets the terminal size.
pub fn resize(master: &OwnedFd, width: u32, height: u32) -> Result<()> {
    let ws = libc::winsize {
        ws_row: height.min(u16::MAX as u32) as u16,
        ws_col: width.min(u16::MAX as u32) as u16,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize struct that lives across the call.
    let r = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    if r < 0 {
        return Err(ShimError::io("ioctl(TIOCSWINSZ)")(
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Ends the terminal's input: the EOF character, which a reader at the start of a line sees as
/// end of file (what closing stdin means for a process on a terminal).
pub fn send_eof(master: &OwnedFd) -> Result<()> {
    let eof = tcgetattr(master.as_fd())
        .map(|t| t.control_chars[SpecialCharacterIndices::VEOF as usize])
        .unwrap_or(4);
    nix::unistd::write(master, &[eof]).map_err(ShimError::nix("write EOF to the terminal"))?;
    Ok(())
}
