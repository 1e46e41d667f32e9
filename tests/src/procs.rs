//! Looking at processes through /proc, for leak checks and cleanup.
//!
//! Everything here reads a snapshot: a process may exit between two reads, so every reader
//! treats a vanished `/proc/PID` as "no such process", never as an error.

use std::fs;
use std::thread;
use std::time::{Duration, Instant};

/// One line of `/proc/PID/stat`, the fields we use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    pub pid: i32,
    /// The executable name (`comm`, at most 15 bytes).
    pub comm: String,
    /// `R`, `S`, `D`, `Z` (zombie), `T`, ...
    pub state: char,
    pub ppid: i32,
}

/// Every pid in /proc right now.
pub fn all_pids() -> Vec<i32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// The parsed `/proc/PID/stat`, or `None` if the process is gone.
pub fn stat(pid: i32) -> Option<Stat> {
    parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Parses a `/proc/PID/stat` line. `comm` may hold spaces and parentheses: it ends at the last `)`.
pub fn parse_stat(line: &str) -> Option<Stat> {
    let open = line.find('(')?;
    let close = line.rfind(')')?;
    let pid = line[..open].trim().parse().ok()?;
    let comm = line.get(open + 1..close)?.to_string();
    let mut rest = line.get(close + 1..)?.split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some(Stat {
        pid,
        comm,
        state,
        ppid,
    })
}

/// The arguments of `pid` (`/proc/PID/cmdline` split at NULs), or `None` if it is gone or a
/// kernel thread.
pub fn cmdline(pid: i32) -> Option<Vec<String>> {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    if raw.is_empty() {
        return None;
    }
    Some(
        raw.split(|&b| b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect(),
    )
}

/// Waits until `pid`'s command line is `want`: `runc start` returns once the container's init
/// is released, a moment before its `execve` ends (meanwhile the command line reads `runc init`,
/// then briefly empty). False if it is not `want` within `timeout`.
pub fn wait_cmdline(pid: i32, want: &[&str], timeout: std::time::Duration) -> bool {
    crate::wait_until(timeout, || {
        cmdline(pid).is_some_and(|args| args.iter().map(String::as_str).eq(want.iter().copied()))
    })
}

/// Processes (other than this one) whose command line, joined by spaces, contains `needle`.
pub fn pids_with_cmdline(needle: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    all_pids()
        .into_iter()
        .filter(|&p| p != me)
        .filter(|&p| cmdline(p).is_some_and(|args| args.join(" ").contains(needle)))
        .collect()
}

/// Shim processes of the daemon at `address`: the runtime v2 shim CLI carries `-address A`
/// (containerd's shims and ours alike; `ctr` spells it `--address`, so it never matches).
pub fn shim_pids(address: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    all_pids()
        .into_iter()
        .filter(|&p| p != me)
        .filter(|&p| cmdline(p).is_some_and(|args| is_shim_of(&args, address)))
        .collect()
}

/// Whether a command line is a shim's launched for the daemon at `address`.
pub fn is_shim_of(args: &[String], address: &str) -> bool {
    args.windows(2)
        .any(|w| w[0] == "-address" && w[1] == address)
}

/// Whether `pid` exists and is not a zombie.
pub fn is_alive(pid: i32) -> bool {
    stat(pid).is_some_and(|s| s.state != 'Z')
}

/// Direct children of `ppid` (zombies included).
pub fn children(ppid: i32) -> Vec<i32> {
    all_pids()
        .into_iter()
        .filter(|&p| stat(p).is_some_and(|s| s.ppid == ppid))
        .collect()
}

/// Children of `ppid` that have exited and were not reaped.
pub fn zombie_children(ppid: i32) -> Vec<i32> {
    all_pids()
        .into_iter()
        .filter(|&p| stat(p).is_some_and(|s| s.ppid == ppid && s.state == 'Z'))
        .collect()
}

/// Every descendant of `pid` (not `pid` itself), parents before children.
pub fn descendants(pid: i32) -> Vec<i32> {
    let table: Vec<Stat> = all_pids().into_iter().filter_map(stat).collect();
    let mut out = Vec::new();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for s in table.iter().filter(|s| s.ppid == parent) {
            if !out.contains(&s.pid) {
                out.push(s.pid);
                frontier.push(s.pid);
            }
        }
    }
    out
}

/// Sends `signal` to `pid`; says whether it was delivered.
pub fn signal(pid: i32, signal: i32) -> bool {
    pid > 0 && unsafe { libc::kill(pid, signal) } == 0
}

/// Waits until none of `pids` is alive (zombies count as gone); returns those still alive.
pub fn wait_gone(pids: &[i32], timeout: Duration) -> Vec<i32> {
    let deadline = Instant::now() + timeout;
    loop {
        let alive: Vec<i32> = pids.iter().copied().filter(|&p| is_alive(p)).collect();
        if alive.is_empty() || Instant::now() >= deadline {
            return alive;
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// The number of threads of `pid` (`Threads:` in /proc/PID/status).
pub fn thread_count(pid: i32) -> Option<usize> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))?
        .trim()
        .parse()
        .ok()
}

/// A one-line description of `pid` for messages: `PID (comm) STATE ppid=P: cmdline`.
pub fn describe(pid: i32) -> String {
    match stat(pid) {
        Some(s) => format!(
            "{pid} ({}) {} ppid={}: {}",
            s.comm,
            s.state,
            s.ppid,
            cmdline(pid).unwrap_or_default().join(" ")
        ),
        None => format!("{pid} (gone)"),
    }
}

/// How old a `runc` zombie must be to count as an orphan (see [`reap_orphans`]).
pub const ORPHAN_RUNC_AGE: Duration = Duration::from_secs(10);

/// How long ago process `pid` started (`/proc/PID/stat` field 22 against `/proc/uptime`).
pub fn age(pid: i32) -> Option<Duration> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 2..];
    // Field 22 (starttime) is the 20th after the comm.
    let start_ticks: f64 = rest.split_whitespace().nth(19)?.parse().ok()?;
    let uptime: f64 = fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    // SAFETY: sysconf with a constant name.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (hz > 0.0).then(|| Duration::from_secs_f64((uptime - start_ticks / hz).max(0.0)))
}

/// Makes the test process a child subreaper: shims orphaned by a SIGKILLed daemon (and their
/// processes) are reparented to it rather than to PID 1, which may not reap them here.
pub fn become_subreaper() {
    // SAFETY: prctl with integer arguments only.
    let r = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    assert_eq!(
        r,
        0,
        "PR_SET_CHILD_SUBREAPER: {}",
        std::io::Error::last_os_error()
    );
}

/// Reaps the test process's zombie children that are orphans it adopted as a subreaper: shims
/// (`containerd-shim*`) and container processes, never a child a `std::process::Child` of the
/// harness waits for (those run `tether`, `ctr`, `containerd`, ...). Returns the pids reaped.
///
/// A `runc` is both: the harness runs short `runc list`/`runc delete` children it waits for at
/// once, and a shim killed in the middle of a runtime call orphans its `runc`. A `runc` zombie
/// that started more than [`ORPHAN_RUNC_AGE`] ago is no call the harness is about to reap.
pub fn reap_orphans() -> Vec<i32> {
    const OURS: &[&str] = &["tether", "ctr", "containerd", "runc", "mount", "umount"];
    let me = std::process::id() as i32;
    let mut reaped = Vec::new();
    for pid in zombie_children(me) {
        let Some(s) = stat(pid) else { continue };
        let orphaned_runc = s.comm == "runc" && age(pid).is_some_and(|a| a > ORPHAN_RUNC_AGE);
        if OURS.contains(&s.comm.as_str()) && !orphaned_runc {
            continue;
        }
        let mut status = 0;
        // SAFETY: waitpid on one specific zombie child, WNOHANG.
        if unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } == pid {
            reaped.push(pid);
        }
    }
    reaped
}

/// The paths of the unix sockets the processes `pids` hold (their listening sockets among
/// them), from `/proc/PID/fd` and one read of `/proc/net/unix`: what to remove after killing a
/// shim, whose socket file outlives it.
pub fn unix_socket_paths(pids: &[i32]) -> Vec<std::path::PathBuf> {
    let mut inodes = std::collections::HashSet::new();
    for pid in pids {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(link) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let link = link.to_string_lossy().into_owned();
            if let Some(inode) = link
                .strip_prefix("socket:[")
                .and_then(|r| r.strip_suffix(']'))
            {
                inodes.insert(inode.to_string());
            }
        }
    }
    let table = std::fs::read_to_string("/proc/net/unix").unwrap_or_default();
    let mut paths: Vec<std::path::PathBuf> = table
        .lines()
        .skip(1)
        .filter_map(|l| {
            // Num RefCount Protocol Flags Type St Inode Path
            let f: Vec<&str> = l.split_whitespace().collect();
            let (inode, path) = (f.get(6)?, f.get(7)?);
            (inodes.contains(*inode) && path.starts_with('/')).then(|| path.into())
        })
        .collect();
    paths.sort();
    paths.dedup();
    paths
}

/// Removes the socket files in `paths` that nothing listens on any more.
pub fn remove_dead_sockets(paths: &[std::path::PathBuf]) {
    use std::os::unix::fs::FileTypeExt;
    for p in paths {
        let is_socket = std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_socket());
        if is_socket && std::os::unix::net::UnixStream::connect(p).is_err() {
            let _ = std::fs::remove_file(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn a_fresh_child_is_younger_than_init() {
        let mut c = Command::new("sleep").arg("5").spawn().expect("sleep");
        let young = age(c.id() as i32).expect("age of a child");
        let _ = c.kill();
        let _ = c.wait();
        let old = age(1).expect("age of pid 1");
        assert!(old > young, "{old:?} vs {young:?}");
    }

    #[test]
    fn parses_stat_with_odd_comm() {
        let s = parse_stat("42 (a) b (c)) S 7 42 42 0 -1").expect("parses");
        assert_eq!(
            s,
            Stat {
                pid: 42,
                comm: "a) b (c)".into(),
                state: 'S',
                ppid: 7
            }
        );
    }

    #[test]
    fn sees_own_child_and_its_zombie() {
        // Long enough to be read alive on a loaded machine; ended by pid below.
        let mut child = Command::new("/bin/sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        let pid = child.id() as i32;
        let me = std::process::id() as i32;
        assert!(children(me).contains(&pid));
        assert!(descendants(me).contains(&pid));
        assert!(cmdline(pid).expect("cmdline").contains(&"30".to_string()));
        assert!(signal(pid, libc::SIGKILL));
        assert!(
            crate::wait::wait_until(Duration::from_secs(5), || zombie_children(me)
                .contains(&pid)),
            "exited child shows as a zombie until reaped"
        );
        assert!(!is_alive(pid));
        child.wait().expect("reap");
        assert!(stat(pid).is_none());
    }

    #[test]
    fn shim_cmdline_match_is_exact() {
        let args: Vec<String> = ["shim", "-namespace", "n", "-address", "/a/c.sock", "start"]
            .map(String::from)
            .to_vec();
        assert!(is_shim_of(&args, "/a/c.sock"));
        assert!(!is_shim_of(&args, "/a/c"));
        let ctr: Vec<String> = ["ctr", "--address", "/a/c.sock"].map(String::from).to_vec();
        assert!(!is_shim_of(&ctr, "/a/c.sock"));
    }
}
