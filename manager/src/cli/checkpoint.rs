//! `tether checkpoint --export` and `tether restore --import`: the CLI builds and reads the
//! archive (see `archive`); the daemon dumps with CRIU and the shim restores at `Start`.

use crate::archive::{self, ArchiveError};
use crate::client::{Client, CALL_TIMEOUT};
use crate::error::{Error, Result};
use clap::Args;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tether_protocol::manager_api::manager as api;
use tether_protocol::time::now_nanos;
use tether_protocol::{validate_id, validate_namespace};

/// A dump or a restore runs CRIU over the container's memory.
const CRIU_CALL_TIMEOUT: Duration = Duration::from_secs(180);

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

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The archive `tether checkpoint --export` wrote.
    #[arg(long, value_name = "FILE")]
    pub import: PathBuf,
    /// Do not wait: print the restored process's pid and return.
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// The new container's id.
    pub id: String,
}

impl From<ArchiveError> for Error {
    fn from(e: ArchiveError) -> Error {
        Error::InvalidArgument(e.to_string())
    }
}

/// A private scratch directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(what: &str) -> Result<Scratch> {
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

pub fn checkpoint(socket: &Path, ns: &str, a: &CheckpointArgs) -> Result<i32> {
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

    let undo = crate::interrupt::Undo::install(socket)?;
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

/// The most a `config.dump` or `spec.dump` may hold (containerd's are a few KiB).
const MAX_DUMP: u64 = 4 << 20;

/// A dump file of an unpacked archive: a regular file (no link followed, no FIFO waited on)
/// of at most `max` bytes.
fn read_dump(p: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(p)?;
    if !f.metadata()?.file_type().is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut bytes = Vec::new();
    f.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(std::io::Error::other(format!("larger than {max} bytes")));
    }
    Ok(bytes)
}

/// What a restore needs from an unpacked archive: the spec (its cgroup moved to the new id
/// when it was the one `tether run` gave the old) and the runtime.
fn restore_request(dir: &Path, ns: &str, id: &str) -> Result<api::CreateRequest> {
    let read = |name: &str| -> Result<serde_json::Value> {
        let bytes = read_dump(&dir.join(name), MAX_DUMP).map_err(|e| {
            Error::InvalidArgument(format!("the archive has no readable {name}: {e}"))
        })?;
        serde_json::from_slice(&bytes)
            .map_err(|e| Error::InvalidArgument(format!("the archive's {name} is not JSON: {e}")))
    };
    let config = read("config.dump")?;
    let mut spec = read("spec.dump")?;
    if !dir.join("checkpoint").is_dir() {
        return Err(Error::InvalidArgument(
            "the archive has no checkpoint/ directory (CRIU images)".into(),
        ));
    }
    let old = format!(
        "/{}/{}",
        config["namespace"].as_str().unwrap_or_default(),
        config["id"].as_str().unwrap_or_default()
    );
    if spec["linux"]["cgroupsPath"].as_str() == Some(old.as_str()) {
        spec["linux"]["cgroupsPath"] = format!("/{ns}/{id}").into();
    }
    let spec: oci_spec::runtime::Spec = serde_json::from_value(spec)
        .map_err(|e| Error::InvalidArgument(format!("the archive's spec.dump: {e}")))?;
    crate::bundle::check_root(&spec)?;
    Ok(api::CreateRequest {
        namespace: ns.into(),
        id: id.into(),
        runtime: config["runtimeName"].as_str().unwrap_or_default().into(),
        spec: serde_json::to_vec(&spec)
            .map_err(|e| Error::InvalidArgument(format!("cannot encode the spec: {e}")))?,
        checkpoint: dir.join("checkpoint").display().to_string(),
        ..Default::default()
    })
}

pub fn restore(socket: &Path, ns: &str, a: &RestoreArgs) -> Result<i32> {
    validate_namespace(ns)?;
    validate_id(&a.id)?;
    let undo = crate::interrupt::Undo::install(socket)?;
    let scratch = Scratch::new("restore")?;
    undo.scratch(Some(&scratch.0));
    archive::unpack(&a.import, &scratch.0, archive::DEFAULT_LIMIT)?;
    let req = restore_request(&scratch.0, ns, &a.id)?;
    let client = Client::connect(socket)?;
    client.call(CRIU_CALL_TIMEOUT, |m, ctx| m.create(ctx, &req))?;
    // Interrupted from here on, the container created for the restore goes again (not before:
    // a create refused because the id exists must not cost that container).
    undo.delete(Some(&api::DeleteRequest {
        namespace: ns.into(),
        id: a.id.clone(),
        force: true,
        ..Default::default()
    }));
    let start = api::StartRequest {
        namespace: ns.into(),
        id: a.id.clone(),
        ..Default::default()
    };
    let started = client.call(CRIU_CALL_TIMEOUT, |m, ctx| m.start(ctx, &start));
    let pid = match started {
        Ok(s) => s.pid,
        Err(e) => {
            // Nothing changed: the container created for the restore goes again.
            let del = api::DeleteRequest {
                namespace: ns.into(),
                id: a.id.clone(),
                force: true,
                ..Default::default()
            };
            let _ = client.call(CALL_TIMEOUT, |m, ctx| m.delete(ctx, &del));
            return Err(e);
        }
    };
    drop(scratch);
    // Restored and running: from here on a signal ends the CLI only, with nothing to undo.
    undo.scratch(None);
    undo.delete(None);
    if a.detach {
        println!("{pid}");
        return Ok(0);
    }
    let w = api::WaitRequest {
        namespace: ns.into(),
        id: a.id.clone(),
        ..Default::default()
    };
    let s = client.call(Duration::ZERO, |m, ctx| m.wait(ctx, &w))?;
    Ok(i32::try_from(s.exit_status).unwrap_or(255).min(255))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An unpacked archive's directory with a checkpoint/ and a good config.dump.
    fn unpacked() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("checkpoint")).expect("mkdir");
        std::fs::write(
            dir.path().join("config.dump"),
            br#"{"id":"a","namespace":"n"}"#,
        )
        .expect("write");
        dir
    }

    /// spec.dump as a link to a host file, a FIFO, or too long: refused, without blocking.
    #[test]
    fn the_dumps_are_read_as_regular_files_of_bounded_size() {
        let dir = unpacked();
        let spec = dir.path().join("spec.dump");
        let secret = dir.path().join("host-secret");
        std::fs::write(&secret, br#"{"ociVersion":"1.0.2","root":{"path":"/x"}}"#).expect("w");
        std::os::unix::fs::symlink(&secret, &spec).expect("symlink");
        let e = restore_request(dir.path(), "ns", "id").expect_err("a link is refused");
        assert!(e.to_string().contains("spec.dump"), "{e}");

        std::fs::remove_file(&spec).expect("rm");
        nix::unistd::mkfifo(&spec, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .expect("mkfifo");
        let (tx, rx) = std::sync::mpsc::channel();
        let d = dir.path().to_path_buf();
        std::thread::spawn(move || {
            let _ = tx.send(restore_request(&d, "ns", "id").map(|_| ()));
        });
        let got = rx.recv_timeout(std::time::Duration::from_secs(5));
        if got.is_err() {
            // Release the blocked reader before failing.
            let _ = std::fs::OpenOptions::new().write(true).open(&spec);
        }
        let e = got
            .expect("reading a FIFO blocked")
            .expect_err("a FIFO is refused");
        assert!(e.to_string().contains("spec.dump"), "{e}");

        std::fs::remove_file(&spec).expect("rm");
        std::fs::write(&spec, vec![b' '; MAX_DUMP as usize + 1]).expect("write");
        let e = restore_request(dir.path(), "ns", "id").expect_err("too long");
        assert!(e.to_string().contains("spec.dump"), "{e}");
    }
}
