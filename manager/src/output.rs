//! How the CLI prints things: a table or lines for people, JSON for scripts.

use serde_json::{json, Value};
use tether_protocol::manager_api::manager as api;

/// RFC 3339 UTC time of nanoseconds since the epoch (`-` for 0).
pub fn time(nanos: i64) -> String {
    if nanos == 0 {
        return "-".into();
    }
    let secs = nanos.div_euclid(1_000_000_000);
    let frac = nanos.rem_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{frac:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

pub fn container_json(c: &api::Container) -> Value {
    json!({
        "namespace": c.namespace,
        "id": c.id,
        "runtime": c.runtime,
        "bundle": c.bundle,
        "pid": c.pid,
        "status": c.status,
        "exit_status": c.exit_status,
        "created_at": c.created_at,
        "started_at": c.started_at,
        "finished_at": c.finished_at,
        "reason": c.reason,
    })
}

fn exit_text(c: &api::Container) -> String {
    if c.finished_at != 0 {
        c.exit_status.to_string()
    } else {
        "-".into()
    }
}

pub fn container_table(cs: &[api::Container]) -> String {
    let mut rows = vec![[
        "ID".to_string(),
        "RUNTIME".into(),
        "PID".into(),
        "STATUS".into(),
        "EXIT".into(),
    ]];
    for c in cs {
        rows.push([
            c.id.clone(),
            c.runtime.clone(),
            c.pid.to_string(),
            c.status.clone(),
            exit_text(c),
        ]);
    }
    let widths: Vec<usize> = (0..5)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(s, w)| format!("{s:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

pub fn container_text(c: &api::Container) -> String {
    let mut s = format!(
        "id:          {}\nnamespace:   {}\nruntime:     {}\nstatus:      {}\npid:         {}\nbundle:      {}\ncreated:     {}\nstarted:     {}\nfinished:    {}\nexit status: {}\n",
        c.id,
        c.namespace,
        c.runtime,
        c.status,
        c.pid,
        c.bundle,
        time(c.created_at),
        time(c.started_at),
        time(c.finished_at),
        exit_text(c)
    );
    if !c.reason.is_empty() {
        s.push_str(&format!("reason:      {}\n", c.reason));
    }
    s
}

pub fn event_json(e: &api::Event) -> Value {
    let fields: Value = serde_json::from_str(&e.fields_json).unwrap_or(Value::Null);
    json!({
        "seq": e.seq,
        "timestamp": time(e.timestamp),
        "namespace": e.namespace,
        "topic": e.topic,
        "type": e.type_url,
        "event": fields,
        "recovered": e.recovered,
    })
}

pub fn event_text(e: &api::Event) -> String {
    format!(
        "{} {} {} {} {}{}",
        e.seq,
        time(e.timestamp),
        e.namespace,
        e.topic,
        e.fields_json,
        if e.recovered { " (recovered)" } else { "" }
    )
}

pub fn stats_json(s: &api::StatsResponse) -> Value {
    json!({
        "memory_usage_bytes": s.memory_usage_bytes,
        "memory_limit_bytes": s.memory_limit_bytes,
        "cpu_usage_ns": s.cpu_usage_ns,
        "pids_current": s.pids_current,
        "pids_limit": s.pids_limit,
        "type": s.type_url,
    })
}

pub fn stats_text(s: &api::StatsResponse) -> String {
    format!(
        "memory usage: {} bytes\nmemory limit: {} bytes\ncpu usage:    {} ns\npids:         {} (limit {})\n",
        s.memory_usage_bytes, s.memory_limit_bytes, s.cpu_usage_ns, s.pids_current, s.pids_limit
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_times() {
        assert_eq!(time(0), "-");
        assert_eq!(time(1), "1970-01-01T00:00:00.000000001Z");
        assert_eq!(
            time(1_700_000_000_000_000_000),
            "2023-11-14T22:13:20.000000000Z"
        );
    }
}
