//! Where a process's cgroups are on disk.
//!
//! `/proc/PID/cgroup` names the process's cgroup in each hierarchy (`ID:controllers:/path`);
//! `/proc/self/mountinfo` says where each hierarchy is mounted (and from which root). A process
//! with a controller on a v1 hierarchy is read the v1 way, as containerd does on hybrid hosts;
//! one with only the unified line (`0::/path`) the v2 way. Without a matching mount the standard
//! layout is assumed (`/sys/fs/cgroup/<controller>`, `/sys/fs/cgroup`).

pub mod join;
pub mod parse;

use crate::error::{Result, ShimError};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const STANDARD_ROOT: &str = "/sys/fs/cgroup";

/// A process's cgroup directories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cgroup {
    /// cgroup v1: one directory per controller (`memory`, `cpuacct`, ...).
    V1(V1Dirs),
    /// cgroup v2: the one unified directory.
    V2(PathBuf),
}

impl Cgroup {
    /// Whether its directory (one of them, on v1) is still there.
    pub fn exists(&self) -> bool {
        match self {
            Cgroup::V1(dirs) => dirs.any_exists(),
            Cgroup::V2(dir) => dir.is_dir(),
        }
    }
}

/// The directory of each v1 controller the process is in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct V1Dirs(BTreeMap<String, PathBuf>);

impl V1Dirs {
    /// The directory of `controller`, if the process has it.
    pub fn get(&self, controller: &str) -> Option<&Path> {
        self.0.get(controller).map(PathBuf::as_path)
    }

    /// Every controller in a directory of its own under `root` (`root/memory`, `root/pids`, ...):
    /// the standard layout, and how fixture trees are laid out.
    #[cfg(test)]
    pub fn under(root: &Path) -> Self {
        let names = ["memory", "cpu", "cpuacct", "pids", "blkio"];
        V1Dirs(
            names
                .iter()
                .map(|c| (c.to_string(), root.join(c)))
                .collect(),
        )
    }

    fn any_exists(&self) -> bool {
        self.0.values().any(|d| d.is_dir())
    }
}

/// The cgroup of `pid`. NotFound when the process (or its cgroup) is gone.
pub fn locate(pid: u32) -> Result<Cgroup> {
    let gone = |why: String| ShimError::NotFound(format!("cgroup of pid {pid}: {why}"));
    let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).map_err(|e| {
        gone(format!(
            "read /proc/{pid}/cgroup: {e} (has the process exited?)"
        ))
    })?;
    // Unreadable mountinfo is not fatal: the standard layout is the fallback.
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let cgroup = resolve(&own, &mountinfo)
        .ok_or_else(|| gone("no cgroup in /proc/PID/cgroup".to_string()))?;
    if !cgroup.exists() {
        return Err(gone(format!(
            "{cgroup:?} does not exist (has it been removed?)"
        )));
    }
    Ok(cgroup)
}

/// A process's cgroup from the text of its `/proc/PID/cgroup` and of `/proc/self/mountinfo`.
pub fn resolve(proc_cgroup: &str, mountinfo: &str) -> Option<Cgroup> {
    let mounts = parse_mountinfo(mountinfo);
    let mut v1 = BTreeMap::new();
    let mut unified = None;
    for line in proc_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_id), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if !path.starts_with('/') {
            continue;
        }
        if ctrls.is_empty() {
            unified = Some(path);
            continue;
        }
        // Named hierarchies (`name=systemd`) carry no controller.
        for ctrl in ctrls
            .split(',')
            .filter(|c| !c.is_empty() && !c.contains('='))
        {
            let dir = mounts
                .iter()
                .filter(|m| m.controllers.iter().any(|c| c == ctrl))
                .find_map(|m| m.dir_of(path))
                .unwrap_or_else(|| join(&Path::new(STANDARD_ROOT).join(ctrl), path));
            v1.insert(ctrl.to_string(), dir);
        }
    }
    if !v1.is_empty() {
        return Some(Cgroup::V1(V1Dirs(v1)));
    }
    let path = unified?;
    let dir = mounts
        .iter()
        .filter(|m| m.v2)
        .find_map(|m| m.dir_of(path))
        .unwrap_or_else(|| join(Path::new(STANDARD_ROOT), path));
    Some(Cgroup::V2(dir))
}

/// A cgroup filesystem mount.
#[derive(Debug, PartialEq, Eq)]
struct Mount {
    /// The cgroup that is the mount's root (`/` unless it is a bind mount of a sub-tree).
    root: String,
    point: PathBuf,
    v2: bool,
    controllers: Vec<String>,
}

impl Mount {
    /// The directory of the cgroup `path`, if it lies under this mount's root.
    fn dir_of(&self, path: &str) -> Option<PathBuf> {
        let rest = if self.root == "/" {
            path
        } else {
            let rest = path.strip_prefix(self.root.as_str())?;
            if !rest.is_empty() && !rest.starts_with('/') {
                return None;
            }
            rest
        };
        Some(join(&self.point, rest))
    }
}

fn join(base: &Path, path: &str) -> PathBuf {
    base.join(path.trim_start_matches('/'))
}

/// The cgroup mounts of a mountinfo text:
/// `ID PARENT MAJ:MIN ROOT POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER_OPTIONS`.
fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let left: Vec<&str> = left.split(' ').collect();
            let right: Vec<&str> = right.split(' ').collect();
            let (root, point) = (*left.get(3)?, *left.get(4)?);
            let fstype = *right.first()?;
            let v2 = match fstype {
                "cgroup2" => true,
                "cgroup" => false,
                _ => return None,
            };
            let controllers = if v2 {
                Vec::new()
            } else {
                right
                    .get(2)?
                    .split(',')
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            };
            Some(Mount {
                root: unescape(root),
                point: PathBuf::from(unescape(point)),
                v2,
                controllers,
            })
        })
        .collect()
}

/// Undoes mountinfo's octal escapes (`\040` for a space, `\134` for a backslash, ...).
fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            let d = std::str::from_utf8(d).ok()?;
            u8::from_str_radix(d, 8).ok()
        });
        match (bytes[i], octal) {
            (b'\\', Some(b)) => {
                out.push(b);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/cgroup/proc")
            .join(name);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn v1(dirs: &[(&str, &str)]) -> Cgroup {
        Cgroup::V1(V1Dirs(
            dirs.iter()
                .map(|(c, d)| (c.to_string(), PathBuf::from(d)))
                .collect(),
        ))
    }

    /// This host: every controller on its own v1 hierarchy, an empty unified one beside them.
    #[test]
    fn hybrid_host_reads_each_controller_from_its_v1_mount() {
        let got = resolve(&fixture("hybrid.cgroup"), &fixture("hybrid.mountinfo"));
        let expected = v1(&[
            ("blkio", "/sys/fs/cgroup/blkio/default/c1"),
            ("cpu", "/sys/fs/cgroup/cpu/default/c1"),
            ("cpuacct", "/sys/fs/cgroup/cpuacct/default/c1"),
            ("cpuset", "/sys/fs/cgroup/cpuset/default/c1"),
            ("devices", "/sys/fs/cgroup/devices/default/c1"),
            ("freezer", "/sys/fs/cgroup/freezer/default/c1"),
            ("memory", "/sys/fs/cgroup/memory/process_api/x/default/c1"),
            ("pids", "/sys/fs/cgroup/pids/default/c1"),
        ]);
        assert_eq!(got, Some(expected));
    }

    /// Co-mounted controllers (`cpu,cpuacct`) share one directory; a mount point with a space.
    #[test]
    fn co_mounted_controllers_and_escaped_mount_points() {
        let own = "4:cpu,cpuacct:/k8s/pod1\n3:memory:/k8s/pod1\n0::/\n";
        let mountinfo = "\
30 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
31 25 0:27 / /cg\\040mem rw shared:9 - cgroup cgroup rw,memory
";
        assert_eq!(
            resolve(own, mountinfo),
            Some(v1(&[
                ("cpu", "/sys/fs/cgroup/cpu,cpuacct/k8s/pod1"),
                ("cpuacct", "/sys/fs/cgroup/cpu,cpuacct/k8s/pod1"),
                ("memory", "/cg mem/k8s/pod1"),
            ]))
        );
    }

    /// A pure v2 host: the unified hierarchy at /sys/fs/cgroup.
    #[test]
    fn unified_host_reads_the_v2_directory() {
        assert_eq!(
            resolve(&fixture("v2.cgroup"), &fixture("v2.mountinfo")),
            Some(Cgroup::V2(PathBuf::from(
                "/sys/fs/cgroup/system.slice/containerd.service/default/c1"
            )))
        );
    }

    /// A mount of a sub-tree (root `/kubepods`) serves only the cgroups under it.
    #[test]
    fn mount_root_is_stripped_from_the_path() {
        let mountinfo = "\
40 30 0:40 /kubepods /mnt/pods rw - cgroup2 cgroup2 rw
41 30 0:40 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw
";
        assert_eq!(
            resolve("0::/kubepods/pod1/c\n", mountinfo),
            Some(Cgroup::V2(PathBuf::from("/mnt/pods/pod1/c")))
        );
        assert_eq!(
            resolve("0::/kubepodsX/c\n", mountinfo),
            Some(Cgroup::V2(PathBuf::from("/sys/fs/cgroup/kubepodsX/c")))
        );
    }

    /// Without mountinfo the standard layout is assumed; garbage lines are skipped.
    #[test]
    fn standard_layout_without_mountinfo_and_garbage_skipped() {
        assert_eq!(
            resolve(
                "garbage\n9:pids:/a\n2:name=systemd:/a\n",
                "not a mountinfo\n"
            ),
            Some(v1(&[("pids", "/sys/fs/cgroup/pids/a")]))
        );
        assert_eq!(
            resolve("0::/a/b\n", ""),
            Some(Cgroup::V2(PathBuf::from("/sys/fs/cgroup/a/b")))
        );
        assert_eq!(resolve("", ""), None);
        assert_eq!(resolve("1:name=systemd:/x\nnonsense", ""), None);
    }

    #[test]
    fn a_process_that_does_not_exist_is_not_found() {
        // Pid numbers stop well below u32::MAX (pid_max <= 2^22).
        let err = locate(u32::MAX).expect_err("no such process");
        assert!(matches!(err, ShimError::NotFound(_)), "{err}");
    }

    #[test]
    fn our_own_cgroup_is_found() {
        let own = locate(std::process::id()).expect("this test process has a cgroup");
        match own {
            Cgroup::V1(dirs) => assert!(dirs.any_exists(), "{dirs:?}"),
            Cgroup::V2(dir) => assert!(dir.is_dir(), "{}", dir.display()),
        }
    }
}
