//! The `-info` flag: what containerd 2.2+ asks a shim before every task create, and what its
//! CRI plugin reports to kubelet as the handler's features.
//!
//! stdin holds the runtime options as an `Any` (may be empty); stdout gets a serialized
//! `containerd.types.RuntimeInfo`: our name and version, the options echoed back, and in
//! `features` the OCI runtime's own `features` JSON, as containerd's runc shim does it (CRI reads
//! `rro` among its mount options and its user-namespace support from there).

use crate::error::{Result, ShimError};
use crate::runtime::RuntimeConfig;
use protobuf::{Message, MessageField};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tether_protocol::api::introspection::{RuntimeInfo, RuntimeVersion};
use tether_protocol::api::Any;

/// The runtime name containerd knows us by.
pub const RUNTIME_NAME: &str = "io.containerd.tether.v2";

/// containerd's type URL for the runtime-spec `features.Features` (JSON in an `Any`).
pub const FEATURES_TYPE_URL: &str =
    "types.containerd.io/opencontainers/runtime-spec/1/features/Features";

/// How long the runtime's `features` may take: containerd waits for `-info` on every create.
pub const FEATURES_TIMEOUT: Duration = Duration::from_secs(10);

/// The most stdin (options) or `features` output read, as containerd's shim bounds its stdin.
const MAX_INPUT: u64 = 10 << 20;

/// Reads the options from `input` and builds the answer.
pub fn runtime_info(input: impl Read) -> Result<RuntimeInfo> {
    let mut raw = Vec::new();
    input
        .take(MAX_INPUT)
        .read_to_end(&mut raw)
        .map_err(ShimError::io("read the runtime options from stdin"))?;
    let options = if raw.is_empty() {
        None
    } else {
        Some(Any::parse_from_bytes(&raw).map_err(|e| {
            ShimError::InvalidArgument(format!("runtime options on stdin are not an Any: {e}"))
        })?)
    };
    let opts = crate::options::from_any(&MessageField::from_option(options.clone()))?;
    let binary = if opts.binary_name.is_empty() {
        RuntimeConfig::DEFAULT_BINARY.to_string()
    } else {
        opts.binary_name.clone()
    };
    let features = match find_binary(&binary) {
        Some(path) => match runtime_features(&path, FEATURES_TIMEOUT) {
            Ok(json) => Some(json),
            Err(e) => {
                // As containerd's shim: a runtime without `features` still gets an answer.
                log::debug!("no features from {}: {e}", path.display());
                None
            }
        },
        None => {
            return Err(ShimError::NotFound(format!(
                "OCI runtime {binary:?} not found in PATH"
            )))
        }
    };
    Ok(RuntimeInfo {
        name: RUNTIME_NAME.into(),
        version: MessageField::some(RuntimeVersion {
            version: env!("CARGO_PKG_VERSION").into(),
            revision: option_env!("TETHER_REVISION").unwrap_or_default().into(),
            ..Default::default()
        }),
        options: MessageField::from_option(options),
        features: MessageField::from_option(features.map(|json| Any {
            type_url: FEATURES_TYPE_URL.into(),
            value: json,
            ..Default::default()
        })),
        ..Default::default()
    })
}

/// `name` as the runtime would be run: a path as is, a bare name from `PATH`.
fn find_binary(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        return Path::new(name).is_file().then(|| PathBuf::from(name));
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// `<runtime> features`, killed if it takes longer than `timeout`; its stdout must be JSON.
pub fn runtime_features(binary: &Path, timeout: Duration) -> Result<Vec<u8>> {
    let what = format!("{} features", binary.display());
    let mut child = Command::new(binary)
        .arg("features")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .env_remove("NOTIFY_SOCKET")
        .spawn()
        .map_err(ShimError::io(format!("run {what}")))?;
    let stdout = child.stdout.take();
    // A short-lived action, not the shim's loop: a reader thread keeps a chatty runtime from
    // filling the pipe while this waits with a deadline.
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        if let Some(s) = stdout {
            let _ = s.take(MAX_INPUT).read_to_end(&mut out);
        }
        out
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                let _ = reader.join();
                return Err(ShimError::DeadlineExceeded(format!(
                    "{what} took longer than {timeout:?}"
                )));
            }
            Err(e) => return Err(ShimError::io(format!("wait for {what}"))(e)),
        }
    };
    let out = reader.join().unwrap_or_default();
    if !status.success() {
        return Err(ShimError::Runtime(format!("{what} failed: {status}")));
    }
    serde_json::from_slice::<serde_json::Value>(&out)
        .map_err(|e| ShimError::Runtime(format!("{what} printed no JSON: {e}")))?;
    Ok(out.trim_ascii().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use tether_protocol::api::pack_any;
    use tether_protocol::api::runc_options::Options as RuncOptions;

    /// A stand-in runtime whose `features` runs `body` (a shell script).
    fn fake_runtime(dir: &Path, body: &str) -> PathBuf {
        let path = dir.join("fakeruntime");
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        path
    }

    fn options_for(binary: &Path) -> Vec<u8> {
        let o = RuncOptions {
            binary_name: binary.display().to_string(),
            ..Default::default()
        };
        pack_any(&o)
            .expect("pack")
            .write_to_bytes()
            .expect("encode")
    }

    #[test]
    fn info_decodes_with_the_runtimes_features_and_the_options() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rt = fake_runtime(
            dir.path(),
            r#"[ "$1" = features ] && echo '{"ociVersionMin":"1.0.0","mountOptions":["rro","ro"]}'"#,
        );
        let stdin = options_for(&rt);
        let info = runtime_info(&stdin[..]).expect("info");
        // What containerd does with our stdout.
        let bytes = info.write_to_bytes().expect("encode");
        let got = RuntimeInfo::parse_from_bytes(&bytes).expect("decode RuntimeInfo");
        assert_eq!(got.name, RUNTIME_NAME);
        assert_eq!(got.version.version, env!("CARGO_PKG_VERSION"));
        assert_eq!(
            got.options
                .as_ref()
                .expect("options")
                .write_to_bytes()
                .unwrap(),
            stdin
        );
        let f = got.features.as_ref().expect("features");
        assert_eq!(f.type_url, FEATURES_TYPE_URL);
        let json: serde_json::Value = serde_json::from_slice(&f.value).expect("JSON");
        assert_eq!(json["mountOptions"][0], "rro");
    }

    #[test]
    fn a_runtime_without_features_still_answers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rt = fake_runtime(dir.path(), "echo 'unknown command' >&2; exit 1");
        let info = runtime_info(&options_for(&rt)[..]).expect("info");
        assert_eq!(info.name, RUNTIME_NAME);
        assert!(info.features.is_none());
        let rt = fake_runtime(dir.path(), "echo not json");
        assert!(runtime_info(&options_for(&rt)[..])
            .expect("info")
            .features
            .is_none());
    }

    #[test]
    fn a_hanging_features_is_killed_at_its_deadline() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rt = fake_runtime(dir.path(), "exec sleep 30");
        match runtime_features(&rt, Duration::from_millis(200)) {
            Err(ShimError::DeadlineExceeded(m)) => assert!(m.contains("features"), "{m}"),
            other => panic!("want DeadlineExceeded, got {other:?}"),
        }
    }

    #[test]
    fn bad_options_and_a_missing_runtime_are_errors() {
        assert!(matches!(
            runtime_info(&[0xff, 0xff, 0xff][..]),
            Err(ShimError::InvalidArgument(_))
        ));
        let missing = options_for(Path::new("/nonexistent/runtime"));
        match runtime_info(&missing[..]) {
            Err(ShimError::NotFound(m)) => assert!(m.contains("/nonexistent/runtime"), "{m}"),
            other => panic!("want NotFound, got {other:?}"),
        }
    }
}
