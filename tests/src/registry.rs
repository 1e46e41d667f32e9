//! A read-only image registry on the loopback interface, serving one image tarball (an OCI
//! image layout as [`crate::image`] writes it) over the distribution API's pull endpoints.
//!
//! containerd 2.x's CRI restores a checkpoint archive only after pulling the image the
//! checkpoint was taken from, by the repository digest recorded in the archive; an image
//! imported offline has none. Pulled from here, it has one, and the pull at restore resolves
//! against this server (containerd talks plain HTTP to `localhost` registries by default).
//!
//! Endpoints: `GET /v2/`, `GET|HEAD /v2/<name>/manifests/<tag or digest>` (any tag names the
//! tarball's one manifest), `GET|HEAD /v2/<name>/blobs/<digest>`; anything else is 404.

use crate::image::MEDIA_MANIFEST;
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use tiny_http::{Header, Method, Response, Server};

/// A running registry; stopped (and its thread joined) on drop.
pub struct Registry {
    server: Arc<Server>,
    port: u16,
    thread: Option<JoinHandle<()>>,
}

/// What the registry serves: blobs by digest, and which of them is the manifest.
struct Content {
    blobs: HashMap<String, Vec<u8>>,
    manifest: String,
}

impl Registry {
    /// Serves the image tarball `image` on `127.0.0.1` at a free port.
    pub fn serve(image: &Path) -> Registry {
        let content = Arc::new(read_layout(image));
        let server = Arc::new(
            Server::http("127.0.0.1:0")
                .unwrap_or_else(|e| panic!("registry: listen on 127.0.0.1: {e}")),
        );
        let port = server
            .server_addr()
            .to_ip()
            .map(|a| a.port())
            .unwrap_or_else(|| panic!("registry: not listening on an IP address"));
        let s = Arc::clone(&server);
        let thread = std::thread::spawn(move || {
            for request in s.incoming_requests() {
                let (status, media, body) = answer(&content, request.method(), request.url());
                let digest = crate::image::digest(&body);
                // For HEAD, tiny_http sends the headers (Content-Length the body's) only.
                let mut response = Response::from_data(body)
                    .with_status_code(status)
                    .with_header(header("Docker-Distribution-API-Version", "registry/2.0"))
                    .with_header(header("Content-Type", media));
                if status == 200 {
                    response.add_header(header("Docker-Content-Digest", &digest));
                }
                let _ = request.respond(response);
            }
        });
        Registry {
            server,
            port,
            thread: Some(thread),
        }
    }

    /// `localhost:PORT`: the host part of the references this registry serves.
    pub fn host(&self) -> String {
        format!("localhost:{}", self.port)
    }

    /// Declares this registry plain HTTP in a containerd registry `config_path` directory
    /// (`<dir>/localhost:PORT/hosts.toml`), as an operator does for a local registry. Without
    /// it containerd 2.2+ tries HTTPS first and falls back to HTTP only when the server's
    /// answer to the TLS hello says it speaks HTTP; a connection closed instead (EOF, seen
    /// under load) fails the pull.
    pub fn declare_in(&self, config_path: &std::path::Path) {
        let dir = config_path.join(self.host());
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("registry: mkdir {}: {e}", dir.display()));
        let url = format!("http://{}", self.host());
        std::fs::write(
            dir.join("hosts.toml"),
            format!("server = \"{url}\"\n\n[host.\"{url}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"),
        )
        .unwrap_or_else(|e| panic!("registry: write {}/hosts.toml: {e}", dir.display()));
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes())
        .unwrap_or_else(|()| panic!("registry: bad header {name}: {value}"))
}

/// Status, media type and body for one request.
fn answer(content: &Content, method: &Method, url: &str) -> (u16, &'static str, Vec<u8>) {
    const JSON: &str = "application/json";
    const OCTETS: &str = "application/octet-stream";
    let not_found = (404, JSON, br#"{"errors":[{"code":"NOT_FOUND"}]}"#.to_vec());
    if !matches!(method, Method::Get | Method::Head) {
        return (405, JSON, Vec::new());
    }
    let path = url.split('?').next().unwrap_or_default();
    if path == "/v2/" || path == "/v2" {
        return (200, JSON, b"{}".to_vec());
    }
    let Some(rest) = path.strip_prefix("/v2/") else {
        return not_found;
    };
    if let Some((_, reference)) = rest.rsplit_once("/manifests/") {
        let digest = if reference.starts_with("sha256:") {
            reference
        } else {
            content.manifest.as_str()
        };
        return match content.blobs.get(digest) {
            Some(b) if digest == content.manifest => (200, MEDIA_MANIFEST, b.clone()),
            _ => not_found,
        };
    }
    if let Some((_, digest)) = rest.rsplit_once("/blobs/") {
        return match content.blobs.get(digest) {
            Some(b) => (200, OCTETS, b.clone()),
            None => not_found,
        };
    }
    not_found
}

/// The blobs of the OCI layout tarball `path` and its (first) manifest's digest.
fn read_layout(path: &Path) -> Content {
    let file = std::fs::File::open(path)
        .unwrap_or_else(|e| panic!("registry: open {}: {e}", path.display()));
    let mut archive = tar::Archive::new(file);
    let mut blobs = HashMap::new();
    let mut index = None;
    let entries = archive
        .entries()
        .unwrap_or_else(|e| panic!("registry: {} is not a tar archive: {e}", path.display()));
    for entry in entries {
        let mut entry = entry.unwrap_or_else(|e| panic!("registry: {}: {e}", path.display()));
        let name = entry
            .path()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let mut data = Vec::new();
        entry
            .read_to_end(&mut data)
            .unwrap_or_else(|e| panic!("registry: read {name}: {e}"));
        if name == "index.json" {
            index = Some(data);
        } else if let Some(hex) = name.strip_prefix("blobs/sha256/") {
            if !hex.is_empty() {
                blobs.insert(format!("sha256:{hex}"), data);
            }
        }
    }
    let index: serde_json::Value = serde_json::from_slice(
        &index.unwrap_or_else(|| panic!("registry: no index.json in {}", path.display())),
    )
    .unwrap_or_else(|e| panic!("registry: index.json of {}: {e}", path.display()));
    let manifest = index["manifests"][0]["digest"]
        .as_str()
        .unwrap_or_else(|| panic!("registry: no manifest in the index of {}", path.display()))
        .to_string();
    Content { blobs, manifest }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The endpoints a pull uses answer with the tarball's bytes, found by tag and by digest;
    /// the digest header is the body's.
    #[test]
    fn serves_the_manifest_and_blobs_of_the_tarball() {
        let image = crate::image::busybox_image();
        let registry = Registry::serve(&image.path);
        let get = |path: &str| -> (u16, Vec<u8>) {
            use std::io::Write;
            let mut s = std::net::TcpStream::connect(("127.0.0.1", registry.port))
                .expect("connect to the registry");
            write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").expect("send");
            let mut all = Vec::new();
            s.read_to_end(&mut all).expect("read");
            let split = all
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .expect("headers end");
            let status: u16 = String::from_utf8_lossy(&all[9..12])
                .parse()
                .expect("status");
            (status, all[split + 4..].to_vec())
        };
        assert_eq!(get("/v2/").0, 200);
        let (status, by_tag) = get("/v2/tether-busybox/manifests/test");
        assert_eq!(status, 200);
        assert_eq!(crate::image::digest(&by_tag), image.manifest_digest);
        let (status, by_digest) = get(&format!(
            "/v2/tether-busybox/manifests/{}",
            image.manifest_digest
        ));
        assert_eq!((status, &by_digest), (200, &by_tag));
        let (status, layer) = get(&format!("/v2/tether-busybox/blobs/{}", image.layer_digest));
        assert_eq!(status, 200);
        assert_eq!(crate::image::digest(&layer), image.layer_digest);
        assert_eq!(get("/v2/tether-busybox/blobs/sha256:00").0, 404);
        assert_eq!(get("/v2/tether-busybox/manifests/sha256:00").0, 404);
    }
}
