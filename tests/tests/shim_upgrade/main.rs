//! Live shim upgrade (docs/upgrade.md) through a real containerd and runc: the shim serving a
//! running container re-executes the binary newly installed at its path, keeps its pid, its
//! container, its output, its terminal, its execs and a `Wait` parked before the upgrade; an
//! exit during the handover is reaped by the new image and reported once; an upgrade asked
//! during a runtime call waits for it; containerd's own `ctr` scenarios pass after it; a binary
//! that cannot take over is refused (before `execve`, or after it by going back to the old
//! binary) and the old code serves on.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tether_protocol::admin::{UpgradeResponse, ADMIN_SERVICE, UPGRADE_METHOD};
use tether_protocol::api::task::{WaitRequest, WaitResponse};
use tether_protocol::api::ttrpc;
use tether_protocol::task_service::TASK_SERVICE_V2;
use tether_tests::containerd::Options;
use tether_tests::pty::Terminal;
use tether_tests::shimdir::{exe_inode, ShimDir};
use tether_tests::{busybox_rootfs, rawttrpc, shim, unique_id, wait_until, Containerd, Ctr};
use tether_tests::{shim_binary, TETHER_RUNTIME};
use tether_tests::{Event, Events};

mod basics;
mod busy;
mod scenarios;
mod setup;

use setup::*;
