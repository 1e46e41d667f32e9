//! The daemon SIGKILLed again and again while containers come and go.

use super::*;

#[test]
pub fn manager_sigkills_lose_no_exit_and_report_none_twice() {
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
    d.finish();
}
