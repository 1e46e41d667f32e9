//! OCI specs for `tether run/create`: generated for `--rootfs DIR`, or read from `--bundle DIR`.

use crate::error::{Error, Result};
use oci_spec::runtime::{
    get_default_mounts, LinuxCpuBuilder, LinuxMemoryBuilder, LinuxNamespaceBuilder,
    LinuxNamespaceType, LinuxResourcesBuilder, Process, Spec,
};
use std::path::{Path, PathBuf};

/// The `PATH` of generated specs.
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// The CFS period `--cpus` quotas are counted in (microseconds).
pub const CPU_PERIOD: u64 = 100_000;

/// What a generated spec runs and with what limits.
#[derive(Debug, Clone, Default)]
pub struct SpecOptions {
    pub namespace: String,
    pub id: String,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: Option<String>,
    pub terminal: bool,
    pub memory: Option<i64>,
    pub cpus: Option<f64>,
}

fn invalid(e: impl std::fmt::Display) -> Error {
    Error::InvalidArgument(format!("cannot build the OCI spec: {e}"))
}

/// The process part of a spec: args, `PATH` plus `env`, cwd, terminal.
pub fn process(
    args: &[String],
    env: &[String],
    cwd: Option<&str>,
    terminal: bool,
) -> Result<Process> {
    for kv in env {
        if !kv.contains('=') || kv.starts_with('=') {
            return Err(Error::InvalidArgument(format!(
                "invalid --env {kv:?}: expected KEY=VALUE"
            )));
        }
    }
    if args.is_empty() {
        return Err(Error::InvalidArgument(
            "no command given (add `-- CMD ARGS...`)".into(),
        ));
    }
    let mut p = Process::default();
    let mut all_env = vec![DEFAULT_PATH.to_string()];
    if terminal {
        all_env.push("TERM=xterm".into());
    }
    // Later entries win in runc, so the user's PATH or TERM replaces ours.
    all_env.extend(env.iter().cloned());
    p.set_args(Some(args.to_vec()))
        .set_env(Some(all_env))
        .set_cwd(PathBuf::from(cwd.unwrap_or("/")))
        .set_terminal(Some(terminal));
    Ok(p)
}

/// A spec for a container whose root filesystem is the directory `rootfs`.
pub fn generate(rootfs: &Path, opts: &SpecOptions) -> Result<Spec> {
    let rootfs = absolute_dir(rootfs, "rootfs")?;
    let mut spec = Spec::default();
    spec.set_process(Some(process(
        &opts.args,
        &opts.env,
        opts.cwd.as_deref(),
        opts.terminal,
    )?));
    let mut root = spec.root().clone().unwrap_or_default();
    root.set_path(rootfs).set_readonly(Some(false));
    spec.set_root(Some(root));
    spec.set_hostname(Some(opts.id.clone()));
    let mounts = get_default_mounts()
        .into_iter()
        .filter(|m| m.destination() != Path::new("/sys/fs/cgroup"))
        .collect();
    spec.set_mounts(Some(mounts));
    let namespaces = [
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Network,
    ]
    .into_iter()
    .map(|t| {
        LinuxNamespaceBuilder::default()
            .typ(t)
            .build()
            .map_err(invalid)
    })
    .collect::<Result<Vec<_>>>()?;
    let mut linux = spec.linux().clone().unwrap_or_default();
    linux
        .set_namespaces(Some(namespaces))
        .set_cgroups_path(Some(PathBuf::from(format!(
            "/{}/{}",
            opts.namespace, opts.id
        ))));
    let mut resources = LinuxResourcesBuilder::default();
    if let Some(bytes) = opts.memory {
        if bytes <= 0 {
            return Err(Error::InvalidArgument(format!(
                "invalid --memory {bytes}: must be positive"
            )));
        }
        resources = resources.memory(
            LinuxMemoryBuilder::default()
                .limit(bytes)
                .build()
                .map_err(invalid)?,
        );
    }
    if let Some(cpus) = opts.cpus {
        if !(cpus.is_finite() && cpus > 0.0) {
            return Err(Error::InvalidArgument(format!(
                "invalid --cpus {cpus}: must be positive"
            )));
        }
        let quota = (cpus * CPU_PERIOD as f64).round() as i64;
        resources = resources.cpu(
            LinuxCpuBuilder::default()
                .quota(quota.max(1000))
                .period(CPU_PERIOD)
                .build()
                .map_err(invalid)?,
        );
    }
    linux.set_resources(Some(resources.build().map_err(invalid)?));
    spec.set_linux(Some(linux));
    Ok(spec)
}

/// The spec of an existing bundle, with a relative `root.path` made absolute.
pub fn from_bundle(bundle: &Path) -> Result<Spec> {
    let bundle = absolute_dir(bundle, "bundle")?;
    let config = bundle.join("config.json");
    if !config.is_file() {
        return Err(Error::InvalidArgument(format!(
            "bundle {} has no config.json",
            bundle.display()
        )));
    }
    let mut spec = Spec::load(&config).map_err(|e| {
        Error::InvalidArgument(format!("{}: not a valid OCI spec: {e}", config.display()))
    })?;
    if let Some(mut root) = spec.root().clone() {
        let abs = bundle.join(root.path());
        // runc refuses a rootfs behind a symlink: resolve it (when it exists; check_root
        // reports it otherwise).
        root.set_path(std::fs::canonicalize(&abs).unwrap_or(abs));
        spec.set_root(Some(root));
    }
    Ok(spec)
}

/// Checks that a spec's root filesystem is an existing directory (given as an absolute path).
pub fn check_root(spec: &Spec) -> Result<()> {
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| Error::InvalidArgument("the OCI spec has no root".into()))?;
    if !root.path().is_absolute() {
        return Err(Error::InvalidArgument(format!(
            "the spec's root.path {} is not absolute",
            root.path().display()
        )));
    }
    if !root.path().is_dir() {
        return Err(Error::InvalidArgument(format!(
            "rootfs {} does not exist or is not a directory",
            root.path().display()
        )));
    }
    Ok(())
}

fn absolute_dir(dir: &Path, what: &str) -> Result<PathBuf> {
    let abs = std::path::absolute(dir).map_err(Error::io(format!("{what} {}", dir.display())))?;
    if !abs.is_dir() {
        return Err(Error::InvalidArgument(format!(
            "{what} {} does not exist or is not a directory",
            dir.display()
        )));
    }
    // runc refuses a rootfs reached through a symlink.
    std::fs::canonicalize(&abs).map_err(Error::io(format!("resolve {what} {}", dir.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_spec_has_path_limits_and_namespaces() {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = SpecOptions {
            namespace: "ns".into(),
            id: "c1".into(),
            args: vec!["echo".into(), "hi".into()],
            env: vec!["A=b".into()],
            cwd: Some("/tmp".into()),
            terminal: false,
            memory: Some(64 << 20),
            cpus: Some(0.5),
        };
        let spec = generate(dir.path(), &opts).expect("spec");
        let json = serde_json::to_value(&spec).expect("json");
        let env = json["process"]["env"].as_array().expect("env");
        assert!(env
            .iter()
            .any(|e| e.as_str().is_some_and(|e| e.starts_with("PATH=/"))));
        assert!(env.iter().any(|e| e == "A=b"));
        assert_eq!(json["process"]["cwd"], "/tmp");
        assert_eq!(json["root"]["readonly"], false);
        assert_eq!(json["root"]["path"], dir.path().display().to_string());
        assert_eq!(json["linux"]["resources"]["memory"]["limit"], 64 << 20);
        assert_eq!(json["linux"]["resources"]["cpu"]["quota"], 50_000);
        assert_eq!(json["linux"]["cgroupsPath"], "/ns/c1");
        let ns: Vec<&str> = json["linux"]["namespaces"]
            .as_array()
            .expect("namespaces")
            .iter()
            .filter_map(|n| n["type"].as_str())
            .collect();
        assert_eq!(ns, ["pid", "ipc", "uts", "mount", "network"]);
        let mounts: Vec<&str> = json["mounts"]
            .as_array()
            .expect("mounts")
            .iter()
            .filter_map(|m| m["destination"].as_str())
            .collect();
        assert_eq!(
            mounts,
            [
                "/proc",
                "/dev",
                "/dev/pts",
                "/dev/shm",
                "/dev/mqueue",
                "/sys"
            ]
        );
        check_root(&spec).expect("root exists");
    }

    #[test]
    fn bad_inputs_are_clear() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = from_bundle(dir.path()).expect_err("no config.json");
        assert!(e.to_string().ends_with("has no config.json"), "{e}");
        let e = generate(&dir.path().join("nope"), &SpecOptions::default()).expect_err("missing");
        assert!(e.to_string().contains("does not exist"), "{e}");
        let e = process(&["x".into()], &["NOEQUALS".into()], None, false).expect_err("env");
        assert!(e.to_string().contains("KEY=VALUE"), "{e}");
    }
}
