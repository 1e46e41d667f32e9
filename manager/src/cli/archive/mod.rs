//! Checkpoint archives: CRI's layout (`checkpoint/` with the CRIU images, `config.dump`,
//! `spec.dump`, `rootfs-diff.tar`, `status.dump`) as a plain tar, written whole or not at all,
//! and read entry by entry with our own checks, because an archive is someone else's input:
//! no absolute paths, no `..`, no symbolic links, hard links only to files unpacked before, no
//! device nodes or FIFOs, and a bound on the bytes unpacked. Every write stays under the
//! target directory; a refused archive leaves nothing behind but what the caller removes.

//!
//! Here: the format's errors and bound; `write.rs` writes an archive, `unpack.rs` reads one.

#[cfg(test)]
mod tests;
mod unpack;
mod write;

pub use unpack::unpack;
pub use write::write;

/// What a restore unpacks at most by default: CRIU images hold the container's memory.
pub const DEFAULT_LIMIT: u64 = 16 << 30;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("archive {archive}: entry {entry:?} refused: {why}")]
    Refused {
        archive: String,
        entry: String,
        why: String,
    },
    #[error("archive {archive}: {why}")]
    Corrupt { archive: String, why: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

pub(super) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ArchiveError {
    let what = what.into();
    move |source| ArchiveError::Io { what, source }
}

/// An archive the CLI cannot read is the user's input: refused as an invalid argument.
impl From<ArchiveError> for crate::error::Error {
    fn from(e: ArchiveError) -> crate::error::Error {
        crate::error::Error::InvalidArgument(e.to_string())
    }
}
