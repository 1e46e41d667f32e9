//! The upgrade stress: 50 counting containers, ten `tether upgrade` rounds, State and Wait
//! clients all along, and the daemon SIGKILLed in the middle of a round.

use super::*;

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

/// 50 running containers writing numbered lines, upgraded 10 times in a row
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
