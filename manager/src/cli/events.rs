//! `tether events [--json] [--since SEQ] [FILTER...]`: streams events until the daemon goes
//! away or stdout is closed.

use super::client::Client;
use crate::error::Result;
use crate::filter::Filters;
use crate::output;
use clap::Args;
use std::io::Write;
use std::path::Path;
use std::time::Duration;
use tether_protocol::manager_api::manager as api;
use tether_protocol::validate_namespace;

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// One JSON object per line.
    #[arg(long)]
    pub json: bool,
    /// Start after this sequence number (from the daemon's in-memory buffer) instead of now.
    #[arg(long, value_name = "SEQ")]
    pub since: Option<u64>,
    /// Filters (containerd syntax); an event is shown if any matches.
    pub filters: Vec<String>,
}

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

pub(super) fn events(socket: &Path, namespace: Option<&str>, e: &EventsArgs) -> Result<i32> {
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
