//! The OCI runtime root each daemon's shims use: `<--root>/runc`, passed to every shim the way
//! containerd passes it, as `containerd.runc.v1.Options.root` (on `start`'s stdin and in
//! `Create`'s options). Without it every shim uses runc's default root for its namespace
//! (`/run/containerd/runc/<ns>`), shared with containerd and with every other daemon, and two
//! of them cannot run the same id in the same namespace.
//!
//! Both our shim and containerd's Go shim append the namespace to it and remember it in the
//! bundle for their `delete` action, so a crashed container is cleaned in the right root too.

#[cfg(test)]
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
#[cfg(test)]
use tether_protocol::api::runc_options::Options as RuncOptions;
#[cfg(test)]
use tether_protocol::api::{pack_any, Any};

/// The runtime root's directory under the daemon's `--root`.
pub const DIR_NAME: &str = "runc";

/// The runtime root for a daemon whose persistent root is `root` (absolute: shims run in their
/// bundle, where a relative path would mean something else).
pub fn runtime_root(root: &Path) -> PathBuf {
    root.join(DIR_NAME)
}

/// The runtime options every shim of this daemon gets (without CRIU; see `checkpoint`).
#[cfg(test)]
pub fn options(root: &Path) -> Result<Any> {
    let opts = RuncOptions {
        root: runtime_root(root).display().to_string(),
        ..Default::default()
    };
    pack_any(&opts).map_err(|e| Error::Shim(format!("encode the runtime options: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use protobuf::Message;

    #[test]
    fn options_name_the_root_under_the_daemon_root() {
        let any = options(Path::new("/var/lib/tether")).expect("encode");
        assert_eq!(any.type_url, "containerd.runc.v1.Options");
        let back = RuncOptions::parse_from_bytes(&any.value).expect("decode");
        assert_eq!(back.root, "/var/lib/tether/runc");
        assert!(
            back.binary_name.is_empty(),
            "the runtime binary stays the default"
        );
    }
}
