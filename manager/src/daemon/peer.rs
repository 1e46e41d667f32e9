//! Who may talk to the daemon: root and the daemon's own uid, checked on every connection
//! (`SO_PEERCRED`), whatever the socket's mode let through.

use crate::error::Error;
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use std::os::fd::{BorrowedFd, RawFd};

/// Whether the peer of the connected socket `fd` may be served; why not, otherwise.
pub fn check(fd: RawFd) -> Result<(), Error> {
    // SAFETY: `fd` is a connection the caller holds open for the duration of the call.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    let cred = getsockopt(&fd, PeerCredentials)
        .map_err(|e| Error::io("SO_PEERCRED of a client")(e.into()))?;
    let uid = cred.uid();
    if uid == 0 || uid == nix::unistd::geteuid().as_raw() {
        return Ok(());
    }
    Err(Error::PermissionDenied(format!(
        "permission denied: uid {uid} (pid {}) may not use this daemon (root or uid {} only)",
        cred.pid(),
        nix::unistd::geteuid()
    )))
}

/// Runs `f` with the umask at 077, so a socket bound inside is never open to others, not even
/// until its chmod.
pub fn with_private_umask<T>(f: impl FnOnce() -> T) -> T {
    use nix::sys::stat::{umask, Mode};
    let old = umask(Mode::from_bits_truncate(0o077));
    let out = f();
    umask(old);
    out
}
