//! Writing an archive whole or not at all: a temporary file beside the target, renamed at the
//! end.

use super::{io, ArchiveError};
use std::fs::File;
use std::path::Path;

/// Writes the archive to `out` (through a temporary file beside it, renamed at the end, so a
/// failure leaves no partial archive): `files` at the top, `image_dir`'s files under
/// `checkpoint/`.
pub fn write(out: &Path, image_dir: &Path, files: &[(&str, Vec<u8>)]) -> Result<(), ArchiveError> {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = out.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let file = File::create(&tmp).map_err(io(format!("create {}", tmp.display())))?;
        let mut b = tar::Builder::new(file);
        b.follow_symlinks(false);
        b.mode(tar::HeaderMode::Deterministic);
        for (name, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o600);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, name, data.as_slice())
                .map_err(io(format!("add {name} to {}", tmp.display())))?;
        }
        b.append_dir_all("checkpoint", image_dir)
            .map_err(io(format!(
                "add {} to {}",
                image_dir.display(),
                tmp.display()
            )))?;
        let file = b
            .into_inner()
            .map_err(io(format!("finish {}", tmp.display())))?;
        file.sync_all()
            .map_err(io(format!("sync {}", tmp.display())))?;
        std::fs::rename(&tmp, out).map_err(io(format!("rename to {}", out.display())))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
