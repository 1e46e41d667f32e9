//! Where shims put their ttrpc sockets.
//!
//! Like containerd's own shim: a path-based socket (never abstract: CVE-2020-15257) in a
//! root-only directory, named by a hash of (containerd address, namespace, id) so the path is short
//! enough for `sun_path` whatever the id and namespace lengths, and unique per daemon.

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// The directory shim sockets live in by default (mode 0700).
pub const DEFAULT_SOCKET_DIR: &str = "/run/tether/s";

/// `sun_path` is 108 bytes including the terminating NUL.
pub const SUN_PATH_MAX: usize = 107;

/// The socket path of the shim for (`address`, `namespace`, `id`) under `dir`.
pub fn shim_socket_path(dir: &Path, address: &str, namespace: &str, id: &str) -> PathBuf {
    let mut h = Sha256::new();
    // Separators keep ("ab","c") and ("a","bc") apart.
    for part in [address, namespace, id] {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    dir.join(hex)
}

/// The ttrpc address form of a socket path, as containerd prints and parses it.
pub fn to_address(path: &Path) -> String {
    format!("unix://{}", path.display())
}

/// The socket path of a ttrpc address (`unix:///p`, or a bare `/p`).
pub fn from_address(address: &str) -> Option<PathBuf> {
    let p = address.strip_prefix("unix://").unwrap_or(address);
    p.starts_with('/').then(|| PathBuf::from(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_ids_fit_sun_path() {
        let id = "c".repeat(76);
        let ns = "n".repeat(76);
        let address = format!("/run/{}/containerd.sock", "a".repeat(200));
        let p = shim_socket_path(Path::new(DEFAULT_SOCKET_DIR), &address, &ns, &id);
        assert!(p.as_os_str().len() <= SUN_PATH_MAX, "{}", p.display());
        assert!(to_address(&p).starts_with("unix:///run/tether/s/"));
        assert_eq!(from_address(&to_address(&p)), Some(p.clone()));
    }

    #[test]
    fn distinct_inputs_give_distinct_sockets() {
        let d = Path::new("/s");
        let a = shim_socket_path(d, "addr", "ab", "c");
        let b = shim_socket_path(d, "addr", "a", "bc");
        let c = shim_socket_path(d, "addr2", "ab", "c");
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_eq!(a, shim_socket_path(d, "addr", "ab", "c"));
    }

    #[test]
    fn relative_addresses_are_refused() {
        assert_eq!(from_address("unix://relative"), None);
        assert_eq!(from_address("relative"), None);
    }
}
