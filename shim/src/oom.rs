//! OOM notifications: cgroup v1 `memory.oom_control` with an eventfd registered through
//! `cgroup.event_control`, watched by the event loop. (cgroup v2's `memory.events` cannot be
//! exercised on the hybrid hosts we test on; there the watcher is not set up and a warning says so.)

use crate::error::{Result, ShimError};
use nix::sys::eventfd::{EfdFlags, EventFd};
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd};
use std::path::PathBuf;

pub struct OomWatcher {
    efd: EventFd,
}

/// The memory cgroup directory of `pid` on a v1 hierarchy.
fn memory_cgroup(pid: u32) -> Result<PathBuf> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .map_err(ShimError::io(format!("read /proc/{pid}/cgroup")))?;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, ctrls, path) = (parts.next(), parts.next(), parts.next());
        if let (Some(ctrls), Some(path)) = (ctrls, path) {
            if ctrls.split(',').any(|c| c == "memory") {
                return Ok(
                    PathBuf::from("/sys/fs/cgroup/memory").join(path.trim_start_matches('/'))
                );
            }
        }
    }
    Err(ShimError::NotFound(format!(
        "pid {pid} has no cgroup v1 memory controller"
    )))
}

impl OomWatcher {
    /// Watches the memory cgroup of `pid` (cgroup v1).
    pub fn new(pid: u32) -> Result<Self> {
        let dir = memory_cgroup(pid)?;
        let efd = EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
            .map_err(ShimError::nix("eventfd"))?;
        let control_path = dir.join("memory.oom_control");
        let control = std::fs::File::open(&control_path)
            .map_err(ShimError::io(format!("open {}", control_path.display())))?;
        let event_control = dir.join("cgroup.event_control");
        std::fs::OpenOptions::new()
            .write(true)
            .open(&event_control)
            .and_then(|mut f| {
                f.write_all(
                    format!("{} {}", efd.as_fd().as_raw_fd(), control.as_raw_fd()).as_bytes(),
                )
            })
            .map_err(ShimError::io(format!("write {}", event_control.display())))?;
        Ok(OomWatcher { efd })
    }

    pub fn fd(&self) -> i32 {
        self.efd.as_fd().as_raw_fd()
    }

    /// Whether an OOM happened since the last check (reads and resets the counter).
    pub fn fired(&self) -> bool {
        matches!(self.efd.read(), Ok(n) if n > 0)
    }
}
