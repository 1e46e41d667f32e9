//! The command line: `tether [--namespace NS] [--socket PATH] COMMAND ...`.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "tether",
    version,
    about = "Run containers through containerd runtime v2 shims, without containerd",
    after_help = "Start the daemon first (`tether daemon`), then e.g.\n  tether run --rm --rootfs ./rootfs c1 -- /bin/echo hello"
)]
pub struct Cli {
    /// The namespace containers live in [default: default]; `events` shows every namespace
    /// unless one is named.
    #[arg(long, short = 'n', global = true)]
    pub namespace: Option<String>,
    /// The daemon's socket.
    #[arg(long, global = true, env = "TETHER_SOCKET", default_value = crate::daemon::DEFAULT_SOCKET)]
    pub socket: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon that launches shims and serves the CLI.
    Daemon(DaemonArgs),
    /// Create and start a container, attached to its stdio unless -d.
    Run(RunArgs),
    /// Create a container without starting it (no stdio attached).
    Create(CreateArgs),
    /// Start a created container.
    Start(IdArg),
    /// Run another process in a running container.
    Exec(ExecArgs),
    /// Send a signal to a container's process (or all of its processes).
    Kill(KillArgs),
    /// Wait for a process to exit; prints and exits with its status.
    Wait(WaitArgs),
    /// List containers.
    #[command(visible_alias = "list", visible_alias = "ls")]
    Ps(JsonArg),
    /// Show one container.
    State(IdJson),
    /// Freeze every process of a container.
    Pause(IdArg),
    /// Thaw a paused container.
    Resume(IdArg),
    /// Change a running container's resource limits.
    Update(UpdateArgs),
    /// Show a container's resource usage.
    Stats(IdJson),
    /// Delete a container (its task, shim and bundle).
    #[command(visible_alias = "rm")]
    Delete(DeleteArgs),
    /// Stream events, optionally filtered: 'topic~=/tasks/.+,namespace==bb' (',' is AND;
    /// several filters are OR; operators ==, != and ~= (regular expression)).
    Events(EventsArgs),
    /// Stream a running container's output from now on (and feed its stdin with --stdin)
    /// until it exits; exits with its status. Ctrl-C is forwarded to the container unless
    /// --sig-proxy=false (then it detaches); with a terminal and --stdin, Ctrl-P Ctrl-Q
    /// detaches. Detaching leaves the container running.
    Attach(AttachArgs),
    /// Print a detached container's output (stdout to stdout, stderr to stderr), kept in
    /// CRI's log format in its directory, rotated at the daemon's --log-max-size.
    Logs(LogsArgs),
    /// Dump a container with CRIU into an archive (CRI's layout); it exits unless
    /// --leave-running.
    Checkpoint(crate::cpcli::CheckpointArgs),
    /// Create and start a container from a `tether checkpoint --export` archive.
    Restore(crate::cpcli::RestoreArgs),
    /// Move running shims to the binary now installed at their path, in place: containers keep
    /// running, their shims keep their pids. No ids: every running shim of the daemon (of
    /// every namespace unless --namespace is given; another runtime's shims are skipped).
    /// Prints one line per shim; exits 1 if any was refused.
    Upgrade(crate::upgrade_cmd::UpgradeArgs),
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    pub id: String,
    /// Keep printing new output until the container's output ends.
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Only the last N lines (of stdout and stderr together).
    #[arg(long)]
    pub tail: Option<usize>,
    /// Only lines since an RFC 3339 time (2026-01-02T15:04:05Z) or a duration ago (10m, 1h30m).
    #[arg(long)]
    pub since: Option<String>,
    /// Start each line with the time it arrived (RFC 3339, nanoseconds).
    #[arg(long, short = 't')]
    pub timestamps: bool,
}

#[derive(Debug, Args)]
pub struct AttachArgs {
    pub id: String,
    /// Also copy our stdin to the container's (it must have been created with -i). The end
    /// of our stdin does not close the container's: it stays open for the next attach.
    #[arg(long)]
    pub stdin: bool,
    /// Forward SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 to the container (not
    /// with a terminal, where Ctrl-C is a key). With --sig-proxy=false they detach instead.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub sig_proxy: bool,
}

#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// Persistent state.
    #[arg(long, default_value = crate::daemon::DEFAULT_ROOT)]
    pub root: PathBuf,
    /// Runtime state: one directory (and bundle) per namespace/container.
    #[arg(long, default_value = crate::daemon::DEFAULT_STATE)]
    pub state: PathBuf,
    /// Start shims with -debug and log at debug level.
    #[arg(long)]
    pub debug: bool,
    /// A detached container's log file is rotated when it would pass this many bytes.
    #[arg(long, default_value_t = 10 * 1024 * 1024)]
    pub log_max_size: u64,
    /// How many log files a container keeps (the current one and rotated ones).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub log_max_files: u32,
    /// The CRIU shims use for checkpoint and restore (at least 3.16).
    #[arg(long, value_name = "PATH", default_value = "criu")]
    pub criu: PathBuf,
}

#[derive(Debug, Args)]
pub struct IdArg {
    pub id: String,
}

#[derive(Debug, Args)]
pub struct JsonArg {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct IdJson {
    pub id: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args, Clone)]
pub struct CreateArgs {
    /// Allocate a terminal for the container's process.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Keep the container's stdin open (with -d or create) for `tether attach --stdin`.
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// A root filesystem directory; a default OCI spec is generated for it.
    #[arg(
        long,
        value_name = "DIR",
        conflicts_with = "bundle",
        required_unless_present = "bundle"
    )]
    pub rootfs: Option<PathBuf>,
    /// An OCI bundle directory holding config.json.
    #[arg(long, value_name = "DIR")]
    pub bundle: Option<PathBuf>,
    /// The runtime (shim) to use: io.containerd.X.v2 runs containerd-shim-X-v2.
    #[arg(long, default_value = crate::launcher::DEFAULT_RUNTIME)]
    pub runtime: String,
    /// Environment variables for the process (with --rootfs).
    #[arg(long = "env", short = 'e', value_name = "K=V")]
    pub env: Vec<String>,
    /// Working directory of the process (with --rootfs).
    #[arg(long, value_name = "DIR")]
    pub cwd: Option<String>,
    /// Memory limit in bytes (suffixes k, m, g allowed).
    #[arg(long, value_name = "BYTES", value_parser = parse_bytes)]
    pub memory: Option<i64>,
    /// CPU limit in CPUs (e.g. 0.5).
    #[arg(long, value_name = "N")]
    pub cpus: Option<f64>,
    /// Print the container as JSON.
    #[arg(long)]
    pub json: bool,
    /// The container id.
    pub id: String,
    /// The command and its arguments (with --rootfs; default /bin/sh).
    #[arg(last = true, value_name = "CMD")]
    pub args: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Delete the container when it exits.
    #[arg(long, conflicts_with = "detach")]
    pub rm: bool,
    /// Do not attach: print the container's pid and return.
    #[arg(short = 'd', long)]
    pub detach: bool,
    #[command(flatten)]
    pub create: CreateArgs,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Do not attach: print the process's pid (and, on the next line, the exec id made up
    /// when none was given) and return.
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Allocate a terminal for the process.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// The id of the new process; a unique one is made up when it is not given.
    #[arg(long, value_name = "EID")]
    pub exec_id: Option<String>,
    #[arg(long = "env", short = 'e', value_name = "K=V")]
    pub env: Vec<String>,
    #[arg(long, value_name = "DIR")]
    pub cwd: Option<String>,
    pub id: String,
    #[arg(last = true, required = true, value_name = "CMD")]
    pub args: Vec<String>,
}

#[derive(Debug, Args)]
pub struct KillArgs {
    /// The signal, by name (TERM, SIGKILL) or number.
    #[arg(short = 's', long, default_value = "TERM")]
    pub signal: String,
    /// Signal every process of the container.
    #[arg(long)]
    pub all: bool,
    /// Signal this exec instead of the init process.
    #[arg(long, value_name = "EID", default_value = "")]
    pub exec_id: String,
    pub id: String,
}

#[derive(Debug, Args)]
pub struct WaitArgs {
    pub id: String,
    #[arg(long, value_name = "EID", default_value = "")]
    pub exec_id: String,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct UpdateArgs {
    #[arg(long, value_name = "BYTES", value_parser = parse_bytes)]
    pub memory: Option<i64>,
    #[arg(long, value_name = "N")]
    pub cpus: Option<f64>,
    pub id: String,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// Kill the container first if it is still running.
    #[arg(short = 'f', long)]
    pub force: bool,
    pub id: String,
}

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// One JSON object per line.
    #[arg(long)]
    pub json: bool,
    /// Start after this sequence number (from the daemon's in-memory buffer) instead of now.
    #[arg(long, value_name = "SEQ")]
    pub since: Option<u64>,
    /// Filters (containerd syntax); an event is shown if any matches.
    pub filters: Vec<String>,
}

/// `1024`, `64k`, `512m`, `1g` (powers of 1024).
pub fn parse_bytes(s: &str) -> Result<i64, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let mult = match c.to_ascii_lowercase() {
                'b' => 1,
                'k' => 1 << 10,
                'm' => 1 << 20,
                'g' => 1 << 30,
                _ => return Err(format!("unknown size suffix {c:?} (use k, m or g)")),
            };
            (&t[..i], mult)
        }
        _ => (t, 1),
    };
    let n: i64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size in bytes"))?;
    n.checked_mul(mult)
        .filter(|v| *v > 0)
        .ok_or_else(|| format!("{s:?} is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("1024"), Ok(1024));
        assert_eq!(parse_bytes("64m"), Ok(64 << 20));
        assert_eq!(parse_bytes("1G"), Ok(1 << 30));
        assert!(parse_bytes("x").is_err());
        assert!(parse_bytes("-5").is_err());
    }

    #[test]
    fn run_takes_a_command_after_dashes() {
        let cli = Cli::try_parse_from([
            "tether", "run", "--rm", "--rootfs", "/r", "c1", "--", "echo", "-n", "hi",
        ])
        .expect("parses");
        let Command::Run(r) = cli.command else {
            panic!("not run")
        };
        assert!(r.rm);
        assert_eq!(r.create.args, ["echo", "-n", "hi"]);
        assert_eq!(r.create.id, "c1");
    }
}
