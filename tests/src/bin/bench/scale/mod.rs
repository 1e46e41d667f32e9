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

mod exits;
mod report;
mod stack;

use exits::*;
use report::*;

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

fn host_used_kb() -> u64 {
    super::meminfo_kb("MemTotal:").saturating_sub(super::meminfo_kb("MemAvailable:"))
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
    let avail = super::meminfo_kb("MemAvailable:");
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
    let mut report = render(&a, &series, &notes, started.elapsed());
    report.push_str(&crate::kept_part(&a.out));
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
