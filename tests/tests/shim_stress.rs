//! Many of our shims at once, and the early-exit race (a process that exits before `runc create`
//! has even returned its pid), through a real containerd 1.6.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tether_tests::ctr::Run;
use tether_tests::{unique_id, Containerd, Ctr};

/// One `ctr run` on a loaded 2-core machine: generous, it only bounds a hang.
const RUN_TIMEOUT: Duration = Duration::from_secs(90);

/// `ctr run --rm --runtime io.containerd.tether.v2 --read-only --rootfs <busybox> ID`.
fn tether_run_rm<'a>(ctr: &'a Ctr, id: &str) -> Run<'a> {
    tether_tests::shimtest::tether_run(ctr, id)
        .rm()
        .timeout(RUN_TIMEOUT)
}

fn finish(cd: Containerd, ctr: &Ctr) {
    assert!(ctr.tasks().is_empty(), "{:?}", ctr.tasks());
    assert!(ctr.containers().is_empty(), "{:?}", ctr.containers());
    tether_tests::shimtest::finish(cd, &[]);
}

#[test]
fn twenty_containers_at_once_each_report_their_own_exit_code() {
    let cd = Containerd::start();
    let ctr = cd.ctr(&unique_id("ns"));
    let results: Vec<(u32, String, tether_tests::CmdOutput)> = std::thread::scope(|s| {
        let runs: Vec<_> = (1..=20u32)
            .map(|n| {
                let ctr = &ctr;
                s.spawn(move || {
                    let id = unique_id("c");
                    let script = format!("echo {n}; exit {n}");
                    let out = tether_run_rm(ctr, &id)
                        .args(&["/bin/sh", "-c", &script])
                        .output();
                    (n, id, out)
                })
            })
            .collect();
        runs.into_iter()
            .map(|h| h.join().expect("a ctr run thread panicked"))
            .collect()
    });
    let wrong: Vec<String> = results
        .iter()
        .filter(|(n, _, out)| out.code != *n as i32 || out.stdout != format!("{n}\n"))
        .map(|(n, id, out)| format!("{id} (want exit {n}): {out}"))
        .collect();
    assert!(
        wrong.is_empty(),
        "{} of 20 wrong:\n{}\n{}",
        wrong.len(),
        wrong.join("\n"),
        cd.log_excerpt()
    );
    finish(cd, &ctr);
}

#[test]
fn bin_true_200_times_never_loses_its_exit() {
    const THREADS: usize = 4;
    const RUNS: usize = 200;
    let cd = Containerd::start();
    let ctr = cd.ctr(&unique_id("ns"));
    let next = AtomicUsize::new(0);
    let failures: Vec<String> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..THREADS)
            .map(|_| {
                let (ctr, next) = (&ctr, &next);
                s.spawn(move || {
                    let mut failed = Vec::new();
                    while next.fetch_add(1, Ordering::Relaxed) < RUNS {
                        let id = unique_id("c");
                        // A hang panics here (with ctr's output), failing the test.
                        let out = tether_run_rm(ctr, &id).args(&["/bin/true"]).output();
                        if !out.success() || !out.stdout.is_empty() {
                            failed.push(format!("{id}: {out}"));
                        }
                    }
                    failed
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|h| h.join().expect("a ctr run worker panicked"))
            .collect()
    });
    assert!(
        failures.is_empty(),
        "{} of {RUNS} runs failed:\n{}\n{}",
        failures.len(),
        failures.join("\n"),
        cd.log_excerpt()
    );
    finish(cd, &ctr);
}
