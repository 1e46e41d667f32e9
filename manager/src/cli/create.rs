//! `tether create`: builds the spec (generated for `--rootfs`, or a bundle's) and creates the
//! container without starting it; `run` creates through the same request.

use super::client::{Client, CALL_TIMEOUT};
use super::parse_bytes;
use crate::bundle::{self, SpecOptions};
use crate::error::{Error, Result};
use clap::Args;
use std::path::{Path, PathBuf};
use tether_protocol::manager_api::manager as api;
use tether_protocol::{validate_id, validate_namespace};

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
    #[arg(long, default_value = crate::names::DEFAULT_RUNTIME)]
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

fn spec_json(ns: &str, a: &CreateArgs) -> Result<Vec<u8>> {
    let spec = match (&a.rootfs, &a.bundle) {
        (Some(rootfs), _) => {
            let args = if a.args.is_empty() {
                vec!["/bin/sh".to_string()]
            } else {
                a.args.clone()
            };
            bundle::generate(
                rootfs,
                &SpecOptions {
                    namespace: ns.to_string(),
                    id: a.id.clone(),
                    args,
                    env: a.env.clone(),
                    cwd: a.cwd.clone(),
                    terminal: a.tty,
                    memory: a.memory,
                    cpus: a.cpus,
                },
            )?
        }
        (None, Some(dir)) => {
            let mut spec = bundle::from_bundle(dir)?;
            if let Some(mut p) = spec.process().clone() {
                p.set_terminal(Some(a.tty));
                if !a.args.is_empty() {
                    p.set_args(Some(a.args.clone()));
                }
                spec.set_process(Some(p));
            }
            spec
        }
        (None, None) => {
            return Err(Error::InvalidArgument(
                "give --rootfs DIR or --bundle DIR".into(),
            ))
        }
    };
    bundle::check_root(&spec)?;
    serde_json::to_vec(&spec)
        .map_err(|e| Error::InvalidArgument(format!("cannot encode the spec: {e}")))
}

pub(super) fn create_request(
    ns: &str,
    a: &CreateArgs,
    stdio: Option<api::Stdio>,
) -> Result<api::CreateRequest> {
    validate_namespace(ns)?;
    validate_id(&a.id)?;
    crate::names::binary_name(&a.runtime)?;
    Ok(api::CreateRequest {
        namespace: ns.to_string(),
        id: a.id.clone(),
        runtime: a.runtime.clone(),
        spec: spec_json(ns, a)?,
        open_stdin: a.interactive && stdio.is_none(),
        stdio: stdio.into(),
        ..Default::default()
    })
}

pub(super) fn create(socket: &Path, ns: &str, a: &CreateArgs) -> Result<i32> {
    let req = create_request(ns, a, None)?;
    let client = Client::connect(socket)?;
    let c = client.call(CALL_TIMEOUT, |m, ctx| m.create(ctx, &req))?;
    if a.json {
        println!("{}", crate::output::container_json(&c));
    } else {
        println!("{}", c.pid);
    }
    Ok(0)
}
