//! The one place the daemon reaps. It is a child subreaper: the shims it starts are reparented
//! to it when their `start` process exits, and so are a killed shim's container processes. It
//! reaps every such orphan, but never a child someone waits for through `std::process::Child`
//! (the `start` and `delete` actions): those are spawned through [`spawn`] and registered, and
//! the registry's lock is held across the spawn and across every reaping pass, so the two never
//! race for the same pid.

use std::collections::HashSet;
use std::process::{Child, Command};
use std::sync::{Mutex, MutexGuard};

static WAITED: Mutex<Option<HashSet<u32>>> = Mutex::new(None);

fn waited() -> MutexGuard<'static, Option<HashSet<u32>>> {
    WAITED.lock().unwrap_or_else(|p| p.into_inner())
}

/// Makes the daemon a child subreaper (`PR_SET_CHILD_SUBREAPER`).
pub fn become_subreaper() -> std::io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    let r = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Spawns a child its caller will wait for itself; call [`release`] once it has.
pub fn spawn(cmd: &mut Command) -> std::io::Result<Child> {
    let mut guard = waited();
    let child = cmd.spawn()?;
    guard.get_or_insert_with(HashSet::new).insert(child.id());
    Ok(child)
}

/// The caller has waited for `pid`.
pub fn release(pid: u32) {
    if let Some(set) = waited().as_mut() {
        set.remove(&pid);
    }
}

/// Our direct children, from every thread's `children` list.
fn children() -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for t in tasks.flatten() {
        if let Ok(text) = std::fs::read_to_string(t.path().join("children")) {
            out.extend(
                text.split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            );
        }
    }
    out
}

/// Reaps every exited child nobody else waits for; returns how many.
pub fn reap_orphans() -> usize {
    let guard = waited();
    let mut n = 0;
    for pid in children() {
        if guard.as_ref().is_some_and(|s| s.contains(&pid)) {
            continue;
        }
        let mut status = 0;
        // SAFETY: waitpid on one specific child with WNOHANG: never blocks, touches only it.
        let r = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, libc::WNOHANG) };
        if r > 0 {
            n += 1;
        }
    }
    n
}
