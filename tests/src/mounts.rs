//! Mounts of this mount namespace (`/proc/self/mountinfo`): finding and removing the ones under
//! a directory.

use nix::mount::{umount2, MntFlags};
use std::fs;
use std::path::{Path, PathBuf};

/// One line of mountinfo, the fields we use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub mount_point: PathBuf,
    pub fs_type: String,
    pub source: String,
}

/// Every mount of this process's mount namespace, in mount order.
pub fn mounts() -> Vec<Mount> {
    fs::read_to_string("/proc/self/mountinfo")
        .map(|s| s.lines().filter_map(parse_mountinfo_line).collect())
        .unwrap_or_default()
}

/// Parses one mountinfo line:
/// `ID PARENT MAJ:MIN ROOT MOUNT_POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER_OPTIONS`.
pub fn parse_mountinfo_line(line: &str) -> Option<Mount> {
    let fields: Vec<&str> = line.split(' ').collect();
    let mount_point = unescape(fields.get(4)?);
    let sep = fields.iter().position(|f| *f == "-")?;
    Some(Mount {
        mount_point: PathBuf::from(mount_point),
        fs_type: unescape(fields.get(sep + 1)?),
        source: unescape(fields.get(sep + 2)?),
    })
}

/// Undoes the kernel's octal escapes (`\040` for a space, `\012`, `\134`, ...).
pub fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Mount points at or below `dir` (compared by path components, after resolving symlinks in
/// `dir` when it exists), in mount order.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let dir = fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    mounts()
        .into_iter()
        .map(|m| m.mount_point)
        .filter(|p| p.starts_with(&dir))
        .collect()
}

/// Unmounts (lazily, `MNT_DETACH`) everything at or below `dir`, deepest and latest first,
/// until nothing is left. Returns what was unmounted, or an error naming what would not go.
pub fn unmount_under(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut done = Vec::new();
    // Mounts can be stacked on one point; each pass removes the top ones.
    for _ in 0..16 {
        let mut left = mounts_under(dir);
        if left.is_empty() {
            return Ok(done);
        }
        // Latest first, then deepest first (stable sort keeps the reversed mount order).
        left.reverse();
        left.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        for p in left {
            match umount2(&p, MntFlags::MNT_DETACH) {
                Ok(()) => done.push(p),
                // Already gone with a parent, or raced with its owner: the next pass sees.
                Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
                Err(e) => return Err(format!("umount2({}, MNT_DETACH): {e}", p.display())),
            }
        }
    }
    let left = mounts_under(dir);
    if left.is_empty() {
        Ok(done)
    } else {
        Err(format!(
            "mounts that would not go under {}: {left:?}",
            dir.display()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_overlay_line_with_escapes() {
        let line = "36 35 0:31 / /run/tt\\0401/rootfs rw,relatime shared:1 - overlay overlay rw,lowerdir=/a";
        let m = parse_mountinfo_line(line).expect("parses");
        assert_eq!(m.mount_point, PathBuf::from("/run/tt 1/rootfs"));
        assert_eq!(m.fs_type, "overlay");
        assert_eq!(m.source, "overlay");
    }

    #[test]
    fn no_optional_fields() {
        let m = parse_mountinfo_line("22 1 8:1 / / rw - ext4 /dev/sda1 rw").expect("parses");
        assert_eq!(m.mount_point, PathBuf::from("/"));
        assert_eq!(m.fs_type, "ext4");
    }

    #[test]
    fn unescape_leaves_plain_backslashes() {
        assert_eq!(unescape("a\\134b\\x"), "a\\b\\x");
    }

    #[test]
    fn unmounts_stacked_and_nested() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sub = dir.path().join("sub");
        fs::create_dir(&sub).expect("mkdir");
        let tmpfs = |p: &Path| {
            nix::mount::mount(
                Some("tmpfs"),
                p,
                Some("tmpfs"),
                nix::mount::MsFlags::empty(),
                Some("size=64k"),
            )
            .expect("mount tmpfs (tests run as root)")
        };
        tmpfs(dir.path());
        tmpfs(dir.path());
        fs::create_dir(&sub).expect("mkdir in tmpfs");
        tmpfs(&sub);
        assert_eq!(mounts_under(dir.path()).len(), 3);
        let done = unmount_under(dir.path()).expect("unmount");
        assert_eq!(done.len(), 3);
        assert!(mounts_under(dir.path()).is_empty());
    }
}
