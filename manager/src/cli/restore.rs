//! `tether restore --import FILE [-d] ID`: unpacks a `tether checkpoint` archive into a scratch
//! directory (`archive.rs`: nothing outside it is written), checks its dumps, and creates and
//! starts the container from the CRIU images; interrupted, it undoes what it did.

use super::archive;
use super::checkpoint::{Scratch, CRIU_CALL_TIMEOUT};
use super::client::Client;
use super::{discard, exit_code};
use crate::error::{Error, Result};
use clap::Args;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tether_protocol::manager_api::manager as api;
use tether_protocol::{validate_id, validate_namespace};

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

pub(super) fn restore(socket: &Path, ns: &str, a: &RestoreArgs) -> Result<i32> {
    validate_namespace(ns)?;
    validate_id(&a.id)?;
    let undo = super::interrupt::Undo::install(socket)?;
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
            discard(&client, ns, &a.id);
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
    Ok(exit_code(s.exit_status))
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
