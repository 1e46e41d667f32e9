//! The shared harness of Tether's integration tests (`tests/tests/*.rs`).
//!
//! # What it gives a test
//!
//! | module | job |
//! |---|---|
//! | [`bins`] | where the binaries under test are (`TETHER_BIN_DIR`, else `target/release`) |
//! | [`rootfs`] | a busybox root filesystem from Debian's busybox-static, shared per process |
//! | [`image`] | a small OCI image tarball of that rootfs that `ctr image import` accepts |
//! | [`containerd`] | a private containerd per test, stopped and cleaned without leftovers |
//! | [`cri`] | containerd's CRI plugin: a CRI client, pods, containers, CRI logs, leftovers |
//! | [`pause`] | the pod sandbox image: a static pause program built with gcc |
//! | [`ctr`] | `ctr --address A -n NS ...` with a deadline; `ctr run` builder; parsed `task ls/ps` |
//! | [`flavor`] | which containerd and ctr: the system's, or 1.7/2.x by `TETHER_CONTAINERD_VERSION` |
//! | [`events`] | `ctr events` streamed in the background, with `wait_for(pred, timeout)` |
//! | [`criu`] | a CRIU that works on this machine (`TETHER_CRIU`, else the one `make criu` built) |
//! | [`cmd`] | run a child with a deadline, capturing stdout/stderr (killed by pid on timeout) |
//! | [`manager`] | a private `tether daemon` per test, CLI calls against it, `tether events` streams |
//! | [`procs`] | processes by command line, children, zombies, descendants, shims of a daemon |
//! | [`mounts`] | mounts under a path, and unmounting them |
//! | [`cgroups`] | the cgroups containers leave, killing and removing them |
//! | [`shim`] | one container's shim from outside: address, socket, pid, runc state, `delete` |
//! | [`rawttrpc`] | hand-made ttrpc frames and responses, statuses, exec process specs |
//! | [`ids`] | names that never collide between parallel tests: [`unique_id`] |
//! | [`wait`] | polling a condition with a deadline |
//!
//! # Writing a test
//!
//! ```no_run
//! use tether_tests::{busybox_rootfs, unique_id, Containerd, RUNC_RUNTIME};
//!
//! let cd = Containerd::start();                 // private daemon, own sockets and state
//! let ctr = cd.ctr(&unique_id("ns"));           // a fresh namespace
//! let id = unique_id("c");
//! let out = ctr
//!     .run(&id)
//!     .runtime(RUNC_RUNTIME)                    // or TETHER_RUNTIME for our shim
//!     .rootfs(busybox_rootfs())
//!     .flag("--read-only")                      // the shared rootfs is read-only
//!     .rm()
//!     .args(&["/bin/echo", "hello"])            // absolute paths: no PATH with --rootfs
//!     .success();
//! assert_eq!(out.stdout, "hello\n");
//! let check = cd.leak_check();
//! drop(cd);                                     // stops everything it started
//! check.assert_clean();                         // no daemon, shim, mount, cgroup left
//! ```
//!
//! # Rules
//!
//! - The tests need root, Debian's `containerd`, `runc` and `busybox-static` (`make deps`), and
//!   for our own runtime the release binaries (`cargo build --release --bins`, or `make`).
//! - Every test runs its own [`Containerd`]; they run in parallel and share nothing but the
//!   read-only busybox rootfs and image tarball of the test process.
//! - Name every container and namespace with [`unique_id`]: cgroups (`/<namespace>/<id>` in each
//!   hierarchy) and containerd's own shim sockets (`/run/containerd/s/`) are machine-wide.
//! - Everything a test starts is stopped by pid; everything mounted is unmounted. Dropping a
//!   [`Containerd`] does it for whatever containerd started; [`Events`] and [`cmd`] kill their own
//!   children. A test that starts another process stops it itself.
//! - Every wait has a deadline, and every failure message carries what the program said (and
//!   containerd's log tail).

pub mod bins;
pub mod cgroups;
pub mod cmd;
pub mod containerd;
pub mod cri;
pub mod criu;
pub mod ctr;
pub mod events;
pub mod flavor;
pub mod ids;
pub mod image;
pub mod manager;
pub mod mounts;
pub mod pause;
pub mod procs;
pub mod pty;
pub mod rawttrpc;
pub mod registry;
pub mod rootfs;
pub mod scratch;
pub mod shim;
pub mod shimdir;
pub mod shimtest;
pub mod wait;

pub use bins::{bin_dir, binaries, shim_binary, tether_binary, Binaries};
pub use cmd::CmdOutput;
pub use containerd::{
    Cleanup, Containerd, LeakCheck, Options, RUNC_RUNTIME, SNAPSHOTTER, TETHER_RUNTIME,
};
pub use ctr::{Ctr, TaskRow};
pub use events::{Event, Events};
pub use flavor::{flavor, Flavor};
pub use ids::unique_id;
pub use image::{busybox_image, ImageTarball, BUSYBOX_IMAGE};
pub use rootfs::{build_busybox_rootfs, busybox_rootfs};
pub use wait::wait_until;
