//! `bench --cri` (`make bench-cri`, and the last part of `make bench`): what a Kubernetes node
//! pays per pod, through containerd's CRI plugin as the kubelet drives it, with containerd's
//! shim (handler `runc`) and ours (`tether`) in the same run.
//!
//! Each handler gets its own private containerd with the CRI plugin (both handlers configured,
//! from `deploy/`'s drop-in, as the CRI tests do), both alive through the run, so containerd's
//! own memory is what that handler's pods cost it, and a shared machine's load falls on both
//! alike: the sequential pods alternate between the handlers, and both sit through the same
//! idle window. A pod is what the kubelet makes of a one-container spec: RunPodSandbox (our
//! pause image, host network), CreateContainer and StartContainer of busybox `sleep`; removed
//! with StopContainer, StopPodSandbox and RemovePodSandbox. Per handler:
//! - pod start latency (RunPodSandbox called -> StartContainer answered), `--cri-seq` pods one
//!   after the other, then as many `--cri-par` at a time (the kubelet's pod workers run in
//!   parallel); the sequential ones are then removed one by one, timed;
//! - for each N of `--cri-pods` (110: the kubelet's default `maxPods`; 250), both handlers
//!   grown from empty `--cri-par` at a time: PSS of the shims, containerd's RSS, the shims' CPU
//!   and wake-ups over `--cri-idle-s` idle seconds, ListContainers and ListContainerStats
//!   latency (what the kubelet polls), then the drain of all N, `--cri-par` at a time.
//!
//! Before each N the machine is checked for memory; a step that does not fit is skipped and
//! the report says so. Everything started is removed and checked for leftovers (shims,
//! sockets, bundles, runc state, mounts, cgroups), then the harness's leak check.
//!
//! The section is spliced into the report at `--out` (replaced if present, else put before the
//! hand-written part), and its chart written beside it as `<stem>-cri.svg`.

mod report;

use super::{cpu_seconds, footprint, responsive::context_switches};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tether_tests::cri::api::NamespaceMode;
use tether_tests::cri::{
    container_config, pod_config, Cri, CriClient, RUNC_HANDLER, TETHER_HANDLER,
};
use tether_tests::{procs, unique_id};

/// What `--cri` was asked for.
pub struct Args {
    pub out: PathBuf,
    /// The pod counts to grow to, ascending.
    pub pods: Vec<usize>,
    /// Pods started one after the other (and as many `par` at a time).
    pub seq: usize,
    /// Pods started or removed at a time.
    pub par: usize,
    pub idle: Duration,
    pub handlers: Vec<String>,
}

impl Args {
    /// `Some` when the command line asks for the CRI mode (`--cri`).
    pub fn from_env() -> Option<Args> {
        let argv: Vec<String> = std::env::args().skip(1).collect();
        if !argv.iter().any(|a| a == "--cri") {
            return None;
        }
        let mut a = Args {
            out: PathBuf::from("BENCHMARKS.md"),
            pods: vec![110, 250],
            seq: 50,
            par: 10,
            idle: Duration::from_secs(60),
            handlers: vec![RUNC_HANDLER.to_string(), TETHER_HANDLER.to_string()],
        };
        let mut it = argv.iter();
        while let Some(arg) = it.next() {
            let mut val = || it.next().unwrap_or_else(|| panic!("{arg} needs a value"));
            match arg.as_str() {
                "--cri" => {}
                "--cri-pods" => {
                    a.pods = val()
                        .split(',')
                        .map(|n| n.trim().parse().expect("--cri-pods N,N,..."))
                        .collect();
                    a.pods.sort_unstable();
                }
                "--cri-seq" => a.seq = val().parse().expect("--cri-seq N"),
                "--cri-par" => a.par = val().parse::<usize>().expect("--cri-par N").max(1),
                "--cri-idle-s" => {
                    a.idle = Duration::from_secs(val().parse().expect("--cri-idle-s SECONDS"))
                }
                "--cri-handlers" => a.handlers = val().split(',').map(String::from).collect(),
                "--out" => a.out = PathBuf::from(val()),
                other => panic!(
                    "unknown argument {other} with --cri (--cri-pods N,N,.., --cri-seq N, \
                     --cri-par N, --cri-idle-s S, --cri-handlers runc,tether, --out P)"
                ),
            }
        }
        Some(a)
    }
}

/// A pod the bench started: its sandbox and, once created, its container.
#[derive(Clone)]
struct PodRef {
    sandbox: String,
    container: Option<String>,
}

/// The figures of one handler at one N (NaN: not measured).
#[derive(Clone)]
pub struct Point {
    pub n: usize,
    pub shims: usize,
    pub pss_per_pod_kb: f64,
    pub pss_total_mb: f64,
    pub rss_one_kb: f64,
    pub containerd_rss_mb: f64,
    /// CPU of all shims over the idle window (ms), and of containerd.
    pub shim_cpu_ms: f64,
    pub containerd_cpu_ms: f64,
    /// Context switches of all shims over the idle window, per minute.
    pub wakeups_per_min: f64,
    pub list_ms: f64,
    pub stats_ms: f64,
    pub drain_s: f64,
    /// One pod's stop + remove within the drain: median, max.
    pub drain_pod_ms: (f64, f64),
}

/// One handler's figures.
pub struct Handler {
    pub name: String,
    pub seq_start_ms: Vec<f64>,
    pub par_start_ms: Vec<f64>,
    pub seq_stop_ms: Vec<f64>,
    pub points: Vec<Point>,
}

/// The kubelet's StopContainer grace period here: `sleep` as its PID namespace's init ignores
/// SIGTERM, so any grace would be waited out whole and measure nothing of the runtime.
const GRACE_S: i64 = 0;
const POD_TIMEOUT: Duration = Duration::from_secs(60);
/// What the memory check assumes a pod costs (kB): a Go shim's ~3 MB PSS and its sandbox and
/// container; and what it leaves to the rest of the machine.
const POD_KB: u64 = 5 * 1024;
const RESERVE_KB: u64 = 1024 * 1024;

/// RunPodSandbox, CreateContainer, StartContainer of a `sleep`; the time from the first call to
/// the last answer (ms). The pod is recorded in `pods` as soon as it exists, so a failure
/// later still removes it.
fn start_pod(
    c: &CriClient,
    cri_dirs: &(String, PathBuf),
    handler: &str,
    pods: &Mutex<Vec<PodRef>>,
) -> Result<f64, String> {
    let name = unique_id("bp");
    let log_dir = cri_dirs.1.join(&name);
    std::fs::create_dir_all(&log_dir).map_err(|e| format!("mkdir {}: {e}", log_dir.display()))?;
    let cfg = pod_config(
        &name,
        &unique_id("uid"),
        &cri_dirs.0,
        &log_dir,
        NamespaceMode::Container,
    );
    let container = container_config(NamespaceMode::Container, &name, 0, &["sleep", "36000"]);
    let t0 = Instant::now();
    let sandbox = c
        .run_pod(&cfg, handler)
        .map_err(|e| format!("RunPodSandbox: {e}"))?;
    let at = {
        let mut p = pods.lock().unwrap_or_else(|e| e.into_inner());
        p.push(PodRef {
            sandbox: sandbox.clone(),
            container: None,
        });
        p.len() - 1
    };
    let id = c
        .create_container(&sandbox, &container, &cfg)
        .map_err(|e| format!("CreateContainer in {sandbox}: {e}"))?;
    pods.lock().unwrap_or_else(|e| e.into_inner())[at].container = Some(id.clone());
    c.start_container(&id)
        .map_err(|e| format!("StartContainer {id}: {e}"))?;
    Ok(t0.elapsed().as_secs_f64() * 1000.0)
}

/// StopContainer, StopPodSandbox, RemovePodSandbox (which removes the container): ms.
fn stop_pod(c: &CriClient, p: &PodRef) -> Result<f64, String> {
    let t0 = Instant::now();
    if let Some(id) = &p.container {
        c.stop_container(id, GRACE_S)
            .map_err(|e| format!("StopContainer {id}: {e}"))?;
    }
    c.stop_pod(&p.sandbox, POD_TIMEOUT)
        .map_err(|e| format!("StopPodSandbox {}: {e}", p.sandbox))?;
    c.remove_pod(&p.sandbox, POD_TIMEOUT)
        .map_err(|e| format!("RemovePodSandbox {}: {e}", p.sandbox))?;
    Ok(t0.elapsed().as_secs_f64() * 1000.0)
}

/// `f(client, i)` for i in 0..n, `par` at a time, each worker on its own connection (the
/// kubelet's pod workers share one, but a blocking client serialises its calls).
fn in_parallel<T: Send>(
    socket: &Path,
    par: usize,
    n: usize,
    f: impl Fn(&CriClient, usize) -> T + Sync,
) -> Vec<T> {
    let next = AtomicUsize::new(0);
    let out: Mutex<Vec<(usize, T)>> = Mutex::new(Vec::with_capacity(n));
    std::thread::scope(|s| {
        for _ in 0..par.min(n) {
            s.spawn(|| {
                let c = CriClient::connect(socket).unwrap_or_else(|e| panic!("{e}"));
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    let r = f(&c, i);
                    out.lock().unwrap_or_else(|e| e.into_inner()).push((i, r));
                }
            });
        }
    });
    let mut v = out.into_inner().unwrap_or_else(|e| e.into_inner());
    v.sort_by_key(|(i, _)| *i);
    v.into_iter().map(|(_, r)| r).collect()
}

/// One handler's private containerd and the pods it runs.
struct Node {
    cri: Cri,
    handler: String,
    dirs: (String, PathBuf),
    pods: Mutex<Vec<PodRef>>,
}

impl Node {
    fn start(handler: &str) -> Node {
        let cri = Cri::start();
        let dirs = (cri.cgroup_parent().to_string(), cri.log_dir().to_path_buf());
        Node {
            cri,
            handler: handler.to_string(),
            dirs,
            pods: Mutex::new(Vec::new()),
        }
    }

    /// Records the pods started since `from` for the leftover check; the count alive.
    fn record_from(&self, from: usize) -> usize {
        let pods = self.pods.lock().unwrap_or_else(|e| e.into_inner());
        for p in &pods[from..] {
            self.cri.started(&p.sandbox);
            if let Some(c) = &p.container {
                self.cri.started(c);
            }
        }
        pods.len()
    }

    /// Starts `n` pods, `par` at a time; their start latencies (ms). Panics on a failure.
    fn start_pods(&self, n: usize, par: usize) -> Vec<f64> {
        let from = self.pods.lock().unwrap_or_else(|e| e.into_inner()).len();
        let (dirs, handler, pods) = (&self.dirs, &self.handler, &self.pods);
        let r = in_parallel(self.cri.client().socket(), par, n, |c, _| {
            start_pod(c, dirs, handler, pods)
        });
        self.record_from(from);
        r.into_iter()
            .map(|r| {
                r.unwrap_or_else(|e| panic!("{}: {e}\n{}", self.handler, self.cri.log_excerpt()))
            })
            .collect()
    }

    /// Removes every pod, `par` at a time: (wall time in s, each pod's ms).
    fn drain(&self, par: usize) -> (f64, Vec<f64>) {
        let pods: Vec<PodRef> =
            std::mem::take(&mut *self.pods.lock().unwrap_or_else(|e| e.into_inner()));
        let t0 = Instant::now();
        let r = in_parallel(self.cri.client().socket(), par, pods.len(), |c, i| {
            stop_pod(c, &pods[i])
        });
        let took = t0.elapsed().as_secs_f64();
        let ms = r
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|e| panic!("{}: {e}\n{}", self.handler, self.cri.log_excerpt()))
            })
            .collect();
        (took, ms)
    }

    /// Removes what is left, checks nothing is, stops containerd and runs the leak check.
    fn finish(self) {
        if !self
            .pods
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
        {
            self.drain(4);
        }
        let left = self.cri.client().list_pods().expect("ListPodSandbox");
        assert!(left.is_empty(), "pods still listed: {left:?}");
        self.cri.assert_nothing_left();
        self.cri.finish();
    }
}

/// The figures of every node with `n` pods running each, over one idle window together.
fn measure_all(nodes: &[Node], n: usize, idle: Duration) -> Vec<Point> {
    // Let the last starts settle (events published, the Go runtime's first collections).
    std::thread::sleep(Duration::from_secs(2));
    let cpu = |pids: &[i32]| pids.iter().filter_map(|&p| cpu_seconds(p)).sum::<f64>();
    let switches = |pids: &[i32]| {
        pids.iter()
            .filter_map(|&p| context_switches(p))
            .sum::<u64>()
    };
    let mut points: Vec<Point> = Vec::new();
    let mut shims: Vec<Vec<i32>> = Vec::new();
    for node in nodes {
        let cd = node.cri.containerd();
        let pids = cd.shim_pids();
        let prints: Vec<(u64, u64, u64)> = pids.iter().map(|&p| footprint(p)).collect();
        let pss_total_kb: u64 = prints.iter().map(|p| p.0).sum();
        let mut rss: Vec<f64> = prints.iter().map(|p| p.1 as f64).collect();
        points.push(Point {
            n,
            shims: pids.len(),
            pss_per_pod_kb: pss_total_kb as f64 / n as f64,
            pss_total_mb: pss_total_kb as f64 / 1024.0,
            rss_one_kb: super::median(&mut rss),
            containerd_rss_mb: cd
                .pid()
                .map_or(f64::NAN, |p| footprint(p).1 as f64 / 1024.0),
            shim_cpu_ms: f64::NAN,
            containerd_cpu_ms: f64::NAN,
            wakeups_per_min: f64::NAN,
            list_ms: f64::NAN,
            stats_ms: f64::NAN,
            drain_s: f64::NAN,
            drain_pod_ms: (f64::NAN, f64::NAN),
        });
        shims.push(pids);
    }
    let cd_cpu = |node: &Node| {
        node.cri
            .containerd()
            .pid()
            .and_then(cpu_seconds)
            .unwrap_or(f64::NAN)
    };
    let before: Vec<(f64, u64, f64)> = nodes
        .iter()
        .zip(&shims)
        .map(|(node, pids)| (cpu(pids), switches(pids), cd_cpu(node)))
        .collect();
    std::thread::sleep(idle);
    for ((node, pids), (p, b)) in nodes.iter().zip(&shims).zip(points.iter_mut().zip(&before)) {
        p.shim_cpu_ms = (cpu(pids) - b.0) * 1000.0;
        p.wakeups_per_min = switches(pids).saturating_sub(b.1) as f64 * 60.0 / idle.as_secs_f64();
        p.containerd_cpu_ms = (cd_cpu(node) - b.2) * 1000.0;
    }
    let mut list = vec![Vec::new(); nodes.len()];
    let mut stats = vec![Vec::new(); nodes.len()];
    for _ in 0..5 {
        for (j, node) in nodes.iter().enumerate() {
            let c = node.cri.client();
            let t0 = Instant::now();
            let ids = c.list_containers().expect("ListContainers");
            list[j].push(t0.elapsed().as_secs_f64() * 1000.0);
            assert_eq!(ids.len(), n, "ListContainers ({})", node.handler);
            let t0 = Instant::now();
            let st = c.list_container_stats().expect("ListContainerStats");
            stats[j].push(t0.elapsed().as_secs_f64() * 1000.0);
            assert_eq!(st.len(), n, "ListContainerStats ({})", node.handler);
        }
    }
    for ((p, l), (s, node)) in points
        .iter_mut()
        .zip(list.iter_mut())
        .zip(stats.iter_mut().zip(nodes))
    {
        p.list_ms = super::median(l);
        p.stats_ms = super::median(s);
        eprintln!(
            "   {} at N = {n}: {} shims, PSS/pod {:.0} kB, containerd RSS {:.1} MB, shim CPU \
             {:.0} ms and {:.0} wake-ups/min over {idle:?}, list {:.1} ms, stats {:.1} ms",
            node.handler,
            p.shims,
            p.pss_per_pod_kb,
            p.containerd_rss_mb,
            p.shim_cpu_ms,
            p.wakeups_per_min,
            p.list_ms,
            p.stats_ms
        );
    }
    points
}

/// Whether the machine can hold `n` more pods: `Err` says what is short.
fn can_hold(n: usize) -> Result<(), String> {
    let avail = super::meminfo_kb("MemAvailable:");
    let need = n as u64 * POD_KB;
    if avail < need + RESERVE_KB {
        return Err(format!(
            "MemAvailable is {} MB; {n} pods need about {} MB ({} MB per pod) and {} MB are left \
             to the rest of the machine",
            avail / 1024,
            need / 1024,
            POD_KB / 1024,
            RESERVE_KB / 1024
        ));
    }
    Ok(())
}

/// Checks that every shim of `node` is its handler's binary (a misconfigured handler would
/// otherwise silently measure containerd's shim twice).
fn assert_served_by_its_shim(node: &Node) {
    let want = if node.handler == TETHER_HANDLER {
        "containerd-shim-tether-v2"
    } else {
        "containerd-shim-runc-v2"
    };
    let shims = node.cri.containerd().shim_pids();
    assert!(
        !shims.is_empty()
            && shims
                .iter()
                .filter_map(|&p| procs::cmdline(p))
                .all(|a| a.first().is_some_and(|b| b.ends_with(want))),
        "handler {}: pods not served by {want}",
        node.handler
    );
}

/// Runs every figure on `nodes` (one per handler), interleaved so that a shared machine's
/// load falls on both alike: the sequential pods alternate between handlers, and the grown
/// nodes sit through one idle window together.
fn bench_nodes(nodes: &[Node], a: &Args, notes: &mut Vec<String>) -> Vec<Handler> {
    let mut hs: Vec<Handler> = nodes
        .iter()
        .map(|n| Handler {
            name: n.handler.clone(),
            seq_start_ms: Vec::new(),
            par_start_ms: Vec::new(),
            seq_stop_ms: Vec::new(),
            points: Vec::new(),
        })
        .collect();
    eprintln!("== {} pods one at a time, handlers alternating", a.seq);
    for i in 0..a.seq {
        // Each handler goes first half of the time.
        for k in 0..nodes.len() {
            let j = (i + k) % nodes.len();
            hs[j].seq_start_ms.extend(nodes[j].start_pods(1, 1));
            if i == 0 {
                assert_served_by_its_shim(&nodes[j]);
            }
        }
    }
    // Removed in the order they started, the handlers alternating again.
    let mut pods: Vec<std::vec::IntoIter<PodRef>> = nodes
        .iter()
        .map(|n| std::mem::take(&mut *n.pods.lock().unwrap_or_else(|e| e.into_inner())))
        .map(Vec::into_iter)
        .collect();
    for i in 0..a.seq {
        for k in 0..nodes.len() {
            let j = (i + k) % nodes.len();
            let Some(p) = pods[j].next() else { continue };
            let ms = stop_pod(nodes[j].cri.client(), &p)
                .unwrap_or_else(|e| panic!("{e}\n{}", nodes[j].cri.log_excerpt()));
            hs[j].seq_stop_ms.push(ms);
        }
    }
    eprintln!("== {} pods, {} at a time", a.seq, a.par);
    for (node, h) in nodes.iter().zip(hs.iter_mut()) {
        h.par_start_ms = node.start_pods(a.seq, a.par);
        node.drain(a.par);
        eprintln!(
            "   {}: start one at a time p50 {:.0} ms, {} at a time p50 {:.0} ms; stop + remove \
             p50 {:.0} ms",
            h.name,
            report::pct(&h.seq_start_ms, 50),
            a.par,
            report::pct(&h.par_start_ms, 50),
            report::pct(&h.seq_stop_ms, 50)
        );
    }
    for &n in &a.pods {
        if let Err(why) = can_hold(n * nodes.len()) {
            let note = format!("N = {n} skipped: {why}.");
            eprintln!("   {note}");
            notes.push(note);
            continue;
        }
        for node in nodes {
            let t0 = Instant::now();
            node.start_pods(n, a.par);
            eprintln!(
                "== {}: grew to {n} pods in {:.0} s",
                node.handler,
                t0.elapsed().as_secs_f64()
            );
        }
        for (p, h) in measure_all(nodes, n, a.idle).into_iter().zip(hs.iter_mut()) {
            h.points.push(p);
        }
        for (node, h) in nodes.iter().zip(hs.iter_mut()) {
            let (s, per) = node.drain(a.par);
            if let Some(p) = h.points.last_mut() {
                p.drain_s = s;
                p.drain_pod_ms = (report::pct(&per, 50), report::pct(&per, 100));
            }
            eprintln!("   {}: drained {n} pods in {s:.1} s", node.handler);
        }
    }
    hs
}

pub fn main(a: Args) {
    nix::unistd::sync();
    let started = Instant::now();
    let mut notes = Vec::new();
    let nodes: Vec<Node> = a.handlers.iter().map(|h| Node::start(h)).collect();
    let handlers = bench_nodes(&nodes, &a, &mut notes);
    for node in nodes {
        node.finish();
    }
    procs::reap_orphans();
    let section = report::render(&a, &handlers, &notes, started.elapsed());
    let old = std::fs::read_to_string(&a.out).unwrap_or_else(|_| "# Benchmarks\n".to_string());
    std::fs::write(&a.out, report::splice(&old, &section))
        .unwrap_or_else(|e| panic!("write {}: {e}", a.out.display()));
    let svg = report::chart_path(&a.out);
    std::fs::write(&svg, report::svg(&handlers))
        .unwrap_or_else(|e| panic!("write {}: {e}", svg.display()));
    println!("{section}");
    eprintln!(
        "CRI section in {}, chart {}",
        a.out.display(),
        svg.display()
    );
}
