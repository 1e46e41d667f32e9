//! Turning a shim's `Stats` answer (cgroup v1 or v2 metrics in an `Any`) into the few numbers
//! `tether stats` shows.

use protobuf::Message;
use tether_protocol::api::{cgroups_v1, cgroups_v2, type_url, Any};
use tether_protocol::manager_api::manager::StatsResponse;

pub fn decode(any: Option<&Any>) -> StatsResponse {
    let mut out = StatsResponse::default();
    let Some(any) = any else {
        return out;
    };
    out.type_url = any.type_url.clone();
    out.value = any.value.clone();
    let name = any.type_url.rsplit('/').next().unwrap_or_default();
    if name == type_url::<cgroups_v1::Metrics>() {
        if let Ok(m) = cgroups_v1::Metrics::parse_from_bytes(&any.value) {
            if let Some(mem) = m.memory.as_ref().and_then(|mm| mm.usage.as_ref()) {
                out.memory_usage_bytes = mem.usage;
                out.memory_limit_bytes = mem.limit;
            }
            if let Some(cpu) = m.cpu.as_ref().and_then(|c| c.usage.as_ref()) {
                out.cpu_usage_ns = cpu.total;
            }
            if let Some(p) = m.pids.as_ref() {
                out.pids_current = p.current;
                out.pids_limit = p.limit;
            }
        }
    } else if name == type_url::<cgroups_v2::Metrics>() {
        if let Ok(m) = cgroups_v2::Metrics::parse_from_bytes(&any.value) {
            if let Some(mem) = m.memory.as_ref() {
                out.memory_usage_bytes = mem.usage;
                out.memory_limit_bytes = mem.usage_limit;
            }
            if let Some(cpu) = m.cpu.as_ref() {
                out.cpu_usage_ns = cpu.usage_usec.saturating_mul(1000);
            }
            if let Some(p) = m.pids.as_ref() {
                out.pids_current = p.current;
                out.pids_limit = p.limit;
            }
        }
    }
    out
}
