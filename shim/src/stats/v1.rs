//! cgroup v1: `io.containerd.cgroups.v1.Metrics` from the memory, cpu/cpuacct, pids and blkio
//! hierarchies.

use super::{get, parse, Dir};
use crate::cgroup::V1Dirs;
use protobuf::MessageField;
use std::collections::HashMap;
use std::path::Path;
use tether_protocol::api::cgroups_v1 as v1;

/// v1 says 0 for a `max` (unlimited) `pids.max`, as containerd's v1 metrics do.
const V1_MAX: u64 = 0;

/// The v1 metrics of the controllers in `dirs`; `partitions` is `/proc/partitions` (device names
/// for blkio) and `clock_ticks` is USER_HZ.
pub fn metrics(dirs: &V1Dirs, partitions: &str, clock_ticks: u64) -> v1::Metrics {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{fixture, read};

    fn v1_fixture(name: &str) -> v1::Metrics {
        let root = fixture(&format!("v1/{name}"));
        let partitions = read(&root.join("partitions")).unwrap_or_default();
        metrics(&V1Dirs::under(&root), &partitions, 100)
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
}
