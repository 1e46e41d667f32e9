//! Where the binaries under test are.
//!
//! `TETHER_BIN_DIR` if set, else `<workspace root>/target/release`. The tests never build them:
//! run `cargo build --release --bins` (or `make`) first.

use std::env;
use std::path::{Path, PathBuf};

/// The shim's file name; containerd finds it for the runtime `io.containerd.tether.v2`.
pub const SHIM_BINARY: &str = "containerd-shim-tether-v2";
/// The manager's file name.
pub const TETHER_BINARY: &str = "tether";
/// The environment variable that overrides [`bin_dir`].
pub const BIN_DIR_ENV: &str = "TETHER_BIN_DIR";

/// The workspace root (the directory above this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent directory")
        .to_path_buf()
}

/// The directory holding the binaries under test (it may not exist yet).
pub fn bin_dir() -> PathBuf {
    match env::var_os(BIN_DIR_ENV) {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => workspace_root().join("target").join("release"),
    }
}

/// Paths of the binaries under test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binaries {
    pub shim: PathBuf,
    pub tether: PathBuf,
}

/// Both binaries; panics with how to build them when one is missing.
pub fn binaries() -> Binaries {
    Binaries {
        shim: shim_binary(),
        tether: tether_binary(),
    }
}

/// `containerd-shim-tether-v2`; panics with how to build it when missing.
pub fn shim_binary() -> PathBuf {
    require(SHIM_BINARY)
}

/// `tether`; panics with how to build it when missing.
pub fn tether_binary() -> PathBuf {
    require(TETHER_BINARY)
}

fn require(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    if !path.is_file() {
        panic!(
            "{} not found: build the binaries first with `cargo build --release --bins` (or \
             `make`) at {}, or point {BIN_DIR_ENV} at the directory holding them",
            path.display(),
            workspace_root().display()
        );
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_dir_is_target_release() {
        if env::var_os(BIN_DIR_ENV).is_none() {
            assert!(bin_dir().ends_with("target/release"));
            assert!(workspace_root().join("Cargo.toml").is_file());
        }
    }

    #[test]
    fn missing_binary_message_says_how_to_build() {
        let err = std::panic::catch_unwind(|| require("no-such-binary-here"))
            .expect_err("missing binary panics");
        let msg = err
            .downcast_ref::<String>()
            .expect("panic message is a String");
        assert!(msg.contains("cargo build --release --bins"), "{msg}");
    }
}
