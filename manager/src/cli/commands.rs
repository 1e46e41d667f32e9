//! The CLI's other commands: one function each, talking to the daemon and printing the answer.

use crate::cli::{DeleteArgs, EventsArgs, IdJson, KillArgs, UpdateArgs, WaitArgs};
use crate::client::{Client, CALL_TIMEOUT};
use crate::error::{Error, Result};
use crate::filter::Filters;
use crate::output;
use std::io::Write;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;
use tether_protocol::manager_api::manager as api;
use tether_protocol::{validate_id, validate_namespace};

fn cref(ns: &str, id: &str) -> Result<api::ContainerRef> {
    validate_namespace(ns)?;
    validate_id(id)?;
    Ok(api::ContainerRef {
        namespace: ns.into(),
        id: id.into(),
        ..Default::default()
    })
}

pub fn start(socket: &Path, ns: &str, id: &str) -> Result<i32> {
    let r = cref(ns, id)?;
    let req = api::StartRequest {
        namespace: r.namespace,
        id: r.id,
        ..Default::default()
    };
    let s = Client::connect(socket)?.call(CALL_TIMEOUT, |m, ctx| m.start(ctx, &req))?;
    println!("{}", s.pid);
    Ok(0)
}

/// `TERM`, `SIGTERM`, `15`.
pub fn parse_signal(s: &str) -> Result<u32> {
    if let Ok(n) = s.parse::<u32>() {
        if (1..=64).contains(&n) {
            return Ok(n);
        }
    }
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    nix::sys::signal::Signal::from_str(&name)
        .map(|sig| sig as u32)
        .map_err(|_| {
            Error::InvalidArgument(format!(
                "unknown signal {s:?} (use a name like TERM or KILL, or a number)"
            ))
        })
}

pub fn kill(socket: &Path, ns: &str, k: &KillArgs) -> Result<i32> {
    let r = cref(ns, &k.id)?;
    let signal = parse_signal(&k.signal)?;
    let req = api::KillRequest {
        namespace: r.namespace,
        id: r.id,
        exec_id: k.exec_id.clone(),
        signal,
        all: k.all,
        ..Default::default()
    };
    Client::connect(socket)?.call(CALL_TIMEOUT, |m, ctx| m.kill(ctx, &req))?;
    Ok(0)
}

pub fn wait(socket: &Path, ns: &str, w: &WaitArgs) -> Result<i32> {
    let r = cref(ns, &w.id)?;
    let req = api::WaitRequest {
        namespace: r.namespace,
        id: r.id,
        exec_id: w.exec_id.clone(),
        ..Default::default()
    };
    let s = Client::connect(socket)?.call(Duration::ZERO, |m, ctx| m.wait(ctx, &req))?;
    if w.json {
        println!(
            "{}",
            serde_json::json!({"exit_status": s.exit_status, "exited_at": output::time(s.exited_at)})
        );
    } else {
        println!("{}", s.exit_status);
    }
    Ok(i32::try_from(s.exit_status).unwrap_or(255).min(255))
}

pub fn ps(socket: &Path, ns: &str, json: bool) -> Result<i32> {
    validate_namespace(ns)?;
    let req = api::ListRequest {
        namespace: ns.into(),
        ..Default::default()
    };
    let list = Client::connect(socket)?.call(CALL_TIMEOUT, |m, ctx| m.list(ctx, &req))?;
    if json {
        let v: Vec<_> = list.containers.iter().map(output::container_json).collect();
        println!("{}", serde_json::Value::Array(v));
    } else {
        print!("{}", output::container_table(&list.containers));
    }
    Ok(0)
}

pub fn state(socket: &Path, ns: &str, a: &IdJson) -> Result<i32> {
    let req = cref(ns, &a.id)?;
    let c = Client::connect(socket)?.call(CALL_TIMEOUT, |m, ctx| m.state(ctx, &req))?;
    if a.json {
        println!("{}", output::container_json(&c));
    } else {
        print!("{}", output::container_text(&c));
    }
    Ok(0)
}

pub fn pause(socket: &Path, ns: &str, id: &str, pause: bool) -> Result<i32> {
    let req = cref(ns, id)?;
    let client = Client::connect(socket)?;
    if pause {
        client.call(CALL_TIMEOUT, |m, ctx| m.pause(ctx, &req))?;
    } else {
        client.call(CALL_TIMEOUT, |m, ctx| m.resume(ctx, &req))?;
    }
    Ok(0)
}

pub fn update(socket: &Path, ns: &str, u: &UpdateArgs) -> Result<i32> {
    let r = cref(ns, &u.id)?;
    let mut res = serde_json::Map::new();
    if let Some(m) = u.memory {
        res.insert("memory".into(), serde_json::json!({ "limit": m }));
    }
    if let Some(c) = u.cpus {
        if !(c.is_finite() && c > 0.0) {
            return Err(Error::InvalidArgument(format!(
                "invalid --cpus {c}: must be positive"
            )));
        }
        let quota = (c * crate::bundle::CPU_PERIOD as f64).round() as i64;
        res.insert(
            "cpu".into(),
            serde_json::json!({ "quota": quota.max(1000), "period": crate::bundle::CPU_PERIOD }),
        );
    }
    if res.is_empty() {
        return Err(Error::InvalidArgument(
            "nothing to update: give --memory and/or --cpus".into(),
        ));
    }
    let req = api::UpdateRequest {
        namespace: r.namespace,
        id: r.id,
        resources: serde_json::Value::Object(res).to_string().into_bytes(),
        ..Default::default()
    };
    Client::connect(socket)?.call(CALL_TIMEOUT, |m, ctx| m.update(ctx, &req))?;
    Ok(0)
}

pub fn stats(socket: &Path, ns: &str, a: &IdJson) -> Result<i32> {
    let req = cref(ns, &a.id)?;
    let s = Client::connect(socket)?.call(CALL_TIMEOUT, |m, ctx| m.stats(ctx, &req))?;
    if a.json {
        println!("{}", output::stats_json(&s));
    } else {
        print!("{}", output::stats_text(&s));
    }
    Ok(0)
}

pub fn delete(socket: &Path, ns: &str, d: &DeleteArgs) -> Result<i32> {
    let r = cref(ns, &d.id)?;
    let req = api::DeleteRequest {
        namespace: r.namespace,
        id: r.id,
        force: d.force,
        ..Default::default()
    };
    Client::connect(socket)?.call(CALL_TIMEOUT, |m, ctx| m.delete(ctx, &req))?;
    Ok(0)
}

/// Streams events until the daemon goes away or stdout is closed.
/// The filters `tether events` asks for: the user's, each narrowed to `namespace` when one
/// was named (`--namespace`); without one, every namespace's events.
fn scoped_filters(filters: &[String], namespace: Option<&str>) -> Vec<String> {
    let Some(ns) = namespace else {
        return filters.to_vec();
    };
    // Quoted: a validated namespace holds no quote, and dots stay part of the value.
    let only = format!("namespace==\"{ns}\"");
    if filters.is_empty() {
        return vec![only];
    }
    filters.iter().map(|f| format!("{f},{only}")).collect()
}

pub fn events(socket: &Path, namespace: Option<&str>, e: &EventsArgs) -> Result<i32> {
    // Parse here too, so a bad filter is reported before anything else (and before it is
    // narrowed to the namespace, so the error shows what the user wrote).
    Filters::parse(&e.filters)?;
    if let Some(ns) = namespace {
        validate_namespace(ns)?;
    }
    let filters = scoped_filters(&e.filters, namespace);
    let client = Client::connect(socket)?;
    let mut since = e.since.unwrap_or(0);
    let mut from_now = e.since.is_none();
    let stdout = std::io::stdout();
    loop {
        let req = api::EventsRequest {
            since,
            from_now,
            filters: filters.clone(),
            timeout_ms: 10_000,
            max: 0,
            ..Default::default()
        };
        let batch = client.call(Duration::from_secs(30), |m, ctx| m.events(ctx, &req))?;
        if batch.lost_before != 0 && !from_now {
            eprintln!(
                "tether: events before {} were dropped from the daemon's buffer",
                batch.lost_before
            );
        }
        from_now = false;
        since = batch.next;
        let mut out = stdout.lock();
        for ev in &batch.events {
            let line = if e.json {
                output::event_json(ev).to_string()
            } else {
                output::event_text(ev)
            };
            if writeln!(out, "{line}").is_err() {
                return Ok(0);
            }
        }
        if out.flush().is_err() {
            return Ok(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_by_name_and_number() {
        assert_eq!(parse_signal("TERM").expect("ok"), 15);
        assert_eq!(parse_signal("sigkill").expect("ok"), 9);
        assert_eq!(parse_signal("2").expect("ok"), 2);
        assert!(parse_signal("BOGUS").is_err());
        assert!(parse_signal("0").is_err());
    }

    struct Ev(&'static str, &'static str);

    impl crate::filter::Fields for Ev {
        fn field(&self, path: &[String]) -> Option<String> {
            match path.join(".").as_str() {
                "namespace" => Some(self.0.into()),
                "topic" => Some(self.1.into()),
                _ => None,
            }
        }
    }

    #[test]
    fn a_named_namespace_narrows_every_filter() {
        let scoped = |f: &[&str], ns| {
            let f: Vec<String> = f.iter().map(|s| s.to_string()).collect();
            Filters::parse(&scoped_filters(&f, ns)).expect("parses")
        };
        let (mine, other) = (Ev("a.b", "/tasks/exit"), Ev("c", "/tasks/exit"));
        let start = Ev("a.b", "/tasks/start");
        let all = scoped(&[], None);
        assert!(all.matches(&mine) && all.matches(&other));
        let ns = scoped(&[], Some("a.b"));
        assert!(ns.matches(&mine) && !ns.matches(&other));
        // OR of filters, each ANDed with the namespace.
        let f = scoped(&["topic==/tasks/exit", "topic==/tasks/delete"], Some("a.b"));
        assert!(f.matches(&mine) && !f.matches(&other) && !f.matches(&start));
    }
}
