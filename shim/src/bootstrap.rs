//! What `start` reads on stdin and how it answers, in both of containerd's protocols:
//!
//! - up to 2.2: the runtime options as a protobuf `Any` (or nothing); the answer is the bare
//!   socket address;
//! - 2.3+: a `containerd.runtime.bootstrap.v1.BootstrapParams` (id, namespace, log level,
//!   containerd's addresses, `socket_dir`, and the runtime options among its `extensions`); the
//!   answer is a serialized `BootstrapResult`. 2.3 still passes the old flags and environment.
//!
//! The two are told apart by their fields: an `Any` has only fields 1 and 2 (`type_url`,
//! `value`), and containerd's `BootstrapParams` always fills more (its version, binary,
//! addresses). A message with only the first two is a `BootstrapParams` only if it names this
//! very task and namespace.

use crate::cli::Flags;
use crate::error::{Result, ShimError};
use crate::options::RuntimeOptions;
use protobuf::{Message, MessageField};
use std::path::PathBuf;
use tether_protocol::api::bootstrap::{BootstrapParams, BootstrapResult, LogLevel};
use tether_protocol::api::Any;

/// The shim version we answer: task API v2. Version 3 would tell containerd 2.x that this shim
/// serves a whole pod (it then skips `start` for the pod's other containers), and 1.7 refuses it.
pub const SHIM_VERSION: i32 = 2;

/// containerd's default `socket_dir` (its state dir's `s`), which it sends when none is set.
pub const CONTAINERD_DEFAULT_SOCKET_DIR: &str = "/run/containerd/s";

/// The longest `socket_dir` containerd accepts on Linux: the 64-character socket name must fit
/// in a unix socket address.
pub const MAX_SOCKET_DIR_LEN: usize = 42;

/// Which protocol containerd spoke, so the answer takes the form it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Legacy,
    Bootstrap,
}

/// `start`'s input, whichever protocol brought it.
#[derive(Debug)]
pub struct StartInput {
    pub protocol: Protocol,
    /// The flags, completed from `BootstrapParams` where the command line left them empty.
    pub flags: Flags,
    /// The runtime options; unreadable ones are the defaults here (Create refuses them, naming
    /// the container).
    pub options: RuntimeOptions,
    /// containerd's ttrpc address, for the long-lived shim's `TTRPC_ADDRESS`.
    pub ttrpc_address: Option<String>,
    /// A socket directory containerd's operator chose (`socket_dir` other than its default).
    pub socket_dir: Option<PathBuf>,
}

/// Reads `start`'s stdin bytes against the command line's flags.
pub fn read(raw: &[u8], flags: &Flags) -> Result<StartInput> {
    match as_bootstrap(raw, flags) {
        Some(params) => from_bootstrap(params, flags),
        None => Ok(StartInput {
            protocol: Protocol::Legacy,
            flags: flags.clone(),
            options: legacy_options(raw),
            ttrpc_address: None,
            socket_dir: None,
        }),
    }
}

/// What `start` prints: the bare address, or a `BootstrapResult` to a 2.3+ containerd.
pub fn answer(protocol: Protocol, address: &str) -> Result<Vec<u8>> {
    match protocol {
        Protocol::Legacy => Ok(address.as_bytes().to_vec()),
        Protocol::Bootstrap => BootstrapResult {
            version: SHIM_VERSION,
            address: address.to_string(),
            protocol: "ttrpc".into(),
            ..Default::default()
        }
        .write_to_bytes()
        .map_err(|e| ShimError::InvalidArgument(format!("encode BootstrapResult: {e}"))),
    }
}

fn as_bootstrap(raw: &[u8], flags: &Flags) -> Option<BootstrapParams> {
    if raw.is_empty() {
        return None;
    }
    let p = BootstrapParams::parse_from_bytes(raw).ok()?;
    let beyond_an_any = p.log_level.value() != 0
        || !p.containerd_version.is_empty()
        || !p.containerd_ttrpc_address.is_empty()
        || !p.containerd_grpc_address.is_empty()
        || !p.containerd_binary.is_empty()
        || !p.extensions.is_empty()
        || p.socket_dir.is_some();
    let names_this_task =
        !p.instance_id.is_empty() && p.instance_id == flags.id && p.namespace == flags.namespace;
    (beyond_an_any || names_this_task).then_some(p)
}

fn from_bootstrap(p: BootstrapParams, flags: &Flags) -> Result<StartInput> {
    let mut merged = flags.clone();
    agree("id", &mut merged.id, &p.instance_id)?;
    agree("namespace", &mut merged.namespace, &p.namespace)?;
    if merged.address.is_empty() {
        merged.address = p.containerd_grpc_address.clone();
    }
    if merged.publish_binary.is_empty() {
        merged.publish_binary = p.containerd_binary.clone();
    }
    // More verbose levels are lower numbers (an open enum: TRACE is -8).
    if p.log_level.value() <= LogLevel::LOG_LEVEL_DEBUG as i32 {
        merged.debug = true;
    }
    // The options are the first extension that is a runtime options type we read; other
    // extensions (CRI or sandbox configuration in later versions) are not ours.
    let options = p
        .extensions
        .iter()
        .filter_map(|e| e.value.as_ref())
        .filter(|any| crate::options::is_options_type(&any.type_url))
        .map(|any| crate::options::from_any(&MessageField::some(any.clone())))
        .next()
        .and_then(|r| r.ok())
        .unwrap_or_default();
    Ok(StartInput {
        protocol: Protocol::Bootstrap,
        flags: merged,
        options,
        ttrpc_address: Some(p.containerd_ttrpc_address).filter(|a| !a.is_empty()),
        socket_dir: p.socket_dir.as_deref().and_then(chosen_socket_dir),
    })
}

/// The flag and the message must name the same thing; a missing flag takes the message's.
fn agree(what: &str, flag: &mut String, from_params: &str) -> Result<()> {
    if from_params.is_empty() {
        return Ok(());
    }
    if flag.is_empty() {
        *flag = from_params.to_string();
        return Ok(());
    }
    if flag != from_params {
        return Err(ShimError::InvalidArgument(format!(
            "BootstrapParams names {what} {from_params:?} but the command line says -{what} {flag:?}"
        )));
    }
    Ok(())
}

/// A `socket_dir` we use: one containerd's operator set (not its default, which holds
/// containerd's own shims' sockets: ours stay in our directory, where a pod's shim is found
/// again across a containerd upgrade), absolute and short enough for a socket address.
fn chosen_socket_dir(dir: &str) -> Option<PathBuf> {
    let path = PathBuf::from(dir);
    let sensible = path.is_absolute()
        && dir.len() <= MAX_SOCKET_DIR_LEN
        && !path
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir));
    (sensible && path != std::path::Path::new(CONTAINERD_DEFAULT_SOCKET_DIR)).then_some(path)
}

/// The old protocol's stdin: an `Any` of runtime options, or nothing.
fn legacy_options(raw: &[u8]) -> RuntimeOptions {
    Any::parse_from_bytes(raw)
        .ok()
        .and_then(|any| crate::options::from_any(&MessageField::some(any)).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tether_protocol::api::bootstrap::Extension;
    use tether_protocol::api::pack_any;
    use tether_protocol::api::runc_options::Options as RuncOptions;
    use tether_protocol::runtime_options::RuntimeOptions as Wrapper;

    fn flags(id: &str, ns: &str) -> Flags {
        Flags {
            id: id.into(),
            namespace: ns.into(),
            address: "/run/containerd/containerd.sock".into(),
            action: "start".into(),
            ..Default::default()
        }
    }

    fn runc_any(shim_cgroup: &str) -> Any {
        pack_any(&RuncOptions {
            shim_cgroup: shim_cgroup.into(),
            binary_name: "runc".into(),
            ..Default::default()
        })
        .expect("pack")
    }

    /// The message as containerd 2.3's `client.Command` builds it.
    fn params(id: &str, ns: &str, options: Option<Any>) -> BootstrapParams {
        let mut p = BootstrapParams {
            instance_id: id.into(),
            namespace: ns.into(),
            containerd_version: "v2.3.4".into(),
            containerd_ttrpc_address: "/run/containerd/containerd.sock.ttrpc".into(),
            containerd_grpc_address: "/run/containerd/containerd.sock".into(),
            containerd_binary: "/usr/bin/containerd".into(),
            socket_dir: Some(CONTAINERD_DEFAULT_SOCKET_DIR.into()),
            ..Default::default()
        };
        if let Some(any) = options {
            p.extensions.push(Extension {
                value: MessageField::some(any),
                ..Default::default()
            });
        }
        p
    }

    #[test]
    fn the_old_any_stays_the_old_protocol() {
        let raw = runc_any("/shims").write_to_bytes().expect("encode");
        let got = read(&raw, &flags("c1", "default")).expect("read");
        assert_eq!(got.protocol, Protocol::Legacy);
        assert_eq!(got.options.shim_cgroup, "/shims");
        assert_eq!(
            answer(got.protocol, "unix:///s/x").expect("answer"),
            b"unix:///s/x"
        );
        // The CRI plugin's TOML wrapper, whose bytes are valid UTF-8 throughout.
        let w = Wrapper {
            config_body: b"ShimCgroup = \"/pods\"\n".to_vec(),
            ..Default::default()
        };
        let raw = w.to_any().expect("any").write_to_bytes().expect("encode");
        let got = read(&raw, &flags("c1", "default")).expect("read");
        assert_eq!(got.protocol, Protocol::Legacy);
        assert_eq!(got.options.shim_cgroup, "/pods");
        // Nothing at all (ctr without options), and bytes that are neither.
        for raw in [&b""[..], &[0xff, 0x01][..]] {
            let got = read(raw, &flags("c1", "default")).expect("read");
            assert_eq!(got.protocol, Protocol::Legacy);
            assert_eq!(got.options, RuntimeOptions::default());
        }
    }

    #[test]
    fn bootstrap_params_give_the_options_from_their_extensions() {
        let p = params("c1", "default", Some(runc_any("/shims")));
        let raw = p.write_to_bytes().expect("encode");
        let got = read(&raw, &flags("c1", "default")).expect("read");
        assert_eq!(got.protocol, Protocol::Bootstrap);
        assert_eq!(got.options.shim_cgroup, "/shims");
        assert_eq!(
            got.ttrpc_address.as_deref(),
            Some("/run/containerd/containerd.sock.ttrpc")
        );
        // containerd's default directory is containerd's shims'; ours stay in ours.
        assert_eq!(got.socket_dir, None);
        // The answer containerd 2.3 decodes.
        let out = answer(got.protocol, "unix:///run/tether/s/abc").expect("answer");
        let r = BootstrapResult::parse_from_bytes(&out).expect("decode BootstrapResult");
        assert_eq!(
            (r.version, r.address.as_str(), r.protocol.as_str()),
            (2, "unix:///run/tether/s/abc", "ttrpc")
        );
    }

    #[test]
    fn a_minimal_message_naming_this_task_is_bootstrap() {
        let p = BootstrapParams {
            instance_id: "c1".into(),
            namespace: "default".into(),
            ..Default::default()
        };
        let raw = p.write_to_bytes().expect("encode");
        assert_eq!(
            read(&raw, &flags("c1", "default")).expect("read").protocol,
            Protocol::Bootstrap
        );
        // The same bytes naming another task are an (unreadable) Any: the old protocol.
        assert_eq!(
            read(&raw, &flags("c2", "default")).expect("read").protocol,
            Protocol::Legacy
        );
    }

    #[test]
    fn ids_that_disagree_are_refused_and_missing_flags_are_filled() {
        let raw = params("c1", "default", None)
            .write_to_bytes()
            .expect("encode");
        match read(&raw, &flags("other", "default")) {
            Err(ShimError::InvalidArgument(m)) => {
                assert!(m.contains("\"c1\"") && m.contains("\"other\""), "{m}")
            }
            other => panic!("want InvalidArgument, got {other:?}"),
        }
        assert!(read(&raw, &flags("c1", "k8s.io")).is_err());
        let got = read(&raw, &Flags::default()).expect("read");
        assert_eq!(
            (got.flags.id.as_str(), got.flags.namespace.as_str()),
            ("c1", "default")
        );
        assert_eq!(got.flags.address, "/run/containerd/containerd.sock");
        assert_eq!(got.flags.publish_binary, "/usr/bin/containerd");
    }

    #[test]
    fn debug_level_and_socket_dir() {
        let mut p = params("c1", "default", None);
        p.log_level = LogLevel::LOG_LEVEL_DEBUG.into();
        p.socket_dir = Some("/run/custom/s".into());
        let got = read(&p.write_to_bytes().unwrap(), &flags("c1", "default")).expect("read");
        assert!(got.flags.debug);
        assert_eq!(got.socket_dir, Some(PathBuf::from("/run/custom/s")));
        for bad in ["relative/s", "/run/../etc", &format!("/{}", "x".repeat(60))] {
            p.socket_dir = Some(bad.to_string());
            let got = read(&p.write_to_bytes().unwrap(), &flags("c1", "default")).expect("read");
            assert_eq!(got.socket_dir, None, "{bad}");
        }
    }

    #[test]
    fn unknown_extensions_are_skipped() {
        let mut p = params("c1", "default", None);
        p.extensions.push(Extension {
            value: MessageField::some(Any {
                type_url: "containerd.io/cri.v1.PodSandboxConfig".into(),
                value: vec![1, 2, 3],
                ..Default::default()
            }),
            ..Default::default()
        });
        p.extensions.push(Extension {
            value: MessageField::some(runc_any("/shims")),
            ..Default::default()
        });
        let got = read(&p.write_to_bytes().unwrap(), &flags("c1", "default")).expect("read");
        assert_eq!(got.options.shim_cgroup, "/shims");
    }
}
