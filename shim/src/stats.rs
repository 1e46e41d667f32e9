//! `Stats`: the container's cgroup metrics as containerd's `io.containerd.cgroups.v1.Metrics`
//! (or `v2.Metrics` when the process is on the unified hierarchy only), read straight from the
//! cgroup files with the figures containerd's cgroups library puts in each field.
//!
//! A file that is missing or unreadable leaves its figure at zero, and a group (memory, CPU,
//! pids, ...) none of whose files could be read is absent: a cgroup being torn down, or a
//! controller this kernel lacks, costs figures, never the answer. Only a process without a
//! cgroup (it has exited) is an error.

use crate::cgroup::{self, parse, Cgroup, V1Dirs};
use crate::error::{Result, ShimError};
use protobuf::MessageField;
use std::collections::HashMap;
use std::path::Path;
use tether_protocol::api::{cgroups_v1 as v1, cgroups_v2 as v2, pack_any, Any};

/// The metrics of the cgroup that holds `pid`, packed for `StatsResponse`.
pub fn collect(pid: u32) -> Result<Any> {
    let packed = match cgroup::locate(pid)? {
        Cgroup::V1(dirs) => {
            let partitions = read(Path::new("/proc/partitions")).unwrap_or_default();
            pack_any(&v1_metrics(&dirs, &partitions, clock_ticks()))
        }
        Cgroup::V2(dir) => pack_any(&v2_metrics(&dir)),
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

// ---- cgroup v1 ----

/// v1 says 0 for a `max` (unlimited) `pids.max`, as containerd's v1 metrics do.
const V1_MAX: u64 = 0;

/// The v1 metrics of the controllers in `dirs`; `partitions` is `/proc/partitions` (device names
/// for blkio) and `clock_ticks` is USER_HZ.
pub fn v1_metrics(dirs: &V1Dirs, partitions: &str, clock_ticks: u64) -> v1::Metrics {
    let mut m = v1::Metrics::new();
    if let Some(dir) = dirs.get("memory") {
        let (memory, oom) = v1_memory(dir);
        m.memory = MessageField::from_option(memory);
        m.memory_oom_control = MessageField::from_option(oom);
    }
    m.cpu = MessageField::from_option(v1_cpu(dirs.get("cpuacct"), dirs.get("cpu"), clock_ticks));
    if let Some(dir) = dirs.get("pids") {
        let mut d = Dir::new(dir);
        let pids = v1::PidsStat {
            current: d.value("pids.current", V1_MAX),
            limit: d.value("pids.max", V1_MAX),
            ..Default::default()
        };
        m.pids = MessageField::from_option(d.found.then_some(pids));
    }
    if let Some(dir) = dirs.get("blkio") {
        m.blkio = MessageField::from_option(v1_blkio(dir, &parse::partitions(partitions)));
    }
    m
}

fn v1_memory(dir: &Path) -> (Option<v1::MemoryStat>, Option<v1::MemoryOomControl>) {
    let mut d = Dir::new(dir);
    let s = d.keyed("memory.stat");
    let mut entry = |prefix: &str| {
        MessageField::some(v1::MemoryEntry {
            limit: d.value(&format!("{prefix}.limit_in_bytes"), V1_MAX),
            usage: d.value(&format!("{prefix}.usage_in_bytes"), V1_MAX),
            max: d.value(&format!("{prefix}.max_usage_in_bytes"), V1_MAX),
            failcnt: d.value(&format!("{prefix}.failcnt"), V1_MAX),
            ..Default::default()
        })
    };
    let (usage, swap, kernel, kernel_tcp) = (
        entry("memory"),
        entry("memory.memsw"),
        entry("memory.kmem"),
        entry("memory.kmem.tcp"),
    );
    let stat = v1::MemoryStat {
        cache: get(&s, "cache"),
        rss: get(&s, "rss"),
        rss_huge: get(&s, "rss_huge"),
        mapped_file: get(&s, "mapped_file"),
        dirty: get(&s, "dirty"),
        writeback: get(&s, "writeback"),
        pg_pg_in: get(&s, "pgpgin"),
        pg_pg_out: get(&s, "pgpgout"),
        pg_fault: get(&s, "pgfault"),
        pg_maj_fault: get(&s, "pgmajfault"),
        inactive_anon: get(&s, "inactive_anon"),
        active_anon: get(&s, "active_anon"),
        inactive_file: get(&s, "inactive_file"),
        active_file: get(&s, "active_file"),
        unevictable: get(&s, "unevictable"),
        hierarchical_memory_limit: get(&s, "hierarchical_memory_limit"),
        hierarchical_swap_limit: get(&s, "hierarchical_memsw_limit"),
        total_cache: get(&s, "total_cache"),
        total_rss: get(&s, "total_rss"),
        total_rss_huge: get(&s, "total_rss_huge"),
        total_mapped_file: get(&s, "total_mapped_file"),
        total_dirty: get(&s, "total_dirty"),
        total_writeback: get(&s, "total_writeback"),
        total_pg_pg_in: get(&s, "total_pgpgin"),
        total_pg_pg_out: get(&s, "total_pgpgout"),
        total_pg_fault: get(&s, "total_pgfault"),
        total_pg_maj_fault: get(&s, "total_pgmajfault"),
        total_inactive_anon: get(&s, "total_inactive_anon"),
        total_active_anon: get(&s, "total_active_anon"),
        total_inactive_file: get(&s, "total_inactive_file"),
        total_active_file: get(&s, "total_active_file"),
        total_unevictable: get(&s, "total_unevictable"),
        usage,
        swap,
        kernel,
        kernel_tcp,
        ..Default::default()
    };
    let memory = d.found.then_some(stat);
    let mut d = Dir::new(dir);
    let o = d.keyed("memory.oom_control");
    let oom = v1::MemoryOomControl {
        oom_kill_disable: get(&o, "oom_kill_disable"),
        under_oom: get(&o, "under_oom"),
        oom_kill: get(&o, "oom_kill"),
        ..Default::default()
    };
    (memory, d.found.then_some(oom))
}

/// CPU usage from `cpuacct`, throttling from `cpu` (separate hierarchies on some hosts, one
/// co-mounted `cpu,cpuacct` on others). Both parts are present whenever the group is, as in
/// containerd's metrics.
fn v1_cpu(cpuacct: Option<&Path>, cpu: Option<&Path>, clock_ticks: u64) -> Option<v1::CPUStat> {
    let mut found = false;
    let mut usage = v1::CPUUsage::new();
    if let Some(dir) = cpuacct {
        let mut d = Dir::new(dir);
        usage.total = d.value("cpuacct.usage", V1_MAX);
        // cpuacct.stat counts USER_HZ ticks; the metrics are nanoseconds.
        let ticks = d.keyed("cpuacct.stat");
        let ns = |t: u64| {
            let ns = u128::from(t) * 1_000_000_000 / u128::from(clock_ticks.max(1));
            u64::try_from(ns).unwrap_or(u64::MAX)
        };
        usage.user = ns(get(&ticks, "user"));
        usage.kernel = ns(get(&ticks, "system"));
        usage.per_cpu = parse::numbers(&d.text("cpuacct.usage_percpu").unwrap_or_default());
        found |= d.found;
    }
    let mut throttling = v1::Throttle::new();
    if let Some(dir) = cpu {
        let mut d = Dir::new(dir);
        let s = d.keyed("cpu.stat");
        throttling.periods = get(&s, "nr_periods");
        throttling.throttled_periods = get(&s, "nr_throttled");
        throttling.throttled_time = get(&s, "throttled_time");
        found |= d.found;
    }
    found.then(|| v1::CPUStat {
        usage: MessageField::some(usage),
        throttling: MessageField::some(throttling),
        ..Default::default()
    })
}

/// The CFQ `*_recursive` files when the kernel has them; otherwise (or when they hold nothing)
/// the blk-throttle counters, which containerd reports in the same two fields.
fn v1_blkio(dir: &Path, devices: &HashMap<(u64, u64), String>) -> Option<v1::BlkIOStat> {
    let mut d = Dir::new(dir);
    let mut read = |name: &str| -> Vec<v1::BlkIOEntry> {
        let text = d.text(&format!("blkio.{name}")).unwrap_or_default();
        parse::blkio(&text)
            .into_iter()
            .map(|l| v1::BlkIOEntry {
                device: devices
                    .get(&(l.major, l.minor))
                    .cloned()
                    .unwrap_or_default(),
                major: l.major,
                minor: l.minor,
                op: l.op,
                value: l.value,
                ..Default::default()
            })
            .collect()
    };
    let mut s = v1::BlkIOStat::new();
    if dir.join("blkio.io_serviced_recursive").exists() {
        s.sectors_recursive = read("sectors_recursive");
        s.io_service_bytes_recursive = read("io_service_bytes_recursive");
        s.io_serviced_recursive = read("io_serviced_recursive");
        s.io_queued_recursive = read("io_queued_recursive");
        s.io_service_time_recursive = read("io_service_time_recursive");
        s.io_wait_time_recursive = read("io_wait_time_recursive");
        s.io_merged_recursive = read("io_merged_recursive");
        s.io_time_recursive = read("time_recursive");
    }
    let cfq = [
        &s.sectors_recursive,
        &s.io_service_bytes_recursive,
        &s.io_serviced_recursive,
        &s.io_queued_recursive,
        &s.io_service_time_recursive,
        &s.io_wait_time_recursive,
        &s.io_merged_recursive,
        &s.io_time_recursive,
    ];
    if cfq.iter().all(|v| v.is_empty()) {
        s.io_serviced_recursive = read("throttle.io_serviced");
        s.io_service_bytes_recursive = read("throttle.io_service_bytes");
    }
    d.found.then_some(s)
}

// ---- cgroup v2 ----

/// The v2 metrics of the cgroup directory `dir`. `max` (no limit) reads as u64::MAX, as in
/// containerd's v2 metrics.
pub fn v2_metrics(dir: &Path) -> v2::Metrics {
    let mut m = v2::Metrics::new();

    let mut d = Dir::new(dir);
    let pids = v2::PidsStat {
        current: d.value("pids.current", u64::MAX),
        limit: d.value("pids.max", u64::MAX),
        ..Default::default()
    };
    m.pids = MessageField::from_option(d.found.then_some(pids));

    let mut d = Dir::new(dir);
    let s = d.keyed("cpu.stat");
    let cpu = v2::CPUStat {
        usage_usec: get(&s, "usage_usec"),
        user_usec: get(&s, "user_usec"),
        system_usec: get(&s, "system_usec"),
        nr_periods: get(&s, "nr_periods"),
        nr_throttled: get(&s, "nr_throttled"),
        throttled_usec: get(&s, "throttled_usec"),
        nr_bursts: get(&s, "nr_bursts"),
        burst_usec: get(&s, "burst_usec"),
        psi: MessageField::from_option(psi(&mut d, "cpu.pressure")),
        ..Default::default()
    };
    m.cpu = MessageField::from_option(d.found.then_some(cpu));

    m.memory = MessageField::from_option(v2_memory(dir));
    m.memory_events = MessageField::from_option(memory_events(dir));

    let mut d = Dir::new(dir);
    let usage = d
        .text("io.stat")
        .map(|t| parse::io_stat(&t))
        .unwrap_or_default()
        .into_iter()
        .map(|l| v2::IOEntry {
            major: l.major,
            minor: l.minor,
            rbytes: l.rbytes,
            wbytes: l.wbytes,
            rios: l.rios,
            wios: l.wios,
            ..Default::default()
        })
        .collect();
    let io = v2::IOStat {
        usage,
        psi: MessageField::from_option(psi(&mut d, "io.pressure")),
        ..Default::default()
    };
    m.io = MessageField::from_option(d.found.then_some(io));
    m
}

fn v2_memory(dir: &Path) -> Option<v2::MemoryStat> {
    let mut d = Dir::new(dir);
    let s = d.keyed("memory.stat");
    let stat = v2::MemoryStat {
        anon: get(&s, "anon"),
        file: get(&s, "file"),
        kernel_stack: get(&s, "kernel_stack"),
        slab: get(&s, "slab"),
        sock: get(&s, "sock"),
        shmem: get(&s, "shmem"),
        file_mapped: get(&s, "file_mapped"),
        file_dirty: get(&s, "file_dirty"),
        file_writeback: get(&s, "file_writeback"),
        anon_thp: get(&s, "anon_thp"),
        inactive_anon: get(&s, "inactive_anon"),
        active_anon: get(&s, "active_anon"),
        inactive_file: get(&s, "inactive_file"),
        active_file: get(&s, "active_file"),
        unevictable: get(&s, "unevictable"),
        slab_reclaimable: get(&s, "slab_reclaimable"),
        slab_unreclaimable: get(&s, "slab_unreclaimable"),
        pgfault: get(&s, "pgfault"),
        pgmajfault: get(&s, "pgmajfault"),
        workingset_refault: get(&s, "workingset_refault"),
        workingset_activate: get(&s, "workingset_activate"),
        workingset_nodereclaim: get(&s, "workingset_nodereclaim"),
        pgrefill: get(&s, "pgrefill"),
        pgscan: get(&s, "pgscan"),
        pgsteal: get(&s, "pgsteal"),
        pgactivate: get(&s, "pgactivate"),
        pgdeactivate: get(&s, "pgdeactivate"),
        pglazyfree: get(&s, "pglazyfree"),
        pglazyfreed: get(&s, "pglazyfreed"),
        thp_fault_alloc: get(&s, "thp_fault_alloc"),
        thp_collapse_alloc: get(&s, "thp_collapse_alloc"),
        usage: d.value("memory.current", u64::MAX),
        usage_limit: d.value("memory.max", u64::MAX),
        max_usage: d.value("memory.peak", u64::MAX),
        swap_usage: d.value("memory.swap.current", u64::MAX),
        swap_limit: d.value("memory.swap.max", u64::MAX),
        swap_max_usage: d.value("memory.swap.peak", u64::MAX),
        psi: MessageField::from_option(psi(&mut d, "memory.pressure")),
        ..Default::default()
    };
    d.found.then_some(stat)
}

/// The counters of a v2 cgroup's `memory.events` (None if unreadable or empty). The OOM watcher
/// reads `oom_kill` through this too.
pub fn memory_events(dir: &Path) -> Option<v2::MemoryEvents> {
    let e = Dir::new(dir).keyed("memory.events");
    (!e.is_empty()).then(|| v2::MemoryEvents {
        low: get(&e, "low"),
        high: get(&e, "high"),
        max: get(&e, "max"),
        oom: get(&e, "oom"),
        oom_kill: get(&e, "oom_kill"),
        oom_group_kill: get(&e, "oom_group_kill"),
        ..Default::default()
    })
}

/// A pressure file as PSI stats (None if unreadable or with neither line).
fn psi(d: &mut Dir, name: &str) -> Option<v2::PSIStats> {
    let (some, full) = parse::pressure(&d.text(name)?);
    let data = |p: Option<parse::Pressure>| {
        MessageField::from_option(p.map(|p| v2::PSIData {
            avg10: p.avg10,
            avg60: p.avg60,
            avg300: p.avg300,
            total: p.total,
            ..Default::default()
        }))
    };
    (some.is_some() || full.is_some()).then(|| v2::PSIStats {
        some: data(some),
        full: data(full),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn fixture(rel: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/cgroup")
            .join(rel)
    }

    fn v1_fixture(name: &str) -> v1::Metrics {
        let root = fixture(&format!("v1/{name}"));
        let partitions = read(&root.join("partitions")).unwrap_or_default();
        v1_metrics(&V1Dirs::under(&root), &partitions, 100)
    }

    fn entry(limit: u64, usage: u64, max: u64, failcnt: u64) -> MessageField<v1::MemoryEntry> {
        MessageField::some(v1::MemoryEntry {
            limit,
            usage,
            max,
            failcnt,
            ..Default::default()
        })
    }

    fn blk(device: &str, major: u64, minor: u64, op: &str, value: u64) -> v1::BlkIOEntry {
        v1::BlkIOEntry {
            device: device.to_string(),
            major,
            minor,
            op: op.to_string(),
            value,
            ..Default::default()
        }
    }

    /// Files copied from this host's cgroup v1 hierarchies (tests/fixtures/cgroup/capture-v1.sh).
    #[test]
    fn v1_from_a_real_cgroup() {
        let m = v1_fixture("full");
        const UNLIMITED: u64 = 9223372036854771712;
        let memory = v1::MemoryStat {
            rss: 106496,
            pg_pg_in: 7586,
            pg_pg_out: 7560,
            pg_fault: 7918,
            inactive_anon: 102400,
            active_anon: 4096,
            hierarchical_memory_limit: 64 << 20,
            hierarchical_swap_limit: UNLIMITED,
            total_rss: 106496,
            total_pg_pg_in: 7586,
            total_pg_pg_out: 7560,
            total_pg_fault: 7918,
            total_inactive_anon: 102400,
            total_active_anon: 4096,
            usage: entry(64 << 20, 393216, 31100928, 0),
            swap: entry(UNLIMITED, 393216, 31100928, 0),
            kernel: entry(UNLIMITED, 77824, 376832, 0),
            kernel_tcp: entry(UNLIMITED, 0, 0, 0),
            ..Default::default()
        };
        assert_eq!(m.memory.as_ref(), Some(&memory));
        assert_eq!(
            m.memory_oom_control.as_ref(),
            Some(&v1::MemoryOomControl::new())
        );
        let cpu = v1::CPUStat {
            usage: MessageField::some(v1::CPUUsage {
                total: 258808404,
                // cpuacct.stat: user 23, system 2 ticks at USER_HZ 100.
                user: 230_000_000,
                kernel: 20_000_000,
                per_cpu: vec![60593798, 198214606],
                ..Default::default()
            }),
            throttling: MessageField::some(v1::Throttle {
                periods: 28,
                throttled_periods: 25,
                throttled_time: 1848338991,
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(m.cpu.as_ref(), Some(&cpu));
        assert_eq!(
            m.pids.as_ref(),
            Some(&v1::PidsStat {
                current: 1,
                limit: 50,
                ..Default::default()
            })
        );
        // No CFQ on this kernel: the blk-throttle counters, named from /proc/partitions.
        let ops = |read, write| {
            [
                ("Read", read),
                ("Write", write),
                ("Sync", read + write),
                ("Async", 0),
                ("Discard", 0),
                ("Total", read + write),
            ]
            .iter()
            .map(|(op, v)| blk("/dev/vda", 254, 0, op, *v))
            .collect::<Vec<_>>()
        };
        let blkio = v1::BlkIOStat {
            io_service_bytes_recursive: ops(2097152, 2097152),
            io_serviced_recursive: ops(32, 32),
            ..Default::default()
        };
        assert_eq!(m.blkio.as_ref(), Some(&blkio));
        assert!(m.hugetlb.is_empty() && m.rdma.is_none() && m.network.is_empty());
    }

    /// Missing files are zero figures; a controller with no file at all is absent.
    #[test]
    fn v1_with_missing_files() {
        let m = v1_fixture("missing");
        let memory = v1::MemoryStat {
            cache: 8192,
            rss: 4096,
            total_rss: 4096,
            usage: entry(0, 12288, 0, 0),
            swap: entry(0, 0, 0, 0),
            kernel: entry(0, 0, 0, 0),
            kernel_tcp: entry(0, 0, 0, 0),
            ..Default::default()
        };
        assert_eq!(m.memory.as_ref(), Some(&memory));
        assert!(m.memory_oom_control.is_none(), "no memory.oom_control");
        let usage = m.cpu.usage.as_ref().expect("cpuacct.usage read");
        assert_eq!((usage.total, usage.user, usage.kernel), (5000, 0, 0));
        assert!(usage.per_cpu.is_empty());
        assert_eq!(m.cpu.throttling.as_ref(), Some(&v1::Throttle::new()));
        assert!(m.pids.is_none(), "no pids directory");
        assert!(m.blkio.is_none(), "no blkio directory");

        let none = v1_fixture("does-not-exist");
        assert_eq!(none, v1::Metrics::new());
    }

    /// Malformed lines cost their own figure only; `max` is 0 on v1 as in containerd.
    #[test]
    fn v1_with_garbage() {
        let m = v1_fixture("garbage");
        let memory = m.memory.as_ref().expect("memory read");
        assert_eq!(memory.cache, 8192);
        assert_eq!((memory.rss, memory.rss_huge, memory.mapped_file), (0, 0, 0));
        assert_eq!(memory.dirty, 0, "negative reads as 0");
        assert_eq!(memory.pg_fault, 31);
        assert_eq!(memory.hierarchical_memory_limit, 9223372036854771712);
        assert_eq!(memory.usage.as_ref(), entry(0, 0, 65536, 3).as_ref());
        assert_eq!(
            m.memory_oom_control.as_ref(),
            Some(&v1::MemoryOomControl {
                oom_kill_disable: 1,
                oom_kill: 9,
                ..Default::default()
            })
        );
        let usage = m.cpu.usage.as_ref().expect("cpuacct read");
        assert_eq!(usage.total, 999);
        assert_eq!((usage.user, usage.kernel), (2_500_000_000, 0));
        assert!(usage.per_cpu.is_empty(), "one bad token spoils the line");
        let t = m.cpu.throttling.as_ref().expect("cpu.stat read");
        assert_eq!(
            (t.periods, t.throttled_periods, t.throttled_time),
            (10, 0, 5000)
        );
        assert_eq!(
            m.pids.as_ref(),
            Some(&v1::PidsStat {
                current: 0,
                limit: 0,
                ..Default::default()
            })
        );
        let blkio = m.blkio.as_ref().expect("blkio read");
        assert_eq!(
            blkio.io_service_bytes_recursive,
            vec![
                blk("/dev/vda", 254, 0, "Read", 100),
                blk("", 8, 0, "Read", 7)
            ]
        );
        assert_eq!(
            blkio.io_serviced_recursive,
            vec![blk("/dev/vda", 254, 0, "Read", 1)]
        );
    }

    fn psi(some: (f64, f64, f64, u64), full: (f64, f64, f64, u64)) -> MessageField<v2::PSIStats> {
        let data = |(avg10, avg60, avg300, total)| {
            MessageField::some(v2::PSIData {
                avg10,
                avg60,
                avg300,
                total,
                ..Default::default()
            })
        };
        MessageField::some(v2::PSIStats {
            some: data(some),
            full: data(full),
            ..Default::default()
        })
    }

    /// Files written from the kernel's cgroup-v2 documentation formats.
    #[test]
    fn v2_full() {
        let m = v2_metrics(&fixture("v2/full"));
        assert_eq!(
            m.pids.as_ref(),
            Some(&v2::PidsStat {
                current: 4,
                limit: u64::MAX,
                ..Default::default()
            })
        );
        let cpu = v2::CPUStat {
            usage_usec: 2500000,
            user_usec: 2000000,
            system_usec: 500000,
            nr_periods: 120,
            nr_throttled: 30,
            throttled_usec: 450000,
            nr_bursts: 2,
            burst_usec: 1500,
            psi: psi((1.0, 2.0, 3.0, 999), (0.0, 0.0, 0.0, 0)),
            ..Default::default()
        };
        assert_eq!(m.cpu.as_ref(), Some(&cpu));
        let memory = v2::MemoryStat {
            anon: 10485760,
            file: 20971520,
            kernel_stack: 327680,
            slab: 2359296,
            sock: 8192,
            shmem: 16384,
            file_mapped: 1048576,
            file_dirty: 65536,
            file_writeback: 32768,
            anon_thp: 2097152,
            inactive_anon: 4194304,
            active_anon: 6291456,
            inactive_file: 12582912,
            active_file: 8388608,
            unevictable: 40960,
            slab_reclaimable: 1572864,
            slab_unreclaimable: 786432,
            pgfault: 123456,
            pgmajfault: 789,
            // Split into _anon/_file by newer kernels; this message has only the old names.
            workingset_refault: 0,
            workingset_activate: 0,
            workingset_nodereclaim: 77,
            pgrefill: 1007,
            pgscan: 1001,
            pgsteal: 1002,
            pgactivate: 1008,
            pgdeactivate: 1009,
            pglazyfree: 1010,
            pglazyfreed: 1011,
            thp_fault_alloc: 12,
            thp_collapse_alloc: 13,
            usage: 35651584,
            usage_limit: 64 << 20,
            max_usage: 40 << 20,
            swap_usage: 0,
            swap_limit: u64::MAX,
            swap_max_usage: 4096,
            psi: psi((0.12, 0.34, 0.56, 123456), (0.01, 0.02, 0.03, 7890)),
            ..Default::default()
        };
        assert_eq!(m.memory.as_ref(), Some(&memory));
        assert_eq!(
            m.memory_events.as_ref(),
            Some(&v2::MemoryEvents {
                low: 0,
                high: 7,
                max: 12,
                oom: 3,
                oom_kill: 2,
                oom_group_kill: 1,
                ..Default::default()
            })
        );
        let io = |major, minor, rbytes, wbytes, rios, wios| v2::IOEntry {
            major,
            minor,
            rbytes,
            wbytes,
            rios,
            wios,
            ..Default::default()
        };
        let io_stat = v2::IOStat {
            usage: vec![
                io(8, 16, 1459200, 314773504, 192, 353),
                io(8, 0, 90430464, 299008000, 8950, 1252),
            ],
            psi: psi((0.0, 0.0, 0.0, 42), (0.0, 0.0, 0.0, 41)),
            ..Default::default()
        };
        assert_eq!(m.io.as_ref(), Some(&io_stat));
    }

    #[test]
    fn v2_with_missing_files() {
        let m = v2_metrics(&fixture("v2/missing"));
        let cpu = m.cpu.as_ref().expect("cpu.stat read");
        assert_eq!(
            (cpu.usage_usec, cpu.user_usec, cpu.system_usec),
            (100, 60, 40)
        );
        assert!(cpu.psi.is_none(), "no cpu.pressure");
        assert!(m.pids.is_none() && m.memory.is_none() && m.memory_events.is_none());
        assert!(m.io.is_none());
        assert_eq!(
            v2_metrics(&fixture("v2/does-not-exist")),
            v2::Metrics::new()
        );
    }

    #[test]
    fn v2_with_garbage() {
        let m = v2_metrics(&fixture("v2/garbage"));
        let mem = m.memory.as_ref().expect("memory read");
        assert_eq!(
            (mem.anon, mem.file, mem.kernel_stack, mem.slab),
            (4096, 0, 0, 0)
        );
        assert_eq!((mem.sock, mem.pgfault), (0, 77));
        assert_eq!((mem.usage, mem.usage_limit, mem.max_usage), (0, 0, 0));
        let p = mem.psi.as_ref().expect("the good line of memory.pressure");
        assert!(p.some.is_none());
        assert_eq!(p.full.as_ref().map(|f| (f.avg10, f.total)), Some((0.5, 77)));
        assert_eq!(
            m.memory_events.as_ref().map(|e| (e.low, e.oom_kill)),
            Some((0, 5))
        );
        let cpu = m.cpu.as_ref().expect("cpu.stat read");
        assert_eq!(
            (cpu.usage_usec, cpu.user_usec, cpu.system_usec),
            (100, 0, 40)
        );
        assert_eq!(
            m.pids.as_ref().map(|p| (p.current, p.limit)),
            Some((3, 100))
        );
        let usage = &m.io.as_ref().expect("io.stat read").usage;
        let got: Vec<_> = usage
            .iter()
            .map(|e| (e.major, e.minor, e.rbytes, e.wbytes, e.rios, e.wios))
            .collect();
        assert_eq!(got, vec![(8, 0, 10, 20, 0, 4), (259, 0, 5, 0, 0, 0)]);
    }

    /// The live path: this test process's own cgroup packs into containerd's type URL.
    #[test]
    fn collects_our_own_cgroup() {
        let any = collect(std::process::id()).expect("our cgroup");
        assert!(
            any.type_url == "io.containerd.cgroups.v1.Metrics"
                || any.type_url == "io.containerd.cgroups.v2.Metrics",
            "{}",
            any.type_url
        );
        assert!(!any.value.is_empty(), "some figure is read");
        let gone = collect(u32::MAX).expect_err("no such process");
        assert!(matches!(gone, ShimError::NotFound(_)), "{gone}");
    }
}
