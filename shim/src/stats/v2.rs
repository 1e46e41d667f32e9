//! cgroup v2: `io.containerd.cgroups.v2.Metrics` from one unified-hierarchy directory.

use super::{get, parse, Dir};
use protobuf::MessageField;
use std::path::Path;
use tether_protocol::api::cgroups_v2 as v2;

/// The v2 metrics of the cgroup directory `dir`. `max` (no limit) reads as u64::MAX, as in
/// containerd's v2 metrics.
pub fn metrics(dir: &Path) -> v2::Metrics {
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
    use crate::stats::fixture;

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
        let m = metrics(&fixture("v2/full"));
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
        let m = metrics(&fixture("v2/missing"));
        let cpu = m.cpu.as_ref().expect("cpu.stat read");
        assert_eq!(
            (cpu.usage_usec, cpu.user_usec, cpu.system_usec),
            (100, 60, 40)
        );
        assert!(cpu.psi.is_none(), "no cpu.pressure");
        assert!(m.pids.is_none() && m.memory.is_none() && m.memory_events.is_none());
        assert!(m.io.is_none());
        assert_eq!(metrics(&fixture("v2/does-not-exist")), v2::Metrics::new());
    }

    #[test]
    fn v2_with_garbage() {
        let m = metrics(&fixture("v2/garbage"));
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
}
