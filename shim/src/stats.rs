//! `Stats`: the container's cgroup metrics as containerd's `io.containerd.cgroups.v1.Metrics`
//! (or `v2.Metrics` on a cgroup v2 host), read with the `cgroups-rs` crate.

use crate::error::{Result, ShimError};
use cgroups_rs::cpuacct::CpuAcctController;
use cgroups_rs::memory::MemController;
use cgroups_rs::pid::PidController;
use cgroups_rs::{hierarchies, Cgroup, MaxValue};
use protobuf::MessageField;
use tether_protocol::api::{cgroups_v1 as v1, cgroups_v2 as v2, pack_any, Any};

/// The cgroup of `pid`, as the crate's handle.
fn cgroup_of(pid: u32) -> Result<Cgroup> {
    let paths = cgroups_rs::cgroup::get_cgroups_relative_paths_by_pid(pid).map_err(|e| {
        ShimError::NotFound(format!(
            "cgroup of pid {pid}: {e} (has the process exited?)"
        ))
    })?;
    let hier = hierarchies::auto();
    if hier.v2() {
        let path = paths.get("").cloned().unwrap_or_default();
        return Ok(Cgroup::load(hier, path.trim_start_matches('/')));
    }
    // A non-empty base makes the crate join each controller's own path.
    Ok(Cgroup::load_with_relative_paths(hier, ".", paths))
}

fn limit(v: Option<MaxValue>) -> u64 {
    match v {
        Some(MaxValue::Value(n)) if n >= 0 => n as u64,
        _ => u64::MAX,
    }
}

/// The metrics of the cgroup that holds `pid`, packed for `StatsResponse`.
pub fn collect(pid: u32) -> Result<Any> {
    let cg = cgroup_of(pid)?;
    let packed = if cg.v2() {
        pack_any(&v2_metrics(&cg))
    } else {
        pack_any(&v1_metrics(&cg))
    };
    packed.map_err(|e| ShimError::InvalidArgument(format!("encode metrics: {e}")))
}

fn v1_metrics(cg: &Cgroup) -> v1::Metrics {
    let mut m = v1::Metrics::new();
    if let Some(mem) = cg.controller_of::<MemController>() {
        let s = mem.memory_stat();
        m.memory = MessageField::some(v1::MemoryStat {
            cache: s.stat.cache,
            rss: s.stat.rss,
            rss_huge: s.stat.rss_huge,
            mapped_file: s.stat.mapped_file,
            dirty: s.stat.dirty,
            writeback: s.stat.writeback,
            pg_pg_in: s.stat.pgpgin,
            pg_pg_out: s.stat.pgpgout,
            pg_fault: s.stat.pgfault,
            pg_maj_fault: s.stat.pgmajfault,
            inactive_anon: s.stat.inactive_anon,
            active_anon: s.stat.active_anon,
            inactive_file: s.stat.inactive_file,
            active_file: s.stat.active_file,
            unevictable: s.stat.unevictable,
            hierarchical_memory_limit: s.stat.hierarchical_memory_limit.max(0) as u64,
            total_cache: s.stat.total_cache,
            total_rss: s.stat.total_rss,
            total_rss_huge: s.stat.total_rss_huge,
            total_mapped_file: s.stat.total_mapped_file,
            total_dirty: s.stat.total_dirty,
            total_writeback: s.stat.total_writeback,
            total_pg_pg_in: s.stat.total_pgpgin,
            total_pg_pg_out: s.stat.total_pgpgout,
            total_pg_fault: s.stat.total_pgfault,
            total_pg_maj_fault: s.stat.total_pgmajfault,
            total_inactive_anon: s.stat.total_inactive_anon,
            total_active_anon: s.stat.total_active_anon,
            total_inactive_file: s.stat.total_inactive_file,
            total_active_file: s.stat.total_active_file,
            total_unevictable: s.stat.total_unevictable,
            usage: MessageField::some(v1::MemoryEntry {
                limit: s.limit_in_bytes.max(0) as u64,
                usage: s.usage_in_bytes,
                max: s.max_usage_in_bytes,
                failcnt: s.fail_cnt,
                ..Default::default()
            }),
            ..Default::default()
        });
        m.memory_oom_control = MessageField::some(v1::MemoryOomControl {
            oom_kill_disable: s.oom_control.oom_kill_disable as u64,
            under_oom: s.oom_control.under_oom as u64,
            oom_kill: s.oom_control.oom_kill,
            ..Default::default()
        });
    }
    if let Some(cpu) = cg.controller_of::<CpuAcctController>() {
        let a = cpu.cpuacct();
        m.cpu = MessageField::some(v1::CPUStat {
            usage: MessageField::some(v1::CPUUsage {
                total: a.usage,
                kernel: a.usage_sys,
                user: a.usage_user,
                per_cpu: a
                    .usage_percpu
                    .split_whitespace()
                    .filter_map(|n| n.parse().ok())
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    if let Some(pids) = cg.controller_of::<PidController>() {
        m.pids = MessageField::some(v1::PidsStat {
            current: pids.get_pid_current().unwrap_or(0),
            // containerd's cgroups v1 metrics say 0 for "max" (no limit), not u64::MAX.
            limit: match limit(pids.get_pid_max().ok()) {
                u64::MAX => 0,
                n => n,
            },
            ..Default::default()
        });
    }
    m
}

fn v2_metrics(cg: &Cgroup) -> v2::Metrics {
    let mut m = v2::Metrics::new();
    if let Some(mem) = cg.controller_of::<MemController>() {
        let s = mem.memory_stat();
        let raw = |k: &str| s.stat.raw.get(k).copied().unwrap_or(0);
        m.memory = MessageField::some(v2::MemoryStat {
            anon: raw("anon"),
            file: raw("file"),
            kernel_stack: raw("kernel_stack"),
            slab: raw("slab"),
            sock: raw("sock"),
            shmem: raw("shmem"),
            file_mapped: raw("file_mapped"),
            file_dirty: raw("file_dirty"),
            file_writeback: raw("file_writeback"),
            inactive_anon: raw("inactive_anon"),
            active_anon: raw("active_anon"),
            inactive_file: raw("inactive_file"),
            active_file: raw("active_file"),
            unevictable: raw("unevictable"),
            pgfault: raw("pgfault"),
            pgmajfault: raw("pgmajfault"),
            usage: s.usage_in_bytes,
            usage_limit: if s.limit_in_bytes < 0 {
                u64::MAX
            } else {
                s.limit_in_bytes as u64
            },
            max_usage: s.max_usage_in_bytes,
            ..Default::default()
        });
    }
    if let Some(cpu) = cg.controller_of::<cgroups_rs::cpu::CpuController>() {
        let stat = cpu.cpu().stat;
        let field = |k: &str| {
            stat.lines()
                .find_map(|l| l.strip_prefix(k)?.trim().parse().ok())
                .unwrap_or(0)
        };
        m.cpu = MessageField::some(v2::CPUStat {
            usage_usec: field("usage_usec"),
            user_usec: field("user_usec"),
            system_usec: field("system_usec"),
            nr_periods: field("nr_periods"),
            nr_throttled: field("nr_throttled"),
            throttled_usec: field("throttled_usec"),
            ..Default::default()
        });
    }
    if let Some(pids) = cg.controller_of::<PidController>() {
        m.pids = MessageField::some(v2::PidsStat {
            current: pids.get_pid_current().unwrap_or(0),
            limit: limit(pids.get_pid_max().ok()),
            ..Default::default()
        });
    }
    m
}
