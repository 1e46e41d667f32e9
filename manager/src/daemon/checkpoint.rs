//! The daemon's side of checkpoint/restore: which CRIU the shims use (the `--criu` flag, passed
//! as the runtime option `CriuPath`), its version check, and the `Checkpoint` call to a shim.
//! The CLI builds and reads the archive (see `archive` and `cpcli`).

use crate::daemon::containers::{Config, Containers};
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tether_protocol::api::runc_options::{CheckpointOptions, Options as RuncOptions};
use tether_protocol::api::{pack_any, task, Any};
use tether_protocol::manager_api::manager as api;

/// The oldest CRIU we accept: containerd's CRI asks for 3.16 too.
pub const MIN_CRIU_VERSION: u32 = 31600;
/// `criu_path` in `containerd.runc.v1.Options`: the 0.12 protos dropped it, shims still read it.
const RUNC_CRIU_PATH_FIELD: u32 = 8;
/// A dump writes the container's memory to disk: allow more than an ordinary call.
const CHECKPOINT_TIMEOUT: Duration = Duration::from_secs(120);

/// `criu` as the daemon was told (`--criu`): a path, or a name looked up on PATH.
pub fn resolve_criu(criu: &Path) -> Option<PathBuf> {
    if criu.components().count() > 1 {
        return criu.is_file().then(|| criu.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(criu))
        .find(|p| p.is_file())
}

/// `criu --version` prints `Version: 4.2.1` (or `Version: 3.17`): as 40201 / 31700.
pub fn parse_version(out: &str) -> Option<u32> {
    let v = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Version:"))?
        .trim();
    let mut parts = v.split('.').map(|p| p.parse::<u32>());
    let major = parts.next()?.ok()?;
    let minor = parts.next().unwrap_or(Ok(0)).ok()?;
    let sub = parts.next().unwrap_or(Ok(0)).ok()?;
    Some(major * 10000 + minor * 100 + sub)
}

/// The CRIU the shims will use, checked: it exists and is at least 3.16.
pub fn check_criu(criu: &Path) -> Result<PathBuf> {
    let found = resolve_criu(criu).ok_or_else(|| {
        Error::FailedPrecondition(format!(
            "CRIU not found: {} (give the daemon --criu PATH)",
            criu.display()
        ))
    })?;
    // The daemon is a subreaper: its reaper leaves this child to us (`reaper::spawn`).
    let mut cmd = std::process::Command::new(&found);
    cmd.arg("--version")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let child = crate::daemon::reaper::spawn(cmd.stdout(std::process::Stdio::piped()))
        .map_err(Error::io(format!("run {} --version", found.display())))?;
    let pid = child.id();
    let out = child.wait_with_output();
    crate::daemon::reaper::release(pid);
    let out = out.map_err(Error::io(format!("run {} --version", found.display())))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = parse_version(&text).ok_or_else(|| {
        Error::FailedPrecondition(format!(
            "CRIU {}: cannot read its version from {:?}",
            found.display(),
            text.trim()
        ))
    })?;
    if version < MIN_CRIU_VERSION {
        return Err(Error::FailedPrecondition(format!(
            "CRIU {} is version {version}, older than the {MIN_CRIU_VERSION} checkpoints need",
            found.display()
        )));
    }
    Ok(found)
}

/// The runtime options every shim of this daemon gets: the runtime root, and the CRIU to use
/// when there is one.
pub fn runtime_options(cfg: &Config) -> Result<Any> {
    let mut opts = RuncOptions {
        root: crate::daemon::shim::runtime_root::runtime_root(&cfg.root)
            .display()
            .to_string(),
        ..Default::default()
    };
    if let Some(criu) = resolve_criu(&cfg.criu) {
        opts.special_fields
            .mut_unknown_fields()
            .add_length_delimited(
                RUNC_CRIU_PATH_FIELD,
                criu.display().to_string().into_bytes(),
            );
    }
    pack_any(&opts).map_err(|e| Error::Shim(format!("encode the runtime options: {e}")))
}

impl Containers {
    /// Dumps a container with CRIU into `req.image_path`; it exits unless `leave_running`.
    pub fn checkpoint(&self, req: api::CheckpointRequest) -> Result<()> {
        let c = self.get(&req.namespace, &req.id)?;
        check_criu(&self.config().criu)?;
        let image = Path::new(&req.image_path);
        if !image.is_absolute() {
            return Err(Error::InvalidArgument(format!(
                "checkpoint directory {:?} is not absolute",
                req.image_path
            )));
        }
        let opts = CheckpointOptions {
            exit: !req.leave_running,
            image_path: req.image_path.clone(),
            work_path: req.work_path.clone(),
            ..Default::default()
        };
        let any = pack_any(&opts)
            .map_err(|e| Error::Shim(format!("encode the checkpoint options: {e}")))?;
        let creq = task::CheckpointTaskRequest {
            id: req.id.clone(),
            path: req.image_path.clone(),
            options: protobuf::MessageField::some(any),
            ..Default::default()
        };
        let _: tether_protocol::api::Empty = c
            .shim()?
            .task
            .call("Checkpoint", &creq, CHECKPOINT_TIMEOUT)
            .map_err(|e| Error::shim(&format!("checkpoint container {}", req.id), e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protobuf::Message;

    #[test]
    fn versions() {
        assert_eq!(parse_version("Version: 4.2.1\nGitID: x\n"), Some(40201));
        assert_eq!(parse_version("Version: 3.17\n"), Some(31700));
        assert_eq!(parse_version("Version: 3.15\n"), Some(31500));
        assert_eq!(parse_version("nothing"), None);
    }

    #[test]
    fn options_carry_criu_path_as_field_8() {
        let cfg = Config {
            root: "/r".into(),
            state: "/s".into(),
            socket: "/s/sock".into(),
            debug: false,
            log_max_size: 1,
            log_max_files: 1,
            criu: "/bin/sh".into(),
        };
        let any = runtime_options(&cfg).expect("encode");
        assert_eq!(any.type_url, "containerd.runc.v1.Options");
        let back = RuncOptions::parse_from_bytes(&any.value).expect("decode");
        assert_eq!(back.root, "/r/runc");
        assert!(
            back.binary_name.is_empty(),
            "the runtime binary stays the default"
        );
        let f = back
            .special_fields
            .unknown_fields()
            .get(RUNC_CRIU_PATH_FIELD);
        assert!(
            matches!(f, Some(protobuf::UnknownValueRef::LengthDelimited(b)) if b == b"/bin/sh"),
            "{f:?}"
        );
    }

    #[test]
    fn a_too_old_criu_is_named_with_its_version() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let criu = dir.path().join("criu");
        std::fs::write(&criu, "#!/bin/sh\necho Version: 3.15\n").expect("write");
        std::fs::set_permissions(&criu, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let e = check_criu(&criu).expect_err("too old");
        let msg = e.to_string();
        assert!(
            msg.contains("31500") && msg.contains(&criu.display().to_string()),
            "{msg}"
        );
        std::fs::write(&criu, "#!/bin/sh\necho Version: 4.2.1\n").expect("write");
        assert_eq!(check_criu(&criu).expect("new enough"), criu);
    }

    #[test]
    fn a_missing_criu_is_named() {
        let e = check_criu(Path::new("/nonexistent/criu")).expect_err("missing");
        assert!(e.to_string().contains("/nonexistent/criu"), "{e}");
    }
}
