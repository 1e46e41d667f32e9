//! `tether upgrade` (issue 14): the daemon moves its running shims to the binary newly installed
//! at their path, in place, through each shim's admin `Upgrade`. Containers run on; shims keep
//! their pids; a binary that cannot take over is refused and the old code serves on; exits,
//! `Wait`s, events and output come through once, with the right codes, across upgrades and a
//! SIGKILL of the daemon.
//!
//! Each test's shim is a private copy, first on the daemon's PATH under its own runtime name
//! (`io.containerd.upgradable.v2`), so installing another binary there touches no other test.

use protobuf::Message;
use serde_json::Value;
use std::collections::HashMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tether_protocol::api::events::TaskExit;
use tether_protocol::api::task::{StateRequest, StateResponse, WaitRequest, WaitResponse};
use tether_protocol::api::ttrpc;
use tether_protocol::task_service::{TaskCaller, TASK_SERVICE_V2};
use tether_tests::manager::{Daemon, RUNC_RUNTIME};
use tether_tests::{procs, rawttrpc, shim_binary, unique_id, wait_until};

const T: Duration = Duration::from_secs(60);
const RUNTIME: &str = "io.containerd.upgradable.v2";
const SHIM_NAME: &str = "containerd-shim-upgradable-v2";
/// Prints a line, then on SIGTERM another and exits 7.
const SCRIPT: &str = "trap 'echo after-upgrade; exit 7' TERM; echo before-upgrade; \
                      while true; do sleep 0.1; done";

/// A daemon whose shims run from a private copy of the shim binary in `bin`.
struct Setup {
    d: Daemon,
    bin: tempfile::TempDir,
    ns: String,
}

impl Setup {
    fn start() -> Setup {
        let bin = tempfile::Builder::new()
            .prefix("tether-upgrade-")
            .tempdir()
            .expect("tempdir for the shim binary");
        std::fs::copy(shim_binary(), bin.path().join(SHIM_NAME)).expect("copy the shim binary");
        let path = format!(
            "{}:{}",
            bin.path().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let d = Daemon::start_env(&[], &[("PATH", &path)]);
        Setup {
            d,
            bin,
            ns: unique_id("ns"),
        }
    }

    fn binary(&self) -> PathBuf {
        self.bin.path().join(SHIM_NAME)
    }

    /// Installs `contents` at the shim's path as a new file (a new inode, as a package
    /// manager's rename does); returns its inode.
    fn install(&self, contents: &[u8]) -> u64 {
        let tmp = self.bin.path().join("incoming");
        std::fs::write(&tmp, contents).expect("write the new binary");
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::fs::rename(&tmp, self.binary()).expect("install the new binary");
        inode(&self.binary())
    }

    /// A fresh copy of the real shim at the shim's path; its inode.
    fn install_shim(&self) -> u64 {
        self.install(&std::fs::read(shim_binary()).expect("read the shim binary"))
    }

    fn run(&self, id: &str, script: &str) -> i32 {
        self.d
            .run_detached(&self.ns, RUNTIME, id, &["/bin/sh", "-c", script])
    }

    fn tether(&self, args: &[&str]) -> tether_tests::CmdOutput {
        let mut all = vec!["--namespace", &self.ns];
        all.extend_from_slice(args);
        self.d.run(&all)
    }

    fn logs(&self, id: &str) -> String {
        let out = self.tether(&["logs", id]);
        assert!(out.success(), "tether logs {id}: {out}");
        out.stdout
    }

    fn wait_for_output(&self, id: &str, what: &str) {
        assert!(
            wait_until(T, || self.logs(id).contains(what)),
            "{id}: {what:?} never came: {:?}\n{}",
            self.logs(id),
            self.d.log()
        );
    }

    /// The shim process serving container `id`.
    fn shim_of(&self, id: &str) -> i32 {
        self.d
            .shim_pids()
            .into_iter()
            .find(|&p| {
                procs::cmdline(p).is_some_and(|a| a.windows(2).any(|w| w[0] == "-id" && w[1] == id))
            })
            .unwrap_or_else(|| panic!("no shim for {id}\n{}", self.d.log()))
    }

    /// The shim's socket, from the address it left in the container's directory.
    fn socket(&self, id: &str) -> PathBuf {
        let dir = self.d.state().join(&self.ns).join(id);
        let text = ["shim-address", "address"]
            .iter()
            .find_map(|f| std::fs::read_to_string(dir.join(f)).ok())
            .unwrap_or_else(|| panic!("no address file in {}", dir.display()));
        tether_protocol::socket::from_address(text.trim())
            .unwrap_or_else(|| panic!("not a unix address: {text:?}"))
    }

    fn state(&self, id: &str) -> Value {
        let out = self.tether(&["state", "--json", id]);
        assert!(out.success(), "tether state {id}: {out}");
        serde_json::from_str(&out.stdout).expect("state JSON")
    }

    /// The `/tasks/exit` events of this namespace in the journal: (container, status).
    fn journaled_exits(&self) -> Vec<(String, u32)> {
        let text = std::fs::read_to_string(self.d.journal()).expect("read the journal");
        let mut out = Vec::new();
        for line in text.lines() {
            let v: Value = serde_json::from_str(line).expect("a journal line is JSON");
            if v["namespace"] != self.ns.as_str() || v["topic"] != "/tasks/exit" {
                continue;
            }
            let hex = v["value"].as_str().expect("value");
            let bytes: Vec<u8> = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
                .collect();
            let e = TaskExit::parse_from_bytes(&bytes).expect("a TaskExit");
            out.push((e.container_id, e.exit_status));
        }
        out
    }
}

fn inode(path: &Path) -> u64 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .ino()
}

/// The inode of the binary process `pid` runs (the file may have been replaced since).
fn exe_inode(pid: i32) -> u64 {
    inode(Path::new(&format!("/proc/{pid}/exe")))
}

/// `ID: upgraded (OLD -> NEW, N ms)`: the id and whether the line says so.
fn upgraded_ids(out: &str) -> Vec<String> {
    out.lines()
        .filter(|l| l.contains(": upgraded (") && l.contains(" -> ") && l.ends_with(" ms)"))
        .filter_map(|l| l.split(": ").next().map(str::to_string))
        .collect()
}

/// A `Wait` for the init, sent now on its own connection and answered when it exits.
fn park_wait(socket: &Path, id: &str) -> UnixStream {
    let mut conn = UnixStream::connect(socket).expect("connect to the shim");
    conn.set_read_timeout(Some(Duration::from_secs(180)))
        .expect("read timeout");
    let req = WaitRequest {
        id: id.to_string(),
        ..Default::default()
    };
    let payload = req.write_to_bytes().expect("encode Wait");
    let frame = rawttrpc::request_frame(1, TASK_SERVICE_V2, "Wait", payload, Duration::ZERO);
    std::io::Write::write_all(&mut conn, &frame).expect("send Wait");
    conn
}

/// The exit status a parked `Wait` answers.
fn parked_status(conn: &mut UnixStream) -> u32 {
    let (_, res) = rawttrpc::read_response(conn);
    assert!(
        res.status
            .as_ref()
            .is_none_or(|s| s.code() == ttrpc::Code::OK),
        "Wait: {:?}",
        res.status
    );
    WaitResponse::parse_from_bytes(&res.payload)
        .expect("a WaitResponse")
        .exit_status
}

/// One container and then all of them move to newly installed binaries: same pids, new
/// inodes, output and exit codes intact, each exit journaled once.
#[test]
fn tether_upgrade_moves_one_shim_then_all_in_place() {
    let s = Setup::start();
    let (a, b) = (unique_id("a"), unique_id("b"));
    for id in [&a, &b] {
        s.run(id, SCRIPT);
        s.wait_for_output(id, "before-upgrade");
    }
    let (pa, pb) = (s.shim_of(&a), s.shim_of(&b));
    let old = exe_inode(pa);
    let mut wait_a = park_wait(&s.socket(&a), &a);

    // One: only its shim moves.
    let new = s.install_shim();
    assert_ne!(new, old);
    let out = s.tether(&["upgrade", &a]);
    assert!(out.success(), "{out}\n{}", s.d.log());
    assert_eq!(upgraded_ids(&out.stdout), vec![a.clone()], "{out}");
    assert_eq!(exe_inode(pa), new, "the upgraded shim runs the new binary");
    assert_eq!(exe_inode(pb), old, "the other shim was not asked");

    // All (every namespace: the lines name it).
    let newer = s.install_shim();
    let out = s.d.run(&["upgrade"]);
    assert!(out.success(), "{out}\n{}", s.d.log());
    let mut ids = upgraded_ids(&out.stdout);
    ids.sort();
    let mut want = vec![format!("{}/{a}", s.ns), format!("{}/{b}", s.ns)];
    want.sort();
    assert_eq!(ids, want, "{out}");
    assert_eq!((s.shim_of(&a), s.shim_of(&b)), (pa, pb), "same shim pids");
    assert_eq!((exe_inode(pa), exe_inode(pb)), (newer, newer));

    // The containers exit after the upgrades: the codes, the output, each exit once.
    for id in [&a, &b] {
        assert_eq!(s.state(id)["status"], "RUNNING");
        assert!(s.tether(&["kill", id]).success());
        let w = s.tether(&["wait", id]);
        assert_eq!(w.code, 7, "tether wait {id}: {w}");
        assert_eq!(w.stdout.trim(), "7");
        assert_eq!(
            s.logs(id),
            "before-upgrade\nafter-upgrade\n",
            "each line once"
        );
    }
    assert_eq!(
        parked_status(&mut wait_a),
        7,
        "a Wait parked before both upgrades"
    );
    let mut exits = s.journaled_exits();
    exits.sort();
    let mut want = vec![(a.clone(), 7), (b.clone(), 7)];
    want.sort();
    assert_eq!(exits, want, "each exit journaled once, with its code");
    for id in [&a, &b] {
        assert!(s.tether(&["delete", id]).success());
    }
}

/// A binary that exits 1 is refused (exit 1, the reason named); the old code serves on and
/// the container's exit still reaches `tether wait` and the journal, once.
#[test]
fn a_broken_binary_is_refused_and_the_old_shim_serves_on() {
    let s = Setup::start();
    let id = unique_id("c");
    s.run(&id, SCRIPT);
    s.wait_for_output(&id, "before-upgrade");
    let pid = s.shim_of(&id);
    let old = exe_inode(pid);
    s.install(b"#!/bin/sh\necho 'not a shim'\nexit 1\n");

    let out = s.tether(&["upgrade", &id]);
    assert_eq!(out.code, 1, "{out}");
    let line = out.stdout.trim();
    assert!(
        line.starts_with(&format!("{id}: refused (")) && line.contains("not a shim"),
        "{out}"
    );
    // Also when every shim is asked.
    let out = s.tether(&["upgrade"]);
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stdout.contains(&format!("{id}: refused (")), "{out}");

    assert_eq!(s.shim_of(&id), pid);
    assert_eq!(exe_inode(pid), old, "still the old binary");
    assert_eq!(s.state(&id)["status"], "RUNNING");
    assert!(s.tether(&["kill", &id]).success());
    let w = s.tether(&["wait", &id]);
    assert_eq!(w.code, 7, "{w}");
    assert_eq!(s.logs(&id), "before-upgrade\nafter-upgrade\n");
    assert_eq!(
        s.journaled_exits(),
        [(id.clone(), 7)],
        "the exit journaled once"
    );
    assert!(s.tether(&["delete", &id]).success());
}

/// An id the daemon does not know is refused by name; the shim of a container that has
/// exited (it serves until the container is deleted) is upgraded, and still answers after.
#[test]
fn unknown_ids_are_refused_and_an_exited_containers_shim_moves_too() {
    let s = Setup::start();
    let done = unique_id("done");
    s.run(&done, "exit 3");
    assert_eq!(s.tether(&["wait", &done]).code, 3);
    let pid = s.shim_of(&done);
    let new = s.install_shim();
    let ghost = unique_id("ghost");
    let out = s.tether(&["upgrade", &ghost, &done]);
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stdout.contains(&format!("{ghost}: refused (")) && out.stdout.contains("not found"),
        "{out}"
    );
    assert_eq!(upgraded_ids(&out.stdout), vec![done.clone()], "{out}");
    assert_eq!(exe_inode(pid), new);
    let st = s.state(&done);
    assert_eq!(
        (&st["status"], &st["exit_status"]),
        (&"EXITED".into(), &3.into())
    );
    assert_eq!(
        s.tether(&["wait", &done]).code,
        3,
        "the exit, after the upgrade"
    );
    assert!(s.tether(&["delete", &done]).success());
    assert_eq!(s.journaled_exits(), [(done.clone(), 3)]);
}

/// containerd's own shim has no live upgrade: asked for every shim, `tether upgrade` skips it
/// (and succeeds, ours upgraded); named, it is refused.
#[test]
fn another_runtimes_shim_is_skipped_unless_named() {
    let s = Setup::start();
    let (ours, go) = (unique_id("ours"), unique_id("go"));
    s.run(&ours, SCRIPT);
    s.d.run_detached(&s.ns, RUNC_RUNTIME, &go, &["/bin/sh", "-c", SCRIPT]);
    let new = s.install_shim();

    let out = s.tether(&["upgrade"]);
    assert!(out.success(), "{out}\n{}", s.d.log());
    assert_eq!(upgraded_ids(&out.stdout), vec![ours.clone()], "{out}");
    assert!(
        out.stdout
            .contains(&format!("{go}: skipped (its shim has no live upgrade")),
        "{out}"
    );
    assert_eq!(exe_inode(s.shim_of(&ours)), new);

    let out = s.tether(&["upgrade", &go]);
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stdout.contains(&format!("{go}: refused (")), "{out}");
    for id in [&ours, &go] {
        assert!(s.tether(&["kill", id]).success());
        assert_eq!(s.tether(&["wait", id]).code, 7, "{id}");
        assert!(s.tether(&["delete", id]).success());
    }
}

/// Containers in the stress test, upgrades in a row, and the round after which the daemon
/// is SIGKILLed (in the middle of that round's upgrade) and restarted.
const STRESS_CONTAINERS: usize = 50;
const STRESS_ROUNDS: usize = 10;
const STRESS_KILL_AT: usize = 5;

/// A container of the stress test: numbered lines until SIGTERM, then `end` and exit `code`.
fn counting_script(code: u32) -> String {
    format!(
        "trap 'echo end; exit {code}' TERM; i=0; \
         while true; do i=$((i+1)); echo line-$i; sleep 0.2; done"
    )
}

/// The lines are `line-1 .. line-N` then `end`: every line once and in order.
fn check_numbered(id: &str, out: &str) {
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.last(), Some(&"end"), "{id}: {out:?}");
    for (i, l) in lines[..lines.len() - 1].iter().enumerate() {
        assert_eq!(*l, format!("line-{}", i + 1), "{id}: line {i} of {out:?}");
    }
    assert!(lines.len() > 2, "{id}: too few lines: {out:?}");
}

/// Issue 14 §4: 50 running containers writing numbered lines, upgraded 10 times in a row
/// while clients call `State` (on the shims directly, and `tether ps`) and `Wait` (parked on
/// the shims, and `tether wait`), the daemon SIGKILLed once in the middle of an upgrade and
/// restarted: the same shim pids, every shim on the last binary, every line once and in order,
/// every exit code right (parked `Wait`s, `tether wait`, the journal, once each).
#[test]
fn fifty_containers_survive_ten_upgrades_and_a_daemon_sigkill() {
    procs::become_subreaper();
    let mut s = Setup::start();
    let ids: Vec<String> = (0..STRESS_CONTAINERS)
        .map(|i| unique_id(&format!("s{i}")))
        .collect();
    let code = |i: usize| 100 + i as u32;
    // Started a few at a time: each start runs runc.
    std::thread::scope(|sc| {
        for chunk in ids.chunks(STRESS_CONTAINERS.div_ceil(4)) {
            let s = &s;
            sc.spawn(move || {
                for id in chunk {
                    let i = ids_index(id);
                    s.run(id, &counting_script(code(i)));
                }
            });
        }
    });
    for id in &ids {
        s.wait_for_output(id, "line-1");
    }
    let shims: HashMap<String, i32> = ids.iter().map(|id| (id.clone(), s.shim_of(id))).collect();
    let inits: HashMap<String, u32> = ids
        .iter()
        .map(|id| (id.clone(), s.state(id)["pid"].as_u64().expect("pid") as u32))
        .collect();
    let sockets: HashMap<String, PathBuf> =
        ids.iter().map(|id| (id.clone(), s.socket(id))).collect();
    let mut parked: Vec<(String, UnixStream)> = ids
        .iter()
        .map(|id| (id.clone(), park_wait(&sockets[id], id)))
        .collect();

    // Clients: State on every shim directly (each call must succeed), `tether ps` through the
    // daemon (which is down for a while: failures then are expected, answers must be right).
    let stop = Arc::new(AtomicBool::new(false));
    let _stop_on_panic = StopOnDrop(stop.clone());
    let states = Arc::new(AtomicUsize::new(0));
    let lists = Arc::new(AtomicUsize::new(0));
    let state_client = {
        let (stop, states) = (stop.clone(), states.clone());
        let targets: Vec<(String, PathBuf, u32)> = ids
            .iter()
            .map(|id| (id.clone(), sockets[id].clone(), inits[id]))
            .collect();
        std::thread::spawn(move || -> Result<(), String> {
            while !stop.load(Ordering::Relaxed) {
                for (id, socket, pid) in &targets {
                    let caller = TaskCaller::per_call(socket, TASK_SERVICE_V2);
                    let req = StateRequest {
                        id: id.clone(),
                        ..Default::default()
                    };
                    let r: StateResponse = caller
                        .call("State", &req, Duration::from_secs(30))
                        .map_err(|e| format!("State of {id}: {e:?}"))?;
                    if r.pid != *pid {
                        return Err(format!("State of {id}: pid {} not {pid}", r.pid));
                    }
                    states.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(())
        })
    };
    let ps_client = {
        let (stop, lists) = (stop.clone(), lists.clone());
        let (socket, ns) = (s.d.socket(), s.ns.clone());
        let tether = tether_tests::tether_binary();
        std::thread::spawn(move || -> Result<(), String> {
            while !stop.load(Ordering::Relaxed) {
                let out = Command::new(&tether)
                    .env("TETHER_SOCKET", &socket)
                    .args(["--namespace", &ns, "ps", "--json"])
                    .stdin(Stdio::null())
                    .output()
                    .map_err(|e| format!("run tether ps: {e}"))?;
                if out.status.success() {
                    let v: Value = serde_json::from_slice(&out.stdout)
                        .map_err(|e| format!("tether ps --json: {e}"))?;
                    let running = v
                        .as_array()
                        .map(|a| a.iter().filter(|c| c["status"] == "RUNNING").count());
                    if running != Some(STRESS_CONTAINERS) {
                        return Err(format!("tether ps: {v}"));
                    }
                    lists.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            Ok(())
        })
    };

    let mut waiters: Vec<(String, Child)> = Vec::new();
    for round in 1..=STRESS_ROUNDS {
        // Output between the rounds, not only across them.
        std::thread::sleep(Duration::from_millis(300));
        let last = s.install_shim();
        if round == STRESS_KILL_AT {
            // The daemon dies while it upgrades: once some shim has moved, before all have.
            let mut cli =
                s.d.tether()
                    .args(["--namespace", &s.ns, "upgrade"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("start tether upgrade");
            wait_until(T, || shims.values().any(|&p| exe_inode(p) == last));
            s.d.kill9();
            let moved = shims.values().filter(|&&p| exe_inode(p) == last).count();
            eprintln!("daemon SIGKILLed with {moved} of {STRESS_CONTAINERS} shims upgraded");
            let _ = cli.wait();
            s.d.restart();
            // `tether wait` from now on, through the upgrades left.
            for (i, id) in ids.iter().enumerate() {
                let child =
                    s.d.tether()
                        .args(["--namespace", &s.ns, "wait", id])
                        .stdin(Stdio::null())
                        .stdout(Stdio::piped())
                        .stderr(Stdio::piped())
                        .spawn()
                        .unwrap_or_else(|e| panic!("start tether wait {i}: {e}"));
                waiters.push((id.clone(), child));
            }
        }
        let started = std::time::Instant::now();
        let out = s.tether(&["upgrade"]);
        eprintln!("round {round}: {:?}", started.elapsed());
        assert!(out.success(), "round {round}: {out}\n{}", s.d.log());
        assert_eq!(
            upgraded_ids(&out.stdout).len(),
            STRESS_CONTAINERS,
            "round {round}: {out}"
        );
        for id in &ids {
            assert_eq!(exe_inode(shims[id]), last, "round {round}: {id}'s binary");
        }
    }

    stop.store(true, Ordering::Relaxed);
    let state_result = state_client.join().expect("the State client");
    let ps_result = ps_client.join().expect("the ps client");
    assert_eq!(state_result, Ok(()), "{}", s.d.log());
    assert_eq!(ps_result, Ok(()));
    eprintln!(
        "{} State calls on the shims, {} tether ps answers",
        states.load(Ordering::Relaxed),
        lists.load(Ordering::Relaxed)
    );
    assert!(states.load(Ordering::Relaxed) > STRESS_CONTAINERS);
    assert!(lists.load(Ordering::Relaxed) > 0);
    for id in &ids {
        assert_eq!(s.shim_of(id), shims[id], "{id}: the same shim process");
    }

    for id in &ids {
        assert!(s.tether(&["kill", id]).success());
    }
    for (id, conn) in parked.iter_mut() {
        assert_eq!(
            parked_status(conn),
            code(ids_index(id)),
            "{id}: the Wait parked before ten upgrades"
        );
    }
    for (id, child) in waiters {
        let out = child.wait_with_output().expect("tether wait");
        let want = code(ids_index(&id));
        assert_eq!(
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).trim()
            ),
            (Some(want as i32), want.to_string().as_str()),
            "tether wait {id}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut exits = s.journaled_exits();
    exits.sort();
    let mut want: Vec<(String, u32)> = ids
        .iter()
        .map(|id| (id.clone(), code(ids_index(id))))
        .collect();
    want.sort();
    assert_eq!(exits, want, "every exit journaled once, with its code");
    for id in &ids {
        let out = s.logs(id);
        eprintln!("{id}: {} lines", out.lines().count());
        check_numbered(id, &out);
        assert!(s.tether(&["delete", id]).success());
    }
    s.d.stop();
}

/// Tells the client threads to stop, also when the test fails before it does.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The index in the id `s{i}-...`.
fn ids_index(id: &str) -> usize {
    id.trim_start_matches('s')
        .split('-')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a stress id: {id}"))
}
