//! Mounting the rootfs containerd hands over (`CreateTaskRequest.rootfs`) into `<bundle>/rootfs`.

use crate::error::{Result, ShimError};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use std::path::Path;
use tether_protocol::api::task::Mount;

/// Splits mount(8)-style options into flags and the data string the filesystem gets.
fn parse_options(options: &[String]) -> (MsFlags, String) {
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    for o in options {
        let (set, clear) = match o.as_str() {
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
            "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
            "bind" => (MsFlags::MS_BIND, MsFlags::empty()),
            "rbind" => (MsFlags::MS_BIND | MsFlags::MS_REC, MsFlags::empty()),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
            "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
            "dev" => (MsFlags::empty(), MsFlags::MS_NODEV),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
            "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "remount" => (MsFlags::MS_REMOUNT, MsFlags::empty()),
            "defaults" | "async" => (MsFlags::empty(), MsFlags::empty()),
            _ => {
                data.push(o.as_str());
                continue;
            }
        };
        flags.insert(set);
        flags.remove(clear);
    }
    (flags, data.join(","))
}

/// Mounts `mounts` in order onto `target`; on failure what was mounted is unmounted.
pub fn mount_rootfs(mounts: &[Mount], target: &Path) -> Result<()> {
    for (i, m) in mounts.iter().enumerate() {
        let (flags, data) = parse_options(&m.options);
        let fstype = (!m.type_.is_empty() && m.type_ != "bind").then_some(m.type_.as_str());
        let data = (!data.is_empty()).then_some(data.as_str());
        let r = mount(Some(m.source.as_str()), target, fstype, flags, data);
        if let Err(e) = r {
            for _ in 0..i {
                let _ = umount2(target, MntFlags::MNT_DETACH);
            }
            return Err(ShimError::Io {
                context: format!(
                    "mount {} ({}) on {} with {:?}",
                    m.source,
                    m.type_,
                    target.display(),
                    m.options
                ),
                source: e.into(),
            });
        }
        // A read-only bind needs a remount to take effect.
        if flags.contains(MsFlags::MS_BIND | MsFlags::MS_RDONLY) {
            let _ = mount(
                None::<&str>,
                target,
                None::<&str>,
                flags | MsFlags::MS_REMOUNT,
                None::<&str>,
            );
        }
    }
    Ok(())
}

/// Unmounts everything stacked on `target`; nothing mounted is fine.
pub fn unmount_all(target: &Path) -> Result<()> {
    for _ in 0..64 {
        match umount2(target, MntFlags::empty()) {
            Ok(()) => continue,
            Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => return Ok(()),
            Err(nix::Error::EBUSY) => {
                // Still in use (a process in it is exiting): detach it.
                let _ = umount2(target, MntFlags::MNT_DETACH);
            }
            Err(e) => {
                return Err(ShimError::Io {
                    context: format!("unmount {}", target.display()),
                    source: e.into(),
                })
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_split_into_flags_and_data() {
        let opts: Vec<String> = ["rbind", "ro", "index=off", "lowerdir=/a:/b"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let (flags, data) = parse_options(&opts);
        assert!(flags.contains(MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_RDONLY));
        assert_eq!(data, "index=off,lowerdir=/a:/b");
    }
}
