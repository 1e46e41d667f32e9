//! OOM notifications for a container's cgroup.
//!
//! cgroup v1: an eventfd registered on `memory.oom_control` through `cgroup.event_control`.
//! cgroup v2: inotify on `memory.events`, firing when its `oom_kill` count grows. Either way the
//! event loop watches one fd and `fired()` says whether an OOM kill happened since last asked.

use crate::cgroup::{self, Cgroup};
use crate::error::{Result, ShimError};
use crate::stats;
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};

pub enum OomWatcher {
    V1 {
        efd: EventFd,
        /// The memory cgroup: the kernel also signals the eventfd when it is removed.
        dir: PathBuf,
    },
    V2 {
        inotify: Inotify,
        /// The cgroup directory, whose `memory.events` is watched.
        dir: PathBuf,
        seen: std::cell::Cell<u64>,
    },
}

/// The cgroup directory of `pid`'s memory controller: the v1 `memory` hierarchy, or the v2
/// unified directory; true for v2.
fn memory_cgroup(pid: u32) -> Result<(PathBuf, bool)> {
    match cgroup::locate(pid)? {
        Cgroup::V1(dirs) => dirs
            .get("memory")
            .map(|d| (d.to_path_buf(), false))
            .ok_or_else(|| {
                ShimError::NotFound(format!("pid {pid} has no memory controller in its cgroups"))
            }),
        Cgroup::V2(dir) => Ok((dir, true)),
    }
}

/// The `oom_kill` count of the v2 cgroup `dir`; None while `memory.events` cannot be read.
fn oom_kills(dir: &Path) -> Option<u64> {
    stats::memory_events(dir).map(|e| e.oom_kill)
}

impl OomWatcher {
    /// Watches the memory cgroup of `pid`.
    pub fn new(pid: u32) -> Result<Self> {
        match memory_cgroup(pid)? {
            (dir, true) => Self::v2(dir),
            (dir, false) => Self::v1(&dir),
        }
    }

    /// Watches `memory.events` in the v2 cgroup `dir`; the count already there is not an event.
    fn v2(dir: PathBuf) -> Result<Self> {
        let events = dir.join("memory.events");
        let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)
            .map_err(ShimError::nix("inotify_init"))?;
        inotify
            .add_watch(&events, AddWatchFlags::IN_MODIFY)
            .map_err(ShimError::nix(format!("watch {}", events.display())))?;
        let seen = oom_kills(&dir).unwrap_or(0);
        Ok(OomWatcher::V2 {
            inotify,
            dir,
            seen: std::cell::Cell::new(seen),
        })
    }

    /// Registers an eventfd on `memory.oom_control` of the v1 memory cgroup `dir`.
    fn v1(dir: &Path) -> Result<Self> {
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
        Ok(OomWatcher::V1 {
            efd,
            dir: dir.to_path_buf(),
        })
    }

    pub fn fd(&self) -> i32 {
        match self {
            OomWatcher::V1 { efd, .. } => efd.as_fd().as_raw_fd(),
            OomWatcher::V2 { inotify, .. } => inotify.as_fd().as_raw_fd(),
        }
    }

    /// Whether an OOM kill happened since the last check.
    pub fn fired(&self) -> bool {
        match self {
            // A cgroup being removed (the runtime deleting the container) is no OOM.
            OomWatcher::V1 { efd, dir } => {
                matches!(efd.read(), Ok(n) if n > 0) && dir.join("memory.oom_control").exists()
            }
            OomWatcher::V2 { inotify, dir, seen } => {
                // Drain the notifications, then compare the count (the file is the truth).
                while matches!(inotify.read_events(), Ok(v) if !v.is_empty()) {}
                // An unreadable file (cgroup going away) is no news, and not a reset to 0 that
                // would make the next good read look like a new kill.
                let Some(now) = oom_kills(dir) else {
                    return false;
                };
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

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/cgroup/v2")
            .join(name)
    }

    /// A scratch cgroup directory for one test, removed when dropped.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("tether-oom-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("create scratch dir");
            Scratch(dir)
        }

        fn events_from(&self, fixture_dir: &str) {
            let text = std::fs::read_to_string(fixture(fixture_dir).join("memory.events"))
                .expect("fixture memory.events");
            std::fs::write(self.0.join("memory.events"), text).expect("write memory.events");
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn reads_the_oom_kill_count_of_the_fixtures() {
        assert_eq!(oom_kills(&fixture("full")), Some(2));
        assert_eq!(oom_kills(&fixture("oom-grown")), Some(3));
        assert_eq!(oom_kills(&fixture("garbage")), Some(5));
        assert_eq!(oom_kills(&fixture("missing")), None);
    }

    /// The count the watch starts from is not an event; a count that grows is, once; a rewrite
    /// with the same count is not.
    #[test]
    fn v2_watcher_fires_when_oom_kill_grows() {
        let cg = Scratch::new("grows");
        cg.events_from("full");
        let w = OomWatcher::v2(cg.0.clone()).expect("watch memory.events");
        assert!(!w.fired(), "the starting count (2) is not an OOM");
        cg.events_from("full");
        assert!(!w.fired(), "rewritten, still 2: no OOM");
        cg.events_from("oom-grown");
        assert!(w.fired(), "2 -> 3 is an OOM kill");
        assert!(!w.fired(), "reported once");
    }

    #[test]
    fn v2_watcher_without_memory_events_is_an_error_not_a_panic() {
        let cg = Scratch::new("missing");
        let err = OomWatcher::v2(cg.0.clone())
            .err()
            .expect("nothing to watch");
        assert!(err.to_string().contains("memory.events"), "{err}");

        // A watched file that disappears (cgroup removed) reads as no OOM.
        cg.events_from("full");
        let w = OomWatcher::v2(cg.0.clone()).expect("watch memory.events");
        std::fs::remove_file(cg.0.join("memory.events")).expect("remove");
        assert!(!w.fired());
        cg.events_from("full");
        assert!(!w.fired(), "back at 2: the gap was no reset to 0");
    }
}
