//! A process id that can be signalled.
//!
//! `kill(0, sig)` signals the caller's own process group and `kill(-1, sig)` every process it
//! may signal, so a pid that is "not known yet" must never be a number: a process that has not
//! started has `Option::<Pid>::None`, and only a `Pid` (always > 1) can be signalled.

use nix::sys::signal::{kill, Signal};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pid(i32);

impl Pid {
    /// A pid from any number: `None` for 0, 1 (init), negatives and values past `i32::MAX`.
    pub fn new(raw: i64) -> Option<Pid> {
        (raw > 1 && raw <= i32::MAX as i64).then_some(Pid(raw as i32))
    }

    pub fn from_nix(p: nix::unistd::Pid) -> Option<Pid> {
        Pid::new(p.as_raw() as i64)
    }

    pub fn raw(self) -> i32 {
        self.0
    }

    /// For the wire, where containerd uses 0 for "no process".
    pub fn as_u32(self) -> u32 {
        self.0 as u32
    }

    pub fn signal(self, sig: Signal) -> nix::Result<()> {
        kill(nix::unistd::Pid::from_raw(self.0), sig)
    }
}

impl fmt::Display for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The wire form of an optional pid: 0 for none.
pub fn wire(pid: Option<Pid>) -> u32 {
    pid.map(Pid::as_u32).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_real_pids_are_pids() {
        for bad in [0, 1, -1, -42, i32::MAX as i64 + 1, i64::MIN] {
            assert_eq!(Pid::new(bad), None, "{bad}");
        }
        assert_eq!(Pid::new(2).map(Pid::raw), Some(2));
        assert_eq!(wire(None), 0);
        assert_eq!(wire(Pid::new(77)), 77);
    }
}
