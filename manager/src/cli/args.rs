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
    #[arg(long, global = true, env = "TETHER_SOCKET", default_value = crate::names::DEFAULT_SOCKET)]
    pub socket: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon that launches shims and serves the CLI.
    Daemon(DaemonArgs),
    /// Create and start a container, attached to its stdio unless -d.
    Run(super::run::RunArgs),
    /// Create a container without starting it (no stdio attached).
    Create(super::create::CreateArgs),
    /// Start a created container.
    Start(IdArg),
    /// Run another process in a running container.
    Exec(super::exec::ExecArgs),
    /// Send a signal to a container's process (or all of its processes).
    Kill(super::kill::KillArgs),
    /// Wait for a process to exit; prints and exits with its status.
    Wait(super::wait::WaitArgs),
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
    Update(super::update::UpdateArgs),
    /// Show a container's resource usage.
    Stats(IdJson),
    /// Delete a container (its task, shim and bundle).
    #[command(visible_alias = "rm")]
    Delete(super::delete::DeleteArgs),
    /// Stream events, optionally filtered: 'topic~=/tasks/.+,namespace==bb' (',' is AND;
    /// several filters are OR; operators ==, != and ~= (regular expression)).
    Events(super::events::EventsArgs),
    /// Stream a running container's output from now on (and feed its stdin with --stdin)
    /// until it exits; exits with its status. Ctrl-C is forwarded to the container unless
    /// --sig-proxy=false (then it detaches); with a terminal and --stdin, Ctrl-P Ctrl-Q
    /// detaches. Detaching leaves the container running.
    Attach(super::attach::AttachArgs),
    /// Print a detached container's output (stdout to stdout, stderr to stderr), kept in
    /// CRI's log format in its directory, rotated at the daemon's --log-max-size.
    Logs(super::logs::LogsArgs),
    /// Dump a container with CRIU into an archive (CRI's layout); it exits unless
    /// --leave-running.
    Checkpoint(super::checkpoint::CheckpointArgs),
    /// Create and start a container from a `tether checkpoint --export` archive.
    Restore(super::restore::RestoreArgs),
    /// Move running shims to the binary now installed at their path, in place: containers keep
    /// running, their shims keep their pids. No ids: every running shim of the daemon (of
    /// every namespace unless --namespace is given; another runtime's shims are skipped).
    /// Prints one line per shim; exits 1 if any was refused.
    Upgrade(super::upgrade::UpgradeArgs),
}

#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// Persistent state.
    #[arg(long, default_value = crate::names::DEFAULT_ROOT)]
    pub root: PathBuf,
    /// Runtime state: one directory (and bundle) per namespace/container.
    #[arg(long, default_value = crate::names::DEFAULT_STATE)]
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
