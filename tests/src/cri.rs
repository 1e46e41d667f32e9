//! containerd's CRI plugin, driven as the kubelet drives it: a private containerd with CRI on,
//! a CRI client, pods and containers, and a check that nothing is left once they are removed.
//!
//! [`Cri::start`] starts a [`Containerd`] whose config enables the CRI plugin ([`CriConfig`], in
//! the config version of the containerd under test: 2 for 1.6/1.7, 3 for 2.x):
//! - the sandbox image is our own pause image ([`crate::pause`]), and the busybox image is the
//!   containers' image; both are built offline and imported with `ctr -n k8s.io images import`;
//! - runtime handlers `runc` (containerd's shim, to prove each test right) and `tether`, whose
//!   table is read from `deploy/containerd/tether-v2.toml` (containerd 1.x) or
//!   `tether-v3.toml` (2.x), the drop-ins operators use;
//! - `restrict_oom_score_adj = true`: root here lacks CAP_SYS_RESOURCE;
//! - pods use the host's network namespace (`NamespaceMode::Node`), which needs no CNI plugin;
//!   the CNI directories point into the private directory so nothing of the host is read;
//! - the stream server listens on port 0 (any free port): parallel instances would otherwise
//!   fight for 10010;
//! - the plugin's own root and state live under the containerd's private `root/` and `state/`.
//!
//! Every pod gets the cgroup parent `/<unique>` of its [`Cri`] (otherwise the plugin uses
//! `/k8s.io/<id>`, shared by every test), removed when the [`Cri`] is dropped. Container logs go
//! to `<private dir>/pods/`.

pub mod client;
pub mod log;

use crate::containerd::{Containerd, LeakCheck, Options};
use crate::flavor::{flavor, Version};
use crate::ids::unique_id;
use crate::image::{busybox_image, BUSYBOX_IMAGE};
use crate::pause::{pause_image, PAUSE_IMAGE};
use crate::{cgroups, mounts, procs, shim, wait};
use api::{
    ContainerConfig, ContainerMetadata, ContainerState, ContainerStatus, ImageSpec,
    LinuxContainerConfig, LinuxContainerResources, LinuxContainerSecurityContext,
    LinuxPodSandboxConfig, LinuxSandboxSecurityContext, NamespaceMode, NamespaceOption,
    PodSandboxConfig, PodSandboxMetadata,
};
pub use client::CriClient;
pub use k8s_cri::v1 as api;
use std::cell::RefCell;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The containerd namespace the CRI plugin keeps its containers and images in.
pub const CRI_NAMESPACE: &str = "k8s.io";
/// containerd's own shim, as a CRI runtime handler.
pub const RUNC_HANDLER: &str = "runc";
/// Our shim, as a CRI runtime handler (the RuntimeClass `handler` in `deploy/`).
pub const TETHER_HANDLER: &str = "tether";
/// How long a test waits for a pod or container to change state.
pub const STATE_TIMEOUT: Duration = Duration::from_secs(30);

/// The repository's `deploy/` directory.
pub fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// The containerd 1.6/1.7 (config version 2) drop-in that registers the `tether` handler.
pub fn drop_in_v2() -> PathBuf {
    deploy_dir().join("containerd/tether-v2.toml")
}

/// The containerd 2.x (config version 3) drop-in that registers the `tether` handler.
pub fn drop_in_v3() -> PathBuf {
    deploy_dir().join("containerd/tether-v3.toml")
}

/// The drop-in for a containerd that reads config files of `config_version`.
pub fn drop_in(config_version: u32) -> PathBuf {
    if config_version >= 3 {
        drop_in_v3()
    } else {
        drop_in_v2()
    }
}

/// The tables of a TOML config snippet, without its top-level `version = N` line: appended to
/// a config that has its own, a second `version` would land inside the last table.
pub fn tables_of(snippet: &str) -> String {
    snippet
        .lines()
        .filter(|l| !l.trim_start().starts_with("version"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The CRI plugin's sections of a containerd config.
#[derive(Debug, Clone)]
pub struct CriConfig {
    /// The image every pod sandbox runs.
    pub sandbox_image: String,
    /// Extra runtime handler tables, in the config version of the containerd under test
    /// (`[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.X]` in version 2,
    /// `[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.X]` in version 3).
    pub handlers: String,
}

impl CriConfig {
    /// The pause image as sandbox image and `handlers` beside `runc`.
    pub fn new(handlers: &str) -> CriConfig {
        CriConfig {
            sandbox_image: PAUSE_IMAGE.to_string(),
            handlers: handlers.to_string(),
        }
    }

    /// The config tables for containerd `version` whose private directory is `dir`: version 2
    /// tables (one `io.containerd.grpc.v1.cri` plugin) before containerd 2.0, version 3 ones
    /// from it on, where the plugin is split in three ([`CriConfig::config_toml_v3`]).
    pub fn config_toml(&self, dir: &Path, version: Version) -> String {
        if version.config_version() >= 3 {
            self.config_toml_v3(dir, version)
        } else {
            self.config_toml_v2(dir)
        }
    }

    fn config_toml_v2(&self, dir: &Path) -> String {
        let d = dir.display();
        format!(
            r#"[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{sandbox}"
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{d}/cni/bin"
    conf_dir = "{d}/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{d}/certs.d"

{handlers}
"#,
            sandbox = self.sandbox_image,
            handlers = self.handlers,
        )
    }

    /// containerd 2.x (what `containerd config migrate` makes of the version 2 tables): the
    /// images plugin has the snapshotter and the sandbox image (`pinned_images.sandbox`), the
    /// runtime plugin the runtimes, CNI and `restrict_oom_score_adj`, and the gRPC plugin only
    /// the stream server. CNI's `bin_dir` became the list `bin_dirs` in 2.1 (`bin_dir` is
    /// deprecated there).
    fn config_toml_v3(&self, dir: &Path, version: Version) -> String {
        let d = dir.display();
        let cni_bin = if version.minor >= 1 || version.major > 2 {
            format!(r#"bin_dirs = ["{d}/cni/bin"]"#)
        } else {
            format!(r#"bin_dir = "{d}/cni/bin""#)
        };
        // 2.2 made checkpoint restore through CreateContainer opt-in (the kubelet's restore).
        let restore = if (version.major, version.minor) >= (2, 2) {
            "\n  enable_experimental_restore_via_create = true"
        } else {
            ""
        };
        format!(
            r#"[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".registry]
    config_path = "{d}/certs.d"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "{sandbox}"

[plugins."io.containerd.cri.v1.runtime"]
  restrict_oom_score_adj = true{restore}
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.cri.v1.runtime".cni]
    {cni_bin}
    conf_dir = "{d}/cni/net.d"

[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

{handlers}
"#,
            sandbox = self.sandbox_image,
            handlers = self.handlers,
        )
    }
}

/// A pod sandbox the test runs: its id and the config it was created with.
#[derive(Debug, Clone)]
pub struct Pod {
    pub id: String,
    pub config: PodSandboxConfig,
    /// The PID namespace mode its containers share.
    pub pid_mode: NamespaceMode,
}

/// A private containerd with the CRI plugin, a client, and what the test created.
pub struct Cri {
    client: Option<CriClient>,
    cd: Option<Containerd>,
    cgroup_parent: String,
    log_dir: PathBuf,
    /// Ids of every sandbox and container started, for the leftover check.
    ids: RefCell<Vec<String>>,
    /// Shim sockets seen in the bundles' `address` files.
    sockets: RefCell<Vec<PathBuf>>,
}

impl Cri {
    /// CRI with the `tether` handler of the drop-in in `deploy/containerd/` for the containerd
    /// under test (`tether-v2.toml` for 1.6/1.7, `tether-v3.toml` for 2.x).
    pub fn start() -> Cri {
        let path = drop_in(flavor().version.config_version());
        let drop_in =
            fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        Self::start_with(CriConfig::new(&tables_of(&drop_in)))
    }

    /// CRI configured by `config`; the images imported and known to the plugin.
    pub fn start_with(config: CriConfig) -> Cri {
        Self::start_with_path(config, Vec::new())
    }

    /// CRI configured by `config`, with `path_prefix` first on containerd's `PATH` (and so on
    /// its shims'): for example the directory of a CRIU that works here.
    pub fn start_with_path(config: CriConfig, path_prefix: Vec<PathBuf>) -> Cri {
        let busybox = busybox_image();
        let pause = pause_image();
        let cd = Containerd::start_with(Options {
            cri: Some(config),
            path_prefix,
            ..Options::default()
        });
        let mut me = Cri {
            client: None,
            log_dir: cd.dir().join("pods"),
            cd: Some(cd),
            cgroup_parent: format!("/{}", unique_id("tt-cri")),
            ids: RefCell::new(Vec::new()),
            sockets: RefCell::new(Vec::new()),
        };
        fs::create_dir(&me.log_dir).unwrap_or_else(|e| panic!("mkdir pods: {e}"));
        let cd = me.containerd();
        let ctr = cd.ctr(CRI_NAMESPACE);
        ctr.image_import(&pause.path);
        ctr.image_import(&busybox.path);
        let client = CriClient::connect(&cd.address())
            .unwrap_or_else(|e| panic!("{e}\n{}", cd.log_excerpt()));
        // The plugin answers once initialized and learns of imported images from events.
        let ready = wait::wait_until(STATE_TIMEOUT, || {
            client.version().is_ok()
                && [PAUSE_IMAGE, BUSYBOX_IMAGE]
                    .iter()
                    .all(|i| client.image_status(i).is_ok_and(|s| s.is_some()))
        });
        assert!(
            ready,
            "the CRI plugin did not come up with both images: version {:?}, pause {:?}\n{}",
            client.version(),
            client.image_status(PAUSE_IMAGE),
            cd.log_excerpt()
        );
        me.client = Some(client);
        me
    }

    pub fn client(&self) -> &CriClient {
        self.client.as_ref().expect("client lives until drop")
    }

    pub fn containerd(&self) -> &Containerd {
        self.cd.as_ref().expect("containerd lives until drop")
    }

    /// The cgroup parent of every pod (`/<unique>`).
    pub fn cgroup_parent(&self) -> &str {
        &self.cgroup_parent
    }

    /// The directory of the container logs.
    pub fn log_dir(&self) -> &Path {
        &self.log_dir
    }

    /// containerd's log tail, for failure messages.
    pub fn log_excerpt(&self) -> String {
        self.containerd().log_excerpt()
    }

    /// The registry `config_path` of this containerd's CRI plugin (one `HOST/hosts.toml` each).
    pub fn registry_config_path(&self) -> PathBuf {
        self.containerd().dir().join("certs.d")
    }

    /// A pod config: host network, PID namespace `pid`, our cgroup parent and log directory.
    pub fn pod_config(&self, name: &str, pid: NamespaceMode) -> PodSandboxConfig {
        pod_config(
            name,
            &unique_id("uid"),
            &self.cgroup_parent,
            &self.log_dir,
            pid,
        )
    }

    /// Runs a pod with `handler` whose containers share PID namespace mode `pid`; panics with
    /// containerd's log if it fails.
    pub fn run_pod(&self, handler: &str, pid: NamespaceMode) -> Pod {
        let config = self.pod_config(&unique_id("pod"), pid);
        let id = self
            .client()
            .run_pod(&config, handler)
            .unwrap_or_else(|e| panic!("RunPodSandbox ({handler}): {e}\n{}", self.log_excerpt()));
        self.started(&id);
        Pod {
            id,
            config,
            pid_mode: pid,
        }
    }

    /// A container config running `cmd` from the busybox image, logging to
    /// `<log dir>/<name>_<attempt>.log`.
    pub fn container_config(
        &self,
        pod: &Pod,
        name: &str,
        attempt: u32,
        cmd: &[&str],
    ) -> ContainerConfig {
        container_config(pod.pid_mode, name, attempt, cmd)
    }

    /// CreateContainer then StartContainer; the container id. Panics with containerd's log.
    pub fn start_container(&self, pod: &Pod, config: &ContainerConfig) -> String {
        let c = self.client();
        let id = c
            .create_container(&pod.id, config, &pod.config)
            .unwrap_or_else(|e| panic!("CreateContainer: {e}\n{}", self.log_excerpt()));
        c.start_container(&id)
            .unwrap_or_else(|e| panic!("StartContainer {id}: {e}\n{}", self.log_excerpt()));
        self.started(&id);
        id
    }

    /// Creates and starts `cmd` as container `name` (attempt 0) in `pod`.
    pub fn run_container(&self, pod: &Pod, name: &str, cmd: &[&str]) -> String {
        self.start_container(pod, &self.container_config(pod, name, 0, cmd))
    }

    /// Records a started sandbox or container for the leftover check (pods started on another
    /// client, as the bench's parallel ones are, are recorded with this).
    pub fn started(&self, id: &str) {
        self.ids.borrow_mut().push(id.to_string());
        let bundle = self.containerd().bundle(CRI_NAMESPACE, id);
        if let Some(sock) = shim::socket_path(&bundle) {
            let mut s = self.sockets.borrow_mut();
            if !s.contains(&sock) {
                s.push(sock);
            }
        }
    }

    /// Waits until container `id` is in `state`; its status then. Panics after
    /// [`STATE_TIMEOUT`] with the last status and containerd's log.
    pub fn wait_state(&self, id: &str, state: ContainerState) -> ContainerStatus {
        let mut last = None;
        let reached = wait::wait_until(STATE_TIMEOUT, || {
            last = Some(self.client().container_status(id));
            matches!(&last, Some(Ok(s)) if s.state == state as i32)
        });
        match last {
            Some(Ok(s)) if reached => s,
            other => panic!(
                "container {id} not {state:?} within {STATE_TIMEOUT:?}: {other:?}\n{}",
                self.log_excerpt()
            ),
        }
    }

    /// StopPodSandbox then RemovePodSandbox, each within `timeout`; panics if either fails.
    pub fn remove_pod(&self, pod: &Pod, timeout: Duration) {
        let c = self.client();
        c.stop_pod(&pod.id, timeout)
            .unwrap_or_else(|e| panic!("StopPodSandbox {}: {e}\n{}", pod.id, self.log_excerpt()));
        c.remove_pod(&pod.id, timeout)
            .unwrap_or_else(|e| panic!("RemovePodSandbox {}: {e}\n{}", pod.id, self.log_excerpt()));
    }

    /// What the started pods and containers left behind, with containerd still running: shim
    /// processes, shim sockets, bundles, runc state, mounts under the private directory and
    /// cgroups under our parent. Waits up to `timeout` for shims to finish exiting.
    pub fn leftovers(&self, timeout: Duration) -> Vec<String> {
        let cd = self.containerd();
        let mut left = Vec::new();
        let check = |left: &mut Vec<String>| {
            left.clear();
            for p in cd.shim_pids() {
                left.push(format!("shim process: {}", procs::describe(p)));
            }
            for s in self.sockets.borrow().iter() {
                if s.exists() {
                    left.push(format!("shim socket: {}", s.display()));
                }
            }
            for id in self.ids.borrow().iter() {
                let bundle = cd.bundle(CRI_NAMESPACE, id);
                if bundle.exists() {
                    left.push(format!("bundle: {}", bundle.display()));
                }
                let state = shim::runc_state_dir(CRI_NAMESPACE, id);
                if state.exists() {
                    left.push(format!("runc state: {}", state.display()));
                }
            }
            for m in mounts::mounts_under(cd.dir()) {
                left.push(format!("mount: {}", m.display()));
            }
            for cg in cgroups::existing(&self.cgroup_parent) {
                for e in fs::read_dir(&cg).into_iter().flatten().flatten() {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        left.push(format!("cgroup: {}", e.path().display()));
                    }
                }
            }
            left.is_empty()
        };
        wait::wait_until(timeout, || check(&mut left));
        left
    }

    /// Panics listing what [`Cri::leftovers`] found.
    pub fn assert_nothing_left(&self) {
        let left = self.leftovers(Duration::from_secs(10));
        assert!(
            left.is_empty(),
            "left behind after the pods were removed:\n{}\n{}",
            left.join("\n"),
            self.log_excerpt()
        );
    }

    /// Stops containerd and cleans up; panics if the harness's leak check finds anything.
    pub fn finish(mut self) {
        let check: LeakCheck = self.containerd().leak_check();
        self.cleanup();
        check.assert_clean();
    }

    fn cleanup(&mut self) {
        self.client = None;
        drop(self.cd.take());
        // Our pods' cgroups: the daemon's cleanup knows only `/<namespace>/<id>` ones.
        for cg in cgroups::existing(&self.cgroup_parent) {
            cgroups::kill_all(&cg);
            if let Err(e) = cgroups::remove_tree(&cg, Duration::from_secs(5)) {
                eprintln!("CRI cleanup: {e}");
            }
        }
    }
}

impl Drop for Cri {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// A pod config as kubelet makes one: host network, PID namespace `pid`, the pod's cgroup
/// parent (`kubepods-besteffort-pod<uid>.slice` with the systemd driver, a path with cgroupfs)
/// and log directory.
pub fn pod_config(
    name: &str,
    uid: &str,
    cgroup_parent: &str,
    log_dir: &Path,
    pid: NamespaceMode,
) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.to_string(),
            uid: uid.to_string(),
            namespace: "default".to_string(),
            attempt: 0,
        }),
        // With the host network there is no private UTS namespace to name: runc refuses one.
        hostname: String::new(),
        log_directory: log_dir.display().to_string(),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: cgroup_parent.to_string(),
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(namespaces(pid)),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A container config running `cmd` from the busybox image in a pod whose PID mode is
/// `pid_mode`, logging to `<pod log dir>/<name>_<attempt>.log`.
pub fn container_config(
    pid_mode: NamespaceMode,
    name: &str,
    attempt: u32,
    cmd: &[&str],
) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.to_string(),
            attempt,
        }),
        image: Some(ImageSpec {
            image: BUSYBOX_IMAGE.to_string(),
            ..Default::default()
        }),
        command: cmd.iter().map(|s| s.to_string()).collect(),
        log_path: format!("{name}_{attempt}.log"),
        linux: Some(LinuxContainerConfig {
            resources: Some(LinuxContainerResources::default()),
            security_context: Some(LinuxContainerSecurityContext {
                namespace_options: Some(namespaces(pid_mode)),
                ..Default::default()
            }),
        }),
        ..Default::default()
    }
}

/// Host network, the given PID mode, a pod-wide IPC namespace.
fn namespaces(pid: NamespaceMode) -> NamespaceOption {
    NamespaceOption {
        network: NamespaceMode::Node as i32,
        pid: pid as i32,
        ipc: NamespaceMode::Pod as i32,
        ..Default::default()
    }
}
