//! `Stats`: the container's cgroup metrics as containerd's `io.containerd.cgroups.v1.Metrics`
//! (or `v2.Metrics` when the process is on the unified hierarchy only), read straight from the
//! cgroup files with the figures containerd's cgroups library puts in each field.
//!
//! A file that is missing or unreadable leaves its figure at zero, and a group (memory, CPU,
//! pids, ...) none of whose files could be read is absent: a cgroup being torn down, or a
//! controller this kernel lacks, costs figures, never the answer. Only a process without a
//! cgroup (it has exited) is an error.

mod v1;
mod v2;

pub use v2::memory_events;

use crate::cgroup::{parse, Cgroup};
use crate::error::{Result, ShimError};
use std::collections::HashMap;
use std::path::Path;
use tether_protocol::api::{pack_any, Any};

/// The metrics of `cgroup` (where `pid` is), packed for `StatsResponse`.
pub fn collect(pid: u32, cgroup: &Cgroup) -> Result<Any> {
    let packed = match cgroup {
        Cgroup::V1(dirs) => {
            let partitions = read(Path::new("/proc/partitions")).unwrap_or_default();
            pack_any(&v1::metrics(dirs, &partitions, clock_ticks()))
        }
        Cgroup::V2(dir) => pack_any(&v2::metrics(dir)),
    };
    packed.map_err(|e| ShimError::InvalidArgument(format!("encode metrics of pid {pid}: {e}")))
}

/// USER_HZ, the unit of `cpuacct.stat`.
fn clock_ticks() -> u64 {
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|&t| t > 0).unwrap_or(100)
}

/// A file's text, or None if it cannot be read (absent, removed, not UTF-8, ...).
fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// The files of one cgroup directory, remembering whether any could be read at all.
struct Dir<'a> {
    dir: &'a Path,
    found: bool,
}

impl<'a> Dir<'a> {
    fn new(dir: &'a Path) -> Self {
        Dir { dir, found: false }
    }

    fn text(&mut self, name: &str) -> Option<String> {
        let text = read(&self.dir.join(name));
        self.found |= text.is_some();
        text
    }

    /// A single-value file; `max` reads as `max`.
    fn value(&mut self, name: &str, max: u64) -> u64 {
        self.text(name)
            .and_then(|t| parse::single(&t, max))
            .unwrap_or(0)
    }

    /// A flat-keyed file, as owned keys (empty when unreadable).
    fn keyed(&mut self, name: &str) -> HashMap<String, u64> {
        let text = self.text(name).unwrap_or_default();
        parse::flat_keyed(&text)
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect()
    }
}

fn get(map: &HashMap<String, u64>, key: &str) -> u64 {
    map.get(key).copied().unwrap_or(0)
}

#[cfg(test)]
pub(crate) fn fixture(rel: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/cgroup")
        .join(rel)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The metrics of the cgroup that holds `pid`, located as `Stats` first locates it.
    fn collect_of(pid: u32) -> Result<Any> {
        collect(pid, &crate::cgroup::locate(pid)?)
    }

    /// The live path: this test process's own cgroup packs into containerd's type URL.
    #[test]
    fn collects_our_own_cgroup() {
        let any = collect_of(std::process::id()).expect("our cgroup");
        assert!(
            any.type_url == "io.containerd.cgroups.v1.Metrics"
                || any.type_url == "io.containerd.cgroups.v2.Metrics",
            "{}",
            any.type_url
        );
        assert!(!any.value.is_empty(), "some figure is read");
        let gone = collect_of(u32::MAX).expect_err("no such process");
        assert!(matches!(gone, ShimError::NotFound(_)), "{gone}");
    }
}
