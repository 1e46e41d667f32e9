//! What the recovery tests share: the CLI against a socket, the journal, a seeded RNG, the end-of-test checks.

use super::*;

pub const T: Duration = Duration::from_secs(60);

pub fn rootfs() -> String {
    busybox_rootfs().display().to_string()
}

pub fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// A small seeded generator (xorshift64*), so a failing run can be replayed.
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
}

pub fn seed() -> u64 {
    std::env::var("TETHER_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| now_nanos() as u64 | 1)
}

/// `tether` against a daemon's socket, without borrowing the [`Daemon`] (it restarts meanwhile).
pub fn tether(socket: &Path, args: &[&str]) -> cmd::CmdOutput {
    let mut c = Command::new(tether_tests::tether_binary());
    c.env("TETHER_SOCKET", socket).args(args);
    cmd::run(&mut c, None, T)
}

pub fn state_json(socket: &Path, ns: &str, id: &str) -> Result<Value, cmd::CmdOutput> {
    let out = tether(socket, &["--namespace", ns, "state", id, "--json"]);
    if !out.success() {
        return Err(out);
    }
    serde_json::from_str(&out.stdout).map_err(|_| out)
}

/// The `/tasks/exit` events of namespace `ns` in the journal file: (container, status, at,
/// recovered, pid) per event.
pub fn journaled_exits(journal: &Path, ns: &str) -> Vec<(String, u32, i64, bool, u32)> {
    tether_tests::manager::journaled_exits(journal, ns)
        .into_iter()
        .map(|(v, e)| {
            let at = e
                .exited_at
                .as_ref()
                .map(|t| t.seconds * 1_000_000_000 + i64::from(t.nanos))
                .unwrap_or(0);
            let recovered = v["recovered"].as_bool().unwrap_or(false);
            (e.container_id, e.exit_status, at, recovered, e.pid)
        })
        .collect()
}

/// The JSON lines a consumer saw, and where it resumes.
#[derive(Default)]
pub struct Consumer {
    pub seen: Vec<Value>,
    last: u64,
}

impl Consumer {
    pub fn take(&mut self, stream: &mut EventStream) {
        stream.stop();
        for v in stream.json() {
            let seq = v["seq"].as_u64().expect("seq");
            assert!(
                seq > self.last,
                "event {seq} again (resumed after {})",
                self.last
            );
            self.last = seq;
            self.seen.push(v);
        }
    }
    pub fn follow(&self, d: &Daemon, filter: &str) -> EventStream {
        d.events(&["--json", "--since", &self.last.to_string(), filter])
    }
}

/// Makes sure container `id` has been started (whatever the daemon's deaths interrupted).
pub fn ensure_started(socket: &Path, ns: &str, id: &str, life: u64, code: u32) -> bool {
    match state_json(socket, ns, id) {
        Ok(v) => match v["status"].as_str().unwrap_or_default() {
            "CREATED" => tether(socket, &["--namespace", ns, "start", id]).success(),
            "RUNNING" | "EXITED" | "PAUSED" => true,
            _ => false,
        },
        Err(out) if out.stderr.contains("not found") => {
            let script = format!("sleep {life}; exit {code}");
            let rootfs = rootfs();
            let args = [
                "--namespace",
                ns,
                "run",
                "-d",
                "--runtime",
                TETHER_RUNTIME,
                "--rootfs",
                &rootfs,
                id,
                "--",
                "sh",
                "-c",
                &script,
            ];
            tether(socket, &args).success()
        }
        Err(_) => false,
    }
}

/// Shim sockets of the containers of `ns` (from the `address` files in their bundles).
pub fn shim_sockets(d: &Daemon, ns: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for c in std::fs::read_dir(d.state().join(ns))
        .into_iter()
        .flatten()
        .flatten()
    {
        if let Ok(a) = std::fs::read_to_string(c.path().join("address")) {
            out.push(PathBuf::from(
                a.trim().strip_prefix("unix://").unwrap_or(a.trim()),
            ));
        }
    }
    out
}

/// No zombie (of the daemon or of the test), no mount under the daemon's directory, no shim
/// socket, no container directory.
pub fn assert_no_leftovers(d: &Daemon, ns: &str, sockets: Vec<PathBuf>) {
    // The runtime state: gone from this daemon's runc root, never in containerd's.
    assert!(
        d.runc_list(ns).is_empty(),
        "left in {}",
        d.runc_root().display()
    );
    let shared = Path::new(tether_tests::shim::RUNC_ROOT).join(ns);
    assert!(!shared.exists(), "{} exists", shared.display());
    let daemon = d.pid().expect("running");
    let clean = wait_until(T, || {
        procs::reap_orphans();
        procs::zombie_children(daemon).is_empty()
            && procs::zombie_children(std::process::id() as i32)
                .iter()
                .all(|&p| procs::stat(p).is_some_and(|s| s.comm == "tether"))
    });
    assert!(
        clean,
        "zombies: daemon {:?}, test {:?}",
        procs::zombie_children(daemon)
            .into_iter()
            .map(procs::describe)
            .collect::<Vec<_>>(),
        procs::zombie_children(std::process::id() as i32)
            .into_iter()
            .map(procs::describe)
            .collect::<Vec<_>>()
    );
    assert_eq!(mounts::mounts_under(d.dir()), Vec::<PathBuf>::new());
    let left: Vec<&PathBuf> = sockets.iter().filter(|s| s.exists()).collect();
    assert!(left.is_empty(), "shim sockets left: {left:?}");
    let dirs: Vec<_> = std::fs::read_dir(d.state().join(ns))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(dirs.is_empty(), "container directories left: {dirs:?}");
}

/// The shim process of container `id` among the daemon's shims.
pub fn shim_of(d: &Daemon, id: &str) -> Option<i32> {
    d.shim_pids().into_iter().find(|&p| {
        procs::cmdline(p).is_some_and(|a| a.windows(2).any(|w| w[0] == "-id" && w[1] == id))
    })
}
