//! The pause image for CRI pod sandboxes, built offline: `pause.c` compiled with
//! `gcc -static` (Debian's gcc and libc6-dev) into a one-file OCI image tarball.
//!
//! containerd's CRI plugin starts every pod with its `sandbox_image`; without a registry we
//! build our own. The program holds the pod's namespaces, reaps the orphans of a shared PID
//! namespace and exits 0 on SIGTERM.

use crate::cmd;
use crate::image::{build_image, ImageTarball};
use crate::rootfs::Entry;
use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

/// The reference of the pause image (what `sandbox_image` names).
pub const PAUSE_IMAGE: &str = "localhost/tether-pause:test";

/// The program's source, compiled at first use.
const PAUSE_C: &str = include_str!("pause.c");

/// Compiles `pause.c` statically; returns the binary's bytes. Panics with gcc's output.
pub fn build_pause_binary() -> Vec<u8> {
    let dir = crate::scratch::scratch_dir();
    let src = dir.join("pause.c");
    let bin = dir.join("pause");
    fs::write(&src, PAUSE_C).unwrap_or_else(|e| panic!("write {}: {e}", src.display()));
    let out = cmd::run(
        Command::new("gcc")
            .args(["-static", "-Os", "-s", "-o"])
            .arg(&bin)
            .arg(&src),
        None,
        Duration::from_secs(120),
    );
    assert!(
        out.success(),
        "gcc -static pause.c (install gcc and libc6-dev): {out}"
    );
    fs::read(&bin).unwrap_or_else(|e| panic!("read {}: {e}", bin.display()))
}

/// The pause image [`PAUSE_IMAGE`] shared by every test of this process, built on first use.
pub fn pause_image() -> &'static ImageTarball {
    static IMAGE: OnceLock<ImageTarball> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let entries = [
            Entry::File {
                path: "pause".into(),
                mode: 0o755,
                data: build_pause_binary(),
            },
            // The CRI plugin bind-mounts /etc/hostname, hosts and resolv.conf over files here.
            Entry::Dir {
                path: "etc".into(),
                mode: 0o755,
            },
            Entry::Dir {
                path: "dev".into(),
                mode: 0o755,
            },
            Entry::Dir {
                path: "proc".into(),
                mode: 0o555,
            },
            Entry::Dir {
                path: "sys".into(),
                mode: 0o555,
            },
        ];
        let out: PathBuf = crate::scratch::scratch_dir().join("pause-image.tar");
        build_image(&entries, PAUSE_IMAGE, &["/pause"], &out)
            .unwrap_or_else(|e| panic!("writing the pause image to {}: {e}", out.display()))
    })
}
