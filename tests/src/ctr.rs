//! Driving a containerd with its own CLI, `ctr --address A -n NS ...`, with a deadline on every
//! call.
//!
//! Quirks of ctr 1.6 worth knowing:
//! - `ctr run --rootfs DIR` generates a spec with no `PATH`: give commands as absolute paths.
//! - Flags go before the positional arguments (`ctr run [flags] IMAGE|DIR ID [CMD...]`);
//!   arguments after the id belong to the command, even when they look like flags.
//! - `ctr run --rm` exits with the container's exit status.

use crate::cmd::{self, CmdOutput, TimedOut};
use crate::events::Events;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The `ctr` of the containerd under test (see [`crate::flavor`]).
pub fn ctr_binary() -> &'static Path {
    &crate::flavor::flavor().ctr
}
/// The default deadline of one ctr call.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(20);

/// `ctr` bound to one daemon address and namespace.
#[derive(Debug, Clone)]
pub struct Ctr {
    address: PathBuf,
    namespace: String,
    timeout: Duration,
}

/// One row of `ctr task ls`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRow {
    pub id: String,
    pub pid: u32,
    /// `CREATED`, `RUNNING`, `STOPPED`, `PAUSED`, `UNKNOWN`, ...
    pub status: String,
}

impl Ctr {
    pub fn new(address: impl Into<PathBuf>, namespace: &str) -> Ctr {
        Ctr {
            address: address.into(),
            namespace: namespace.to_string(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// The same, with another deadline per call.
    pub fn with_timeout(mut self, timeout: Duration) -> Ctr {
        self.timeout = timeout;
        self
    }

    pub fn address(&self) -> &Path {
        &self.address
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// `ctr --address A -n NS ARGS...`, not started: for callers that need their own handling.
    pub fn command<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Command {
        let mut c = Command::new(ctr_binary());
        c.arg("--address")
            .arg(&self.address)
            .arg("-n")
            .arg(&self.namespace)
            .args(args);
        c
    }

    /// Runs `ctr ... ARGS`; returns whatever it said, or the timeout.
    pub fn try_call<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Result<CmdOutput, TimedOut> {
        cmd::try_run(&mut self.command(args), None, self.timeout)
    }

    /// Runs `ctr ... ARGS`; returns whatever it said, panics on timeout (with the output so far).
    pub fn call<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> CmdOutput {
        cmd::run(&mut self.command(args), None, self.timeout)
    }

    /// Runs `ctr ... ARGS` with `stdin`; panics on timeout.
    pub fn call_with_stdin<S: AsRef<std::ffi::OsStr>>(
        &self,
        args: &[S],
        stdin: &[u8],
    ) -> CmdOutput {
        cmd::run(&mut self.command(args), Some(stdin), self.timeout)
    }

    /// Runs `ctr ... ARGS` and panics unless it exits 0.
    pub fn call_ok<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> CmdOutput {
        let out = self.call(args);
        assert!(
            out.success(),
            "`{}` failed: {out}",
            cmd::describe(&self.command(args))
        );
        out
    }

    /// A `ctr run` of container `id`, to configure then run.
    pub fn run(&self, id: &str) -> Run<'_> {
        Run {
            ctr: self,
            id: id.to_string(),
            runtime: None,
            source: None,
            rm: false,
            detach: false,
            flags: Vec::new(),
            args: Vec::new(),
            stdin: None,
            timeout: None,
        }
    }

    /// `ctr run --rm --runtime R --rootfs DIR ID CMD...`; returns what it said (panics on timeout).
    pub fn run_rm_rootfs(&self, runtime: &str, rootfs: &Path, id: &str, cmd: &[&str]) -> CmdOutput {
        self.run(id)
            .runtime(runtime)
            .rootfs(rootfs)
            .rm()
            .args(cmd)
            .output()
    }

    /// `ctr run -d --runtime R --rootfs DIR ID CMD...`; panics unless it succeeds.
    pub fn run_detached_rootfs(&self, runtime: &str, rootfs: &Path, id: &str, cmd: &[&str]) {
        self.run(id)
            .runtime(runtime)
            .rootfs(rootfs)
            .detach()
            .args(cmd)
            .success();
    }

    /// `ctr image import FILE`; panics unless it succeeds.
    pub fn image_import(&self, tarball: &Path) -> CmdOutput {
        self.call_ok(&[Path::new("image"), Path::new("import"), tarball])
    }

    /// `ctr image ls -q`: the image names.
    pub fn images(&self) -> Vec<String> {
        lines(&self.call_ok(&["image", "ls", "-q"]).stdout)
    }

    /// `ctr task ls`, parsed.
    pub fn tasks(&self) -> Vec<TaskRow> {
        parse_task_ls(&self.call_ok(&["task", "ls"]).stdout)
    }

    /// The `ctr task ls` row of `id`, if it has a task.
    pub fn task(&self, id: &str) -> Option<TaskRow> {
        self.tasks().into_iter().find(|t| t.id == id)
    }

    /// `ctr task kill -s SIGNAL ID` (signal as `SIGTERM`, `KILL`, `9`, ...).
    pub fn task_kill(&self, id: &str, signal: &str) -> CmdOutput {
        self.call(&["task", "kill", "-s", signal, id])
    }

    /// `ctr task delete ID`.
    pub fn task_delete(&self, id: &str) -> CmdOutput {
        self.call(&["task", "delete", id])
    }

    /// `ctr task delete ID` and the exit status it reports; panics unless the delete succeeds.
    /// ctr 1.6 exits 0 whatever the status and only warns
    /// `task ID exit with non-zero exit code N` on stderr.
    pub fn task_delete_status(&self, id: &str) -> u32 {
        let out = self.task_delete(id);
        assert!(out.success(), "`ctr task delete {id}` failed: {out}");
        parse_delete_status(&out.stderr)
            .unwrap_or_else(|| panic!("`ctr task delete {id}`: unreadable status: {out}"))
    }

    /// `ctr task delete --force ID`: kills the task first if it runs.
    pub fn task_delete_force(&self, id: &str) -> CmdOutput {
        self.call(&["task", "delete", "--force", id])
    }

    /// `ctr task ps ID`: the host pids of the task's processes; panics unless it succeeds.
    pub fn task_ps(&self, id: &str) -> Vec<u32> {
        parse_task_ps(&self.call_ok(&["task", "ps", id]).stdout)
    }

    /// `ctr container delete ID`.
    pub fn container_delete(&self, id: &str) -> CmdOutput {
        self.call(&["container", "delete", id])
    }

    /// `ctr container ls -q`: the container ids.
    pub fn containers(&self) -> Vec<String> {
        lines(&self.call_ok(&["container", "ls", "-q"]).stdout)
    }

    /// `ctr events` of the whole daemon, streamed in the background; see [`Events`].
    pub fn events(&self) -> Events {
        Events::start(self)
    }
}

/// Where `ctr run` takes the container's root filesystem from.
#[derive(Debug, Clone)]
enum Source {
    Rootfs(PathBuf),
    Image(String),
}

/// A `ctr run` being configured; [`Run::output`] or [`Run::success`] runs it.
#[derive(Debug, Clone)]
pub struct Run<'a> {
    ctr: &'a Ctr,
    id: String,
    runtime: Option<String>,
    source: Option<Source>,
    rm: bool,
    detach: bool,
    flags: Vec<String>,
    args: Vec<String>,
    stdin: Option<Vec<u8>>,
    timeout: Option<Duration>,
}

impl<'a> Run<'a> {
    /// `--runtime R` (ctr's default is `io.containerd.runc.v2`).
    pub fn runtime(mut self, runtime: &str) -> Self {
        self.runtime = Some(runtime.to_string());
        self
    }

    /// `--rootfs DIR`: no image at all.
    pub fn rootfs(mut self, dir: &Path) -> Self {
        self.source = Some(Source::Rootfs(dir.to_path_buf()));
        self
    }

    /// An imported image by reference.
    pub fn image(mut self, reference: &str) -> Self {
        self.source = Some(Source::Image(reference.to_string()));
        self
    }

    /// `--rm`: delete the container when it exits (ctr waits for it).
    pub fn rm(mut self) -> Self {
        self.rm = true;
        self
    }

    /// `-d`: start it and return.
    pub fn detach(mut self) -> Self {
        self.detach = true;
        self
    }

    /// Any other ctr run flag (`--read-only`, `--tty`, `--env`, `--snapshotter`...).
    pub fn flag(mut self, flag: &str) -> Self {
        self.flags.push(flag.to_string());
        self
    }

    /// The command and its arguments (default: the image's `Cmd`).
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// Bytes for ctr's stdin (default /dev/null).
    pub fn stdin(mut self, data: &[u8]) -> Self {
        self.stdin = Some(data.to_vec());
        self
    }

    /// Another deadline than the [`Ctr`]'s.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The ctr arguments after `--address A -n NS`.
    pub fn to_args(&self) -> Vec<String> {
        let mut a = vec!["run".to_string()];
        if self.rm {
            a.push("--rm".into());
        }
        if self.detach {
            a.push("-d".into());
        }
        if let Some(r) = &self.runtime {
            a.extend(["--runtime".into(), r.clone()]);
        }
        a.extend(self.flags.iter().cloned());
        match &self.source {
            Some(Source::Rootfs(dir)) => {
                a.push("--rootfs".into());
                a.push(dir.display().to_string());
            }
            Some(Source::Image(r)) => a.push(r.clone()),
            None => panic!("ctr run {}: set .rootfs(DIR) or .image(REF)", self.id),
        }
        a.push(self.id.clone());
        a.extend(self.args.iter().cloned());
        a
    }

    /// Runs it; returns what ctr said (panics only on timeout).
    pub fn output(self) -> CmdOutput {
        let mut c = self.ctr.command(&self.to_args());
        cmd::run(
            &mut c,
            self.stdin.as_deref(),
            self.timeout.unwrap_or(self.ctr.timeout),
        )
    }

    /// Runs it; panics unless ctr exits 0.
    pub fn success(self) -> CmdOutput {
        let what = self.to_args().join(" ");
        let out = self.output();
        assert!(out.success(), "`ctr {what}` failed: {out}");
        out
    }
}

fn lines(s: &str) -> Vec<String> {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

/// Parses `ctr task ls` (`TASK PID STATUS` header, then one row per task).
pub fn parse_task_ls(out: &str) -> Vec<TaskRow> {
    out.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (id, pid, status) = (f.next()?, f.next()?, f.next()?);
            Some(TaskRow {
                id: id.to_string(),
                pid: pid.parse().ok()?,
                status: status.to_string(),
            })
        })
        .collect()
}

/// The exit status in what `ctr task delete` wrote on stderr: the `N` of
/// `... exit with non-zero exit code N`, or 0 when it warned of nothing.
pub fn parse_delete_status(stderr: &str) -> Option<u32> {
    const MARK: &str = "exit with non-zero exit code ";
    match stderr.find(MARK) {
        None => Some(0),
        Some(at) => stderr[at + MARK.len()..]
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok(),
    }
}

/// Parses `ctr task ps` (`PID INFO` header, then one pid per row).
pub fn parse_task_ps(out: &str) -> Vec<u32> {
    out.lines()
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_task_ls() {
        let out = "TASK    PID     STATUS    \nc1      1234    RUNNING\nc2      0       STOPPED\n";
        assert_eq!(
            parse_task_ls(out),
            vec![
                TaskRow {
                    id: "c1".into(),
                    pid: 1234,
                    status: "RUNNING".into()
                },
                TaskRow {
                    id: "c2".into(),
                    pid: 0,
                    status: "STOPPED".into()
                },
            ]
        );
        assert!(parse_task_ls("TASK    PID     STATUS    \n").is_empty());
    }

    #[test]
    fn parses_task_delete_status() {
        let warn = "time=\"2026-11-23T16:17:14Z\" level=warning msg=\"task c1 exit with non-zero exit code 137\"\n";
        assert_eq!(parse_delete_status(warn), Some(137));
        assert_eq!(parse_delete_status(""), Some(0));
    }

    #[test]
    fn parses_task_ps() {
        assert_eq!(
            parse_task_ps("PID     INFO\n4242    -\n4243    -\n"),
            vec![4242, 4243]
        );
    }

    #[test]
    fn run_args_put_flags_before_positionals() {
        let ctr = Ctr::new("/a/c.sock", "ns");
        let args = ctr
            .run("c1")
            .runtime("io.containerd.runc.v2")
            .rootfs(Path::new("/r"))
            .rm()
            .flag("--read-only")
            .args(&["/bin/sh", "-c", "echo hi"])
            .to_args();
        assert_eq!(
            args,
            [
                "run",
                "--rm",
                "--runtime",
                "io.containerd.runc.v2",
                "--read-only",
                "--rootfs",
                "/r",
                "c1",
                "/bin/sh",
                "-c",
                "echo hi"
            ]
        );
        let cmd = ctr.command(&["version"]);
        assert_eq!(
            cmd::describe(&cmd),
            format!(
                "{} --address /a/c.sock -n ns version",
                ctr_binary().display()
            )
        );
    }
}
