//! Live shim upgrade: the handover time of one shim, and 200 idle shims upgraded
//! through `tether upgrade`. Targets: 5 ms and 2 s.
//!
//! The shims run from a private copy of the shim binary, first on a private `tether daemon`'s
//! `PATH` under a runtime name of its own, so installing "a new binary" (a fresh copy renamed
//! over it: a new inode, as a package manager does) never touches `target/release`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tether_protocol::admin::{UpgradeResponse, ADMIN_SERVICE, UPGRADE_METHOD};
use tether_tests::manager::Daemon;
use tether_tests::shimdir::ShimDir;
use tether_tests::{busybox_rootfs, procs, unique_id, wait_until};

const RUNTIME: &str = "io.containerd.benchup.v2";
const SHIM_NAME: &str = "containerd-shim-benchup-v2";

pub struct Upgrade {
    /// Upgrades of the one shim.
    pub runs: usize,
    /// The Admin reply's `handover_micros` (commit to serving), ms: median, p90.
    pub handover_ms: (f64, f64),
    /// The Admin reply's `took_micros` (request taken to serving, the check included).
    pub took_ms: (f64, f64),
    /// The caller's clock around the call.
    pub call_ms: (f64, f64),
    /// Idle shims upgraded by one `tether upgrade`.
    pub many: usize,
    /// Its wall time (exec to exit), each try, ms.
    pub many_ms: Vec<f64>,
}

/// A private daemon whose shims run the binary at `dir/SHIM_NAME`.
struct Setup {
    dir: ShimDir,
    d: Daemon,
    ns: String,
}

impl Setup {
    fn start() -> Setup {
        let dir = ShimDir::new(SHIM_NAME);
        let d = Daemon::start_env(&[], &[("PATH", &dir.path_env())]);
        Setup {
            dir,
            d,
            ns: unique_id("upgrade"),
        }
    }

    fn install(&self) {
        self.dir.install_shim();
    }

    /// Runs `n` idle containers (two at a time); their ids.
    fn run_idle(&self, n: usize) -> Vec<String> {
        let rootfs = busybox_rootfs().display().to_string();
        let ids: Vec<String> = (0..n).map(|i| format!("u{i:03}")).collect();
        std::thread::scope(|s| {
            for half in 0..2 {
                let (ids, rootfs) = (&ids, &rootfs);
                s.spawn(move || {
                    for id in ids.iter().skip(half).step_by(2) {
                        self.d.ok(&[
                            "--namespace",
                            &self.ns,
                            "run",
                            "-d",
                            "--runtime",
                            RUNTIME,
                            "--rootfs",
                            rootfs,
                            id,
                            "--",
                            "sleep",
                            "3600",
                        ]);
                    }
                });
            }
        });
        ids
    }

    fn socket(&self, id: &str) -> PathBuf {
        let dir = self.d.state().join(&self.ns).join(id);
        let text = ["shim-address", "address"]
            .iter()
            .find_map(|f| std::fs::read_to_string(dir.join(f)).ok())
            .unwrap_or_else(|| panic!("no address file in {}", dir.display()));
        tether_protocol::socket::from_address(text.trim())
            .unwrap_or_else(|| panic!("not a unix address: {text:?}"))
    }

    fn delete_all(self, ids: &[String]) {
        for id in ids {
            self.d.ok(&["--namespace", &self.ns, "delete", "-f", id]);
        }
        wait_until(Duration::from_secs(30), || self.d.shim_pids().is_empty());
        procs::reap_orphans();
    }
}

fn median_p90(mut v: Vec<f64>) -> (f64, f64) {
    (super::median(&mut v), super::p90(&mut v))
}

/// `runs` upgrades of one shim (its Admin method, straight on its socket), then `many` idle
/// shims upgraded by `tether upgrade`, `tries` times.
pub fn bench(runs: usize, many: usize, tries: usize) -> Upgrade {
    procs::become_subreaper();
    eprintln!("== live upgrade: one shim, {runs} times");
    let s = Setup::start();
    let one = s.run_idle(1);
    let socket = s.socket(&one[0]);
    let (mut handover, mut took, mut call) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        s.install();
        let t0 = Instant::now();
        let reply = tether_protocol::wire::call(
            &socket,
            ADMIN_SERVICE,
            UPGRADE_METHOD,
            b"{}".to_vec(),
            Duration::from_secs(30),
        )
        .expect("Upgrade");
        call.push(t0.elapsed().as_secs_f64() * 1000.0);
        let u: UpgradeResponse = serde_json::from_slice(&reply).expect("an UpgradeResponse");
        handover.push(u.handover_micros as f64 / 1000.0);
        took.push(u.took_micros as f64 / 1000.0);
    }
    s.delete_all(&one);

    eprintln!("== live upgrade: {many} idle shims, `tether upgrade` x{tries}");
    let s = Setup::start();
    let ids = s.run_idle(many);
    let mut many_ms = Vec::new();
    for _ in 0..tries {
        s.install();
        let t0 = Instant::now();
        let out = s.d.ok(&["--namespace", &s.ns, "upgrade"]);
        many_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
        let upgraded = out
            .stdout
            .lines()
            .filter(|l| l.contains(": upgraded ("))
            .count();
        assert_eq!(upgraded, many, "every shim upgraded:\n{out}");
    }
    s.delete_all(&ids);
    Upgrade {
        runs,
        handover_ms: median_p90(handover),
        took_ms: median_p90(took),
        call_ms: median_p90(call),
        many,
        many_ms,
    }
}

pub fn render(u: &Upgrade) -> String {
    let mut s = String::new();
    let mut sorted = u.many_ms.clone();
    let many_median = super::median(&mut sorted);
    let _ = writeln!(s, "\n{SECTION}\n");
    let _ = writeln!(s, "| figure | tether | target |\n|---|---|---|");
    let _ = writeln!(
        s,
        "| one shim's handover (Admin reply's `handover_micros`: commit -> serving), median / p90 \
         of {} | {:.2} / {:.2} ms | 5 ms |",
        u.runs, u.handover_ms.0, u.handover_ms.1
    );
    let _ = writeln!(
        s,
        "| one shim's upgrade, request taken -> serving (with the new binary's check), median / \
         p90 | {:.2} / {:.2} ms | |",
        u.took_ms.0, u.took_ms.1
    );
    let _ = writeln!(
        s,
        "| one shim's upgrade, the caller's clock around the call, median / p90 | {:.2} / {:.2} \
         ms | |",
        u.call_ms.0, u.call_ms.1
    );
    let _ = writeln!(
        s,
        "| {} idle shims upgraded by `tether upgrade` (exec -> exit), median of {} | {:.0} ms | \
         2 s |",
        u.many,
        u.many_ms.len(),
        many_median
    );
    let _ = writeln!(
        s,
        "\nEach upgrade installs a fresh copy of the shim binary (renamed over the old one: a new \
         inode) first; the shim checks it (`--handover-check`, a fork and exec), writes its \
         record and `execve`s it, and the new image answers. One shim: its admin `Upgrade` on \
         its socket, one container running `sleep`. Many: the daemon upgrades 8 shims at a \
         time; tries: {}.",
        u.many_ms
            .iter()
            .map(|m| format!("{m:.0} ms"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    s
}

/// The section's heading, by which `--only upgrade` replaces it in an existing report.
pub const SECTION: &str = "## Live shim upgrade";

/// `report` with its upgrade section replaced by `section` (or `section` appended).
pub fn splice(report: &str, section: &str) -> String {
    let Some(start) = report.find(&format!("\n{SECTION}\n")) else {
        return format!("{}\n{}", report.trim_end(), section);
    };
    let after = start + 1 + SECTION.len();
    // The section ends at the next heading or at the hand-written part's marker, whichever is
    // first: the marker must survive, or the next `make bench` drops the hand-written part.
    let end = [
        report[after..].find("\n## "),
        report[after..].find(&format!("\n{}", super::report::KEPT)),
    ]
    .into_iter()
    .flatten()
    .min()
    .map(|i| after + i)
    .unwrap_or(report.len());
    format!("{}{}{}", &report[..start], section, &report[end..])
}

/// Runs only this part, into the report at `out` (its section replaced, the rest kept).
pub fn only(out: &Path, runs: usize, many: usize) {
    let u = bench(runs, many, 3);
    let section = render(&u);
    let old = std::fs::read_to_string(out).unwrap_or_else(|_| "# Benchmarks\n".to_string());
    std::fs::write(out, splice(&old, &section))
        .unwrap_or_else(|e| panic!("write {}: {e}", out.display()));
    println!("{section}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_section_is_replaced_or_appended() {
        let sec = format!("\n{SECTION}\n\nnew\n");
        assert_eq!(splice("# B\n\nx\n", &sec), format!("# B\n\nx\n{sec}"));
        let old = format!("# B\n{SECTION}\n\nold\n\n## Next\n\ny\n");
        assert_eq!(
            splice(&old, &sec),
            format!("# B{sec}\n## Next\n\ny\n"),
            "only the section changes"
        );
        let kept = super::super::report::KEPT;
        let old = format!("# B\n{SECTION}\n\nold\n\n{kept}\n## Hand\n\nh\n");
        assert_eq!(
            splice(&old, &sec),
            format!("# B{sec}\n{kept}\n## Hand\n\nh\n"),
            "the hand-written part's marker is kept"
        );
    }
}
