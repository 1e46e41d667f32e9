//! The OCI runtime root each daemon's shims use: `<--root>/runc`, passed to every shim the way
//! containerd passes it, as `containerd.runc.v1.Options.root` (on `start`'s stdin and in
//! `Create`'s options). Without it every shim uses runc's default root for its namespace
//! (`/run/containerd/runc/<ns>`), shared with containerd and with every other daemon, and two
//! of them cannot run the same id in the same namespace.
//!
//! The options themselves are built in `checkpoint::runtime_options` (with the CRIU path).
//!
//! Both our shim and containerd's Go shim append the namespace to it and remember it in the
//! bundle for their `delete` action, so a crashed container is cleaned in the right root too.

use std::path::{Path, PathBuf};

/// The runtime root's directory under the daemon's `--root`.
pub const DIR_NAME: &str = "runc";

/// The runtime root for a daemon whose persistent root is `root` (absolute: shims run in their
/// bundle, where a relative path would mean something else).
pub fn runtime_root(root: &Path) -> PathBuf {
    root.join(DIR_NAME)
}
