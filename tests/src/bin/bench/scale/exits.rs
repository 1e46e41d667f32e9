//! A burst of exits: killing process trees at once and timing each exit at the subscriber.

use super::*;

/// SIGKILLs `roots` and all their descendants, from one snapshot of /proc, and reaps them.
pub(super) fn kill_trees(roots: &[i32]) {
    let table: Vec<procs::Stat> = procs::all_pids()
        .into_iter()
        .filter_map(procs::stat)
        .collect();
    let mut victims: Vec<i32> = roots.to_vec();
    let mut seen: std::collections::HashSet<i32> = victims.iter().copied().collect();
    let mut i = 0;
    while i < victims.len() {
        let parent = victims[i];
        for s in table.iter().filter(|s| s.ppid == parent) {
            if seen.insert(s.pid) {
                victims.push(s.pid);
            }
        }
        i += 1;
    }
    for &p in &victims {
        procs::signal(p, libc::SIGKILL);
    }
    procs::wait_gone(&victims, Duration::from_secs(30));
    procs::reap_orphans();
}

/// A daemon's `/tasks/exit` events, with when each arrived.
pub(super) enum Exits {
    Ctr(Events),
    Tether(TetherEvents),
}

/// One `/tasks/exit` seen: whose, when it arrived, and its `exited_at` (seconds since the epoch).
pub(super) struct Exit {
    pub(super) id: String,
    pub(super) received: Instant,
    pub(super) exited_at: Option<f64>,
}

impl Exits {
    pub(super) fn seen(&self) -> Vec<Exit> {
        match self {
            Exits::Ctr(e) => e
                .snapshot()
                .into_iter()
                .filter(|e| e.topic == "/tasks/exit")
                .filter_map(|e| {
                    let at = e.json().and_then(|j| {
                        j.get("exited_at")?
                            .as_str()
                            .and_then(crate::clock::parse_rfc3339)
                    });
                    Some(Exit {
                        id: e.container_id()?,
                        received: e.received,
                        exited_at: at,
                    })
                })
                .collect(),
            Exits::Tether(t) => t
                .lines
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .filter_map(|(at, line)| {
                    let v: serde_json::Value = serde_json::from_str(line).ok()?;
                    (v["topic"] == "/tasks/exit").then_some(())?;
                    Some(Exit {
                        id: v["event"]["container_id"].as_str()?.to_string(),
                        received: *at,
                        // The daemon gives timestamps as nanoseconds since the epoch.
                        exited_at: v["event"]["exited_at"].as_f64().map(|ns| ns / 1e9),
                    })
                })
                .collect(),
        }
    }
}

/// `tether events --json` with each line's arrival time (the harness's stream keeps none).
pub(super) struct TetherEvents {
    child: Child,
    lines: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl TetherEvents {
    pub(super) fn start(d: &Daemon) -> TetherEvents {
        let mut child = d
            .tether()
            .args(["events", "--json"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tether events");
        let stdout = child.stdout.take().expect("stdout piped");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let at = Instant::now();
                sink.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((at, line));
            }
        });
        // No probe event to wait for: give the subscription time to be registered.
        std::thread::sleep(Duration::from_millis(1500));
        TetherEvents { child, lines }
    }
}

impl Drop for TetherEvents {
    fn drop(&mut self) {
        // Our unreaped child: the pid is still its own.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
