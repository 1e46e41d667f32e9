//! `bench --scale` (`make bench-scale`): how every cost grows with the number of idle
//! containers, N = 100, 250, 500, 1,000 (`--scale-n 20,50` for a quick run), for three stacks
//! side by side in the same run: containerd's Go shim and ours, each through its own private
//! containerd, and ours through a private `tether daemon`.
//!
//! The stacks live together and grow in turn: for each N every stack grows (`sleep`
//! containers, two at a time, the N-th alone and timed), then is measured: PSS of its shims,
//! the host's used memory, its daemon's RSS and threads, list latency, three daemon restarts
//! (SIGKILL, then start until the list shows every container resolved: all live; with 5% of
//! the shims SIGKILLed while it was down; with 5 shims SIGSTOPped, SIGCONTed after), and a
//! burst of 100 simultaneous exits. Containers a figure killed are removed and the next N
//! refills them.
//!
//! Before each N the machine is checked (free memory and pids for what the step adds) and the
//! run stops with a message when it cannot hold N, or when the step would overrun the time
//! budget (`--scale-budget-min`, 35 by default). Everything started is removed, on failure too
//! (the harness's drops), and checked for leftovers.
//!
//! Writes its own report (`--out`, default `BENCHMARKS-scale.md`) and chart (`.svg` beside it),
//! which BENCHMARKS.md links to: `make bench` rewrites BENCHMARKS.md whole, and must not lose it.

use super::chart::{self, Series};
use super::{footprint, median};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tether_tests::cmd::try_run;
use tether_tests::ctr::parse_task_ls;
use tether_tests::manager::Daemon;
use tether_tests::{
    busybox_rootfs, procs, unique_id, wait_until, Containerd, Ctr, Events, Options, RUNC_RUNTIME,
    TETHER_RUNTIME,
};

/// What `--scale` was asked for.
pub struct Args {
    pub ns: Vec<usize>,
    pub out: PathBuf,
    pub budget: Duration,
    /// Which stacks to grow (`--scale-stacks go,ours,tether`; all by default): profiling one
    /// stack alone is quicker.
    pub stacks: Vec<String>,
}

impl Args {
    /// `Some` when the command line asks for the scale mode (`--scale`).
    pub fn from_env() -> Option<Args> {
        let argv: Vec<String> = std::env::args().skip(1).collect();
        if !argv.iter().any(|a| a == "--scale") {
            return None;
        }
        let mut a = Args {
            ns: vec![100, 250, 500, 1000],
            out: PathBuf::from("BENCHMARKS-scale.md"),
            budget: Duration::from_secs(35 * 60),
            stacks: ["go", "ours", "tether"].map(String::from).to_vec(),
        };
        let mut it = argv.iter();
        while let Some(arg) = it.next() {
            let mut val = || it.next().unwrap_or_else(|| panic!("{arg} needs a value"));
            match arg.as_str() {
                "--scale" => {}
                "--scale-n" => {
                    a.ns = val()
                        .split(',')
                        .map(|n| n.trim().parse().expect("--scale-n N,N,..."))
                        .collect();
                    a.ns.sort_unstable();
                }
                "--scale-budget-min" => {
                    a.budget = Duration::from_secs(60 * val().parse::<u64>().expect("minutes"))
                }
                "--out" => a.out = PathBuf::from(val()),
                "--scale-stacks" => a.stacks = val().split(',').map(String::from).collect(),
                other => panic!(
                    "unknown argument {other} with --scale (--scale-n N,N,.., --scale-budget-min M, \
                     --scale-stacks go,ours,tether, --out P)"
                ),
            }
        }
        Some(a)
    }
}

/// Shims SIGKILLed while the daemon is down: 5% of N.
const DEAD_PERCENT: usize = 5;
/// Shims SIGSTOPped while the daemon is down.
const STOPPED: usize = 5;
/// Containers killed at once for the exit burst.
const BURST: usize = 100;
/// What the safety check assumes a container costs beside its shim (kB), and the memory and
/// pids it leaves to everyone else on the machine.
const CONTAINER_KB: u64 = 1024;
const RESERVE_KB: u64 = 1024 * 1024;
const RESERVE_PIDS: u64 = 2000;

/// One row of a stack's list (`ctr task ls`, `tether ps --json`).
struct Row {
    id: String,
    pid: i32,
    status: String,
}

enum Kind {
    Containerd {
        cd: Containerd,
        ctr: Ctr,
        runtime: &'static str,
    },
    Tether {
        d: Daemon,
        ns: String,
    },
}

/// One stack being grown, and its live containers.
struct Stack {
    label: &'static str,
    kind: Kind,
    live: Vec<String>,
    /// What one shim costs, for the safety check (kB, threads): Go's ~3 MB and 12 threads.
    shim_cost: (u64, u64),
    points: Vec<Point>,
    /// Host used memory per container started by the last grow (kB).
    host_per_container_kb: f64,
}

/// The figures of one stack at one N (NaN: not measured).
#[derive(Clone)]
struct Point {
    n: usize,
    v: Vec<f64>,
}

/// The figures, in report order: (title, unit).
const FIGURES: &[(&str, &str)] = &[
    ("PSS of all shims", "MB"),
    ("PSS per shim", "kB"),
    (
        "host used memory per container started in the step (MemTotal - MemAvailable)",
        "kB",
    ),
    ("daemon RSS (containerd / tether daemon)", "MB"),
    ("daemon threads", ""),
    (
        "start of the N-th container (`ctr run -d` / `tether run -d`)",
        "ms",
    ),
    (
        "list latency (`ctr task ls` / `tether ps`), median of 3",
        "ms",
    ),
    (
        "daemon restart after SIGKILL, all live: start -> list shows all",
        "ms",
    ),
    ("daemon restart, 5% of shims SIGKILLed while down", "ms"),
    ("daemon restart, 5 shims SIGSTOPped while down", "ms"),
    (
        "containers of the 5 stopped shims still running after SIGCONT",
        "",
    ),
    (
        "stopped shims still alive after their containers were deleted (leaked)",
        "",
    ),
    (
        "burst of 100 exits: kill -> `/tasks/exit` at a subscriber, median",
        "ms",
    ),
    ("burst of 100 exits, p99", "ms"),
    ("burst of 100 exits, max", "ms"),
    ("burst of 100 exits, events arrived", ""),
    (
        "burst of 100 exits: kill -> `exited_at` (reaped by the shim), median",
        "ms",
    ),
    ("burst of 100 exits: kill -> `exited_at`, max", "ms"),
    (
        "burst of 100 exits: `exited_at` -> subscriber (the path after the reap), max",
        "ms",
    ),
    ("RSS of one shim, median over the shims", "kB"),
];
const F_PSS_TOTAL: usize = 0;
const F_PSS: usize = 1;
const F_HOST: usize = 2;
const F_DRSS: usize = 3;
const F_DTHREADS: usize = 4;
const F_START: usize = 5;
const F_LIST: usize = 6;
const F_RESTART: usize = 7;
const F_RESTART_DEAD: usize = 8;
const F_RESTART_STOPPED: usize = 9;
const F_STOPPED_ALIVE: usize = 10;
const F_STOPPED_LEAKED: usize = 11;
const F_BURST_MED: usize = 12;
const F_BURST_P99: usize = 13;
const F_BURST_MAX: usize = 14;
const F_BURST_N: usize = 15;
const F_REAP_MED: usize = 16;
const F_REAP_MAX: usize = 17;
const F_PATH_MAX: usize = 18;
const F_RSS: usize = 19;

impl Stack {
    fn containerd(label: &'static str, runtime: &'static str, shim_cost: (u64, u64)) -> Stack {
        let cd = Containerd::start_with(Options {
            // Its start waits for every shim to load: 5 stopped ones cost it 5 s each.
            start_timeout: Some(Duration::from_secs(600)),
            ..Options::default()
        });
        let ctr = cd
            .ctr(&unique_id("scale"))
            .with_timeout(Duration::from_secs(300));
        Stack {
            label,
            kind: Kind::Containerd { cd, ctr, runtime },
            live: Vec::new(),
            shim_cost,
            points: Vec::new(),
            host_per_container_kb: f64::NAN,
        }
    }

    fn tether() -> Stack {
        Stack {
            label: "tether shim, tether daemon",
            kind: Kind::Tether {
                d: Daemon::start(),
                ns: unique_id("scale"),
            },
            live: Vec::new(),
            shim_cost: (1024, 1),
            points: Vec::new(),
            host_per_container_kb: f64::NAN,
        }
    }

    /// Starts one idle container; false (with a message) when it fails.
    fn start_one(&self, id: &str) -> bool {
        let out = match &self.kind {
            Kind::Containerd { ctr, runtime, .. } => ctr
                .run(id)
                .runtime(runtime)
                .rootfs(busybox_rootfs())
                .detach()
                .args(&["/bin/sleep", "1000000"])
                .output(),
            Kind::Tether { d, ns } => {
                let rootfs = busybox_rootfs().display().to_string();
                let mut c = d.tether();
                c.args(["--namespace", ns, "run", "-d", "--rootfs", &rootfs, id]);
                c.args(["--", "/bin/sleep", "1000000"]);
                match try_run(&mut c, None, Duration::from_secs(300)) {
                    Ok(out) => out,
                    Err(e) => {
                        eprintln!("   {}: start {id}: {e}", self.label);
                        return false;
                    }
                }
            }
        };
        if !out.success() {
            eprintln!("   {}: start {id}: {out}", self.label);
        }
        out.success()
    }

    /// Force-deletes a container (task, shim, bundle); errors ignored: it may be gone.
    fn remove(&self, id: &str) {
        match &self.kind {
            Kind::Containerd { ctr, .. } => {
                let _ = ctr.try_call(&["task", "delete", "--force", id]);
                let _ = ctr.try_call(&["container", "delete", id]);
            }
            Kind::Tether { d, ns } => {
                let _ = try_run(
                    d.tether().args(["--namespace", ns, "delete", "-f", id]),
                    None,
                    Duration::from_secs(60),
                );
            }
        }
    }

    /// The list as the daemon answers it, or `None` when it does not (yet).
    fn list(&self) -> Option<Vec<Row>> {
        match &self.kind {
            Kind::Containerd { ctr, .. } => {
                let out = ctr.try_call(&["task", "ls"]).ok()?;
                out.success().then(|| {
                    parse_task_ls(&out.stdout)
                        .into_iter()
                        .map(|t| Row {
                            id: t.id,
                            pid: t.pid as i32,
                            status: t.status,
                        })
                        .collect()
                })
            }
            Kind::Tether { d, ns } => {
                let out = try_run(
                    d.tether().args(["--namespace", ns, "ps", "--json"]),
                    None,
                    Duration::from_secs(60),
                )
                .ok()?;
                let rows: Vec<serde_json::Value> = serde_json::from_str(&out.stdout).ok()?;
                Some(
                    rows.iter()
                        .map(|r| Row {
                            id: r["id"].as_str().unwrap_or_default().to_string(),
                            pid: r["pid"].as_i64().unwrap_or(0) as i32,
                            status: r["status"].as_str().unwrap_or_default().to_string(),
                        })
                        .collect(),
                )
            }
        }
    }

    fn shim_pids(&self) -> Vec<i32> {
        match &self.kind {
            Kind::Containerd { cd, .. } => cd.shim_pids(),
            Kind::Tether { d, .. } => d.shim_pids(),
        }
    }

    fn daemon_pid(&self) -> Option<i32> {
        match &self.kind {
            Kind::Containerd { cd, .. } => cd.pid(),
            Kind::Tether { d, .. } => d.pid(),
        }
    }

    fn kill_daemon(&mut self) {
        match &mut self.kind {
            Kind::Containerd { cd, .. } => cd.kill_daemon(libc::SIGKILL),
            Kind::Tether { d, .. } => d.kill9(),
        }
    }

    /// Starts the daemon again; returns once it serves (containerd: after loading its shims).
    fn start_daemon(&mut self) {
        match &mut self.kind {
            // The daemon is gone already: its restart only starts it.
            Kind::Containerd { cd, .. } => cd.restart(),
            Kind::Tether { d, .. } => d.restart(),
        }
    }

    /// Subscribes to the daemon's events (returns once subscribed).
    fn exits(&self) -> Exits {
        match &self.kind {
            Kind::Containerd { ctr, .. } => Exits::Ctr(Events::start(ctr)),
            Kind::Tether { d, .. } => Exits::Tether(TetherEvents::start(d)),
        }
    }

    /// Grows to `n` live containers: two at a time, then the n-th alone (its time returned).
    fn grow(&mut self, n: usize) -> f64 {
        let want = n.saturating_sub(self.live.len());
        if want == 0 {
            return f64::NAN;
        }
        let ids: Vec<String> = (0..want).map(|_| unique_id("s")).collect();
        let used_before = host_used_kb();
        let (bulk, last) = ids.split_at(want - 1);
        let me = &*self;
        let started: Vec<String> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..2)
                .map(|k| {
                    s.spawn(move || {
                        bulk.iter()
                            .skip(k)
                            .step_by(2)
                            .filter(|id| me.start_one(id))
                            .cloned()
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            hs.into_iter()
                .flat_map(|h| h.join().unwrap_or_default())
                .collect()
        });
        self.live.extend(started);
        let t0 = Instant::now();
        let ok = self.start_one(&last[0]);
        let ms = t0.elapsed().as_secs_f64() * 1000.0;
        if ok {
            self.live.push(last[0].clone());
        }
        // Let the last starts settle (the Go shim's runtime allocates for a while).
        std::thread::sleep(Duration::from_secs(2));
        self.host_per_container_kb =
            host_used_kb().saturating_sub(used_before) as f64 / want as f64;
        assert_eq!(
            self.live.len(),
            n,
            "{}: could not grow to {n} containers",
            self.label
        );
        if ok {
            ms
        } else {
            f64::NAN
        }
    }

    /// Removes `ids` from the stack (two at a time) and from its live list.
    fn remove_all(&mut self, ids: &[String]) {
        let me = &*self;
        std::thread::scope(|s| {
            for k in 0..2 {
                s.spawn(move || ids.iter().skip(k).step_by(2).for_each(|id| me.remove(id)));
            }
        });
        self.live.retain(|id| !ids.contains(id));
        procs::reap_orphans();
    }

    /// The live containers' shims (a container's init is its shim's child: shims subreap).
    fn shims_of(&self, ids: &[String]) -> Vec<i32> {
        let rows = self.list().unwrap_or_default();
        ids.iter()
            .filter_map(|id| rows.iter().find(|r| &r.id == id))
            .filter_map(|r| procs::stat(r.pid).map(|s| s.ppid))
            .collect()
    }

    /// SIGKILLs the daemon, does `while_down`, starts it again and times until the list shows
    /// every container in `running` RUNNING and none of `gone` RUNNING.
    fn timed_restart(
        &mut self,
        running: &[String],
        gone: &[String],
        while_down: impl FnOnce(),
    ) -> f64 {
        self.kill_daemon();
        while_down();
        let log_before = match &self.kind {
            Kind::Tether { d, .. } => d.log().len(),
            Kind::Containerd { .. } => 0,
        };
        let t0 = Instant::now();
        self.start_daemon();
        let resolved = wait_until(Duration::from_secs(300), || {
            let Some(rows) = self.list() else {
                return false;
            };
            let running_ok = running
                .iter()
                .all(|id| rows.iter().any(|r| &r.id == id && r.status == "RUNNING"));
            let gone_ok = !rows
                .iter()
                .any(|r| gone.contains(&r.id) && r.status == "RUNNING");
            running_ok && gone_ok
        });
        let ms = t0.elapsed().as_secs_f64() * 1000.0;
        if let Kind::Tether { d, .. } = &self.kind {
            // Where the daemon's restart went (its own account of each phase).
            let log = d.log();
            for l in log.get(log_before..).unwrap_or_default().lines() {
                if l.contains("journal:") || l.contains("rediscovery:") {
                    eprintln!("      {l}");
                }
            }
        }
        if resolved {
            ms
        } else {
            eprintln!("   {}: restart did not resolve within 300 s", self.label);
            f64::NAN
        }
    }

    /// Every figure at the current N (the stack has grown to it).
    fn measure(&mut self, n: usize, start_ms: f64) -> Point {
        let mut v = vec![f64::NAN; FIGURES.len()];
        v[F_START] = start_ms;
        let shims = self.shim_pids();
        let pss: u64 = shims.iter().map(|&p| footprint(p).0).sum();
        v[F_PSS_TOTAL] = pss as f64 / 1024.0;
        v[F_PSS] = pss as f64 / shims.len().max(1) as f64;
        let mut rss: Vec<f64> = shims.iter().map(|&p| footprint(p).1 as f64).collect();
        v[F_RSS] = median(&mut rss);
        v[F_HOST] = self.host_per_container_kb;
        if let Some(pid) = self.daemon_pid() {
            let (_, rss, threads) = footprint(pid);
            v[F_DRSS] = rss as f64 / 1024.0;
            v[F_DTHREADS] = threads as f64;
        }
        let mut lists: Vec<f64> = (0..3)
            .map(|_| {
                let t0 = Instant::now();
                let ok = self.list().is_some_and(|r| r.len() == n);
                if ok {
                    t0.elapsed().as_secs_f64() * 1000.0
                } else {
                    f64::NAN
                }
            })
            .collect();
        v[F_LIST] = median(&mut lists);
        eprintln!(
            "   {} shims, PSS {:.0} kB/shim, RSS {:.0} kB (median), list {:.0} ms",
            shims.len(),
            v[F_PSS],
            v[F_RSS],
            v[F_LIST]
        );

        let live = self.live.clone();
        v[F_RESTART] = self.timed_restart(&live, &[], || {});
        eprintln!("   restart, all live: {:.0} ms", v[F_RESTART]);

        let dead: Vec<String> = live.iter().take(n * DEAD_PERCENT / 100).cloned().collect();
        let rest: Vec<String> = live[dead.len()..].to_vec();
        let dead_shims = self.shims_of(&dead);
        v[F_RESTART_DEAD] = self.timed_restart(&rest, &dead, || {
            for &p in &dead_shims {
                procs::signal(p, libc::SIGKILL);
            }
            procs::wait_gone(&dead_shims, Duration::from_secs(10));
            procs::reap_orphans();
        });
        eprintln!(
            "   restart, {} shims killed: {:.0} ms",
            dead.len(),
            v[F_RESTART_DEAD]
        );
        self.remove_all(&dead);

        let live = self.live.clone();
        let stopped: Vec<String> = live.iter().take(STOPPED).cloned().collect();
        let rest: Vec<String> = live[stopped.len()..].to_vec();
        let stopped_shims = self.shims_of(&stopped);
        v[F_RESTART_STOPPED] = self.timed_restart(&rest, &[], || {
            for &p in &stopped_shims {
                procs::signal(p, libc::SIGSTOP);
            }
        });
        for &p in &stopped_shims {
            procs::signal(p, libc::SIGCONT);
        }
        std::thread::sleep(Duration::from_secs(1));
        let rows = self.list().unwrap_or_default();
        v[F_STOPPED_ALIVE] = stopped
            .iter()
            .filter(|id| {
                rows.iter()
                    .any(|r| &r.id == *id && r.status == "RUNNING" && procs::is_alive(r.pid))
            })
            .count() as f64;
        eprintln!(
            "   restart, {} shims stopped: {:.0} ms, {} of their containers running after, {} shims leaked",
            stopped.len(),
            v[F_RESTART_STOPPED],
            v[F_STOPPED_ALIVE],
            v[F_STOPPED_LEAKED]
        );
        self.remove_all(&stopped);
        // A daemon that gave up on a stopped shim deletes its task but may leave the shim
        // running: count those, and end them (by pid) so the next N measures only live ones.
        std::thread::sleep(Duration::from_millis(500));
        let leaked: Vec<i32> = stopped_shims
            .iter()
            .copied()
            .filter(|&p| procs::is_alive(p))
            .collect();
        v[F_STOPPED_LEAKED] = leaked.len() as f64;
        for &p in &leaked {
            procs::signal(p, libc::SIGKILL);
        }
        procs::wait_gone(&leaked, Duration::from_secs(10));
        procs::reap_orphans();

        let victims: Vec<String> = self.live.iter().take(BURST).cloned().collect();
        let burst = self.burst(&victims);
        (
            v[F_BURST_MED],
            v[F_BURST_P99],
            v[F_BURST_MAX],
            v[F_BURST_N],
            v[F_REAP_MED],
            v[F_REAP_MAX],
            v[F_PATH_MAX],
        ) = burst;
        eprintln!(
            "   burst of {}: median {:.1} ms, p99 {:.1} ms, max {:.1} ms, {} arrived; reap median \
             {:.1} max {:.1} ms; reap -> subscriber max {:.1} ms",
            victims.len(),
            burst.0,
            burst.1,
            burst.2,
            burst.3,
            burst.4,
            burst.5,
            burst.6
        );
        self.remove_all(&victims);
        Point { n, v }
    }

    /// SIGKILLs the init of every container in `ids` at once; (median, p99, max, arrived) of
    /// kill -> `/tasks/exit` seen by a subscriber, (median, max) of kill -> its `exited_at`, and
    /// the max of `exited_at` -> seen by the subscriber.
    fn burst(&self, ids: &[String]) -> (f64, f64, f64, f64, f64, f64, f64) {
        let rows = self.list().unwrap_or_default();
        let pids: Vec<(String, i32)> = ids
            .iter()
            .filter_map(|id| rows.iter().find(|r| &r.id == id && r.pid > 0))
            .map(|r| (r.id.clone(), r.pid))
            .collect();
        let exits = self.exits();
        // Instants to the wall clock, for the events' `exited_at`.
        let anchor = (Instant::now(), super::clock::now_epoch());
        let mut killed = Vec::new();
        for (id, pid) in &pids {
            killed.push((id.clone(), Instant::now()));
            procs::signal(*pid, libc::SIGKILL);
        }
        let all = |seen: &[Exit]| {
            killed
                .iter()
                .all(|(id, _)| seen.iter().any(|e| &e.id == id))
        };
        wait_until(Duration::from_secs(60), || all(&exits.seen()));
        let seen = exits.seen();
        let mut lat: Vec<f64> = killed
            .iter()
            .filter_map(|(id, t)| {
                let e = seen.iter().find(|e| &e.id == id)?;
                Some(e.received.saturating_duration_since(*t).as_secs_f64() * 1000.0)
            })
            .collect();
        let mut reaped: Vec<f64> = killed
            .iter()
            .filter_map(|(id, t)| {
                let at = seen.iter().find(|e| &e.id == id)?.exited_at?;
                let kill = anchor.1 + t.saturating_duration_since(anchor.0).as_secs_f64();
                Some((at - kill) * 1000.0)
            })
            .collect();
        let reap_max = reaped.iter().copied().fold(f64::NAN, f64::max);
        let path_max = seen
            .iter()
            .filter(|e| killed.iter().any(|(id, _)| id == &e.id))
            .filter_map(|e| {
                let at = e.exited_at?;
                let received =
                    anchor.1 + e.received.saturating_duration_since(anchor.0).as_secs_f64();
                Some((received - at) * 1000.0)
            })
            .fold(f64::NAN, f64::max);
        lat.sort_by(|a, b| a.total_cmp(b));
        let pick = |q: f64| {
            lat.get(((lat.len() as f64 * q).ceil() as usize).saturating_sub(1))
                .copied()
                .unwrap_or(f64::NAN)
        };
        let arrived = lat.len() as f64;
        (
            median(&mut lat.clone()),
            pick(0.99),
            pick(1.0),
            arrived,
            median(&mut reaped),
            reap_max,
            path_max,
        )
    }

    /// Stops everything the stack started, quickly: the daemon first (so nothing deletes
    /// tasks one by one), then the harness's drop kills shims and containers by pid, unmounts
    /// and removes state. Returns what was left behind.
    fn teardown(mut self) -> Vec<String> {
        self.kill_daemon();
        // The harness would walk /proc once per shim (quadratic at 1,000): one walk here.
        kill_trees(&self.shim_pids());
        match self.kind {
            Kind::Containerd { cd, ctr, .. } => {
                drop(ctr);
                let check = cd.leak_check();
                drop(cd);
                procs::reap_orphans();
                check.leftovers()
            }
            Kind::Tether { d, ns } => {
                let socket = d.socket().display().to_string();
                drop(d);
                procs::reap_orphans();
                // The namespace's parent cgroups (runc removes only the containers'): the
                // harness removes those of namespaces named through `Daemon::run` only.
                for cg in tether_tests::cgroups::existing(&ns) {
                    let _ = std::fs::remove_dir(cg);
                }
                let mut left: Vec<String> = procs::shim_pids(&socket)
                    .into_iter()
                    .map(|p| format!("shim process: {}", procs::describe(p)))
                    .collect();
                left.extend(
                    tether_tests::cgroups::existing(&ns)
                        .into_iter()
                        .map(|c| format!("cgroup: {}", c.display())),
                );
                left
            }
        }
    }
}

/// SIGKILLs `roots` and all their descendants, from one snapshot of /proc, and reaps them.
fn kill_trees(roots: &[i32]) {
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
enum Exits {
    Ctr(Events),
    Tether(TetherEvents),
}

/// One `/tasks/exit` seen: whose, when it arrived, and its `exited_at` (seconds since the epoch).
struct Exit {
    id: String,
    received: Instant,
    exited_at: Option<f64>,
}

impl Exits {
    fn seen(&self) -> Vec<Exit> {
        match self {
            Exits::Ctr(e) => e
                .snapshot()
                .into_iter()
                .filter(|e| e.topic == "/tasks/exit")
                .filter_map(|e| {
                    let at = e.json().and_then(|j| {
                        j.get("exited_at")?
                            .as_str()
                            .and_then(super::clock::parse_rfc3339)
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
struct TetherEvents {
    child: Child,
    lines: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl TetherEvents {
    fn start(d: &Daemon) -> TetherEvents {
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

fn meminfo_kb(key: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    super::kb_field(&text, key)
}

fn host_used_kb() -> u64 {
    meminfo_kb("MemTotal:").saturating_sub(meminfo_kb("MemAvailable:"))
}

/// Threads on the machine now (`/proc/loadavg`'s 4th field: running/total).
fn threads_now() -> u64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().nth(3)?.split('/').nth(1)?.parse().ok())
        .unwrap_or(u64::MAX)
}

fn read_u64(path: &str) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Whether the machine can hold the stacks at `n`: `Err` says what is short.
fn can_hold(stacks: &[Stack], n: usize) -> Result<(), String> {
    let (mut kb, mut threads) = (0u64, 0u64);
    for s in stacks {
        let more = n.saturating_sub(s.live.len()) as u64;
        kb += more * (s.shim_cost.0 + CONTAINER_KB);
        // The container's process, and a runc briefly while it starts.
        threads += more * (s.shim_cost.1 + 1);
    }
    let avail = meminfo_kb("MemAvailable:");
    if avail < kb + RESERVE_KB {
        return Err(format!(
            "MemAvailable is {} MB; N = {n} needs about {} MB more (3 MB per Go shim, 1 MB per \
             container) and {} MB are left to the rest of the machine",
            avail / 1024,
            kb / 1024,
            RESERVE_KB / 1024
        ));
    }
    let limit = read_u64("/proc/sys/kernel/pid_max").min(read_u64("/proc/sys/kernel/threads-max"));
    let free = limit.saturating_sub(threads_now());
    if free < threads + RESERVE_PIDS {
        return Err(format!(
            "{free} pids free (pid_max/threads-max {limit}); N = {n} needs about {threads} more \
             (a Go shim has ~12 threads) and {RESERVE_PIDS} are left to the rest of the machine"
        ));
    }
    Ok(())
}

pub fn main(a: Args) {
    // Shims orphaned by a SIGKILLed daemon, and their containers, come to us and are reaped.
    procs::become_subreaper();
    nix::unistd::sync();
    let started = Instant::now();
    let mut notes: Vec<String> = Vec::new();
    let mut stacks: Vec<Stack> = Vec::new();
    let mut done: Vec<usize> = Vec::new();
    // A panic midway still tears every stack down (below) and writes what was measured.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let wanted = |s: &str| a.stacks.iter().any(|w| w == s);
        if wanted("go") {
            stacks.push(Stack::containerd(
                "Go shim (containerd-shim-runc-v2), containerd",
                RUNC_RUNTIME,
                (3 * 1024, 12),
            ));
        }
        if wanted("ours") {
            stacks.push(Stack::containerd(
                "tether shim, containerd",
                TETHER_RUNTIME,
                (1024, 1),
            ));
        }
        if wanted("tether") {
            stacks.push(Stack::tether());
        }
        let mut last_step: Option<(usize, Duration)> = None;
        for &n in &a.ns {
            if let Err(why) = can_hold(&stacks, n) {
                notes.push(format!("Stopped before N = {n}: {why}."));
                eprintln!("scale: stopping before N = {n}: {why}");
                break;
            }
            if let Some((prev, took)) = last_step {
                let projected = took.mul_f64(n as f64 / prev.max(1) as f64);
                if started.elapsed() + projected > a.budget {
                    let why = format!(
                        "N = {prev} took {:.0} s, so N = {n} would take about {:.0} s, past the \
                         {:.0}-minute budget (`--scale-budget-min`)",
                        took.as_secs_f64(),
                        projected.as_secs_f64(),
                        a.budget.as_secs_f64() / 60.0
                    );
                    notes.push(format!("Stopped before N = {n}: {why}."));
                    eprintln!("scale: stopping before N = {n}: {why}");
                    break;
                }
            }
            let t0 = Instant::now();
            for s in stacks.iter_mut() {
                eprintln!("== N = {n}: {}", s.label);
                let ms = s.grow(n);
                let p = s.measure(n, ms);
                s.points.push(p);
            }
            done.push(n);
            last_step = Some((n, t0.elapsed()));
            eprintln!("== N = {n} took {:.0} s", t0.elapsed().as_secs_f64());
        }
    }));
    if let Err(e) = &result {
        let msg = e
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        notes.push(format!("The run failed midway: {msg}"));
    }
    let series: Vec<(&str, Vec<Point>)> =
        stacks.iter().map(|s| (s.label, s.points.clone())).collect();
    let report = render(&a, &series, &notes, started.elapsed());
    std::fs::write(&a.out, &report).unwrap_or_else(|e| panic!("write {}: {e}", a.out.display()));
    let svg_path = a.out.with_extension("svg");
    std::fs::write(&svg_path, svg(&series))
        .unwrap_or_else(|e| panic!("write {}: {e}", svg_path.display()));
    println!("{report}");
    eprintln!(
        "scale report: {}, chart: {}",
        a.out.display(),
        svg_path.display()
    );
    let leftovers: Vec<String> = stacks.into_iter().flat_map(Stack::teardown).collect();
    assert!(
        leftovers.is_empty(),
        "left behind:\n{}",
        leftovers.join("\n")
    );
    if result.is_err() {
        std::process::exit(1);
    }
}

type Measured = [(&'static str, Vec<Point>)];

const COLOURS: [&str; 3] = [chart::GO, chart::OURS, "#7a3e9d"];

fn svg(series: &Measured) -> String {
    let panels: Vec<chart::Panel> = FIGURES
        .iter()
        .enumerate()
        .map(|(i, (title, unit))| chart::Panel {
            title: title.to_string(),
            unit: unit.to_string(),
            series: series
                .iter()
                .zip(COLOURS)
                .map(|((label, pts), colour)| Series {
                    name: label.to_string(),
                    colour,
                    points: pts.iter().map(|p| (p.n as f64, p.v[i])).collect(),
                })
                .collect(),
        })
        .collect();
    chart::by_n("Scale: each figure against N idle containers", &panels)
}

/// How a figure grows from the first N to the last, from the exponent of value ~ N^k.
fn growth(pts: &[Point], i: usize) -> String {
    let ok: Vec<(f64, f64)> = pts
        .iter()
        .map(|p| (p.n as f64, p.v[i]))
        .filter(|(_, v)| v.is_finite())
        .collect();
    let (Some(first), Some(last)) = (ok.first(), ok.last()) else {
        return "not measured".into();
    };
    if ok.len() < 2 || first.0 == last.0 {
        return format!("{:.1} at N = {}", first.1, first.0);
    }
    let shape = if first.1 <= 0.0 || last.1 <= 0.0 {
        "flat or zero".to_string()
    } else {
        let k = (last.1 / first.1).ln() / (last.0 / first.0).ln();
        let word = match k {
            k if k < 0.25 => "about constant",
            k if k < 0.75 => "sublinear",
            k if k < 1.3 => "about linear",
            _ => "worse than linear",
        };
        format!("{word}, ~N^{k:.2}")
    };
    format!(
        "{:.1} -> {:.1} from N = {} to {} ({shape})",
        first.1, last.1, first.0, last.0
    )
}

/// What one dead (or stopped) shim adds to a restart at the largest N: the restart with them
/// minus the all-live one, over their number.
fn per_shim(series: &Measured, i: usize) -> Option<String> {
    let (what, count): (&str, fn(usize) -> usize) = match i {
        F_RESTART_DEAD => ("dead", |n| n * DEAD_PERCENT / 100),
        F_RESTART_STOPPED => ("stopped", |_| STOPPED),
        _ => return None,
    };
    let parts: Vec<String> = series
        .iter()
        .filter_map(|(label, pts)| {
            let p = pts.last()?;
            let k = count(p.n).max(1) as f64;
            let ms = (p.v[i] - p.v[F_RESTART]) / k;
            ms.is_finite()
                .then(|| format!("{label} {ms:.0} ms at N = {}", p.n))
        })
        .collect();
    (!parts.is_empty()).then(|| {
        format!(
            "What each {what} shim adds to the restart: {}.",
            parts.join("; ")
        )
    })
}

// One explanation per figure, checked when the bench is built.
const _: () = assert!(WHY.len() == FIGURES.len());

/// Why each figure grows as it does, per stack (the measured shape is printed beside it).
const WHY: &[&str] = &[
    "Every shim is a process: the total grows with N for each stack, at the per-shim rate below.",
    "Per shim it should be constant: a Go shim carries its runtime's heap and 12 threads' stacks \
     privately; ours one thread and a few small buffers, the binary's pages shared between all.",
    "Per container started, host memory adds the container itself (a `sleep`), its cgroups, \
     mounts and the kernel's per-process structures to its shim's PSS, and the daemon's share: \
     constant if nothing else grows; noisy (other work on the machine moves MemAvailable).",
    "containerd keeps a ttrpc client, its goroutines and metadata per task, so it grows with N; \
     the tether daemon keeps a table entry and one connection per shim.",
    "containerd's goroutines multiplex on a bounded set of threads; the tether daemon runs one \
     event loop plus a small fixed pool.",
    "Starting one more container should not depend on how many run; where it grows, the daemon \
     or the shim's start walks something of size N.",
    "Listing N containers asks each shim its state (containerd: one `State` per task, in \
     sequence); tether answers from its table. Linear in N either way, by a different constant.",
    "A restart reconnects to every shim: linear in N. containerd loads its shims one after the \
     other before it serves at all; the tether daemon probes them concurrently (`Connect` and \
     `State` written together on one connection per shim) while another thread reads its event \
     journal, whose length grows with the history, not with N.",
    "A dead shim's socket refuses at once; the cost is its clean-up (`shim delete`, which runs \
     `runc delete`), one process per dead shim. containerd runs them before it serves; the \
     tether daemon lists such a container UNKNOWN (never RUNNING) and runs the clean-ups in the \
     background once the live shims are resolved, so they cost its restart only the CPU they \
     take from it.",
    "A stopped shim accepts the connection and never answers: the daemon waits out a timeout. \
     containerd waits its 5 s shim-load timeout for each stopped shim, one after the other, \
     before it serves anything; the tether daemon's wait does not add up per shim (its probes \
     time out together), and is the same at every N.",
    "What a daemon does with a shim that did not answer in time: it declares it dead and runs \
     its `delete`, which kills the container; the count here is how many survived.",
    "And the stopped shim itself: once continued, does anything end it? A count of 5 means the \
     daemon deleted the task without stopping the shim process, which lives on, orphaned.",
    "Each exit is reaped by its shim and published to the daemon, which fans it out: the burst \
     queues 100 publications in the daemon, so its spread (p99, max) shows the daemon's \
     per-event cost, independent of N unless the daemon's work per event grows with N. The \
     tether daemon journals every event read in one turn of its loop with one fsync, and writes \
     the containers' records off its loop.",
    "See the median.",
    "See the median.",
    "All 100 must arrive: an exit is never dropped.",
    "The shim's part of the burst: from the kill to the reap it stamps on the event. The rest of \
     the latency above is the path from the shim through the daemon to the subscriber.",
    "See the median.",
    "What the daemon (or containerd) adds: from the reap the shim stamps on the event to the \
     subscriber's line, for the slowest of the burst. The shim's clock and the bench's are the \
     same machine's.",
    "RSS counts every page a shim maps, shared or not (its binary's text, libc): what one shim \
     costs alone, not what each of N costs (that is the PSS).",
];

fn render(a: &Args, series: &Measured, notes: &[String], took: Duration) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Scale\n");
    let _ = writeln!(
        s,
        "Generated by `make bench-scale` (`bench --scale --scale-n {}`) in {:.0} min: containerd {} \
         + runc, {} cores, {} MB of memory. Three stacks live side by side and grow in turn to \
         each N of idle `sleep` containers: containerd's Go shim and ours, each through its own \
         private containerd, and ours through a private `tether daemon`. Wall-clock figures on \
         a shared machine are noisy; what counts is how each grows, and the ratios in one run.\n",
        a.ns.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(","),
        took.as_secs_f64() / 60.0,
        super::version("containerd"),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        meminfo_kb("MemTotal:") / 1024,
    );
    for n in notes {
        let _ = writeln!(s, "**{n}**\n");
    }
    let chart = a
        .out
        .with_extension("svg")
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let _ = writeln!(s, "![each figure against N, one line per stack]({chart})\n");
    let mut ns: Vec<usize> = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|p| p.n))
        .collect();
    ns.sort_unstable();
    ns.dedup();
    for (i, (title, unit)) in FIGURES.iter().enumerate() {
        let head = if unit.is_empty() {
            title.to_string()
        } else {
            format!("{title} ({unit})")
        };
        let _ = writeln!(s, "## {head}\n");
        let _ = write!(s, "| N |");
        for (label, _) in series {
            let _ = write!(s, " {label} |");
        }
        let _ = writeln!(s, "\n|---|{}", "---|".repeat(series.len()));
        for n in &ns {
            let _ = write!(s, "| {n} |");
            for (_, pts) in series {
                let v = pts.iter().find(|p| p.n == *n).map_or(f64::NAN, |p| p.v[i]);
                let cell = if v.is_finite() {
                    format!("{v:.1}")
                } else {
                    "-".into()
                };
                let _ = write!(s, " {cell} |");
            }
            let _ = writeln!(s);
        }
        let _ = writeln!(s, "\n{}", WHY[i]);
        for (label, pts) in series {
            let _ = writeln!(s, "- {label}: {}", growth(pts, i));
        }
        if let Some(line) = per_shim(series, i) {
            let _ = writeln!(s, "\n{line}");
        }
        let _ = writeln!(s);
    }
    let _ = writeln!(
        s,
        "How each is measured: PSS from `/proc/PID/smaps_rollup` of every shim of the stack; \
         host memory is the growth of MemTotal - MemAvailable over a stack's growth step (2 s after its last start) divided by the containers it started; the daemon's RSS and threads from its `/proc/PID/status`; the N-th start is one `ctr run -d` \
         / `tether run -d` timed alone after the others were started two at a time; a restart is \
         SIGKILL of the daemon, then (for the second and third) SIGKILL of the first {DEAD_PERCENT}% \
         of the shims or SIGSTOP of {STOPPED}, then the time from starting the daemon until its \
         list shows every other container RUNNING (and none of the killed ones); the burst \
         SIGKILLs {BURST} containers' init processes in a loop and times, for each, the kill to \
         its `/tasks/exit` line printed by `ctr events` / `tether events --json`. Containers \
         killed by a figure are removed, and the next N refills them."
    );
    s
}
