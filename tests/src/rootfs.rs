//! A busybox root filesystem, from Debian's busybox-static (`/bin/busybox`).
//!
//! The tree is described once as a list of [`Entry`]s ([`busybox_entries`]); [`write_tree`]
//! lays it out as a directory (for `ctr run --rootfs`) and `image` packs the same list as an
//! image layer, so both hold exactly the same files.
//!
//! Layout: `bin/busybox` plus one symlink per applet of `busybox --list` in `bin/`; `sbin`,
//! `usr/bin`, `usr/sbin` link to `bin`; empty `proc sys dev tmp root run var`; `etc/passwd` and
//! `etc/group` with root and nobody.

use std::fs;
use std::io;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Debian's static busybox.
pub const BUSYBOX: &str = "/bin/busybox";

/// One node of a root filesystem. Paths are relative (`bin/sh`), parents listed first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Dir {
        path: String,
        mode: u32,
    },
    File {
        path: String,
        mode: u32,
        data: Vec<u8>,
    },
    Symlink {
        path: String,
        target: String,
    },
}

impl Entry {
    pub fn path(&self) -> &str {
        match self {
            Entry::Dir { path, .. } | Entry::File { path, .. } | Entry::Symlink { path, .. } => {
                path
            }
        }
    }
}

/// The applets the busybox binary provides (`busybox --list`), without `busybox` itself.
pub fn applets() -> Vec<String> {
    let out = Command::new(BUSYBOX)
        .arg("--list")
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {BUSYBOX}: {e} (install Debian's busybox-static: `make deps`)")
        });
    assert!(
        out.status.success(),
        "{BUSYBOX} --list failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        // `busybox` would replace the binary by a link to itself.
        .filter(|a| !a.is_empty() && *a != "busybox" && !a.contains('/'))
        .map(String::from)
        .collect()
}

/// The busybox tree described in the module docs.
pub fn busybox_entries() -> Vec<Entry> {
    let data = fs::read(BUSYBOX).unwrap_or_else(|e| {
        panic!("cannot read {BUSYBOX}: {e} (install Debian's busybox-static: `make deps`)")
    });
    let dir = |path: &str, mode: u32| Entry::Dir {
        path: path.into(),
        mode,
    };
    let link = |path: &str, target: &str| Entry::Symlink {
        path: path.into(),
        target: target.into(),
    };
    let file = |path: &str, data: &[u8]| Entry::File {
        path: path.into(),
        mode: 0o644,
        data: data.to_vec(),
    };
    let mut v = vec![
        dir("bin", 0o755),
        Entry::File {
            path: "bin/busybox".into(),
            mode: 0o755,
            data,
        },
    ];
    v.extend(
        applets()
            .iter()
            .map(|a| link(&format!("bin/{a}"), "busybox")),
    );
    v.extend([
        link("sbin", "bin"),
        dir("usr", 0o755),
        link("usr/bin", "../bin"),
        link("usr/sbin", "../bin"),
        dir("proc", 0o555),
        dir("sys", 0o555),
        dir("dev", 0o755),
        dir("tmp", 0o1777),
        dir("root", 0o700),
        dir("run", 0o755),
        dir("var", 0o755),
        dir("etc", 0o755),
        file(
            "etc/passwd",
            b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
        ),
        file("etc/group", b"root:x:0:\nnobody:x:65534:\n"),
    ]);
    v
}

/// Lays `entries` out under `dir` (created if missing). Modes are set exactly (no umask).
pub fn write_tree(entries: &[Entry], dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    for e in entries {
        let p = dir.join(e.path());
        match e {
            Entry::Dir { mode, .. } => {
                fs::create_dir_all(&p)?;
                fs::set_permissions(&p, fs::Permissions::from_mode(*mode))?;
            }
            Entry::File { mode, data, .. } => {
                fs::write(&p, data)?;
                fs::set_permissions(&p, fs::Permissions::from_mode(*mode))?;
            }
            Entry::Symlink { target, .. } => symlink(target, &p)?,
        }
    }
    Ok(())
}

/// Builds a fresh busybox rootfs at `dir`: for a test whose container writes to its rootfs.
pub fn build_busybox_rootfs(dir: &Path) {
    write_tree(&busybox_entries(), dir)
        .unwrap_or_else(|e| panic!("writing the busybox rootfs to {}: {e}", dir.display()));
}

/// The busybox rootfs shared by every test of this process, built on first use.
///
/// Treat it as read-only: run containers on it with `--read-only`, or build a private copy with
/// [`build_busybox_rootfs`] when the container writes.
pub fn busybox_rootfs() -> &'static Path {
    static ROOTFS: OnceLock<PathBuf> = OnceLock::new();
    ROOTFS.get_or_init(|| {
        let dir = crate::scratch::scratch_dir().join("rootfs");
        build_busybox_rootfs(&dir);
        dir
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_rootfs_has_a_working_shell_and_applets() {
        let root = busybox_rootfs();
        for a in [
            "sh", "echo", "cat", "sleep", "true", "false", "dd", "head", "ls", "id",
        ] {
            let link = root.join("bin").join(a);
            assert_eq!(
                fs::read_link(&link).unwrap_or_else(|e| panic!("{}: {e}", link.display())),
                PathBuf::from("busybox")
            );
        }
        for a in ["stty", "kill", "ps", "yes", "wc"] {
            assert!(root.join("bin").join(a).exists(), "applet {a}");
        }
        assert!(fs::metadata(root.join("bin/busybox"))
            .expect("busybox")
            .is_file());
        let tmp = fs::metadata(root.join("tmp")).expect("tmp");
        assert_eq!(tmp.permissions().mode() & 0o7777, 0o1777);
        let out = Command::new(root.join("bin/sh"))
            .args(["-c", "echo ok"])
            .output()
            .expect("run the rootfs shell on the host");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "ok\n");
    }

    #[test]
    fn entries_list_parents_before_children() {
        let entries = busybox_entries();
        let mut seen = std::collections::HashSet::new();
        for e in &entries {
            if let Some((parent, _)) = e.path().rsplit_once('/') {
                assert!(seen.contains(parent), "{} before its parent", e.path());
            }
            assert!(seen.insert(e.path().to_string()), "duplicate {}", e.path());
        }
    }
}
