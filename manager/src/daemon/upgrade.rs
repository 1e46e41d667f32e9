//! The daemon's side of `tether upgrade` (docs/upgrade.md): each shim is asked, on its
//! own socket, to re-execute the binary now installed at its path (its admin service's
//! `Upgrade`). A few shims at a time: a handover forks and execs the new binary's check, so
//! many at once only queue on the CPUs, and one slow shim does not hold up the rest.
//!
//! Nothing else in the daemon changes across a handover: the shim keeps its pid (the monitor's
//! pidfd stays valid), its socket (calls are one connection each), and reconnects its event
//! connection from the new image.

use crate::daemon::containers::Containers;
use crate::error::Result;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tether_protocol::admin::{UpgradeResponse, ADMIN_SERVICE, UPGRADE_METHOD};
use tether_protocol::api::ttrpc::{self, Code};
use tether_protocol::manager_api::manager as api;
use tether_protocol::{validate_id, validate_namespace};

/// Shims upgraded at once.
const WORKERS: usize = 8;
/// One shim's call: the shim waits up to `UPGRADE_QUIET_DEADLINE` for its runtime calls in
/// flight (its new binary's check included), the handover itself takes milliseconds.
const CALL_TIMEOUT: Duration =
    Duration::from_secs(tether_protocol::admin::UPGRADE_QUIET_DEADLINE.as_secs() + 20);
/// How long a shim that refuses as busy (another upgrade in progress, shutting down) is asked
/// again before its refusal is reported.
const RETRY_FOR: Duration = Duration::from_secs(10);
const RETRY_PAUSE_MAX: Duration = Duration::from_millis(200);

/// One shim to upgrade, or why it cannot be.
struct Target {
    namespace: String,
    id: String,
    shim: std::result::Result<(PathBuf, u32), String>,
    /// Named by the caller (else found by listing every shim).
    named: bool,
}

/// Upgrades the shims of the containers `req` names (none: every container with a running
/// shim, in `req.namespace` or, if empty, every namespace). One result per container, in the
/// order of (namespace, id).
pub fn upgrade(containers: &Containers, req: api::UpgradeRequest) -> Result<api::UpgradeResponse> {
    let targets = targets(containers, &req)?;
    let queue = Mutex::new(targets.into_iter().enumerate().collect::<Vec<_>>());
    let results = Mutex::new(Vec::new());
    let workers = WORKERS.min(queue.lock().map(|q| q.len()).unwrap_or(0));
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let next = queue.lock().ok().and_then(|mut q| q.pop());
                let Some((i, t)) = next else { break };
                let r = upgrade_one(t);
                if let Ok(mut out) = results.lock() {
                    out.push((i, r));
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap_or_default();
    results.sort_by_key(|(i, _)| *i);
    Ok(api::UpgradeResponse {
        results: results.into_iter().map(|(_, r)| r).collect(),
        ..Default::default()
    })
}

fn targets(containers: &Containers, req: &api::UpgradeRequest) -> Result<Vec<Target>> {
    let target = |namespace: &str, id: &str| Target {
        named: !req.ids.is_empty(),
        namespace: namespace.to_string(),
        id: id.to_string(),
        shim: containers
            .get(namespace, id)
            .and_then(|c| c.shim())
            .map_err(|e| e.to_string())
            .and_then(|s| {
                s.task
                    .socket()
                    .map(|p| (p.to_path_buf(), s.pid))
                    .ok_or_else(|| "the daemon holds no socket path for its shim".to_string())
            }),
    };
    if !req.ids.is_empty() {
        validate_namespace(&req.namespace)?;
        for id in &req.ids {
            validate_id(id)?;
        }
        return Ok(req
            .ids
            .iter()
            .map(|id| target(&req.namespace, id))
            .collect());
    }
    let list = containers.list(api::ListRequest {
        namespace: req.namespace.clone(),
        ..Default::default()
    })?;
    // Every running shim; a container whose task has ended (or that is gone since the
    // listing) has none.
    Ok(list
        .containers
        .iter()
        .map(|c| target(&c.namespace, &c.id))
        .filter(|t| t.shim.is_ok())
        .collect())
}

/// Asks one shim, again while it says it is busy; never fails, the result says why not.
fn upgrade_one(t: Target) -> api::UpgradeResult {
    let started = Instant::now();
    let mut result = api::UpgradeResult {
        namespace: t.namespace.clone(),
        id: t.id.clone(),
        ..Default::default()
    };
    let (socket, pid) = match t.shim {
        Ok(s) => s,
        Err(why) => {
            result.reason = why;
            return result;
        }
    };
    result.shim_pid = pid;
    let mut pause = Duration::from_millis(10);
    let answer = loop {
        let r = tether_protocol::wire::call(
            &socket,
            ADMIN_SERVICE,
            UPGRADE_METHOD,
            b"{}".to_vec(),
            CALL_TIMEOUT,
        );
        match r {
            Err(ttrpc::Error::RpcStatus(s))
                if s.code() == Code::FAILED_PRECONDITION && started.elapsed() < RETRY_FOR =>
            {
                log::debug!(
                    "upgrade {}/{}: {}; asking again",
                    t.namespace,
                    t.id,
                    s.message()
                );
                std::thread::sleep(pause);
                pause = (pause * 2).min(RETRY_PAUSE_MAX);
            }
            other => break other,
        }
    };
    result.wall_micros = started.elapsed().as_micros() as u64;
    match answer.map(|b| serde_json::from_slice::<UpgradeResponse>(&b)) {
        Ok(Ok(u)) => {
            log::info!(
                "upgraded the shim of {}/{} (pid {}): {} -> {} ({}), handover {} us",
                t.namespace,
                t.id,
                u.pid,
                u.old_version,
                u.new_version,
                u.binary,
                u.handover_micros
            );
            result.upgraded = true;
            result.old_version = u.old_version;
            result.new_version = u.new_version;
            result.shim_pid = u.pid;
            result.took_micros = u.took_micros;
            result.handover_micros = u.handover_micros;
        }
        Ok(Err(e)) => result.reason = format!("the shim's answer is not an upgrade's: {e}"),
        Err(ttrpc::Error::RpcStatus(s)) if s.code() == Code::UNIMPLEMENTED => {
            // Another runtime's shim: refused only if the caller named it.
            result.skipped = !t.named;
            result.reason = format!("its shim has no live upgrade ({})", s.message())
        }
        Err(e) => result.reason = crate::error::ttrpc_message(&e),
    }
    if !result.upgraded && !result.skipped {
        log::warn!(
            "upgrade of the shim of {}/{} refused: {}",
            t.namespace,
            t.id,
            result.reason
        );
    }
    result
}
