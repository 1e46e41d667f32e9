//! The shim's `oom_score_adj`: containerd's + 1 (at most 1000), as containerd's own shim sets
//! it, so that under memory pressure the kernel takes a shim before containerd and never
//! containerd first. Set by `start` (whose parent is containerd) on the shim it launched.

use crate::error::{Result, ShimError};
use crate::pid::Pid;

/// The kernel's highest `oom_score_adj`.
pub const OOM_SCORE_ADJ_MAX: i32 = 1000;

/// The score a shim gets when its launcher has `parent`.
pub fn shim_score(parent: i32) -> i32 {
    parent.saturating_add(1).min(OOM_SCORE_ADJ_MAX)
}

/// Sets `shim`'s score from our parent's (containerd's, or the manager's).
pub fn adjust(shim: Pid) -> Result<()> {
    let parent = std::os::unix::process::parent_id();
    let path = format!("/proc/{parent}/oom_score_adj");
    let text = std::fs::read_to_string(&path).map_err(ShimError::io(format!("read {path}")))?;
    let score: i32 = text
        .trim()
        .parse()
        .map_err(|e| ShimError::InvalidArgument(format!("{path}: {text:?}: {e}")))?;
    let target = format!("/proc/{}/oom_score_adj", shim.as_u32());
    std::fs::write(&target, shim_score(score).to_string())
        .map_err(ShimError::io(format!("write {target}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_above_the_parent_and_capped() {
        assert_eq!(shim_score(0), 1);
        assert_eq!(shim_score(-999), -998);
        assert_eq!(shim_score(500), 501);
        assert_eq!(shim_score(999), 1000);
        assert_eq!(shim_score(1000), 1000);
    }
}
