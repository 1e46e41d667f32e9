//! One scratch directory per test process for files built once and shared read-only (the
//! busybox rootfs, the image tarball). Removed when the process exits normally; directories left
//! by test processes that died are removed by the next one.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

const PREFIX: &str = "tether-tests-";

static DIR: OnceLock<PathBuf> = OnceLock::new();

/// This process's scratch directory under the system temp dir, created on first use.
pub fn scratch_dir() -> &'static Path {
    DIR.get_or_init(|| {
        remove_stale();
        let dir = tempfile::Builder::new()
            .prefix(&format!("{PREFIX}{}-", std::process::id()))
            .tempdir()
            .expect("create the test process's scratch dir in the temp dir")
            .keep();
        // SAFETY: registers a plain function with no captured state.
        unsafe { libc::atexit(remove_at_exit) };
        dir
    })
}

extern "C" fn remove_at_exit() {
    if let Some(dir) = DIR.get() {
        remove(dir);
    }
}

/// Removes a scratch dir, unless something is mounted in it (then it is not ours to delete).
fn remove(dir: &Path) {
    if crate::mounts::mounts_under(dir).is_empty() {
        let _ = fs::remove_dir_all(dir);
    }
}

/// Removes scratch dirs of test processes that no longer exist.
fn remove_stale() {
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        if crate::procs::stat(pid).is_none() {
            remove(&e.path());
        }
    }
}
