//! Stdout throughput: through the shim and `ctr` (what a user of `ctr run` sees), through the
//! shim alone (its `file://` logging into /dev/null, timed inside the container), and the host's
//! pipe ceiling the two are compared with.

use super::cpu_seconds;
use std::collections::HashSet;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Instant;
use tether_tests::{busybox_rootfs, unique_id, Containerd, Ctr};

/// What streaming through `ctr` measured.
pub struct Through {
    pub mibs: f64,
    /// The shim's CPU (user + system) per 2 GiB.
    pub shim_cpu_s: f64,
    /// `ctr`'s CPU per 2 GiB: it copies the FIFO to its stdout.
    pub ctr_cpu_s: f64,
}

/// `dd bs=1M` of `mib` MiB to the container's stdout, read by the bench from `ctr run`'s
/// stdout; the shim's and ctr's CPU read before the container exits (it sleeps 3 s after dd).
pub fn through_ctr(cd: &Containerd, ctr: &Ctr, runtime: &str, mib: usize) -> Through {
    let id = unique_id("dd");
    let script = format!("dd if=/dev/zero bs=1M count={mib} 2>/dev/null; sleep 3");
    let mut child = ctr
        .command(&["run", "--rm", "--runtime", runtime, "--rootfs"])
        .arg(busybox_rootfs())
        .args([id.as_str(), "/bin/sh", "-c", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("ctr run dd");
    let mut stdout = child.stdout.take().expect("stdout");
    let before: HashSet<i32> = cd.shim_pids().into_iter().collect();
    let t0 = Instant::now();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0usize;
    let mut shim = None;
    let want = mib << 20;
    while total < want {
        match stdout.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => total += n,
        }
        if shim.is_none() {
            shim = cd.shim_pids().into_iter().find(|p| !before.contains(p));
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let per_2g = 2048.0 / mib as f64;
    let shim_cpu = shim.and_then(cpu_seconds).unwrap_or(0.0);
    let ctr_cpu = cpu_seconds(child.id() as i32).unwrap_or(0.0);
    let _ = child.wait();
    Through {
        mibs: (total as f64 / (1 << 20) as f64) / secs,
        shim_cpu_s: shim_cpu * per_2g,
        ctr_cpu_s: ctr_cpu * per_2g,
    }
}

/// `dd bs=1M` of `mib` MiB to the container's stdout, which the shim writes into /dev/null
/// (`ctr run --log-uri file:///dev/null`): no reader but the shim. The container times its dd
/// (`$EPOCHREALTIME` before and after, into a bind-mounted file): dd can only write as fast as
/// the shim drains its pipe. NaN if the run fails.
pub fn into_dev_null(ctr: &Ctr, runtime: &str, mib: usize) -> f64 {
    let out = tempfile::tempdir().expect("tempdir for the timing");
    let id = unique_id("dd");
    let script = format!(
        "s=$EPOCHREALTIME; dd if=/dev/zero bs=1M count={mib} 2>/dev/null; \
         e=$EPOCHREALTIME; echo \"$s $e\" > /tmp/times"
    );
    let mount = format!(
        "type=bind,src={},dst=/tmp,options=rbind:rw",
        out.path().display()
    );
    let status = ctr
        .command(&[
            "run",
            "--rm",
            "--runtime",
            runtime,
            "--log-uri",
            "file:///dev/null",
            "--mount",
            &mount,
            "--rootfs",
        ])
        .arg(busybox_rootfs())
        .args([id.as_str(), "/bin/sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !status.as_ref().is_ok_and(|s| s.success()) {
        eprintln!("   {runtime}: ctr run --log-uri file:///dev/null failed: {status:?}");
        return f64::NAN;
    }
    let times = std::fs::read_to_string(out.path().join("times")).unwrap_or_default();
    let t: Vec<f64> = times
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    match t[..] {
        [s, e] if e > s => mib as f64 / (e - s),
        _ => f64::NAN,
    }
}

/// The host pipe ceiling: dd into a 1 MiB pipe (the size the shim gives its pipes) read by this
/// process, best of three.
pub fn host_pipe_mibs(mib: usize) -> f64 {
    (0..3).map(|_| host_pipe_once(mib)).fold(0.0, f64::max)
}

fn host_pipe_once(mib: usize) -> f64 {
    let mut child = Command::new("/bin/busybox")
        .args(["dd", "if=/dev/zero", "bs=1M", &format!("count={mib}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("dd");
    let mut out = child.stdout.take().expect("stdout");
    let _ = nix::fcntl::fcntl(&out, nix::fcntl::FcntlArg::F_SETPIPE_SZ(1 << 20));
    let t0 = Instant::now();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0usize;
    loop {
        match out.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => total += n,
        }
    }
    let _ = child.wait();
    (total as f64 / (1 << 20) as f64) / t0.elapsed().as_secs_f64()
}
