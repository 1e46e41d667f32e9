//! OOM notifications for a container's cgroup.
//!
//! cgroup v1: an eventfd registered on `memory.oom_control` through `cgroup.event_control`.
//! cgroup v2: inotify on `memory.events`, firing when its `oom_kill` count grows. Either way the
//! event loop watches one fd and `fired()` says whether an OOM kill happened since last asked.

use crate::error::{Result, ShimError};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};

pub enum OomWatcher {
    V1 {
        efd: EventFd,
    },
    V2 {
        inotify: Inotify,
        events: PathBuf,
        seen: std::cell::Cell<u64>,
    },
}

/// The cgroup directory of `pid`'s memory controller: the v1 `memory` hierarchy, or the v2
/// unified one (`0::/path`) when the memory controller lives there.
fn memory_cgroup(pid: u32) -> Result<(PathBuf, bool)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .map_err(ShimError::io(format!("read /proc/{pid}/cgroup")))?;
    let mut unified = None;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let rel = path.trim_start_matches('/');
        if ctrls.split(',').any(|c| c == "memory") {
            return Ok((Path::new("/sys/fs/cgroup/memory").join(rel), false));
        }
        if ctrls.is_empty() {
            unified = Some(rel.to_string());
        }
    }
    if let Some(rel) = unified {
        // Pure v2 mounts the unified hierarchy at /sys/fs/cgroup; hybrid at .../unified.
        for base in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
            let dir = Path::new(base).join(&rel);
            if dir.join("memory.events").is_file() {
                return Ok((dir, true));
            }
        }
    }
    Err(ShimError::NotFound(format!(
        "pid {pid} has no memory controller in its cgroups"
    )))
}

/// The `oom_kill` count of a cgroup v2 `memory.events` file.
pub fn oom_kills(memory_events: &str) -> u64 {
    memory_events
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse().ok())
        .unwrap_or(0)
}

impl OomWatcher {
    /// Watches the memory cgroup of `pid`.
    pub fn new(pid: u32) -> Result<Self> {
        let (dir, v2) = memory_cgroup(pid)?;
        if v2 {
            let events = dir.join("memory.events");
            let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)
                .map_err(ShimError::nix("inotify_init"))?;
            inotify
                .add_watch(&events, AddWatchFlags::IN_MODIFY)
                .map_err(ShimError::nix(format!("watch {}", events.display())))?;
            let seen = oom_kills(&std::fs::read_to_string(&events).unwrap_or_default());
            return Ok(OomWatcher::V2 {
                inotify,
                events,
                seen: std::cell::Cell::new(seen),
            });
        }
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
        Ok(OomWatcher::V1 { efd })
    }

    pub fn fd(&self) -> i32 {
        match self {
            OomWatcher::V1 { efd } => efd.as_fd().as_raw_fd(),
            OomWatcher::V2 { inotify, .. } => inotify.as_fd().as_raw_fd(),
        }
    }

    /// Whether an OOM kill happened since the last check.
    pub fn fired(&self) -> bool {
        match self {
            OomWatcher::V1 { efd } => matches!(efd.read(), Ok(n) if n > 0),
            OomWatcher::V2 {
                inotify,
                events,
                seen,
            } => {
                // Drain the notifications, then compare the count (the file is the truth).
                while matches!(inotify.read_events(), Ok(v) if !v.is_empty()) {}
                let now = oom_kills(&std::fs::read_to_string(events).unwrap_or_default());
                let grew = now > seen.get();
                seen.set(now);
                grew
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_oom_kill_count() {
        let text = "low 0\nhigh 0\nmax 12\noom 3\noom_kill 2\noom_group_kill 0\n";
        assert_eq!(oom_kills(text), 2);
        assert_eq!(oom_kills("low 0\n"), 0);
        assert_eq!(oom_kills(""), 0);
    }
}
