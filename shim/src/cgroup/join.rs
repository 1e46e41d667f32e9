//! Moving the shim into the cgroup containerd names in the `ShimCgroup` option (the pod's, for
//! the CRI plugin), as containerd's own shim does after it starts.

use crate::error::{Result, ShimError};
use std::path::{Component, Path, PathBuf};

/// The cgroup hierarchies mounted here: the v1 ones if there are any (hybrid hosts are handled
/// the v1 way, as containerd does), else the unified one.
fn hierarchies(mountinfo: &str) -> Vec<PathBuf> {
    let mut v1 = Vec::new();
    let mut v2 = Vec::new();
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let Some(mount_point) = left.split(' ').nth(4) else {
            continue;
        };
        let mount_point = PathBuf::from(mount_point.replace("\\040", " "));
        match right.split(' ').next() {
            Some("cgroup") => v1.push(mount_point),
            Some("cgroup2") => v2.push(mount_point),
            _ => {}
        }
    }
    if v1.is_empty() {
        v2
    } else {
        v1
    }
}

/// The cgroup path as a relative path under a hierarchy; `..` and the like are refused.
fn relative(path: &str) -> Result<PathBuf> {
    let rel: PathBuf = Path::new(path)
        .components()
        .filter(|c| !matches!(c, Component::RootDir | Component::CurDir))
        .collect();
    let clean = rel.components().all(|c| matches!(c, Component::Normal(_)));
    if !clean || rel.as_os_str().is_empty() {
        return Err(ShimError::InvalidArgument(format!(
            "shim cgroup {path:?} is not a cgroup path"
        )));
    }
    Ok(rel)
}

/// Moves `pid` into cgroup `path` in every hierarchy that has it; the cgroup must exist in one
/// at least (containerd creates it). Returns the `cgroup.procs` files written.
pub fn join(path: &str, pid: u32) -> Result<Vec<PathBuf>> {
    let rel = relative(path)?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(ShimError::io("read /proc/self/mountinfo"))?;
    let mut joined = Vec::new();
    for root in hierarchies(&mountinfo) {
        let procs = root.join(&rel).join("cgroup.procs");
        if !procs.exists() {
            continue;
        }
        std::fs::write(&procs, pid.to_string()).map_err(ShimError::io(format!(
            "write pid {pid} to {}",
            procs.display()
        )))?;
        joined.push(procs);
    }
    if joined.is_empty() {
        return Err(ShimError::NotFound(format!(
            "shim cgroup {path:?} exists in no cgroup hierarchy"
        )));
    }
    Ok(joined)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_hierarchies_win_on_hybrid_hosts() {
        let hybrid = "\
30 24 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
33 30 0:29 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
34 30 0:30 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
";
        assert_eq!(
            hierarchies(hybrid),
            [
                PathBuf::from("/sys/fs/cgroup/memory"),
                PathBuf::from("/sys/fs/cgroup/cpu,cpuacct")
            ]
        );
        let unified = "31 24 0:27 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        assert_eq!(hierarchies(unified), [PathBuf::from("/sys/fs/cgroup")]);
        assert!(hierarchies("garbage\n\n - \n").is_empty());
    }

    #[test]
    fn cgroup_paths_cannot_climb_out() {
        assert_eq!(relative("/pod/x").unwrap(), PathBuf::from("pod/x"));
        assert_eq!(relative("pod").unwrap(), PathBuf::from("pod"));
        for bad in ["", "/", "/../etc", "a/../../b", ".."] {
            assert!(relative(bad).is_err(), "{bad:?}");
        }
    }
}
