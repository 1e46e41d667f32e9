//! Crash recovery: a real `tether daemon`, real shims, real runc, real SIGKILLs. The daemon and
//! shims can die at any instant and no exit is lost or reported twice.
//!
//! The test process is a child subreaper here: shims orphaned by a SIGKILLed daemon (and a
//! killed shim's container processes) are reparented to it, and it reaps them.

use protobuf::Message;
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tether_protocol::api::events::TaskExit;
use tether_tests::manager::{Daemon, EventStream, RUNC_RUNTIME, TETHER_RUNTIME};
use tether_tests::{busybox_rootfs, cmd, mounts, procs, unique_id, wait_until};

const T: Duration = Duration::from_secs(60);

fn rootfs() -> String {
    busybox_rootfs().display().to_string()
}

fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// A small seeded generator (xorshift64*), so a failing run can be replayed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
}

fn seed() -> u64 {
    std::env::var("TETHER_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| now_nanos() as u64 | 1)
}

/// `tether` against a daemon's socket, without borrowing the [`Daemon`] (it restarts meanwhile).
fn tether(socket: &Path, args: &[&str]) -> cmd::CmdOutput {
    let mut c = Command::new(tether_tests::tether_binary());
    c.env("TETHER_SOCKET", socket).args(args);
    cmd::run(&mut c, None, T)
}

fn state_json(socket: &Path, ns: &str, id: &str) -> Result<Value, cmd::CmdOutput> {
    let out = tether(socket, &["--namespace", ns, "state", id, "--json"]);
    if !out.success() {
        return Err(out);
    }
    serde_json::from_str(&out.stdout).map_err(|_| out)
}

/// The `/tasks/exit` events of namespace `ns` in the journal file: (container, status, at,
/// recovered, pid) per event.
fn journaled_exits(journal: &Path, ns: &str) -> Vec<(String, u32, i64, bool, u32)> {
    let text = std::fs::read_to_string(journal).expect("read the journal");
    let mut out = Vec::new();
    for line in text.lines() {
        let v: Value = serde_json::from_str(line).expect("a journal line is JSON");
        if v["namespace"] != ns || v["topic"] != "/tasks/exit" {
            continue;
        }
        let hex = v["value"].as_str().expect("value");
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
            .collect();
        let e = TaskExit::parse_from_bytes(&bytes).expect("a TaskExit");
        let at = e
            .exited_at
            .as_ref()
            .map(|t| t.seconds * 1_000_000_000 + i64::from(t.nanos))
            .unwrap_or(0);
        out.push((
            e.container_id.clone(),
            e.exit_status,
            at,
            v["recovered"].as_bool().unwrap_or(false),
            e.pid,
        ));
    }
    out
}

/// The JSON lines a consumer saw, and where it resumes.
#[derive(Default)]
struct Consumer {
    seen: Vec<Value>,
    last: u64,
}

impl Consumer {
    fn take(&mut self, stream: &mut EventStream) {
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
    fn follow(&self, d: &Daemon, filter: &str) -> EventStream {
        d.events(&["--json", "--since", &self.last.to_string(), filter])
    }
}

/// Makes sure container `id` has been started (whatever the daemon's deaths interrupted).
fn ensure_started(socket: &Path, ns: &str, id: &str, life: u64, code: u32) -> bool {
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
fn shim_sockets(d: &Daemon, ns: &str) -> Vec<PathBuf> {
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

#[test]
fn manager_sigkills_lose_no_exit_and_report_none_twice() {
    procs::become_subreaper();
    let seed = seed();
    println!("chaos seed: {seed} (TETHER_CHAOS_SEED={seed} replays it)");
    let mut rng = Rng(seed);
    const N: usize = 200;
    const KILLS: usize = 22;
    let mut d = Daemon::start();
    let ns = unique_id("chaos");
    let ids: Vec<String> = (0..N).map(|i| format!("c{i:03}")).collect();
    // Known, distinct exit codes, none that reads like a signal death (128 + N for N <= 31).
    let codes: Vec<u32> = (1..=127).chain(160..=254).take(N).collect();
    let lives: Vec<u64> = (0..N).map(|_| rng.range(2, 40)).collect();
    let filter = format!("namespace=={ns},topic==/tasks/exit");

    // Containers are started from another thread while this one kills the daemon.
    let socket = d.socket();
    let started = Arc::new(AtomicBool::new(false));
    let starter = {
        let (ns, ids, codes, lives, started) = (
            ns.clone(),
            ids.clone(),
            codes.clone(),
            lives.clone(),
            started.clone(),
        );
        thread::spawn(move || {
            for i in 0..N {
                while !ensure_started(&socket, &ns, &ids[i], lives[i], codes[i]) {
                    thread::sleep(Duration::from_millis(50));
                }
            }
            started.store(true, Ordering::SeqCst);
        })
    };

    let mut consumer = Consumer::default();
    let mut stream = consumer.follow(&d, &filter);
    let mut sockets: HashMap<String, ()> = HashMap::new();
    for kill in 0..KILLS {
        thread::sleep(Duration::from_millis(rng.range(300, 3000)));
        for s in shim_sockets(&d, &ns) {
            sockets.insert(s.display().to_string(), ());
        }
        d.kill9();
        consumer.take(&mut stream);
        // Down for a while: exits happen meanwhile.
        thread::sleep(Duration::from_millis(rng.range(0, 800)));
        d.restart();
        stream = consumer.follow(&d, &filter);
        println!(
            "kill {}: {} exits seen so far",
            kill + 1,
            consumer.seen.len()
        );
    }
    starter.join().expect("starter thread");
    assert!(started.load(Ordering::SeqCst));
    let socket = d.socket();
    let all_exited = wait_until(Duration::from_secs(120), || {
        let out = tether(&socket, &["--namespace", &ns, "ps", "--json"]);
        let rows: Vec<Value> = serde_json::from_str(&out.stdout).unwrap_or_default();
        rows.len() == N && rows.iter().all(|r| r["status"] == "EXITED")
    });
    assert!(all_exited, "not all exited; log:\n{}", d.log());
    assert!(
        stream.wait_for(T, |evs| consumer.seen.len() + evs.len() >= N),
        "the consumer saw {} + {:?}",
        consumer.seen.len(),
        stream.lines().len()
    );
    consumer.take(&mut stream);

    // The journal: every exit exactly once, with its code.
    let exits = journaled_exits(&d.journal(), &ns);
    let mut by_id: HashMap<String, Vec<u32>> = HashMap::new();
    for (id, status, _, _, _) in &exits {
        by_id.entry(id.clone()).or_default().push(*status);
    }
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(
            by_id.get(id).map(Vec::as_slice),
            Some(&[codes[i]][..]),
            "{id}: journaled exits (seed {seed}): {:?}\n{}",
            exits.iter().filter(|e| e.0 == *id).collect::<Vec<_>>(),
            d.log()
        );
    }
    assert_eq!(exits.len(), N, "no other exits (seed {seed})");
    let recovered = exits.iter().filter(|e| e.3).count();
    println!("{recovered} exits were learned after a restart");
    // The consumer that resumed with --since saw each exit once.
    let mut seen: HashMap<String, u32> = HashMap::new();
    for v in &consumer.seen {
        let id = v["event"]["container_id"].as_str().unwrap_or_default();
        assert!(
            seen.insert(id.to_string(), 0).is_none(),
            "{id} twice (seed {seed})"
        );
        assert_eq!(
            v["event"]["exit_status"].as_u64(),
            ids.iter()
                .position(|x| x == id)
                .map(|i| u64::from(codes[i])),
            "{v}"
        );
    }
    assert_eq!(seen.len(), N, "the consumer saw every exit (seed {seed})");
    // ps and wait agree.
    let out = d.ok(&["--namespace", &ns, "ps", "--json"]);
    let rows: Vec<Value> = serde_json::from_str(&out.stdout).expect("ps --json");
    for (i, id) in ids.iter().enumerate() {
        let row = rows.iter().find(|r| r["id"] == *id).expect("listed");
        assert_eq!(
            row["exit_status"].as_u64(),
            Some(u64::from(codes[i])),
            "{row}"
        );
        let w = d.run(&["--namespace", &ns, "wait", id]);
        assert_eq!(w.code, codes[i] as i32, "wait {id}: {w}");
    }
    // Deletes leave nothing behind.
    for s in shim_sockets(&d, &ns) {
        sockets.insert(s.display().to_string(), ());
    }
    for id in &ids {
        d.ok(&["--namespace", &ns, "delete", id]);
    }
    let gone = wait_until(T, || d.shim_pids().is_empty());
    assert!(gone, "shims left: {:?}", d.shim_pids());
    assert_no_leftovers(&d, &ns, sockets.keys().map(PathBuf::from).collect());
}

/// No zombie (of the daemon or of the test), no mount under the daemon's directory, no shim
/// socket, no container directory.
fn assert_no_leftovers(d: &Daemon, ns: &str, sockets: Vec<PathBuf>) {
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

/// A container that exits while the daemon is down is reported after the restart, once, with
/// its real exit status and time.
#[test]
fn exit_while_the_daemon_is_down_is_reported_after_the_restart() {
    procs::become_subreaper();
    let mut d = Daemon::start();
    let ns = unique_id("ns");
    let id = unique_id("c");
    let out = d.ok(&[
        "--namespace",
        &ns,
        "run",
        "-d",
        "--rootfs",
        &rootfs(),
        &id,
        "--",
        "sh",
        "-c",
        "trap 'exit 42' TERM; while true; do sleep 0.1; done",
    ]);
    let pid: i32 = out.stdout.trim().parse().expect("pid");
    d.kill9();
    let before = now_nanos();
    assert!(procs::signal(pid, libc::SIGTERM));
    assert!(
        procs::wait_gone(&[pid], T).is_empty(),
        "the container exits"
    );
    let after = now_nanos();
    d.restart();
    let w = d.run(&["--namespace", &ns, "wait", &id]);
    assert_eq!(w.code, 42, "{w}\n{}", d.log());
    let v = state_json(&d.socket(), &ns, &id).expect("state");
    assert_eq!(v["status"], "EXITED", "{v}");
    // The exit is journaled once, marked recovered, with the time the shim saw; the shim's own
    // event, retried now that the daemon is back, is not reported again.
    thread::sleep(Duration::from_secs(6));
    let exits = journaled_exits(&d.journal(), &ns);
    assert_eq!(exits.len(), 1, "{exits:?}\n{}", d.log());
    let (cid, status, at, recovered, _) = exits[0].clone();
    assert_eq!((cid.as_str(), status), (id.as_str(), 42));
    assert!(recovered, "{exits:?}");
    assert!(
        before <= at && at <= after,
        "exited_at {at} in [{before}, {after}]"
    );
    d.ok(&["--namespace", &ns, "delete", &id]);
}

/// A shim and the daemon SIGKILLed together: the restart finds the shim gone at once (the
/// container is never RUNNING again), its delete action kills and removes the container, and
/// the exit is reported with a reason.
fn shim_and_daemon_killed(runtime: &str) {
    procs::become_subreaper();
    let mut d = Daemon::start();
    let ns = unique_id("ns");
    let id = unique_id("c");
    let pid = d.run_detached(&ns, runtime, &id, &["sleep", "300"]);
    let shims = d.shim_pids();
    assert_eq!(shims.len(), 1, "{shims:?}");
    let sockets = shim_sockets(&d, &ns);
    procs::signal(shims[0], libc::SIGKILL);
    d.kill9();
    assert!(procs::wait_gone(&shims, T).is_empty());
    procs::reap_orphans();
    d.restart();
    assert_dead_shims_container_ends(&d, &ns, &id);
    let v = state_json(&d.socket(), &ns, &id).expect("state");
    assert_eq!(v["reason"], "shim died while the daemon was down", "{v}");
    assert!(
        procs::wait_gone(&[pid], T).is_empty(),
        "the container is killed"
    );
    let exits = journaled_exits(&d.journal(), &ns);
    assert_eq!(exits.len(), 1, "{exits:?}");
    assert!(exits[0].3, "marked recovered: {exits:?}");
    d.ok(&["--namespace", &ns, "delete", &id]);
    assert_no_leftovers(&d, &ns, sockets);
}

/// Right after a restart a dead shim's container is UNKNOWN (its clean-up runs in the
/// background) or already EXITED, never RUNNING; `wait` returns the exit its clean-up found
/// (137: the container was killed), and the state then says EXITED.
fn assert_dead_shims_container_ends(d: &Daemon, ns: &str, id: &str) {
    let v = state_json(&d.socket(), ns, id).expect("state");
    assert!(
        v["status"] == "UNKNOWN" || v["status"] == "EXITED",
        "{v}\n{}",
        d.log()
    );
    let w = d.run(&["--namespace", ns, "wait", id]);
    assert_eq!(w.code, 137, "{w}\n{}", d.log());
    let v = state_json(&d.socket(), ns, id).expect("state");
    assert_eq!(v["status"], "EXITED", "{v}\n{}", d.log());
    assert_eq!(v["exit_status"], 137, "{v}");
}

#[test]
fn shim_and_daemon_killed_together_with_our_shim() {
    shim_and_daemon_killed(TETHER_RUNTIME);
}

#[test]
fn shim_and_daemon_killed_together_with_containerds_go_shim() {
    shim_and_daemon_killed(RUNC_RUNTIME);
}

/// A shim that is there but does not answer (SIGSTOPped) while the daemon restarts is declared
/// dead after the probe's deadline: the daemon kills it (found by its `-namespace`/`-id` and its
/// bundle as working directory), its delete action cleans up, and the exit is reported. Once
/// continued, no shim lives on to serve a container that no longer exists.
fn stopped_shim_at_restart(runtime: &str) {
    procs::become_subreaper();
    let mut d = Daemon::start();
    let ns = unique_id("ns");
    let id = unique_id("c");
    let pid = d.run_detached(&ns, runtime, &id, &["sleep", "300"]);
    let shim = shim_of(&d, &id).expect("the container's shim");
    let sockets = shim_sockets(&d, &ns);
    d.kill9();
    procs::signal(shim, libc::SIGSTOP);
    procs::reap_orphans();
    d.restart();
    assert_dead_shims_container_ends(&d, &ns, &id);
    // SIGCONT: a shim merely stopped would run on now; a killed one is gone.
    procs::signal(shim, libc::SIGCONT);
    let left = procs::wait_gone(&[shim, pid], T);
    procs::reap_orphans();
    assert!(
        left.is_empty(),
        "still alive after the restart declared them dead: {left:?}\n{}",
        d.log()
    );
    d.ok(&["--namespace", &ns, "delete", &id]);
    assert_no_leftovers(&d, &ns, sockets);
}

#[test]
fn stopped_shim_is_killed_at_restart_with_our_shim() {
    stopped_shim_at_restart(TETHER_RUNTIME);
}

#[test]
fn stopped_shim_is_killed_at_restart_with_containerds_go_shim() {
    stopped_shim_at_restart(RUNC_RUNTIME);
}

/// A killed shim is reported at once (its pidfd), cleaned up, and the daemon serves on; its
/// threads do not grow with the containers it watches.
#[test]
fn killed_shim_is_reported_and_daemon_threads_stay_constant() {
    procs::become_subreaper();
    let d = Daemon::start();
    let ns = unique_id("ns");
    let daemon = d.pid().expect("pid");
    let run = |id: &str| {
        d.ok(&[
            "--namespace",
            &ns,
            "run",
            "-d",
            "--rootfs",
            &rootfs(),
            id,
            "--",
            "sleep",
            "300",
        ])
    };
    run("c0");
    let one = procs::thread_count(daemon).expect("threads");
    for i in 1..50 {
        run(&format!("c{i}"));
    }
    // A CLI connection's server thread ends a moment after its client exits: count once those
    // are gone (a thread per container would never settle).
    let mut fifty = 0;
    let settled = wait_until(T, || {
        fifty = procs::thread_count(daemon).expect("threads");
        fifty <= one + 2
    });
    println!("daemon threads: {one} with 1 container, {fifty} with 50");
    assert!(settled, "threads grow with containers: {one} -> {fifty}");
    let shim = *d.shim_pids().first().expect("a shim");
    procs::signal(shim, libc::SIGKILL);
    let reported = wait_until(T, || {
        let out = d.ok(&["--namespace", &ns, "ps", "--json"]);
        let rows: Vec<Value> = serde_json::from_str(&out.stdout).unwrap_or_default();
        rows.iter().any(|r| r["reason"] == "shim died")
    });
    assert!(reported, "{}", d.log());
    for i in 0..50 {
        d.ok(&["--namespace", &ns, "delete", "-f", &format!("c{i}")]);
    }
    assert!(wait_until(T, || d.shim_pids().is_empty()));
    assert_no_leftovers(&d, &ns, Vec::new());
}

/// Corrupt and half-written records are reported and skipped; they never stop the daemon.
#[test]
fn corrupt_records_are_reported_and_skipped() {
    procs::become_subreaper();
    let mut d = Daemon::start();
    let ns = unique_id("ns");
    let id = unique_id("c");
    d.ok(&[
        "--namespace",
        &ns,
        "run",
        "-d",
        "--rootfs",
        &rootfs(),
        &id,
        "--",
        "sleep",
        "300",
    ]);
    d.kill9();
    let bad = d.state().join(&ns).join("bad");
    std::fs::create_dir_all(&bad).expect("mkdir");
    std::fs::write(bad.join("record.json"), b"{\"version\":\"v1\",\"id\":").expect("write");
    let future = d.state().join(&ns).join("future");
    std::fs::create_dir_all(&future).expect("mkdir");
    std::fs::write(future.join("record.json"), b"{\"version\":\"v9\"}").expect("write");
    // A journal record cut off mid-write.
    let mut j = std::fs::OpenOptions::new()
        .append(true)
        .open(d.journal())
        .expect("journal");
    std::io::Write::write_all(&mut j, b"{\"version\":\"v1\",\"seq\":99").expect("write");
    drop(j);
    d.restart();
    // The journal is read beside the restart's probes (the daemon may answer first): its
    // warning comes when it is read.
    wait_until(T, || d.log().contains("torn"));
    let log = d.log();
    assert!(
        log.contains(&bad.join("record.json").display().to_string()) && log.contains("corrupt"),
        "{log}"
    );
    assert!(log.contains("unknown record version \"v9\""), "{log}");
    assert!(log.contains("torn"), "{log}");
    let v = state_json(&d.socket(), &ns, &id).expect("state");
    assert_eq!(v["status"], "RUNNING", "{v}");
    d.ok(&["--namespace", &ns, "delete", "-f", &id]);
    std::fs::remove_dir_all(&bad).expect("rm");
    std::fs::remove_dir_all(&future).expect("rm");
}

/// A create the daemon never acknowledged (SIGKILLed before it recorded it) is undone after the
/// restart without a trace: its init's exit is not reported, its shim is gone before the daemon
/// serves (so a new create of the same id cannot land in it), and the new container's exit is
/// the only one journaled.
#[test]
fn interrupted_create_is_undone_silently_and_leaves_no_shim() {
    procs::become_subreaper();
    let mut d = Daemon::start();
    let ns = unique_id("ns");
    let id = unique_id("c");
    let rootfs = rootfs();
    let create = |d: &Daemon, verb: &str, script: &str| {
        let mut args = vec!["--namespace", &ns, verb];
        if verb == "run" {
            args.push("-d");
        }
        args.extend([
            "--runtime",
            TETHER_RUNTIME,
            "--rootfs",
            &rootfs,
            &id,
            "--",
            "sh",
            "-c",
            script,
        ]);
        d.ok(&args);
    };
    create(&d, "create", "exit 5");
    let sockets = shim_sockets(&d, &ns);
    d.kill9();
    // As if the daemon died before recording the create: the shim holds a created init.
    let record = d.state().join(&ns).join(&id).join("record.json");
    let mut v: Value =
        serde_json::from_slice(&std::fs::read(&record).expect("read record")).expect("JSON");
    v["created_at"] = Value::from(0);
    std::fs::write(&record, serde_json::to_vec(&v).expect("encode")).expect("write record");
    d.restart();
    assert!(
        d.log().contains("finishing an interrupted create"),
        "{}",
        d.log()
    );
    assert_eq!(d.shim_pids(), Vec::<i32>::new(), "{}", d.log());
    let out = d.run(&["--namespace", &ns, "state", &id]);
    assert!(out.stderr.contains("not found"), "{out}");
    create(&d, "run", "exit 7");
    let w = d.run(&["--namespace", &ns, "wait", &id]);
    assert_eq!(w.code, 7, "{w}\n{}", d.log());
    // Anything the old shim still had to say would have arrived by now.
    thread::sleep(Duration::from_secs(4));
    let exits: Vec<(String, u32, u32)> = journaled_exits(&d.journal(), &ns)
        .into_iter()
        .map(|e| (e.0, e.1, e.4))
        .collect();
    assert_eq!(exits.len(), 1, "{exits:?}\n{}", d.log());
    assert_eq!((exits[0].0.as_str(), exits[0].1), (id.as_str(), 7));
    d.ok(&["--namespace", &ns, "delete", &id]);
    assert_no_leftovers(&d, &ns, sockets);
}

/// The shim process of container `id` among the daemon's shims.
fn shim_of(d: &Daemon, id: &str) -> Option<i32> {
    d.shim_pids().into_iter().find(|&p| {
        procs::cmdline(p).is_some_and(|a| a.windows(2).any(|w| w[0] == "-id" && w[1] == id))
    })
}

/// Dead shims are cleaned up in parallel and each clean-up is bounded in time. Runtime
/// `io.containerd.hang.v2` is our shim behind a script whose `delete` action does its work and
/// then hangs (as a stuck runtime would): past the deadline the daemon kills it and reports the
/// container exited with that reason, and meanwhile another dead shim's clean-up goes through.
#[test]
fn a_hanging_delete_action_is_killed_and_holds_up_no_other_cleanup() {
    procs::become_subreaper();
    let bin = tempfile::Builder::new()
        .prefix("tether-hang-")
        .tempdir()
        .expect("tempdir");
    let script = bin.path().join("containerd-shim-hang-v2");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n\
             # The action is the last argument; -id ID comes before it.\n\
             id=; prev=; for a; do [ \"$prev\" = -id ] && id=$a; prev=$a; done\n\
             if [ \"$prev\" = delete ]; then\n\
             \x20 {shim} \"$@\" || exit\n\
             \x20 echo $$ > {dir}/$id.hang\n\
             \x20 exec sleep 1000\n\
             fi\n\
             exec {shim} \"$@\"\n",
            shim = tether_tests::shim_binary().display(),
            dir = bin.path().display(),
        ),
    )
    .expect("write the hanging shim");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // Far longer than a clean-up takes, so "meanwhile" is not a race.
    let d = Daemon::start_env(
        &[],
        &[("PATH", &path), ("TETHER_SHIM_DELETE_TIMEOUT_MS", "15000")],
    );
    let ns = unique_id("ns");
    let (hung, other) = (unique_id("hung"), unique_id("other"));
    for (id, runtime) in [(&hung, "io.containerd.hang.v2"), (&other, TETHER_RUNTIME)] {
        d.ok(&[
            "--namespace",
            &ns,
            "run",
            "-d",
            "--runtime",
            runtime,
            "--rootfs",
            &rootfs(),
            id,
            "--",
            "sleep",
            "300",
        ]);
    }
    let sockets = shim_sockets(&d, &ns);
    let status = |id: &str| state_json(&d.socket(), &ns, id).unwrap_or_default();

    // The first death: its clean-up starts and hangs.
    let shim = shim_of(&d, &hung).expect("the hanging runtime's shim");
    procs::signal(shim, libc::SIGKILL);
    let pidfile = bin.path().join(format!("{hung}.hang"));
    let hanging = wait_until(T, || {
        std::fs::read_to_string(&pidfile).is_ok_and(|s| s.trim().parse::<i32>().is_ok())
    });
    assert!(hanging, "the delete action never ran:\n{}", d.log());
    let hang_pid: i32 = std::fs::read_to_string(&pidfile)
        .expect("pidfile")
        .trim()
        .parse()
        .expect("pid");

    // The second death is cleaned up while the first still hangs.
    let shim = shim_of(&d, &other).expect("the other shim");
    procs::signal(shim, libc::SIGKILL);
    let cleaned = wait_until(T, || status(&other)["status"] == "EXITED");
    assert!(cleaned, "{}\n{}", status(&other), d.log());
    assert_eq!(status(&other)["reason"], "shim died");
    assert!(
        procs::is_alive(hang_pid),
        "the other clean-up waited behind the hanging one:\n{}",
        d.log()
    );

    // The hanging one is killed at its deadline and reported.
    let reported = wait_until(T, || status(&hung)["status"] == "EXITED");
    assert!(reported, "{}\n{}", status(&hung), d.log());
    let v = status(&hung);
    assert_eq!(v["exit_status"], 137, "{v}");
    let reason = v["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("shim died; its cleanup failed:")
            && reason.contains("did not finish in 15000 ms: killed"),
        "{v}"
    );
    assert!(
        procs::wait_gone(&[hang_pid], T).is_empty(),
        "the hung action lives on"
    );
    for id in [&hung, &other] {
        d.ok(&["--namespace", &ns, "delete", id]);
    }
    assert_no_leftovers(&d, &ns, sockets);
}
