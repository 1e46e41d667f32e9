//! The manager end to end: a real `tether daemon`, real shims (ours and containerd's Go shim,
//! unchanged), real runc, the `tether` CLI as a person or script runs it.

use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;
use tether_tests::manager::{Daemon, RUNC_RUNTIME, TETHER_RUNTIME};
use tether_tests::{busybox_rootfs, cmd, unique_id, wait_until};

const T: Duration = Duration::from_secs(30);

fn rootfs() -> String {
    busybox_rootfs().display().to_string()
}

/// The container's row of `tether ps --json`.
fn ps_row(d: &Daemon, ns: &str, id: &str) -> Option<Value> {
    let out = d.ok(&["--namespace", ns, "ps", "--json"]);
    let rows: Vec<Value> = serde_json::from_str(&out.stdout).expect("ps --json is a JSON array");
    rows.into_iter().find(|r| r["id"] == id)
}

fn status(d: &Daemon, ns: &str, id: &str) -> String {
    let out = d.ok(&["--namespace", ns, "state", id, "--json"]);
    let v: Value = serde_json::from_str(&out.stdout).expect("state --json");
    v["status"].as_str().unwrap_or_default().to_string()
}

/// A one-line error on stderr and a non-zero exit.
fn assert_clear_error(out: &cmd::CmdOutput, want: &str) {
    assert!(!out.success(), "expected failure:\n{out}");
    let err = out.stderr.trim();
    assert_eq!(err.lines().count(), 1, "one line:\n{out}");
    assert!(err.starts_with("tether: "), "{out}");
    assert!(err.contains(want), "wanted {want:?}:\n{out}");
}

/// Every scenario of the issue, against one runtime.
fn container_life_cycle(runtime: &str) {
    container_life_cycle_on(Daemon::start(), runtime);
}

fn container_life_cycle_on(d: Daemon, runtime: &str) {
    let ns = unique_id("ns");
    let rm = d.run_cmd().ns(&ns).runtime(runtime).flag("--rm");
    let run = |id: &str, args: &[&str]| rm.run(id, args);

    // Output and exit codes propagate.
    let out = run(&unique_id("c"), &["echo", "hello"]);
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "hello\n"),
        "{out}\n{}",
        d.log()
    );
    let out = run(&unique_id("c"), &["sh", "-c", "echo to-stderr >&2; exit 7"]);
    assert_eq!((out.code, out.stderr.as_str()), (7, "to-stderr\n"), "{out}");
    // Stdin reaches the container and its EOF closes the container's stdin.
    let id = unique_id("c");
    let out = cmd::run(
        d.tether().args(rm.args(&id, &["cat"])),
        Some(b"line one\nline two\n"),
        T,
    );
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "line one\nline two\n"),
        "{out}"
    );

    // A detached container: ps, state, exec, pause/resume, stats, kill, wait, delete.
    let id = unique_id("c");
    let pid = d.run_detached(&ns, runtime, &id, &["sleep", "300"]) as u32;
    assert!(pid > 0);
    let row = ps_row(&d, &ns, &id).expect("listed");
    assert_eq!(row["status"], "RUNNING");
    assert_eq!(row["runtime"], runtime);
    assert_eq!(row["pid"], pid);
    let table = d.ok(&["--namespace", &ns, "ps"]).stdout;
    assert!(table.starts_with("ID"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(&id) && l.contains("RUNNING")),
        "{table}"
    );

    let out = d.ok(&[
        "--namespace",
        &ns,
        "exec",
        "--exec-id",
        "e1",
        &id,
        "--",
        "echo",
        "from exec",
    ]);
    assert_eq!(out.stdout, "from exec\n");
    let out = d.run(&[
        "--namespace",
        &ns,
        "exec",
        "--exec-id",
        "e2",
        &id,
        "--",
        "sh",
        "-c",
        "exit 5",
    ]);
    assert_eq!(out.code, 5, "{out}");

    d.ok(&["--namespace", &ns, "pause", &id]);
    assert_eq!(status(&d, &ns, &id), "PAUSED");
    d.ok(&["--namespace", &ns, "resume", &id]);
    assert_eq!(status(&d, &ns, &id), "RUNNING");

    let out = d.ok(&["--namespace", &ns, "stats", &id, "--json"]);
    let stats: Value = serde_json::from_str(&out.stdout).expect("stats --json");
    assert!(
        stats["memory_usage_bytes"].as_u64().unwrap_or(0) > 0,
        "{stats}"
    );
    assert!(stats["pids_current"].as_u64().unwrap_or(0) >= 1, "{stats}");
    d.ok(&["--namespace", &ns, "update", "--memory", "64m", &id]);

    let out = d.run(&["--namespace", &ns, "delete", &id]);
    assert_clear_error(&out, "is RUNNING");

    d.ok(&["--namespace", &ns, "kill", "-s", "KILL", &id]);
    let out = d.run(&["--namespace", &ns, "wait", &id]);
    assert_eq!((out.code, out.stdout.trim()), (137, "137"), "{out}");
    // An exited container answers at once, as often as asked.
    let out = d.run(&["--namespace", &ns, "wait", &id]);
    assert_eq!(out.code, 137, "{out}");
    let row = ps_row(&d, &ns, &id).expect("still listed");
    assert_eq!(
        (row["status"].as_str(), row["exit_status"].as_u64()),
        (Some("EXITED"), Some(137))
    );
    d.ok(&["--namespace", &ns, "delete", &id]);
    assert!(ps_row(&d, &ns, &id).is_none());

    // delete -f kills a running container.
    let id = unique_id("c");
    d.run_cmd()
        .ns(&ns)
        .flag("-d")
        .runtime(runtime)
        .ok(&id, &["sleep", "300"]);
    d.ok(&["--namespace", &ns, "delete", "-f", &id]);
    assert!(ps_row(&d, &ns, &id).is_none());

    // create + start + wait.
    let id = unique_id("c");
    d.create_cmd()
        .ns(&ns)
        .runtime(runtime)
        .ok(&id, &["sh", "-c", "exit 3"]);
    assert_eq!(status(&d, &ns, &id), "CREATED");
    d.ok(&["--namespace", &ns, "start", &id]);
    let out = d.run(&["--namespace", &ns, "wait", &id]);
    assert_eq!(out.code, 3, "{out}");
    d.ok(&["--namespace", &ns, "delete", &id]);

    assert!(
        wait_until(T, || d.shim_pids().is_empty()),
        "shims left after every container was deleted: {:?}",
        d.shim_pids()
    );
    assert!(d.ok(&["--namespace", &ns, "ps", "--json"]).stdout.trim() == "[]");
    d.finish();
}

#[test]
fn life_cycle_with_our_shim() {
    container_life_cycle(TETHER_RUNTIME);
}

#[test]
fn life_cycle_with_containerds_go_shim() {
    container_life_cycle(RUNC_RUNTIME);
}

/// containerd 2.x's runc shim answers `start` with its bootstrap JSON (`{"version":3,
/// "address":...,"protocol":"ttrpc"}`), not a bare address, and serves task API v3: the
/// daemon runs it as it runs 1.x's (sid's package, unpacked by `make containerd-versions`).
#[test]
fn life_cycle_with_containerd_2s_go_shim() {
    let cache = std::env::var("TETHER_CONTAINERD_CACHE")
        .unwrap_or_else(|_| tether_tests::flavor::DEFAULT_CACHE.to_string());
    let dir = std::path::Path::new(&cache).join("sid/root/usr/bin");
    assert!(
        dir.join("containerd-shim-runc-v2").is_file(),
        "containerd 2.x's runc shim is not in {}: run `make containerd-versions`",
        dir.display()
    );
    let path = format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    container_life_cycle_on(Daemon::start_env(&[], &[("PATH", &path)]), RUNC_RUNTIME);
}

fn terminal(runtime: &str) {
    let d = Daemon::start();
    let id = unique_id("t");
    let out = d.run_cmd().flag("--rm").flag("-t").runtime(runtime).run(
        &id,
        &[
            "sh",
            "-c", // The sleep lets our stdin (/dev/null) reach its end first: that must not take the
            // container's terminal away (it did, with containerd's Go shim, before the CLI kept
            // a terminal's stdin open).
            "sleep 1; test -t 0 && test -t 1 && echo on-a-tty; exit 4",
        ],
    );
    assert_eq!(out.code, 4, "{out}\n{}", d.log());
    // A terminal turns \n into \r\n.
    assert_eq!(out.stdout, "on-a-tty\r\n", "{out}");
    d.finish();
}

#[test]
fn terminal_with_containerds_go_shim() {
    terminal(RUNC_RUNTIME);
}

#[test]
fn terminal_with_our_shim() {
    terminal(TETHER_RUNTIME);
}

/// `tether exec` without `--exec-id` makes one up, as docker, nerdctl and podman do: two such
/// execs into one container both run; with `-d` the id made up is printed after the pid.
#[test]
fn exec_without_an_exec_id_makes_one_up() {
    let d = Daemon::start();
    let ns = unique_id("ns");
    let id = unique_id("c");
    d.run_detached(&ns, TETHER_RUNTIME, &id, &["sleep", "300"]);
    for word in ["one", "two"] {
        let out = d.run(&["--namespace", &ns, "exec", &id, "--", "echo", word]);
        assert_eq!(
            (out.code, out.stdout.as_str()),
            (0, format!("{word}\n").as_str()),
            "{out}"
        );
    }
    let out = d.run(&["--namespace", &ns, "exec", "-d", &id, "--", "sleep", "300"]);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(out.code == 0 && lines.len() == 2, "{out}");
    assert!(lines[0].parse::<u32>().is_ok_and(|p| p > 0), "{out}");
    let exec_id = lines[1];
    d.ok(&[
        "--namespace",
        &ns,
        "kill",
        "-s",
        "KILL",
        "--exec-id",
        exec_id,
        &id,
    ]);
    let out = d.run(&["--namespace", &ns, "wait", "--exec-id", exec_id, &id]);
    assert_eq!(out.code, 137, "{out}");
    d.ok(&["--namespace", &ns, "delete", "-f", &id]);
    d.finish();
}

#[test]
fn bundle_with_config_json_runs() {
    let d = Daemon::start();
    let bundle = tempfile::tempdir().expect("tempdir");
    let out = cmd::run(
        std::process::Command::new("runc")
            .args(["spec", "--bundle"])
            .arg(bundle.path()),
        None,
        T,
    );
    assert!(out.success(), "runc spec: {out}");
    std::os::unix::fs::symlink(busybox_rootfs(), bundle.path().join("rootfs"))
        .expect("link rootfs");
    let id = unique_id("b");
    let b = bundle.path().display().to_string();
    let out = d.ok(&[
        "run",
        "--rm",
        "--bundle",
        &b,
        &id,
        "--",
        "/bin/echo",
        "from a bundle",
    ]);
    assert_eq!(out.stdout, "from a bundle\n");
    d.finish();
}

fn topics_of(events: &[Value], id: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["event"]["container_id"] == id)
        .map(|e| e["topic"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn events_filters_let_only_matching_events_through() {
    let d = Daemon::start();
    let (ns_a, ns_b) = (unique_id("nsa"), unique_id("nsb"));
    let (a1, b1) = (unique_id("a"), unique_id("b"));
    let only_a = d.events(&[
        "--json",
        "--since",
        "0",
        &format!("namespace=={ns_a},topic~=/tasks/.+"),
    ]);
    let exits_or_b1 = d.events(&[
        "--json",
        "--since",
        "0",
        "topic==/tasks/exit",
        &format!("container_id=={b1}"),
    ]);
    let human = d.events(&[&format!("namespace=={ns_b}")]);
    // b1 first: when a1's last event is seen, every b1 event has a smaller sequence number.
    for (ns, id) in [(&ns_b, &b1), (&ns_a, &a1)] {
        d.run_cmd().ns(ns).flag("--rm").ok(id, &["true"]);
    }
    let lifecycle = [
        "/tasks/create",
        "/tasks/start",
        "/tasks/exit",
        "/tasks/delete",
    ];
    assert!(
        only_a.wait_for(T, |evs| topics_of(evs, &a1) == lifecycle),
        "a1's events: {:?}",
        only_a.lines()
    );
    assert!(
        only_a
            .json()
            .iter()
            .all(|e| e["namespace"] == ns_a.as_str()),
        "{:?}",
        only_a.lines()
    );

    assert!(
        exits_or_b1.wait_for(T, |evs| topics_of(evs, &a1) == ["/tasks/exit"]),
        "{:?}",
        exits_or_b1.lines()
    );
    let evs = exits_or_b1.json();
    assert_eq!(topics_of(&evs, &b1), lifecycle, "{:?}", exits_or_b1.lines());
    assert!(evs
        .iter()
        .all(|e| e["topic"] == "/tasks/exit" || e["event"]["container_id"] == b1.as_str()));
    let exit = evs
        .iter()
        .find(|e| e["event"]["container_id"] == a1.as_str())
        .expect("a1's exit");
    assert_eq!(exit["event"]["exit_status"], 0);

    assert!(
        wait_until(T, || human
            .lines()
            .iter()
            .any(|l| l.contains("/tasks/delete") && l.contains(&b1))),
        "{:?}",
        human.lines()
    );
    assert!(human.lines().iter().all(|l| l.contains(&ns_b)));
    d.finish();
}

#[test]
fn events_of_100_containers_arrive_each_exactly_once() {
    let d = Daemon::start();
    let ns = unique_id("ns");
    let stream = d.events(&["--json", "--since", "0", &format!("namespace=={ns}")]);
    let ids: Vec<String> = (0..100).map(|i| unique_id(&format!("m{i}"))).collect();
    std::thread::scope(|s| {
        for chunk in ids.chunks(25) {
            let (d, ns) = (&d, &ns);
            s.spawn(move || {
                for id in chunk {
                    d.run_cmd().ns(ns).flag("--rm").ok(id, &["true"]);
                }
            });
        }
    });
    let want = 100 * 4;
    assert!(
        stream.wait_for(Duration::from_secs(60), |evs| evs.len() >= want),
        "{} of {want} events",
        stream.lines().len()
    );
    let evs = stream.json();
    assert_eq!(evs.len(), want, "no extra events");
    let mut per: HashMap<String, Vec<String>> = HashMap::new();
    let mut seqs: Vec<u64> = evs.iter().filter_map(|e| e["seq"].as_u64()).collect();
    for e in &evs {
        let id = e["event"]["container_id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        per.entry(id)
            .or_default()
            .push(e["topic"].as_str().unwrap_or_default().to_string());
    }
    for id in &ids {
        assert_eq!(
            per.get(id).map(Vec::as_slice),
            Some(
                &[
                    "/tasks/create",
                    "/tasks/start",
                    "/tasks/exit",
                    "/tasks/delete"
                ]
                .map(String::from)[..]
            ),
            "events of {id}"
        );
    }
    let n = seqs.len();
    seqs.dedup();
    assert_eq!(seqs.len(), n, "every sequence number once");
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order");
    d.finish();
}

#[test]
fn bad_input_is_a_clear_error_and_the_daemon_serves_on() {
    let d = Daemon::start();
    let rootfs = rootfs();
    let empty = tempfile::tempdir().expect("tempdir");
    let empty = empty.path().display().to_string();

    let out = d.run_cmd().flag("--rm").run("bad/id", &["true"]);
    assert_clear_error(&out, "invalid container id \"bad/id\"");
    let out = d.run(&["--namespace", "no/pe", "ps"]);
    assert_clear_error(&out, "invalid namespace");
    let out = d
        .run_cmd()
        .flag("--rm")
        .runtime("io.containerd.nosuch.v2")
        .run(&unique_id("c"), &["true"]);
    assert_clear_error(&out, "unknown runtime \"io.containerd.nosuch.v2\"");
    let out = d
        .run_cmd()
        .flag("--rm")
        .runtime("nodots")
        .run(&unique_id("c"), &["true"]);
    assert_clear_error(&out, "invalid runtime name");
    let out = d.run(&[
        "run",
        "--rm",
        "--rootfs",
        "/nonexistent/rootfs",
        &unique_id("c"),
        "--",
        "true",
    ]);
    assert_clear_error(&out, "/nonexistent/rootfs does not exist");
    let out = d.run(&[
        "run",
        "--rm",
        "--bundle",
        &empty,
        &unique_id("c"),
        "--",
        "true",
    ]);
    assert_clear_error(&out, "has no config.json");
    let out = d.run(&["events", "topic=~/tasks/exit"]);
    assert_clear_error(&out, "invalid filter \"topic=~/tasks/exit\" at position 6");
    let out = d.run(&["events", "topic~=("]);
    assert_clear_error(&out, "invalid regular expression");
    let out = d.run(&["kill", "-s", "NOSUCHSIG", "x"]);
    assert_clear_error(&out, "unknown signal");
    for cmd in ["state", "start", "pause", "delete", "wait", "stats"] {
        let out = d.run(&[cmd, "nosuchcontainer"]);
        assert_clear_error(&out, "container \"nosuchcontainer\" not found");
    }
    let out = d
        .run_cmd()
        .flag("--rm")
        .run(&unique_id("c"), &["/no/such/binary"]);
    assert!(!out.success(), "{out}");

    // A duplicate id is refused and the first container is untouched.
    let id = unique_id("dup");
    d.run_cmd().flag("-d").ok(&id, &["sleep", "300"]);
    let out = d.run_cmd().flag("-d").run(&id, &["true"]);
    assert_clear_error(
        &out,
        &format!("container \"{id}\" already exists in namespace \"default\""),
    );
    assert_eq!(status(&d, "default", &id), "RUNNING");
    d.ok(&["delete", "-f", &id]);

    // The daemon serves on.
    let out = d
        .run_cmd()
        .flag("--rm")
        .ok(&unique_id("c"), &["echo", "still here"]);
    assert_eq!(out.stdout, "still here\n");

    // No daemon at all.
    let gone = Path::new(&empty).join("nothing.sock");
    let out = cmd::run(
        std::process::Command::new(tether_tests::tether_binary())
            .env("TETHER_SOCKET", &gone)
            .arg("ps"),
        None,
        T,
    );
    assert_clear_error(&out, "no tether daemon at");
    let out = cmd::run(
        std::process::Command::new(tether_tests::tether_binary())
            .args(["--socket"])
            .arg(&gone)
            .args(["run", "--rm", "--rootfs", &rootfs, "x", "--", "true"]),
        None,
        T,
    );
    assert_clear_error(&out, "no tether daemon at");
    d.finish();
}

#[test]
fn help_everywhere() {
    for sub in [
        "daemon", "run", "create", "start", "exec", "kill", "wait", "ps", "list", "state", "pause",
        "resume", "update", "stats", "delete", "events",
    ] {
        let out = cmd::run(
            std::process::Command::new(tether_tests::tether_binary()).args([sub, "--help"]),
            None,
            T,
        );
        assert!(
            out.success() && out.stdout.contains("Usage: tether"),
            "{sub}: {out}"
        );
    }
}

/// A shim killed under a running container: the daemon notices (pidfd), cleans up with the
/// shim's `delete` action, records and publishes the exit, and serves on.
fn shim_death(runtime: &str) {
    let d = Daemon::start();
    let ns = unique_id("ns");
    let id = unique_id("c");
    let stream = d.events(&[
        "--json",
        "--since",
        "0",
        &format!("namespace=={ns},topic==/tasks/exit"),
    ]);
    d.run_cmd()
        .ns(&ns)
        .flag("-d")
        .runtime(runtime)
        .ok(&id, &["sleep", "300"]);
    let shims = d.shim_pids();
    assert_eq!(shims.len(), 1, "one shim: {shims:?}");
    assert!(tether_tests::procs::signal(shims[0], libc::SIGKILL));
    let out = d.run(&["--namespace", &ns, "wait", &id]);
    assert_eq!(out.code, 137, "{out}\n{}", d.log());
    let v: Value =
        serde_json::from_str(&d.ok(&["--namespace", &ns, "state", &id, "--json"]).stdout)
            .expect("json");
    assert_eq!(
        (v["status"].as_str(), v["reason"].as_str()),
        (Some("EXITED"), Some("shim died")),
        "{v}"
    );
    assert!(
        stream.wait_for(T, |evs| topics_of(evs, &id) == ["/tasks/exit"]),
        "one exit event: {:?}",
        stream.lines()
    );
    d.ok(&["--namespace", &ns, "delete", &id]);
    let out = d
        .run_cmd()
        .ns(&ns)
        .flag("--rm")
        .runtime(runtime)
        .ok(&unique_id("c"), &["echo", "after"]);
    assert_eq!(out.stdout, "after\n");
    d.finish();
}

#[test]
fn killed_shim_is_cleaned_up_and_its_exit_reported_with_our_shim() {
    shim_death(TETHER_RUNTIME);
}

#[test]
fn killed_shim_is_cleaned_up_and_its_exit_reported_with_containerds_go_shim() {
    shim_death(RUNC_RUNTIME);
}
