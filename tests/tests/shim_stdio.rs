//! Our shim's stdio through a real containerd 1.6: stdin in, bulk stdout out byte-exact, and
//! `--log-uri file://` logging.

use sha2::{Digest, Sha256};
use std::fmt::Write as _;
use std::time::Duration;
use tether_tests::ctr::Run;
use tether_tests::shimtest::finish;
use tether_tests::{unique_id, wait_until, Containerd, Ctr};

const T: Duration = Duration::from_secs(20);

/// `ctr run --rm --runtime io.containerd.tether.v2 --read-only --rootfs <busybox> ID`.
fn tether_run_rm<'a>(ctr: &'a Ctr, id: &str) -> Run<'a> {
    tether_tests::shimtest::tether_run(ctr, id).rm()
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[test]
fn stdin_line_reaches_the_container() {
    let cd = Containerd::start();
    let ctr = cd.ctr(&unique_id("ns"));
    let id = unique_id("c");
    // ctr 1.6 does not close the container's stdin on EOF: read exactly one line.
    let out = tether_run_rm(&ctr, &id)
        .stdin(b"abc\n")
        .args(&["/bin/head", "-n1"])
        .output();
    assert_eq!(out.code, 0, "{out}\n{}", cd.log_excerpt());
    assert_eq!(out.stdout, "abc\n", "{out}");
    finish(cd, &[]);
}

#[test]
fn ten_mib_of_stdout_arrive_byte_exact() {
    const LAST: u32 = 1_500_000;
    let mut expected = String::new();
    for n in 1..=LAST {
        let _ = writeln!(expected, "{n}");
    }
    assert!(expected.len() > 10 << 20, "the pattern is over 10 MiB");

    let cd = Containerd::start();
    let ctr = cd.ctr(&unique_id("ns"));
    let id = unique_id("c");
    let out = tether_run_rm(&ctr, &id)
        .args(&["/bin/seq", "1", &LAST.to_string()])
        .timeout(Duration::from_secs(120))
        .output();
    assert_eq!(
        out.code,
        0,
        "exit code {}; stderr: {}\n{}",
        out.code,
        out.stderr,
        cd.log_excerpt()
    );
    assert_eq!(
        out.stdout.len(),
        expected.len(),
        "stdout length (last bytes: {:?})",
        &out.stdout[out.stdout.len().saturating_sub(40)..]
    );
    assert_eq!(
        sha256_hex(out.stdout.as_bytes()),
        sha256_hex(expected.as_bytes()),
        "stdout content"
    );
    // containerd 2.2+'s ctr warns that cgroup v1 is deprecated (this machine's hierarchies).
    let stderr: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| !l.contains("msg=\"DEPRECATION: The support for cgroup v1"))
        .collect();
    assert!(stderr.is_empty(), "nothing on stderr: {}", out.stderr);
    finish(cd, &[]);
}

#[test]
fn log_uri_file_receives_stdout_and_stderr() {
    let cd = Containerd::start();
    let ctr = cd.ctr(&unique_id("ns"));
    let dir = tempfile::tempdir().expect("tempdir for the log");
    let log = dir.path().join("container.log");
    let uri = format!("file://{}", log.display());
    let id = unique_id("c");
    let out = tether_run_rm(&ctr, &id)
        .flag("--log-uri")
        .flag(&uri)
        .args(&[
            "/bin/sh",
            "-c",
            "echo to-stdout; echo to-stderr >&2; exit 3",
        ])
        .output();
    assert_eq!(out.code, 3, "{out}\n{}", cd.log_excerpt());
    assert_eq!(
        out.stdout, "",
        "the output went to the log, not to ctr: {out}"
    );
    // ctr run --rm returns after the task was deleted: everything is in the file by then.
    let text = std::fs::read_to_string(&log)
        .unwrap_or_else(|e| panic!("read {}: {e}\n{}", log.display(), cd.log_excerpt()));
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort_unstable();
    assert_eq!(lines, ["to-stderr", "to-stdout"], "log file: {text:?}");
    finish(cd, &[]);
}

/// `file:///dev/null` throws the output away, as containerd's shim lets it (benchmarks and
/// people who want no log use it); the container runs and exits as usual.
#[test]
fn log_uri_file_dev_null_discards_the_output() {
    let cd = Containerd::start();
    let ctr = cd.ctr(&unique_id("ns"));
    let id = unique_id("c");
    let out = tether_run_rm(&ctr, &id)
        .flag("--log-uri")
        .flag("file:///dev/null")
        .args(&["/bin/sh", "-c", "echo gone; echo gone too >&2; exit 4"])
        .output();
    assert_eq!(out.code, 4, "{out}\n{}", cd.log_excerpt());
    assert_eq!(out.stdout, "", "{out}");
    finish(cd, &[]);
}

#[test]
fn log_uri_binary_hands_stdout_and_stderr_to_the_logger() {
    let cd = Containerd::start();
    let ctr = cd.ctr(&unique_id("ns"));
    let dir = tempfile::tempdir().expect("tempdir for the logger");
    // containerd's binary logging protocol: stdout on fd 3, stderr on fd 4, fd 5 closed once
    // the logger is ready; the URI's query arrives as arguments (`out PATH`).
    let logger = dir.path().join("logger.sh");
    tether_tests::cmd::write_executable(
        &logger,
        "#!/bin/sh\nexec 5>&-\necho \"$CONTAINER_NAMESPACE/$CONTAINER_ID\" > \"$2.who\"\n\
         cat <&3 > \"$2.out\" &\ncat <&4 > \"$2.err\" &\nwait\n",
    );
    let base = dir.path().join("log");
    let uri = format!("binary://{}?out={}", logger.display(), base.display());
    let id = unique_id("c");
    let out = tether_run_rm(&ctr, &id)
        .flag("--log-uri")
        .flag(&uri)
        .args(&[
            "/bin/sh",
            "-c",
            "echo to-stdout; echo to-stderr >&2; exit 5",
        ])
        .output();
    assert_eq!(out.code, 5, "{out}\n{}", cd.log_excerpt());
    let read = |ext: &str| std::fs::read_to_string(base.with_extension(ext)).unwrap_or_default();
    assert!(
        wait_until(T, || read("out") == "to-stdout\n"
            && read("err") == "to-stderr\n"),
        "logger got stdout {:?} and stderr {:?}\n{}",
        read("out"),
        read("err"),
        cd.log_excerpt()
    );
    assert_eq!(read("who"), format!("{}/{id}\n", ctr.namespace()));
    finish(cd, &[]);
}
