//! A shim as the daemon sees it: how one is launched and its `delete` action run, exactly as
//! containerd does (`launcher.rs`, with a bounded wait for its commands: `bounded.rs`), the
//! OCI runtime root every shim of this daemon is given (`runtime_root.rs`), and a running
//! shim's process and socket (`handle.rs`). The task service itself is called through
//! `tether_protocol::task_service`.

pub(super) mod bounded;
pub(super) mod handle;
pub(super) mod launcher;
pub(super) mod runtime_root;
