//! `tether logs`: a detached container's output kept in a CRI-format log file by the logger its
//! shim runs, read back in order, followed, tailed, rotated, and kept whole across a daemon
//! SIGKILL and restart.

use std::path::PathBuf;
use std::time::Duration;
use tether_tests::manager::{Daemon, RUNC_RUNTIME, TETHER_RUNTIME};
use tether_tests::{cmd, unique_id, wait_until};

const T: Duration = Duration::from_secs(60);

/// A shell loop printing `line 1` .. `line N` (with `usleep US` after each when US > 0), then
/// `done` on stderr.
fn printer(n: u32, us: u32) -> String {
    let pause = if us > 0 {
        format!("usleep {us}; ")
    } else {
        String::new()
    };
    format!(
        "i=1; while [ $i -le {n} ]; do echo \"line $i\"; {pause}i=$((i+1)); done; echo done >&2"
    )
}

fn lines(from: u32, to: u32) -> String {
    (from..=to).map(|i| format!("line {i}\n")).collect()
}

/// Runs `script` detached in a new container; its (namespace, id).
fn run_detached(d: &Daemon, runtime: &str, script: &str) -> (String, String) {
    let (ns, id) = (unique_id("ns"), unique_id("c"));
    d.run_detached(&ns, runtime, &id, &["sh", "-c", script]);
    (ns, id)
}

fn wait_exit(d: &Daemon, ns: &str, id: &str) {
    let out = d.ok(&["--namespace", ns, "wait", id]);
    assert_eq!(out.stdout, "0\n", "{out}");
}

fn log_file(d: &Daemon, ns: &str, id: &str) -> PathBuf {
    d.state().join(ns).join(id).join("container.log")
}

/// Whether the logger marked the output's end (what ends `logs -f`).
fn ended_marker(d: &Daemon, ns: &str, id: &str) -> bool {
    log_file(d, ns, id)
        .with_file_name("container.log.ended")
        .exists()
}

/// How many `line N` records the current log file holds (read directly: the daemon may be down).
fn lines_in_file(d: &Daemon, ns: &str, id: &str) -> usize {
    std::fs::read_to_string(log_file(d, ns, id))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(" stdout F line "))
        .count()
}

/// Whether `s` is an RFC 3339 UTC time with nanoseconds, as the log records carry.
fn is_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 30
        && b[4] == b'-'
        && b[10] == b'T'
        && b[19] == b'.'
        && b[29] == b'Z'
        && s[20..29].bytes().all(|c| c.is_ascii_digit())
}

fn read_back(runtime: &str) {
    let d = Daemon::start();
    let (ns, id) = run_detached(&d, runtime, &printer(1000, 0));
    wait_exit(&d, &ns, &id);

    let out = d.ok(&["--namespace", &ns, "logs", &id]);
    assert_eq!(out.stdout, lines(1, 1000), "every line once, in order");
    assert_eq!(out.stderr, "done\n", "stderr to stderr");

    // The last 10 lines of both streams: 9 of stdout, then stderr's `done`.
    let out = d.ok(&["--namespace", &ns, "logs", "--tail", "10", &id]);
    assert_eq!(
        (out.stdout, out.stderr),
        (lines(992, 1000), "done\n".to_string())
    );
    let out = d.ok(&["--namespace", &ns, "logs", "--tail", "0", &id]);
    assert_eq!((out.stdout.as_str(), out.stderr.as_str()), ("", ""));

    let out = d.ok(&["--namespace", &ns, "logs", "--timestamps", &id]);
    let stamped: Vec<(&str, &str)> = out
        .stdout
        .lines()
        .map(|l| l.split_once(' ').unwrap_or(("", l)))
        .collect();
    assert_eq!(stamped.len(), 1000);
    for (i, (ts, rest)) in stamped.iter().enumerate() {
        assert!(is_timestamp(ts), "{ts:?}");
        assert_eq!(*rest, format!("line {}", i + 1));
    }
    assert!(
        stamped.windows(2).all(|w| w[0].0 <= w[1].0),
        "times never go back"
    );

    // --since the time of line 500: a suffix from at most line 500 on.
    let since = stamped[499].0;
    let out = d.ok(&["--namespace", &ns, "logs", "--since", since, &id]);
    let first: u32 = out
        .stdout
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("line "))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("lines since {since}:\n{out}"));
    assert!(first <= 500, "{first}");
    assert_eq!(out.stdout, lines(first, 1000));
    assert!(
        stamped[..first as usize - 1]
            .iter()
            .all(|(ts, _)| *ts < since),
        "nothing from {since} on left out"
    );
    let out = d.ok(&["--namespace", &ns, "logs", "--since", "1h", &id]);
    assert_eq!(out.stdout, lines(1, 1000));

    let out = d.run(&["--namespace", &ns, "logs", "--since", "yesterday", &id]);
    assert!(!out.success() && out.stderr.contains("--since"), "{out}");
    d.ok(&["--namespace", &ns, "delete", &id]);
    let out = d.run(&["--namespace", &ns, "logs", &id]);
    assert!(!out.success() && out.stderr.contains("not found"), "{out}");
    d.finish();
}

#[test]
fn detached_output_reads_back_each_line_once_with_our_shim() {
    read_back(TETHER_RUNTIME);
}

#[test]
fn detached_output_reads_back_each_line_once_with_containerds_go_shim() {
    read_back(RUNC_RUNTIME);
}

#[test]
fn follow_prints_each_line_once_and_ends_with_the_output() {
    let d = Daemon::start();
    let (ns, id) = run_detached(&d, TETHER_RUNTIME, &printer(1000, 1000));
    let out = cmd::run(
        d.tether().args(["--namespace", &ns, "logs", "-f", &id]),
        None,
        T,
    );
    assert!(out.success(), "{out}");
    assert_eq!(out.stdout, lines(1, 1000));
    assert_eq!(out.stderr, "done\n");
    wait_exit(&d, &ns, &id);
    assert!(
        ended_marker(&d, &ns, &id),
        "the logger saw the output end and said so"
    );
    d.ok(&["--namespace", &ns, "delete", &id]);
    d.finish();
}

#[test]
fn logs_are_rotated_within_their_bound_and_followed_across_rotations() {
    let (max, files) = (4096, 3);
    let d = Daemon::start_with(&["--log-max-size", "4096", "--log-max-files", "3"]);
    let (ns, id) = run_detached(&d, TETHER_RUNTIME, &printer(1000, 1000));
    let out = cmd::run(
        d.tether().args(["--namespace", &ns, "logs", "-f", &id]),
        None,
        T,
    );
    assert!(out.success(), "{out}");
    assert_eq!(out.stdout, lines(1, 1000), "followed across every rotation");
    wait_exit(&d, &ns, &id);

    let current = log_file(&d, &ns, &id);
    let dir = current.parent().expect("a directory").to_path_buf();
    let mut kept = 0;
    for entry in std::fs::read_dir(&dir).expect("read the container directory") {
        let entry = entry.expect("entry");
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("container.log") && !name.ends_with(".ended") {
            let len = entry.metadata().expect("metadata").len();
            assert!(len <= max, "{name}: {len} bytes");
            kept += 1;
        }
    }
    assert_eq!(kept, files, "the current file and two rotated ones");
    // What is kept is the newest output, whole and in order.
    let out = d.ok(&["--namespace", &ns, "logs", &id]);
    let first: u32 = out
        .stdout
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("line "))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    assert!(first > 1, "older output was dropped");
    assert_eq!(out.stdout, lines(first, 1000));
    d.ok(&["--namespace", &ns, "delete", &id]);
    d.finish();
}

/// The daemon is SIGKILLed while the container prints and restarted: the output written
/// meanwhile is there, and every line is there exactly once.
fn across_sigkill(runtime: &str) {
    let mut d = Daemon::start();
    let (ns, id) = run_detached(&d, runtime, &printer(1000, 3000));
    assert!(
        wait_until(T, || lines_in_file(&d, &ns, &id) >= 100),
        "output arrives"
    );
    d.kill9();
    let at_kill = lines_in_file(&d, &ns, &id);
    assert!(at_kill < 1000, "killed mid-output ({at_kill} lines)");
    assert!(
        wait_until(T, || lines_in_file(&d, &ns, &id) >= at_kill + 100),
        "the log grows while the daemon is away"
    );
    d.restart();
    let follow = cmd::run(
        d.tether().args(["--namespace", &ns, "logs", "-f", &id]),
        None,
        T,
    );
    assert!(follow.success(), "{follow}");
    assert_eq!(follow.stdout, lines(1, 1000));
    wait_exit(&d, &ns, &id);
    // containerd's Go shim holds the pipes' write ends until the task is deleted: its logger
    // sees the end (and `-f` stops) only by the container's exit.
    if runtime == TETHER_RUNTIME {
        assert!(
            ended_marker(&d, &ns, &id),
            "the logger saw the output end and said so"
        );
    }
    let out = d.ok(&["--namespace", &ns, "logs", &id]);
    assert_eq!(out.stdout, lines(1, 1000), "every line exactly once");
    assert_eq!(out.stderr, "done\n");
    d.ok(&["--namespace", &ns, "delete", &id]);
    d.finish();
}

#[test]
fn every_line_once_across_a_daemon_sigkill_with_our_shim() {
    across_sigkill(TETHER_RUNTIME);
}

#[test]
fn every_line_once_across_a_daemon_sigkill_with_containerds_go_shim() {
    across_sigkill(RUNC_RUNTIME);
}
