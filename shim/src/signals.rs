//! Signals as a file descriptor on the event loop: the signals are blocked and read from a
//! `signalfd`, so no handler runs at an arbitrary point and no self-pipe is needed.
//!
//! A child inherits the blocked mask across fork and exec (`std::process::Command` does not
//! reset it), so every command the shim runs goes through [`unblocked`]: the runtime, the
//! container and a logger start with no signal blocked, as they did before the shim blocked any.

use crate::error::{Result, ShimError};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

pub struct Signals {
    fd: SignalFd,
}

impl Signals {
    /// Blocks `signals` and catches them on a non-blocking `signalfd`.
    pub fn catch(signals: &[Signal]) -> Result<Self> {
        let mut mask = SigSet::empty();
        for s in signals {
            mask.add(*s);
        }
        mask.thread_block()
            .map_err(ShimError::nix(format!("block {signals:?}")))?;
        let fd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(ShimError::nix(format!("signalfd for {signals:?}")))?;
        Ok(Signals { fd })
    }

    /// The fd the event loop watches: readable while a signal is pending.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// The signals received since the last call (one of each kind at most, as the kernel
    /// merges pending ones).
    pub fn pending(&self) -> Vec<i32> {
        let mut got = Vec::new();
        while let Ok(Some(info)) = self.fd.read_signal() {
            got.push(info.ssi_signo as i32);
        }
        got
    }
}

/// `cmd`, set to run with an empty signal mask whatever the shim blocks.
pub fn unblocked(cmd: &mut Command) -> &mut Command {
    // SAFETY: sigemptyset and sigprocmask are async-signal-safe, and nothing else runs between
    // fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let mut none = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
            libc::sigemptyset(none.as_mut_ptr());
            if libc::sigprocmask(libc::SIG_SETMASK, none.as_ptr(), std::ptr::null_mut()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
}
