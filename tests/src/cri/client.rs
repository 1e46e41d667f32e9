//! A blocking CRI client over containerd's gRPC socket.
//!
//! The `k8s-cri` crate gives tonic clients of the CRI `v1` services; this wraps them in a private
//! current-thread tokio runtime so tests stay plain synchronous code. Every call has a deadline:
//! it is sent to containerd as the gRPC timeout and enforced here too, so a hung call fails
//! the test with `DeadlineExceeded` instead of hanging it.

use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::*;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::{Request, Status};

/// The deadline of a call unless one is given.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// A connection to one containerd's CRI services.
pub struct CriClient {
    rt: tokio::runtime::Runtime,
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
    socket: PathBuf,
}

impl CriClient {
    /// Connects to the gRPC unix socket `socket` (containerd's `c.sock`).
    pub fn connect(socket: &Path) -> Result<CriClient, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("tokio runtime: {e}"))?;
        let path = socket.to_path_buf();
        // The URI is required by tonic but unused: the connector always dials the socket.
        let endpoint =
            Endpoint::from_static("http://localhost").connect_timeout(Duration::from_secs(10));
        let channel = rt
            .block_on(
                endpoint.connect_with_connector(tower::service_fn(move |_: Uri| {
                    let path = path.clone();
                    async move {
                        let stream = tokio::net::UnixStream::connect(path).await?;
                        Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
                    }
                })),
            )
            .map_err(|e| format!("connecting to {}: {e}", socket.display()))?;
        Ok(CriClient {
            rt,
            runtime: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel),
            socket: socket.to_path_buf(),
        })
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Runs one call with `timeout`, locally and as the request's gRPC deadline.
    fn call<T, M, F, Fut>(&self, timeout: Duration, msg: M, f: F) -> Result<T, Status>
    where
        F: FnOnce(Request<M>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let mut req = Request::new(msg);
        req.set_timeout(timeout);
        let fut = f(req);
        self.rt.block_on(async move {
            match tokio::time::timeout(timeout + Duration::from_secs(1), fut).await {
                Ok(r) => r.map(tonic::Response::into_inner),
                Err(_) => Err(Status::deadline_exceeded(format!(
                    "no answer within {timeout:?}"
                ))),
            }
        })
    }

    pub fn version(&self) -> Result<VersionResponse, Status> {
        let mut c = self.runtime.clone();
        self.call(
            Duration::from_secs(5),
            VersionRequest::default(),
            |r| async move { c.version(r).await },
        )
    }

    /// The runtime's status, with what it knows of each handler (`runtime_handlers`, CRI
    /// v1.30+: containerd 2.x fills it from each runtime's `-info`).
    pub fn status(&self) -> Result<StatusResponse, Status> {
        let mut c = self.runtime.clone();
        self.call(
            Duration::from_secs(10),
            StatusRequest { verbose: true },
            |r| async move { c.status(r).await },
        )
    }

    /// The image named `image` as the CRI plugin knows it, if it does.
    pub fn image_status(&self, image: &str) -> Result<Option<Image>, Status> {
        let mut c = self.images.clone();
        let req = ImageStatusRequest {
            image: Some(ImageSpec {
                image: image.to_string(),
                ..Default::default()
            }),
            verbose: false,
        };
        self.call(
            DEFAULT_TIMEOUT,
            req,
            |r| async move { c.image_status(r).await },
        )
        .map(|r| r.image)
    }

    /// PullImage of `image` (no credentials); the image reference CRI answers with.
    pub fn pull_image(&self, image: &str) -> Result<String, Status> {
        let mut c = self.images.clone();
        let req = PullImageRequest {
            image: Some(ImageSpec {
                image: image.to_string(),
                ..Default::default()
            }),
            ..Default::default()
        };
        self.call(
            DEFAULT_TIMEOUT,
            req,
            |r| async move { c.pull_image(r).await },
        )
        .map(|r| r.image_ref)
    }

    /// RunPodSandbox; the sandbox id.
    pub fn run_pod(&self, config: &PodSandboxConfig, handler: &str) -> Result<String, Status> {
        let mut c = self.runtime.clone();
        let req = RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: handler.to_string(),
        };
        self.call(DEFAULT_TIMEOUT, req, |r| async move {
            c.run_pod_sandbox(r).await
        })
        .map(|r| r.pod_sandbox_id)
    }

    pub fn stop_pod(&self, id: &str, timeout: Duration) -> Result<(), Status> {
        let mut c = self.runtime.clone();
        let req = StopPodSandboxRequest {
            pod_sandbox_id: id.to_string(),
        };
        self.call(timeout, req, |r| async move { c.stop_pod_sandbox(r).await })
            .map(drop)
    }

    pub fn remove_pod(&self, id: &str, timeout: Duration) -> Result<(), Status> {
        let mut c = self.runtime.clone();
        let req = RemovePodSandboxRequest {
            pod_sandbox_id: id.to_string(),
        };
        self.call(
            timeout,
            req,
            |r| async move { c.remove_pod_sandbox(r).await },
        )
        .map(drop)
    }

    pub fn pod_status(&self, id: &str) -> Result<PodSandboxStatus, Status> {
        let mut c = self.runtime.clone();
        let req = PodSandboxStatusRequest {
            pod_sandbox_id: id.to_string(),
            verbose: false,
        };
        self.call(DEFAULT_TIMEOUT, req, |r| async move {
            c.pod_sandbox_status(r).await
        })?
        .status
        .ok_or_else(|| Status::internal(format!("no status for pod {id}")))
    }

    /// The ids of every pod sandbox.
    pub fn list_pods(&self) -> Result<Vec<String>, Status> {
        let mut c = self.runtime.clone();
        self.call(
            DEFAULT_TIMEOUT,
            ListPodSandboxRequest::default(),
            |r| async move { c.list_pod_sandbox(r).await },
        )
        .map(|r| r.items.into_iter().map(|p| p.id).collect())
    }

    /// CreateContainer; the container id.
    pub fn create_container(
        &self,
        pod_id: &str,
        config: &ContainerConfig,
        pod_config: &PodSandboxConfig,
    ) -> Result<String, Status> {
        let mut c = self.runtime.clone();
        let req = CreateContainerRequest {
            pod_sandbox_id: pod_id.to_string(),
            config: Some(config.clone()),
            sandbox_config: Some(pod_config.clone()),
        };
        self.call(DEFAULT_TIMEOUT, req, |r| async move {
            c.create_container(r).await
        })
        .map(|r| r.container_id)
    }

    pub fn start_container(&self, id: &str) -> Result<(), Status> {
        let mut c = self.runtime.clone();
        let req = StartContainerRequest {
            container_id: id.to_string(),
        };
        self.call(DEFAULT_TIMEOUT, req, |r| async move {
            c.start_container(r).await
        })
        .map(drop)
    }

    /// StopContainer with a grace period of `grace` seconds (then SIGKILL).
    pub fn stop_container(&self, id: &str, grace: i64) -> Result<(), Status> {
        let mut c = self.runtime.clone();
        let req = StopContainerRequest {
            container_id: id.to_string(),
            timeout: grace,
        };
        self.call(DEFAULT_TIMEOUT, req, |r| async move {
            c.stop_container(r).await
        })
        .map(drop)
    }

    pub fn remove_container(&self, id: &str) -> Result<(), Status> {
        let mut c = self.runtime.clone();
        let req = RemoveContainerRequest {
            container_id: id.to_string(),
        };
        self.call(DEFAULT_TIMEOUT, req, |r| async move {
            c.remove_container(r).await
        })
        .map(drop)
    }

    pub fn container_status(&self, id: &str) -> Result<ContainerStatus, Status> {
        let mut c = self.runtime.clone();
        let req = ContainerStatusRequest {
            container_id: id.to_string(),
            verbose: false,
        };
        self.call(DEFAULT_TIMEOUT, req, |r| async move {
            c.container_status(r).await
        })?
        .status
        .ok_or_else(|| Status::internal(format!("no status for container {id}")))
    }

    /// The ids of every container.
    pub fn list_containers(&self) -> Result<Vec<String>, Status> {
        let mut c = self.runtime.clone();
        self.call(
            DEFAULT_TIMEOUT,
            ListContainersRequest::default(),
            |r| async move { c.list_containers(r).await },
        )
        .map(|r| r.containers.into_iter().map(|c| c.id).collect())
    }

    /// ListContainerStats of every container: what the kubelet polls for its summary.
    pub fn list_container_stats(&self) -> Result<Vec<ContainerStats>, Status> {
        let mut c = self.runtime.clone();
        self.call(
            DEFAULT_TIMEOUT,
            ListContainerStatsRequest::default(),
            |r| async move { c.list_container_stats(r).await },
        )
        .map(|r| r.stats)
    }

    /// ExecSync of `cmd` in container `id`, with `timeout` seconds for the command (0: none).
    pub fn exec_sync(
        &self,
        id: &str,
        cmd: &[&str],
        timeout: i64,
    ) -> Result<ExecSyncResponse, Status> {
        let mut c = self.runtime.clone();
        let req = ExecSyncRequest {
            container_id: id.to_string(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout,
        };
        self.call(
            DEFAULT_TIMEOUT,
            req,
            |r| async move { c.exec_sync(r).await },
        )
    }

    pub fn container_stats(&self, id: &str) -> Result<ContainerStats, Status> {
        let mut c = self.runtime.clone();
        let req = ContainerStatsRequest {
            container_id: id.to_string(),
        };
        self.call(DEFAULT_TIMEOUT, req, |r| async move {
            c.container_stats(r).await
        })?
        .stats
        .ok_or_else(|| Status::internal(format!("no stats for container {id}")))
    }

    /// CheckpointContainer: the running container `id` dumped (it keeps running) into the
    /// archive `location`, with `timeout` seconds for the whole operation.
    pub fn checkpoint_container(
        &self,
        id: &str,
        location: &Path,
        timeout: i64,
    ) -> Result<(), Status> {
        let mut c = self.runtime.clone();
        let req = CheckpointContainerRequest {
            container_id: id.to_string(),
            location: location.display().to_string(),
            timeout,
        };
        let deadline = Duration::from_secs(timeout.unsigned_abs()).max(DEFAULT_TIMEOUT);
        self.call(
            deadline,
            req,
            |r| async move { c.checkpoint_container(r).await },
        )
        .map(drop)
    }
}
