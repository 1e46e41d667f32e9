//! A writer process SIGKILLed at random points of thousands of writes never lets a concurrent
//! reader see a partial record.

use serde::{Deserialize, Serialize};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tether_protocol::store;

#[derive(Debug, Serialize, Deserialize)]
struct Rec {
    seq: u64,
    /// Large enough that a write takes several syscalls' worth of bytes.
    payload: String,
    check: u64,
}

fn checksum(seq: u64, payload: &str) -> u64 {
    payload
        .bytes()
        .fold(seq, |a, b| a.wrapping_mul(31).wrapping_add(b as u64))
}

const WRITER_ENV: &str = "TETHER_STORE_WRITER_PATH";

/// Runs only as the writer child: writes records to the given path until killed.
#[test]
fn store_writer_child() {
    let Ok(path) = std::env::var(WRITER_ENV) else {
        return;
    };
    let path = Path::new(&path);
    // Resume after the last whole record, so the writes add up across kills.
    let first = match store::read::<Rec>(path) {
        Ok(r) => r.seq + 1,
        Err(e) if e.is_not_found() => 0,
        Err(e) => panic!("writer found a broken record: {e}"),
    };
    for seq in first.. {
        let payload = format!("{seq:x}-").repeat(1 + (seq as usize * 7919) % 3000);
        let rec = Rec {
            seq,
            check: checksum(seq, &payload),
            payload,
        };
        store::write(path, &rec).expect("write");
    }
}

#[test]
fn readers_never_see_a_partial_record_while_writers_are_sigkilled() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("record.json");
    let exe = std::env::current_exe().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut kills = 0;
    let mut reads = 0u64;
    let mut max_seq = 0u64;
    // Pseudo-random kill points without a rand dependency.
    let mut x: u64 = 0x9e3779b97f4a7c15 ^ std::process::id() as u64;
    while (kills < 20 || max_seq < 2000) && Instant::now() < deadline {
        let mut child = Command::new(&exe)
            .args(["--exact", "store_writer_child", "--test-threads=1", "-q"])
            .env(WRITER_ENV, &path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let run_for = Duration::from_micros(2_000 + x % 100_000);
        let t0 = Instant::now();
        while t0.elapsed() < run_for {
            match store::read::<Rec>(&path) {
                Ok(r) => {
                    assert_eq!(r.check, checksum(r.seq, &r.payload), "torn record");
                    max_seq = max_seq.max(r.seq);
                    reads += 1;
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => panic!("reader saw a broken record: {e}"),
            }
        }
        child.kill().unwrap();
        child.wait().unwrap();
        kills += 1;
        // The record left behind by the killed writer is whole.
        if let Err(e) = store::read::<Rec>(&path) {
            assert!(e.is_not_found(), "after SIGKILL: {e}");
        }
    }
    assert!(kills >= 20, "only {kills} writer kills in time");
    assert!(reads > 100, "readers read only {reads} records");
    assert!(max_seq >= 2000, "writers wrote only {max_seq} records");
    // Temp files of killed writers may remain; they are recognisable as leftovers, and nothing
    // else but the record is in the directory.
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert!(name == "record.json" || store::is_leftover(&name), "{name}");
    }
}
