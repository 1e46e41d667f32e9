//! A small OCI image, as a tarball `ctr image import` accepts, from a list of rootfs entries.
//!
//! The tarball is an OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/...`) holding
//! one manifest, its config (`rootfs.diff_ids`, default `Cmd` and `Env`) and one uncompressed
//! tar layer. The index entry carries the image name both as `org.opencontainers.image.ref.name`
//! (what containerd 1.6 names the imported image by) and as `io.containerd.image.name` (which
//! takes precedence in every containerd version, so the name is the same everywhere).
//!
//! Tar archives are written with the `tar` crate: headers, checksums, long names and link
//! entries are easy to get subtly wrong by hand, and a layer containerd rejects would make every
//! image test fail for the wrong reason.

use crate::rootfs::{busybox_entries, Entry};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The reference of the shared busybox image.
pub const BUSYBOX_IMAGE: &str = "localhost/tether-busybox:test";
/// `PATH` of the image's default environment.
pub const IMAGE_PATH_ENV: &str =
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub const MEDIA_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MEDIA_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";

/// Fixed timestamp of every layer entry, so the same entries always give the same digests.
const MTIME: u64 = 1_704_067_200; // 2024-01-01T00:00:00Z

/// An image tarball on disk and what is in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageTarball {
    pub path: PathBuf,
    /// The name `ctr image import` gives it, e.g. `localhost/tether-busybox:test`.
    pub reference: String,
    /// `sha256:...` of the manifest, of the config, and of the (uncompressed) layer, which is
    /// also its diff id.
    pub manifest_digest: String,
    pub config_digest: String,
    pub layer_digest: String,
}

/// `sha256:<hex>` of `data`.
pub fn digest(data: &[u8]) -> String {
    let hex: String = Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}

/// The OCI architecture name of this machine.
pub fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// An uncompressed tar layer of `entries`: root-owned, fixed mtime, in the given order.
pub fn layer_tar(entries: &[Entry]) -> io::Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(MTIME);
        match e {
            Entry::Dir { path, mode } => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(*mode);
                h.set_size(0);
                b.append_data(&mut h, format!("{path}/"), io::empty())?;
            }
            Entry::File { path, mode, data } => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, path, data.as_slice())?;
            }
            Entry::Symlink { path, target } => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                b.append_link(&mut h, path, target)?;
            }
        }
    }
    b.into_inner()
}

/// Writes an image of `entries` named `reference`, with default `cmd` and `PATH`, to `out`.
pub fn build_image(
    entries: &[Entry],
    reference: &str,
    cmd: &[&str],
    out: &Path,
) -> io::Result<ImageTarball> {
    let layer = layer_tar(entries)?;
    let layer_digest = digest(&layer);
    let config = json!({
        "architecture": oci_arch(),
        "os": "linux",
        "config": { "Env": [IMAGE_PATH_ENV], "Cmd": cmd },
        "rootfs": { "type": "layers", "diff_ids": [layer_digest] },
        "history": [{ "created_by": "tether-tests image builder" }],
    });
    let config = to_bytes(&config);
    let config_digest = digest(&config);
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": { "mediaType": MEDIA_CONFIG, "digest": config_digest, "size": config.len() },
        "layers": [{ "mediaType": MEDIA_LAYER_TAR, "digest": layer_digest, "size": layer.len() }],
    });
    let manifest = to_bytes(&manifest);
    let manifest_digest = digest(&manifest);
    let index = json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_INDEX,
        "manifests": [{
            "mediaType": MEDIA_MANIFEST,
            "digest": manifest_digest,
            "size": manifest.len(),
            "platform": { "architecture": oci_arch(), "os": "linux" },
            "annotations": {
                "org.opencontainers.image.ref.name": reference,
                "io.containerd.image.name": reference,
            },
        }],
    });

    let mut files: Vec<(String, Vec<u8>)> = vec![
        (
            "oci-layout".into(),
            br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
        ),
        ("index.json".into(), to_bytes(&index)),
    ];
    for blob in [&manifest, &config, &layer] {
        let name = digest(blob).replacen("sha256:", "blobs/sha256/", 1);
        files.push((name, blob.clone()));
    }
    let mut outer = tar::Builder::new(io::BufWriter::new(fs::File::create(out)?));
    for dir in ["blobs/", "blobs/sha256/"] {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_mtime(MTIME);
        h.set_size(0);
        outer.append_data(&mut h, dir, io::empty())?;
    }
    for (name, data) in &files {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_mtime(MTIME);
        h.set_size(data.len() as u64);
        outer.append_data(&mut h, name, data.as_slice())?;
    }
    outer
        .into_inner()?
        .into_inner()
        .map_err(|e| e.into_error())?
        .sync_all()?;
    Ok(ImageTarball {
        path: out.to_path_buf(),
        reference: reference.to_string(),
        manifest_digest,
        config_digest,
        layer_digest,
    })
}

/// The busybox image (`Cmd` `["/bin/sh"]`) named `reference`, written to `out`.
pub fn build_busybox_image(reference: &str, out: &Path) -> ImageTarball {
    build_image(&busybox_entries(), reference, &["/bin/sh"], out)
        .unwrap_or_else(|e| panic!("writing the busybox image to {}: {e}", out.display()))
}

/// The busybox image [`BUSYBOX_IMAGE`] shared by every test of this process, built on first use.
pub fn busybox_image() -> &'static ImageTarball {
    static IMAGE: OnceLock<ImageTarball> = OnceLock::new();
    IMAGE.get_or_init(|| {
        build_busybox_image(
            BUSYBOX_IMAGE,
            &crate::scratch::scratch_dir().join("busybox-image.tar"),
        )
    })
}

fn to_bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).expect("a JSON value always serializes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::io::Read;

    fn read_tar(data: &[u8]) -> HashMap<String, (tar::EntryType, Vec<u8>, Option<String>)> {
        let mut out = HashMap::new();
        let mut a = tar::Archive::new(data);
        for e in a.entries().expect("tar entries") {
            let mut e = e.expect("tar entry");
            let path = e.path().expect("entry path").display().to_string();
            let link = e
                .link_name()
                .expect("link name")
                .map(|l| l.display().to_string());
            let kind = e.header().entry_type();
            let mut data = Vec::new();
            e.read_to_end(&mut data).expect("entry data");
            out.insert(path, (kind, data, link));
        }
        out
    }

    #[test]
    fn layout_digests_are_consistent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let entries = vec![
            Entry::Dir {
                path: "bin".into(),
                mode: 0o755,
            },
            Entry::File {
                path: "bin/hello".into(),
                mode: 0o755,
                data: b"#!/bin/sh\necho hi\n".to_vec(),
            },
            Entry::Symlink {
                path: "bin/hi".into(),
                target: "hello".into(),
            },
        ];
        let img = build_image(
            &entries,
            "example.org/x:1",
            &["/bin/hello"],
            &dir.path().join("i.tar"),
        )
        .expect("build image");
        let files = read_tar(&fs::read(&img.path).expect("read tarball"));
        let blob = |d: &str| {
            let name = d.replacen("sha256:", "blobs/sha256/", 1);
            let data = files
                .get(&name)
                .unwrap_or_else(|| panic!("{name} in tarball"))
                .1
                .clone();
            assert_eq!(digest(&data), d, "blob {name} matches its digest");
            data
        };
        let index: Value =
            serde_json::from_slice(&files["index.json"].1).expect("index.json is JSON");
        let m = &index["manifests"][0];
        assert_eq!(m["digest"], img.manifest_digest);
        assert_eq!(
            m["annotations"]["org.opencontainers.image.ref.name"],
            "example.org/x:1"
        );
        let manifest: Value =
            serde_json::from_slice(&blob(&img.manifest_digest)).expect("manifest");
        assert_eq!(manifest["config"]["digest"], img.config_digest);
        assert_eq!(manifest["layers"][0]["digest"], img.layer_digest);
        let config: Value = serde_json::from_slice(&blob(&img.config_digest)).expect("config");
        assert_eq!(config["rootfs"]["diff_ids"][0], img.layer_digest);
        assert_eq!(config["config"]["Cmd"], json!(["/bin/hello"]));
        let layer = read_tar(&blob(&img.layer_digest));
        assert_eq!(layer["bin/"].0, tar::EntryType::Directory);
        assert_eq!(layer["bin/hello"].1, b"#!/bin/sh\necho hi\n");
        assert_eq!(layer["bin/hi"].2.as_deref(), Some("hello"));
        assert!(files.contains_key("oci-layout"));
    }

    #[test]
    fn same_entries_same_digest() {
        let e = vec![Entry::Dir {
            path: "tmp".into(),
            mode: 0o1777,
        }];
        assert_eq!(
            digest(&layer_tar(&e).expect("tar")),
            digest(&layer_tar(&e).expect("tar"))
        );
    }
}
