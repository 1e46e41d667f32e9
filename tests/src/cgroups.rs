//! Cgroups that containers leave behind.
//!
//! `ctr run` puts a container in the cgroup `/<namespace>/<id>` of every hierarchy (here: each
//! v1 controller plus the empty v2 `unified` one). runc removes `<id>` when the task is
//! deleted, but nobody removes `<namespace>`: tests, which use a fresh namespace each, would
//! leak one directory per controller per test. These helpers find, kill and remove them.

use crate::mounts::mounts;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

/// Mount points of every cgroup hierarchy (v1 and v2).
pub fn hierarchies() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = mounts()
        .into_iter()
        .filter(|m| m.fs_type == "cgroup" || m.fs_type == "cgroup2")
        .map(|m| m.mount_point)
        .collect();
    v.dedup();
    v
}

/// `<hierarchy>/<rel>` for every hierarchy where it exists.
pub fn existing(rel: &str) -> Vec<PathBuf> {
    let rel = rel.trim_start_matches('/');
    hierarchies()
        .into_iter()
        .map(|h| h.join(rel))
        .filter(|p| p.is_dir())
        .collect()
}

/// Every cgroup directory at or below `dir`, deepest first.
fn subtree(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(rd) = fs::read_dir(&d) {
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(e.path());
                }
            }
        }
        out.push(d);
    }
    out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    out
}

/// Pids in `dir`'s cgroup and below.
pub fn procs(dir: &Path) -> Vec<i32> {
    subtree(dir)
        .iter()
        .filter_map(|d| fs::read_to_string(d.join("cgroup.procs")).ok())
        .flat_map(|s| {
            s.lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect()
}

/// Thaws (a frozen process ignores SIGKILL until thawed) and SIGKILLs every process in `dir`'s
/// cgroup and below; returns the pids signalled.
pub fn kill_all(dir: &Path) -> Vec<i32> {
    for d in subtree(dir) {
        let _ = fs::write(d.join("freezer.state"), "THAWED");
        let _ = fs::write(d.join("cgroup.freeze"), "0");
    }
    let pids = procs(dir);
    for &p in &pids {
        crate::procs::signal(p, libc::SIGKILL);
    }
    pids
}

/// Removes `dir` and its child cgroups, deepest first, retrying while they drain (EBUSY) until
/// `timeout`. A missing `dir` is fine.
pub fn remove_tree(dir: &Path, timeout: Duration) -> io::Result<()> {
    let deadline = Instant::now() + timeout;
    for d in subtree(dir) {
        loop {
            match fs::remove_dir(&d) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(10));
                }
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("rmdir {}: {e}", d.display()),
                    ))
                }
            }
        }
    }
    Ok(())
}

/// The cgroup v1 hierarchy of `controller` (`/sys/fs/cgroup/<controller>`). A test that reads
/// a v1 controller's files calls this first: on a host without one it fails saying why, rather
/// than passing without having tested anything.
pub fn require_v1(controller: &str) -> PathBuf {
    let dir = Path::new("/sys/fs/cgroup").join(controller);
    assert!(
        dir.join("cgroup.procs").is_file(),
        "this test needs the cgroup v1 {controller} controller at {} and this host has none \
         (cgroup v2 only?): skip it here with `--skip`",
        dir.display()
    );
    dir
}

/// Whether the unified (v2) hierarchy has `controller` enabled.
pub fn v2_has(controller: &str) -> bool {
    [
        "/sys/fs/cgroup/cgroup.controllers",
        "/sys/fs/cgroup/unified/cgroup.controllers",
    ]
    .iter()
    .filter_map(|p| fs::read_to_string(p).ok())
    .any(|c| c.split_whitespace().any(|c| c == controller))
}

/// A cgroup made in some v1 hierarchies (`pids`, `memory`, ...) for one test, removed when
/// dropped: what a `ShimCgroup` option names.
pub struct TestCgroup {
    /// Its name, `/`-less: the option's value is `/<name>`.
    pub name: String,
    /// Its directory in each hierarchy, in the order asked.
    pub dirs: Vec<PathBuf>,
}

impl TestCgroup {
    pub fn new(controllers: &[&str]) -> TestCgroup {
        let name = crate::unique_id("tt-shimcg");
        let dirs: Vec<PathBuf> = controllers
            .iter()
            .map(|c| PathBuf::from("/sys/fs/cgroup").join(c).join(&name))
            .collect();
        for d in &dirs {
            fs::create_dir(d).unwrap_or_else(|e| panic!("mkdir {}: {e}", d.display()));
        }
        TestCgroup { name, dirs }
    }

    /// Whether the process `pid` is in this cgroup of `controller`, from `/proc/PID/cgroup`.
    pub fn holds(&self, pid: i32, controller: &str) -> bool {
        let own = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        own.lines().any(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, controllers, path) = (parts.next(), parts.next(), parts.next());
            controllers.is_some_and(|c| c.split(',').any(|c| c == controller))
                && path == Some(&format!("/{}", self.name))
        })
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        for d in &self.dirs {
            // Its processes are gone by now; rmdir can still race their exit briefly.
            crate::wait_until(Duration::from_secs(20), || {
                fs::remove_dir(d).is_ok() || !d.exists()
            });
        }
    }
}
