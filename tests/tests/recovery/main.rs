//! Crash recovery: a real `tether daemon`, real shims, real runc, real SIGKILLs. The daemon and
//! shims can die at any instant and no exit is lost or reported twice.
//!
//! The test process is a child subreaper here: shims orphaned by a SIGKILLed daemon (and a
//! killed shim's container processes) are reparented to it, and it reaps them.

use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tether_tests::manager::{Daemon, EventStream, RUNC_RUNTIME, TETHER_RUNTIME};
use tether_tests::{busybox_rootfs, cmd, mounts, procs, unique_id, wait_until};

mod helpers;
mod records;
mod restarts;
mod sigkills;

use helpers::*;
