//! `make bench`: Tether's shim side by side with containerd's own `containerd-shim-runc-v2`, in
//! the same run, on the same private containerd. Writes BENCHMARKS.md (or `--out PATH`).
//!
//! Figures: idle footprint (PSS per shim over N idle containers, RSS and threads of one),
//! `ctr run --rm /bin/true` latency, `shim start` exec -> Connect answered, kernel exit ->
//! `exited_at` and -> `/tasks/exit` seen by `ctr events`, and stdout throughput with the
//! shim's CPU time; `State` round trips while another request's `runc exec` hangs 3 s (and
//! `ctr task ls` meanwhile), and the wake-ups of an idle shim per minute (see `responsive`).
//! Wall-clock figures are noisy on shared machines: compare ratios within a run.
//!
//! The manager: `tether daemon` restarted (after a SIGKILL) over 200 live shims and 20 dead
//! ones, from exec until `tether ps` lists all 220 resolved; and its thread count meanwhile.
//! `--quick` skips it (and counts wake-ups over 10 s instead of 60).
//!
//! Live shim upgrade (`upgrade`): one shim's handover, 20 times, and 200 idle shims upgraded by
//! `tether upgrade` (`--upgrade-many N`; 20 with `--quick`). `--only upgrade` runs just that and
//! replaces its section in the report at `--out`.
//! `--responsive-only` runs only the hang and wake-up figures.
//!
//! Beside the markdown goes a chart of the Go-vs-tether table (`--out X.md` also writes `X.svg`,
//! see `chart`); `--chart-from X.md` only redraws it. `--scale`: how costs grow with N (`scale`).
//! `--cri`: pods through containerd's CRI plugin, both handlers, spliced into `--out` (`cri`).

// A directory without main.rs: not a binary of its own.
#[path = "bench/chart/mod.rs"]
mod chart;
#[path = "bench/clock.rs"]
mod clock;
#[path = "bench/cri/mod.rs"]
mod cri;
#[path = "bench/report.rs"]
mod report;
#[path = "bench/responsive.rs"]
mod responsive;
#[path = "bench/scale/mod.rs"]
mod scale;
#[path = "bench/stream.rs"]
mod stream;
#[path = "bench/upgrade.rs"]
mod upgrade;

use report::{kept_part, render, render_restart, version, write_chart};

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tether_protocol::task_service::TaskCaller;
use tether_tests::{
    busybox_rootfs, procs, unique_id, wait_until, Containerd, Ctr, Options, RUNC_RUNTIME,
    TETHER_RUNTIME,
};

struct Args {
    out: PathBuf,
    idle: usize,
    runs: usize,
    stream_mib: usize,
    /// Live and dead shims for the manager restart figure (0: skipped).
    restart_live: usize,
    restart_dead: usize,
    /// Only the manager's figures (`--restart-only`).
    restart_only: bool,
    /// How long an idle shim's wake-ups are counted.
    wakeup_window: Duration,
    /// Only the hang and wake-up figures (`--responsive-only`).
    responsive_only: bool,
    /// Only redraw the chart of this report (`--chart-from`).
    chart_from: Option<PathBuf>,
    /// Upgrades of one shim, and idle shims upgraded at once (0: skipped).
    upgrade_runs: usize,
    upgrade_many: usize,
    /// Only this part, spliced into the report at `out` (`--only upgrade`).
    only: Option<String>,
}

/// The manager's figures.
struct Restart {
    live: usize,
    dead: usize,
    ms: f64,
    threads: usize,
    /// The daemon's own account of the rediscovery (its log line), where the time went.
    rediscovery: String,
}

fn args() -> Args {
    let mut a = Args {
        out: PathBuf::from("BENCHMARKS.md"),
        idle: 50,
        runs: 30,
        stream_mib: 2048,
        restart_live: 200,
        restart_dead: 20,
        restart_only: false,
        wakeup_window: Duration::from_secs(60),
        responsive_only: false,
        chart_from: None,
        upgrade_runs: 20,
        upgrade_many: 200,
        only: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--out" => a.out = PathBuf::from(val()),
            "--idle" => a.idle = val().parse().expect("--idle N"),
            "--runs" => a.runs = val().parse().expect("--runs N"),
            "--stream-mib" => a.stream_mib = val().parse().expect("--stream-mib N"),
            "--quick" => {
                a.idle = 10;
                a.runs = 8;
                a.stream_mib = 256;
                a.restart_live = 0;
                a.restart_dead = 0;
                a.wakeup_window = Duration::from_secs(10);
                a.upgrade_many = 20;
            }
            "--upgrade-many" => a.upgrade_many = val().parse().expect("--upgrade-many N"),
            "--only" => a.only = Some(val()),
            "--restart-only" => a.restart_only = true,
            "--responsive-only" => a.responsive_only = true,
            "--chart-from" => a.chart_from = Some(PathBuf::from(val())),
            "--restart" => {
                a.restart_live = val().parse().expect("--restart LIVE");
            }
            other => panic!(
                "unknown argument {other} (--out P, --idle N, --runs N, --stream-mib N, --restart LIVE, --restart-only, --responsive-only, --quick, --chart-from REPORT, --upgrade-many N, --only upgrade)"
            ),
        }
    }
    a
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn p90(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[(v.len() * 9 / 10).min(v.len() - 1)]
}

fn kb_field(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// A `/proc/meminfo` figure, in kB (0 when absent).
fn meminfo_kb(key: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    kb_field(&text, key)
}

/// (PSS kB, RSS kB, threads) of a process.
fn footprint(pid: i32) -> (u64, u64, u64) {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    (
        kb_field(&smaps, "Pss:"),
        kb_field(&smaps, "Rss:"),
        kb_field(&status, "Threads:"),
    )
}

/// CPU seconds (user + system) a process has used.
fn cpu_seconds(pid: i32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

#[derive(Default)]
struct Figures {
    pss_per_shim_kb: f64,
    rss_one_kb: f64,
    threads: f64,
    run_true_ms: (f64, f64),
    start_ms: (f64, f64),
    exit_reaped_ms: f64,
    exit_event_ms: f64,
    stream_mibs: f64,
    stream_cpu_s: f64,
    stream_ctr_cpu_s: f64,
    stream_alone_mibs: f64,
    hang: responsive::HangFigures,
    wakeups_per_min: f64,
}

fn bench_runtime(cd: &Containerd, ctr: &Ctr, runtime: &str, a: &Args) -> Figures {
    let rootfs = busybox_rootfs();
    let mut f = Figures::default();
    eprintln!("== {runtime}");

    // Idle footprint: N detached containers, one shim each.
    let ids: Vec<String> = (0..a.idle).map(|_| unique_id("idle")).collect();
    for id in &ids {
        ctr.run_detached_rootfs(runtime, rootfs, id, &["/bin/sleep", "1000"]);
    }
    std::thread::sleep(Duration::from_secs(2));
    let shims = cd.shim_pids();
    let prints: Vec<_> = shims.iter().map(|&p| footprint(p)).collect();
    if !prints.is_empty() {
        f.pss_per_shim_kb = prints.iter().map(|p| p.0 as f64).sum::<f64>() / prints.len() as f64;
        f.rss_one_kb = median(&mut prints.iter().map(|p| p.1 as f64).collect::<Vec<_>>());
        f.threads = median(&mut prints.iter().map(|p| p.2 as f64).collect::<Vec<_>>());
    }
    eprintln!(
        "   {} shims, PSS/shim {:.0} kB",
        shims.len(),
        f.pss_per_shim_kb
    );
    // A bundle to start extra shims from (for the start latency), then clean up.
    let template = cd.bundle(ctr.namespace(), &ids[0]).join("config.json");
    let scratch = tempfile::tempdir().expect("tempdir");
    let bundle = scratch.path().join("bundle");
    std::fs::create_dir_all(&bundle).expect("bundle dir");
    std::fs::copy(&template, bundle.join("config.json")).expect("copy config.json");
    // containerd creates a `log` FIFO in each bundle and reads it; the Go shim needs it.
    nix::unistd::mkfifo(
        &bundle.join("log"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .expect("mkfifo log");
    let _log_reader = nix::fcntl::open(
        &bundle.join("log"),
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_NONBLOCK,
        nix::sys::stat::Mode::empty(),
    )
    .expect("open log FIFO");
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

    // `shim start` exec -> Connect answered.
    let binary = if runtime == TETHER_RUNTIME {
        tether_tests::shim_binary()
    } else {
        PathBuf::from("/usr/bin/containerd-shim-runc-v2")
    };
    let mut starts = Vec::new();
    for _ in 0..a.runs {
        let id = unique_id("st");
        let t0 = Instant::now();
        let out = Command::new(&binary)
            .args(["-namespace", ctr.namespace(), "-address"])
            .arg(cd.address())
            .args([
                "-publish-binary",
                "/usr/bin/containerd",
                "-id",
                &id,
                "start",
            ])
            .current_dir(&bundle)
            .env("TTRPC_ADDRESS", cd.ttrpc_address())
            .stdin(Stdio::null())
            .output()
            .expect("shim start");
        let address = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let connected = TaskCaller::connect(&address, Duration::from_secs(5));
        let elapsed = t0.elapsed();
        match connected {
            Ok((caller, resp)) => {
                starts.push(elapsed.as_secs_f64() * 1000.0);
                let req = tether_protocol::api::task::ShutdownRequest {
                    id: id.clone(),
                    now: true,
                    ..Default::default()
                };
                let _: Result<tether_protocol::api::Empty, _> =
                    caller.call("Shutdown", &req, Duration::from_secs(5));
                let pid = resp.shim_pid as i32;
                wait_until(Duration::from_secs(5), || !procs::is_alive(pid));
            }
            Err(e) => eprintln!(
                "   start: {address:?} {e:?} {}",
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    }
    f.start_ms = (median(&mut starts.clone()), p90(&mut starts));

    // ctr run --rm /bin/true.
    let mut runs = Vec::new();
    for _ in 0..a.runs {
        let id = unique_id("true");
        let t0 = Instant::now();
        let out = ctr.run_rm_rootfs(runtime, rootfs, &id, &["/bin/true"]);
        if out.success() {
            runs.push(t0.elapsed().as_secs_f64() * 1000.0);
        }
    }
    f.run_true_ms = (median(&mut runs.clone()), p90(&mut runs));

    // Exit latency: the container prints its clock just before it exits.
    let events = ctr.events();
    let anchor = (Instant::now(), clock::now_epoch());
    let mut reaped = Vec::new();
    let mut seen = Vec::new();
    for _ in 0..a.runs {
        let id = unique_id("exit");
        let out = ctr.run_rm_rootfs(
            runtime,
            rootfs,
            &id,
            &["/bin/sh", "-c", "echo $EPOCHREALTIME"],
        );
        let Ok(printed) = out.stdout.trim().parse::<f64>() else {
            continue;
        };
        let ev = events.wait_for_topic(&id, "/tasks/exit", Duration::from_secs(10));
        let exited_at = ev
            .json()
            .and_then(|j| j.get("exited_at")?.as_str().and_then(clock::parse_rfc3339));
        if let Some(at) = exited_at {
            reaped.push((at - printed) * 1000.0);
        }
        let received = anchor.1 + ev.received.duration_since(anchor.0).as_secs_f64();
        seen.push((received - printed) * 1000.0);
    }
    drop(events);
    f.exit_reaped_ms = median(&mut reaped);
    f.exit_event_ms = median(&mut seen);

    // Stdout throughput through the shim and ctr, the shim's CPU for it; and through the shim
    // alone.
    let through = stream::through_ctr(cd, ctr, runtime, a.stream_mib);
    (f.stream_mibs, f.stream_cpu_s, f.stream_ctr_cpu_s) =
        (through.mibs, through.shim_cpu_s, through.ctr_cpu_s);
    f.stream_alone_mibs = stream::into_dev_null(ctr, runtime, a.stream_mib);
    eprintln!(
        "   stream {:.0} MiB/s via ctr (shim cpu {:.2}s, ctr cpu {:.2}s per 2 GiB), {:.0} MiB/s shim alone",
        f.stream_mibs, f.stream_cpu_s, f.stream_ctr_cpu_s, f.stream_alone_mibs
    );
    f
}

fn main() {
    if let Some(s) = scale::Args::from_env() {
        return scale::main(s);
    }
    if let Some(c) = cri::Args::from_env() {
        return cri::main(c);
    }
    let a = args();
    if let Some(report) = &a.chart_from {
        let md = std::fs::read_to_string(report)
            .unwrap_or_else(|e| panic!("read {}: {e}", report.display()));
        write_chart(report, &md);
        return;
    }
    // Freshly built binaries sit dirty in the page cache, which smaps counts as private memory
    // of every process mapping them; write them back first so shared pages count as shared.
    nix::unistd::sync();
    match a.only.as_deref() {
        Some("upgrade") => return upgrade::only(&a.out, a.upgrade_runs, a.upgrade_many.max(1)),
        Some(other) => panic!("--only {other}: the parts are: upgrade"),
        None => {}
    }
    if a.restart_only {
        let r = bench_restart(a.restart_live.max(1), a.restart_dead);
        let report = format!("# Benchmarks (manager only)\n{}", render_restart(&r));
        std::fs::write(&a.out, &report).expect("write report");
        println!("{report}");
        return;
    }
    let cd = Containerd::start();
    let ctr = cd
        .ctr(&unique_id("bench"))
        .with_timeout(Duration::from_secs(120));
    let (host, mut go, mut ours) = if a.responsive_only {
        (f64::NAN, Figures::default(), Figures::default())
    } else {
        (
            stream::host_pipe_mibs(a.stream_mib),
            bench_runtime(&cd, &ctr, RUNC_RUNTIME, &a),
            bench_runtime(&cd, &ctr, TETHER_RUNTIME, &a),
        )
    };
    let slow = responsive::SlowRunc::write();
    let slow_cd = Containerd::start_with(Options {
        path_prefix: vec![slow.dir().to_path_buf()],
        ..Options::default()
    });
    let slow_ctr = slow_cd
        .ctr(&unique_id("hang"))
        .with_timeout(Duration::from_secs(60));
    for (rt, f) in [(RUNC_RUNTIME, &mut go), (TETHER_RUNTIME, &mut ours)] {
        eprintln!("== {rt}: State while `runc exec` hangs");
        f.hang = responsive::state_during_hang(&slow_cd, &slow_ctr, rt, &slow);
    }
    drop(slow_ctr);
    let slow_check = slow_cd.leak_check();
    drop(slow_cd);
    slow_check.assert_clean();
    eprintln!("== idle wake-ups over {:?}", a.wakeup_window);
    let w = responsive::idle_wakeups(&cd, &ctr, &[RUNC_RUNTIME, TETHER_RUNTIME], a.wakeup_window);
    (go.wakeups_per_min, ours.wakeups_per_min) = (w[0], w[1]);
    drop(ctr);
    let check = cd.leak_check();
    drop(cd);
    check.assert_clean();
    let restart = (a.restart_live > 0 && !a.responsive_only)
        .then(|| bench_restart(a.restart_live, a.restart_dead));
    let upgraded = (a.upgrade_many > 0 && !a.responsive_only)
        .then(|| upgrade::bench(a.upgrade_runs, a.upgrade_many, 3));
    let mut report = render(&a, host, &go, &ours);
    if let Some(r) = &restart {
        report.push_str(&render_restart(r));
    }
    if let Some(u) = &upgraded {
        report.push_str(&upgrade::render(u));
    }
    report.push_str(&kept_part(&a.out));
    std::fs::write(&a.out, &report).expect("write report");
    write_chart(&a.out, &report);
    println!("{report}");
}

/// Starts `live + dead` containers under a private `tether daemon`, SIGKILLs it and `dead` of
/// the shims, and times the restart: exec of `tether daemon` until `tether ps` answers with
/// every container resolved (the live ones RUNNING, the dead ones EXITED).
fn bench_restart(live: usize, dead: usize) -> Restart {
    use tether_tests::manager::Daemon;
    // Shims orphaned by the SIGKILLed daemon come to us, and we reap them.
    procs::become_subreaper();
    let mut d = Daemon::start();
    let ns = unique_id("restart");
    let total = live + dead;
    let rootfs = busybox_rootfs().display().to_string();
    let socket = d.socket();
    std::thread::scope(|s| {
        for half in 0..2 {
            let (ns, rootfs, socket) = (&ns, &rootfs, &socket);
            s.spawn(move || {
                for i in (half..total).step_by(2) {
                    let id = format!("c{i:03}");
                    let out = Command::new(tether_tests::tether_binary())
                        .env("TETHER_SOCKET", socket)
                        .args(["--namespace", ns, "run", "-d", "--rootfs", rootfs, &id])
                        .args(["--", "sleep", "3600"])
                        .output()
                        .expect("tether run");
                    assert!(out.status.success(), "run {id}: {out:?}");
                }
            });
        }
    });
    let threads = d.pid().and_then(procs::thread_count).unwrap_or(0);
    let shims = d.shim_pids();
    assert_eq!(shims.len(), total, "one shim per container");
    d.kill9();
    let killed: Vec<i32> = shims.iter().copied().take(dead).collect();
    for &p in &killed {
        procs::signal(p, libc::SIGKILL);
    }
    procs::wait_gone(&killed, Duration::from_secs(10));
    procs::reap_orphans();
    let t0 = Instant::now();
    d.restart();
    let resolved = wait_until(Duration::from_secs(120), || {
        let out = d.run(&["--namespace", &ns, "ps", "--json"]);
        let rows: Vec<serde_json::Value> = serde_json::from_str(&out.stdout).unwrap_or_default();
        let running = rows.iter().filter(|r| r["status"] == "RUNNING").count();
        let exited = rows.iter().filter(|r| r["status"] == "EXITED").count();
        running == live && exited == dead
    });
    let ms = t0.elapsed().as_secs_f64() * 1000.0;
    assert!(
        resolved,
        "restart did not resolve every container:\n{}",
        d.log()
    );
    let rediscovery = d
        .log()
        .lines()
        .rev()
        .find_map(|l| l.split_once("rediscovery: ").map(|(_, r)| r.to_string()))
        .unwrap_or_default();
    for i in 0..total {
        d.ok(&["--namespace", &ns, "delete", "-f", &format!("c{i:03}")]);
    }
    wait_until(Duration::from_secs(30), || d.shim_pids().is_empty());
    procs::reap_orphans();
    Restart {
        live,
        dead,
        ms,
        threads,
        rediscovery,
    }
}
