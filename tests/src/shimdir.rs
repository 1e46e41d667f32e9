//! A private copy of the shim binary in a directory of its own, put first on a daemon's `PATH`:
//! a test (or the bench) can install a new binary there while shims run from it, as a package
//! manager installs one over a live system. The live upgrade tests stand on it.

use crate::shim_binary;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

pub struct ShimDir {
    dir: tempfile::TempDir,
    name: String,
}

impl ShimDir {
    /// A fresh directory holding a copy of the built shim as `name`
    /// (`containerd-shim-<runtime>-v2`, which runtime `io.containerd.<runtime>.v2` runs).
    pub fn new(name: &str) -> ShimDir {
        let dir = tempfile::Builder::new()
            .prefix("tether-shimdir-")
            .tempdir()
            .expect("tempdir for the shim binary");
        let s = ShimDir {
            dir,
            name: name.to_string(),
        };
        s.install_shim();
        s
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Where the shims' binary is installed.
    pub fn binary(&self) -> PathBuf {
        self.dir.path().join(&self.name)
    }

    /// `PATH` with this directory first.
    pub fn path_env(&self) -> String {
        format!(
            "{}:{}",
            self.dir.path().display(),
            std::env::var("PATH").unwrap_or_default()
        )
    }

    /// Installs `contents` at the shim's path as a new file (a new inode, as a package
    /// manager's rename does); returns its inode.
    pub fn install(&self, contents: &[u8]) -> u64 {
        let tmp = self.dir.path().join("incoming");
        crate::cmd::write_executable(&tmp, contents);
        std::fs::rename(&tmp, self.binary()).expect("install the new binary");
        inode(&self.binary())
    }

    /// A fresh copy of the built shim at the shim's path; its inode.
    pub fn install_shim(&self) -> u64 {
        self.install(&std::fs::read(shim_binary()).expect("read the shim binary"))
    }
}

/// The inode of `path`.
pub fn inode(path: &Path) -> u64 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .ino()
}

/// The inode of the binary process `pid` runs (the link resolves even to a replaced, deleted
/// file).
pub fn exe_inode(pid: i32) -> u64 {
    inode(Path::new(&format!("/proc/{pid}/exe")))
}
