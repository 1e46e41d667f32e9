//! The names the CLI and the daemon agree on without asking each other: the default paths,
//! the runtime used when none is named and the shim binary a runtime name stands for, and the
//! stdin FIFO in a `-i` container's directory.

use crate::error::{Error, Result};

pub const DEFAULT_ROOT: &str = "/var/lib/tether";
pub const DEFAULT_STATE: &str = "/run/tether";
pub const DEFAULT_SOCKET: &str = "/run/tether/tether.sock";

/// The runtime used when none is named.
pub const DEFAULT_RUNTIME: &str = "io.containerd.tether.v2";

/// A `-i` container's stdin FIFO in its directory.
pub const STDIN_FIFO: &str = "stdin";

/// The binary name of a runtime: `io.containerd.X.v2` -> `containerd-shim-X-v2`, as containerd
/// builds it from the last two dot-separated parts.
pub fn binary_name(runtime: &str) -> Result<String> {
    let bad = |why: &str| {
        Error::InvalidArgument(format!(
            "invalid runtime name {runtime:?}: {why} (expected a name like io.containerd.runc.v2)"
        ))
    };
    let parts: Vec<&str> = runtime.split('.').collect();
    if parts.len() < 3 {
        return Err(bad("too few dot-separated parts"));
    }
    if parts.iter().any(|p| {
        p.is_empty()
            || !p
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    }) {
        return Err(bad("parts must be letters, digits, '-' or '_'"));
    }
    let n = parts.len();
    Ok(format!("containerd-shim-{}-{}", parts[n - 2], parts[n - 1]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_names_map_like_containerd() {
        assert_eq!(
            binary_name("io.containerd.runc.v2").expect("ok"),
            "containerd-shim-runc-v2"
        );
        assert_eq!(
            binary_name(DEFAULT_RUNTIME).expect("ok"),
            "containerd-shim-tether-v2"
        );
        for bad in ["runc", "io..v2", "io.containerd.a/b.v2", "a.b"] {
            assert!(binary_name(bad).is_err(), "{bad}");
        }
    }
}
