//! Where the tests find a CRIU that works on this machine.
//!
//! Debian 12's CRIU 3.17 fails on this kernel; `scripts/criu.sh` (`make criu`) prints one that
//! passes `criu check`, building CRIU 4.x once into `/var/cache/tether/criu/VERSION` if needed.

use std::path::PathBuf;

/// The environment variable `make test` sets to the output of `scripts/criu.sh`.
pub const CRIU_ENV: &str = "TETHER_CRIU";
/// Where `scripts/criu.sh` builds CRIU, one directory per version.
pub const CRIU_CACHE: &str = "/var/cache/tether/criu";

/// A CRIU that works here: `TETHER_CRIU`, else the newest one `make criu` built. Panics saying
/// how to get one if there is none.
pub fn working_criu() -> PathBuf {
    if let Some(p) = std::env::var_os(CRIU_ENV).filter(|p| !p.is_empty()) {
        return p.into();
    }
    let mut built: Vec<PathBuf> = std::fs::read_dir(CRIU_CACHE)
        .map(|d| d.flatten().map(|e| e.path().join("criu")).collect())
        .unwrap_or_default();
    built.retain(|p| p.is_file());
    built.sort();
    built.pop().unwrap_or_else(|| {
        panic!("no CRIU that works here: run `make criu` (make test does) or set {CRIU_ENV}")
    })
}

/// The directory of [`working_criu`], to put first on a daemon's `PATH`: containerd's CRI
/// `CheckpointContainer` checks the version of the `criu` it finds there.
pub fn working_criu_dir() -> PathBuf {
    let criu = working_criu();
    criu.parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("{} has no parent directory", criu.display()))
}
