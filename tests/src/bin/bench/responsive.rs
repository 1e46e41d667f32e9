//! How a shim behaves while it waits: `State` round trips while another request's runtime call
//! hangs, and how often an idle shim wakes up.
//!
//! The hang is a runc wrapper (a shell script named `runc` in the bench's temp dir) that sleeps
//! before running one verb and runs runc at once for every other one. While a `ctr task exec`
//! waits on that slow `runc exec`, the bench calls `State` straight on the shim's socket over
//! one ttrpc connection, as containerd does.
//!
//! The wrapper is selected by `PATH`, on a second private containerd that both shims inherit it
//! from: ctr 1.6 passes `--runc-binary` (runc options `BinaryName`) only to
//! `io.containerd.runc.v2` and refuses it for any other runtime, and a wrapper on the main
//! containerd's `PATH` would add a shell to every runc call of the other figures.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};
use tether_protocol::api::task::{StateRequest, StateResponse};
use tether_protocol::task_service::TaskCaller;
use tether_tests::{busybox_rootfs, shim, unique_id, wait_until, Containerd, Ctr};

/// How long the slow verb hangs.
pub const HANG: Duration = Duration::from_secs(3);
/// `State` calls spread evenly over [`SPREAD`], from the moment the hang began.
pub const STATE_CALLS: usize = 50;
/// Within [`HANG`], leaving room for a slow last call.
pub const SPREAD: Duration = Duration::from_millis(2500);
/// After which `State` calls one `ctr task ls` is timed (a quarter, half and three quarters in).
const TASK_LS_AT: [usize; 3] = [STATE_CALLS / 4, STATE_CALLS / 2, STATE_CALLS * 3 / 4];
/// The runc verb the wrapper slows down (`ctr task exec` runs it on the exec's `Start`).
pub const SLOW_VERB: &str = "exec";

/// A runc that hangs [`HANG`] before [`SLOW_VERB`]; `marker` exists while it hangs.
pub struct SlowRunc {
    dir: tempfile::TempDir,
    marker: PathBuf,
}

impl SlowRunc {
    /// Writes the wrapper script around the `runc` found on `PATH`.
    pub fn write() -> SlowRunc {
        let runc = which("runc").expect("runc on PATH (make deps)");
        let dir = tempfile::tempdir().expect("tempdir for the runc wrapper");
        let path = dir.path().join("runc");
        let marker = dir.path().join("hanging");
        // The verb is runc's first non-option argument; no option value or container id the
        // bench uses is the verb's name, so matching any argument is enough.
        let script = format!(
            "#!/bin/sh\n\
             # Written by bench: runc, but `{verb}` hangs {secs} s first (the marker exists meanwhile).\n\
             for a in \"$@\"; do\n\
             \x20 if [ \"$a\" = {verb} ]; then : > '{marker}'; sleep {secs}; rm -f '{marker}'; break; fi\n\
             done\n\
             exec '{runc}' \"$@\"\n",
            verb = SLOW_VERB,
            secs = HANG.as_secs(),
            marker = marker.display(),
            runc = runc.display(),
        );
        std::fs::write(&path, script).expect("write the runc wrapper");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .expect("chmod the runc wrapper");
        SlowRunc { dir, marker }
    }

    /// The directory to put first on containerd's `PATH`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn hanging(&self) -> bool {
        self.marker.exists()
    }
}

fn which(bin: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_string_lossy()
        .split(':')
        .map(|d| Path::new(d).join(bin))
        .find(|p| p.is_file())
}

/// `State` (and `ctr task ls`) while a runtime call of the same shim hangs.
#[derive(Default, Clone, Copy)]
pub struct HangFigures {
    pub state_median_ms: f64,
    pub state_max_ms: f64,
    /// `State` calls started while the runtime call hung (of [`STATE_CALLS`]).
    pub calls: usize,
    /// Median of three, a quarter, half and three quarters into the hang.
    pub task_ls_ms: f64,
    /// `State` with nothing else going on, for comparison.
    pub idle_state_median_ms: f64,
}

/// One `State` of the init process; its round trip in ms.
fn state_ms(caller: &TaskCaller, id: &str) -> Option<f64> {
    let req = StateRequest {
        id: id.to_string(),
        ..Default::default()
    };
    let t0 = Instant::now();
    let r: Result<StateResponse, _> = caller.call("State", &req, Duration::from_secs(10));
    match r {
        Ok(_) => Some(t0.elapsed().as_secs_f64() * 1000.0),
        Err(e) => {
            eprintln!("   State {id}: {e:?}");
            None
        }
    }
}

/// On `cd`, whose `PATH` finds `slow` as runc: starts a detached container, makes a `ctr task exec` hang in the
/// shim's `runc exec`, and meanwhile calls `State` [`STATE_CALLS`] times spread over the hang
/// and times three `ctr task ls`.
pub fn state_during_hang(
    cd: &Containerd,
    ctr: &Ctr,
    runtime: &str,
    slow: &SlowRunc,
) -> HangFigures {
    let id = unique_id("hang");
    ctr.run(&id)
        .runtime(runtime)
        .rootfs(busybox_rootfs())
        .detach()
        .args(&["/bin/sleep", "1000"])
        .success();
    let bundle = cd.bundle(ctr.namespace(), &id);
    let address = shim::address(&bundle).expect("the shim's address file");
    let (caller, _) =
        TaskCaller::connect(&address, Duration::from_secs(10)).expect("connect to the shim");
    let mut f = HangFigures::default();
    let mut idle: Vec<f64> = (0..10).filter_map(|_| state_ms(&caller, &id)).collect();
    f.idle_state_median_ms = super::median(&mut idle);

    let mut exec = spawn_exec(ctr, &id);
    let hung = wait_until(Duration::from_secs(20), || slow.hanging());
    if hung {
        let t0 = Instant::now();
        let spacing = SPREAD / STATE_CALLS as u32;
        let mut rtts = Vec::new();
        let mut task_ls = Vec::new();
        for i in 0..STATE_CALLS {
            let at = t0 + spacing * i as u32;
            if let Some(wait) = at.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            // Only calls that start while runc hangs count.
            if !slow.hanging() {
                break;
            }
            if let Some(ms) = state_ms(&caller, &id) {
                rtts.push(ms);
            }
            if TASK_LS_AT.contains(&i) {
                let t = Instant::now();
                let out = ctr.call(&["task", "ls"]);
                if out.success() {
                    task_ls.push(t.elapsed().as_secs_f64() * 1000.0);
                } else {
                    eprintln!("   ctr task ls during the hang: {out}");
                }
            }
        }
        f.task_ls_ms = super::median(&mut task_ls);
        f.calls = rtts.len();
        f.state_max_ms = rtts.iter().copied().fold(f64::NAN, f64::max);
        f.state_median_ms = super::median(&mut rtts);
    } else {
        eprintln!("   the runc wrapper never hung: no `runc {SLOW_VERB}`?");
    }
    finish_exec(&mut exec);
    drop(caller);
    ctr.task_kill(&id, "SIGKILL");
    wait_until(Duration::from_secs(10), || {
        ctr.task(&id).is_none_or(|t| t.status == "STOPPED")
    });
    ctr.task_delete(&id);
    ctr.container_delete(&id);
    eprintln!(
        "   State during a {}s runc {SLOW_VERB}: median {:.2} ms, max {:.2} ms ({} calls; idle {:.2} ms); ctr task ls {:.1} ms",
        HANG.as_secs(),
        f.state_median_ms,
        f.state_max_ms,
        f.calls,
        f.idle_state_median_ms,
        f.task_ls_ms
    );
    f
}

/// `ctr task exec --exec-id x ID /bin/true` in the background.
fn spawn_exec(ctr: &Ctr, id: &str) -> Child {
    ctr.command(&["task", "exec", "--exec-id", "x", id, "/bin/true"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ctr task exec")
}

/// Waits for the exec (it ends once the wrapper ran runc); kills it by pid if it does not.
fn finish_exec(exec: &mut Child) {
    let deadline = Instant::now() + HANG + Duration::from_secs(20);
    loop {
        match exec.try_wait() {
            Ok(Some(status)) => {
                if !status.success() {
                    let mut err = String::new();
                    if let Some(mut e) = exec.stderr.take() {
                        use std::io::Read;
                        let _ = e.read_to_string(&mut err);
                    }
                    eprintln!("   ctr task exec: {status}: {}", err.trim());
                }
                return;
            }
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                eprintln!("   ctr task exec did not finish; killing it");
                let _ = exec.kill();
                let _ = exec.wait();
                return;
            }
        }
    }
}

/// Voluntary + involuntary context switches of every thread of `pid` (a Go shim has a dozen;
/// `/proc/PID/status` alone counts only the main thread's).
pub fn context_switches(pid: i32) -> Option<u64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut total = 0;
    for t in tasks.flatten() {
        let status = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
        total += super::kb_field(&status, "voluntary_ctxt_switches:")
            + super::kb_field(&status, "nonvoluntary_ctxt_switches:");
    }
    Some(total)
}

/// Wake-ups per minute of one idle shim per runtime, all measured over the same `window`: a
/// container running `sleep` each, nobody calling.
pub fn idle_wakeups(cd: &Containerd, ctr: &Ctr, runtimes: &[&str], window: Duration) -> Vec<f64> {
    let ids: Vec<String> = runtimes.iter().map(|_| unique_id("idlew")).collect();
    for (rt, id) in runtimes.iter().zip(&ids) {
        ctr.run_detached_rootfs(rt, busybox_rootfs(), id, &["/bin/sleep", "1000"]);
    }
    // Let start-up settle (events published, ctr gone) before counting.
    std::thread::sleep(Duration::from_secs(2));
    let pids: Vec<Option<i32>> = ids
        .iter()
        .map(|id| shim::shim_pid(cd, ctr.namespace(), id))
        .collect();
    let before: Vec<Option<u64>> = pids.iter().map(|p| p.and_then(context_switches)).collect();
    std::thread::sleep(window);
    let per_min: Vec<f64> = pids
        .iter()
        .zip(&before)
        .map(|(p, b)| match (p.and_then(context_switches), b) {
            (Some(a), Some(b)) => a.saturating_sub(*b) as f64 * 60.0 / window.as_secs_f64(),
            _ => f64::NAN,
        })
        .collect();
    for id in &ids {
        ctr.task_kill(id, "SIGKILL");
    }
    for id in &ids {
        wait_until(Duration::from_secs(10), || {
            ctr.task(id).is_none_or(|t| t.status == "STOPPED")
        });
        ctr.task_delete(id);
        ctr.container_delete(id);
    }
    for ((rt, pid), n) in runtimes.iter().zip(&pids).zip(&per_min) {
        eprintln!("   idle {rt} shim {pid:?}: {n:.1} wake-ups/min");
    }
    per_min
}
