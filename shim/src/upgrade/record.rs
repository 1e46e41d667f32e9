//! The handover record: everything a shim image holds that the next one needs, by fd number
//! (the fds themselves cross `execve` because their FD_CLOEXEC was cleared). Versioned: a new
//! image refuses a record version it does not know (`--handover-check`).

use crate::runtime::RuntimeConfig;
use serde::{Deserialize, Serialize};
use std::os::fd::RawFd;
use std::path::PathBuf;

/// Bumped on any change an older or newer image could misread.
pub const RECORD_VERSION: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
pub struct Record {
    pub record_version: u32,
    /// The version of the image that wrote it.
    pub shim_version: String,
    pub namespace: String,
    /// Who asked for the upgrade (answered by the image that serves next), and when
    /// (CLOCK_MONOTONIC nanoseconds: the clock survives `execve`).
    pub reply: Option<ReplyRecord>,
    pub requested_at: u64,
    /// When the old image committed (started writing this record).
    #[serde(default)]
    pub committed_at: u64,
    /// The old binary, open since its start: the new image falls back to it by `execveat`.
    pub fallback_exe: RawFd,
    pub listener: RawFd,
    pub conns: Vec<ConnRecord>,
    pub next_conn: usize,
    pub waiters: Vec<WaiterRecord>,
    pub containers: Vec<ContainerRecord>,
    pub pumps: Vec<PumpRecord>,
    pub next_pump: usize,
    pub ooms: Vec<OomRecord>,
    pub next_oom: usize,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct ReplyRecord {
    pub token: usize,
    pub stream_id: u32,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ConnRecord {
    pub token: usize,
    pub fd: RawFd,
    /// Read short of a whole frame.
    pub inbuf: Vec<u8>,
    /// Replies not yet written.
    pub outbuf: Vec<u8>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct WaiterRecord {
    pub token: usize,
    pub stream_id: u32,
    pub container: String,
    pub exec_id: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub bundle: PathBuf,
    pub runtime: RuntimeConfig,
    pub rootfs_mounted: bool,
    pub kill_all_on_exit: bool,
    pub restore_from: Option<PathBuf>,
    pub init: ProcessRecord,
    pub execs: Vec<ProcessRecord>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ProcessRecord {
    pub exec_id: String,
    pub pid: Option<i32>,
    pub state: StateRecord,
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
    /// Pump tokens.
    pub io_stdin: Option<usize>,
    pub io_stdout: Option<usize>,
    pub io_stderr: Option<usize>,
    /// The terminal master.
    pub console: Option<RawFd>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub enum StateRecord {
    Created,
    Running,
    Paused,
    Stopped { status: u32, at: i64 },
}

#[derive(Debug, Serialize, Deserialize)]
pub struct PumpRecord {
    pub token: usize,
    pub src: RawFd,
    pub sink: SinkRecord,
    /// A terminal copy's bytes read and not yet written (None: a splice pump).
    pub pending: Option<Vec<u8>>,
}

#[derive(Debug, Serialize, Deserialize)]
pub enum SinkRecord {
    Fifo {
        w: RawFd,
        keep: Option<RawFd>,
    },
    Pipe(RawFd),
    /// Log files shared by stdout and stderr appear twice with the same fd.
    File(RawFd),
    Tty(RawFd),
}

#[derive(Debug, Serialize, Deserialize)]
pub struct OomRecord {
    pub token: usize,
    pub container: String,
    pub fd: RawFd,
    pub dir: PathBuf,
    /// v2: the `oom_kill` count already seen; v1 (eventfd): None.
    pub v2_seen: Option<u64>,
}

impl Record {
    /// Every fd the record names: these, and only these, cross `execve`.
    pub fn fds(&self) -> Vec<RawFd> {
        let mut v = vec![self.fallback_exe, self.listener];
        v.extend(self.conns.iter().map(|c| c.fd));
        for c in &self.containers {
            for p in std::iter::once(&c.init).chain(&c.execs) {
                v.extend(p.console);
            }
        }
        for p in &self.pumps {
            v.push(p.src);
            match p.sink {
                SinkRecord::Fifo { w, keep } => v.extend(std::iter::once(w).chain(keep)),
                SinkRecord::Pipe(fd) | SinkRecord::File(fd) | SinkRecord::Tty(fd) => v.push(fd),
            }
        }
        v.extend(self.ooms.iter().map(|o| o.fd));
        v.sort_unstable();
        v.dedup();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn process(console: Option<RawFd>) -> ProcessRecord {
        ProcessRecord {
            exec_id: String::new(),
            pid: Some(42),
            state: StateRecord::Stopped { status: 7, at: 9 },
            stdin: String::new(),
            stdout: "/fifo/out".into(),
            stderr: String::new(),
            terminal: console.is_some(),
            io_stdin: None,
            io_stdout: Some(1 << 20),
            io_stderr: None,
            console,
        }
    }

    #[test]
    fn the_record_names_every_fd_once_and_round_trips() {
        let r = Record {
            record_version: RECORD_VERSION,
            shim_version: "0.1.0".into(),
            namespace: "ns".into(),
            reply: Some(ReplyRecord {
                token: 16,
                stream_id: 3,
            }),
            requested_at: 1,
            committed_at: 2,
            fallback_exe: 5,
            listener: 3,
            conns: vec![ConnRecord {
                token: 16,
                fd: 7,
                inbuf: vec![1, 2],
                outbuf: vec![],
            }],
            next_conn: 17,
            waiters: vec![],
            containers: vec![ContainerRecord {
                id: "c".into(),
                bundle: "/b".into(),
                runtime: serde_json::from_str(
                    r#"{"binary":"runc","root":"/r","systemd_cgroup":false}"#,
                )
                .expect("a runtime config"),
                rootfs_mounted: true,
                kill_all_on_exit: false,
                restore_from: None,
                init: process(Some(8)),
                execs: vec![process(None)],
            }],
            pumps: vec![
                PumpRecord {
                    token: 1 << 20,
                    src: 9,
                    sink: SinkRecord::File(11),
                    pending: None,
                },
                PumpRecord {
                    token: (1 << 20) + 2,
                    src: 10,
                    sink: SinkRecord::File(11),
                    pending: None,
                },
                PumpRecord {
                    token: (1 << 20) + 4,
                    src: 12,
                    sink: SinkRecord::Fifo {
                        w: 13,
                        keep: Some(14),
                    },
                    pending: Some(b"x".to_vec()),
                },
            ],
            next_pump: (1 << 20) + 6,
            ooms: vec![OomRecord {
                token: 1 << 19,
                container: "c".into(),
                fd: 15,
                dir: "/sys/fs/cgroup/x".into(),
                v2_seen: Some(2),
            }],
            next_oom: (1 << 19) + 1,
        };
        assert_eq!(r.fds(), vec![3, 5, 7, 8, 9, 10, 11, 12, 13, 14, 15]);
        let back: Record =
            serde_json::from_slice(&serde_json::to_vec(&r).expect("encode")).expect("decode");
        assert_eq!(back.fds(), r.fds());
        assert!(matches!(
            back.containers[0].init.state,
            StateRecord::Stopped { status: 7, at: 9 }
        ));
        assert_eq!(back.pumps[2].pending.as_deref(), Some(&b"x"[..]));
    }
}
