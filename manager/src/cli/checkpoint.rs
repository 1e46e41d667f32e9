//! `tether checkpoint --export FILE [--leave-running] ID`: the daemon dumps the container with
//! CRIU into a scratch directory and the CLI writes the archive (`archive.rs`; `restore.rs`
//! reads it back). The container is stopped only once its archive is complete.

use super::archive;
use super::client::{Client, CALL_TIMEOUT};
use crate::error::{Error, Result};
use clap::Args;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tether_protocol::manager_api::manager as api;
use tether_protocol::time::now_nanos;
use tether_protocol::{validate_id, validate_namespace};

/// A dump or a restore runs CRIU over the container's memory.
pub(super) const CRIU_CALL_TIMEOUT: Duration = Duration::from_secs(180);

#[derive(Debug, Args)]
pub struct CheckpointArgs {
    /// Write the archive here.
    #[arg(long, value_name = "FILE")]
    pub export: PathBuf,
    /// Keep the container running after the dump.
    #[arg(long)]
    pub leave_running: bool,
    pub id: String,
}

/// A private scratch directory, removed when dropped.
pub(super) struct Scratch(pub(super) PathBuf);

impl Scratch {
    pub(super) fn new(what: &str) -> Result<Scratch> {
        let dir = std::env::temp_dir().join(format!(
            "tether-{what}-{}-{}",
            std::process::id(),
            now_nanos()
        ));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(Error::io(format!("create {}", dir.display())))?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(super) fn checkpoint(socket: &Path, ns: &str, a: &CheckpointArgs) -> Result<i32> {
    validate_namespace(ns)?;
    validate_id(&a.id)?;
    // Before the dump (which may stop the container): the archive must be writable there.
    let out_dir = match a.export.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(p) => p.to_path_buf(),
        None => PathBuf::from("."),
    };
    if !out_dir.is_dir() {
        return Err(Error::InvalidArgument(format!(
            "cannot write {}: {} is not a directory",
            a.export.display(),
            out_dir.display()
        )));
    }
    let client = Client::connect(socket)?;
    let cref = api::ContainerRef {
        namespace: ns.into(),
        id: a.id.clone(),
        ..Default::default()
    };
    let info = client.call(CALL_TIMEOUT, |m, ctx| m.state(ctx, &cref))?;
    let spec_path = Path::new(&info.bundle).join("config.json");
    let spec = std::fs::read(&spec_path).map_err(Error::io(format!(
        "read container {}'s spec {}",
        a.id,
        spec_path.display()
    )))?;
    let rootfs = serde_json::from_slice::<serde_json::Value>(&spec)
        .ok()
        .and_then(|v| v["root"]["path"].as_str().map(String::from))
        .unwrap_or_default();

    let undo = super::interrupt::Undo::install(socket)?;
    let scratch = Scratch::new("checkpoint")?;
    undo.scratch(Some(&scratch.0));
    let image = scratch.0.join("checkpoint");
    // The container is stopped only once its archive is complete and synced: until then it is
    // frozen (paused, so the image stays what it resumes from) and dumped left running; an
    // archive that cannot be written resumes it, and nothing is lost.
    let freeze = !a.leave_running && info.status == "RUNNING";
    if freeze {
        client.call(CALL_TIMEOUT, |m, ctx| m.pause(ctx, &cref))?;
        undo.thaw(Some(&cref));
    }
    let thaw = || {
        undo.thaw(None);
        if freeze {
            if let Err(e) = client.call(CALL_TIMEOUT, |m, ctx| m.resume(ctx, &cref)) {
                eprintln!("tether: container {} stays paused: {e}", a.id);
            }
        }
    };
    let req = api::CheckpointRequest {
        namespace: ns.into(),
        id: a.id.clone(),
        image_path: image.display().to_string(),
        work_path: scratch.0.join("work").display().to_string(),
        leave_running: true,
        ..Default::default()
    };
    if let Err(e) = client.call(CRIU_CALL_TIMEOUT, |m, ctx| m.checkpoint(ctx, &req)) {
        thaw();
        return Err(e);
    }

    // CRI's names; our rootfs is a host directory used in place, so it has no diff to carry.
    let config = serde_json::json!({
        "id": info.id,
        "name": info.id,
        "namespace": info.namespace,
        "runtimeName": info.runtime,
        "rootfs": rootfs,
        "createdTime": info.created_at,
        "checkpointedTime": now_nanos(),
    });
    let status = serde_json::json!({
        "id": info.id,
        "pid": info.pid,
        "status": info.status,
        "startedAt": info.started_at,
        "leftRunning": a.leave_running,
    });
    let empty_tar = tar::Builder::new(Vec::new())
        .into_inner()
        .map_err(Error::io("build rootfs-diff.tar"))?;
    let written = archive::write(
        &a.export,
        &image,
        &[
            ("config.dump", config.to_string().into_bytes()),
            ("spec.dump", spec),
            ("rootfs-diff.tar", empty_tar),
            ("status.dump", status.to_string().into_bytes()),
        ],
    );
    if let Err(e) = written {
        thaw();
        return Err(e.into());
    }
    if !a.leave_running {
        // Killed while frozen (it runs nothing past the dump), then thawed to die.
        let kill = api::KillRequest {
            namespace: ns.into(),
            id: a.id.clone(),
            signal: libc::SIGKILL as u32,
            all: true,
            ..Default::default()
        };
        let killed = client.call(CALL_TIMEOUT, |m, ctx| m.kill(ctx, &kill));
        thaw();
        killed?;
    }
    Ok(0)
}
