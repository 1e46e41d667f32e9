//! The shim's error type, and the one place errors become ttrpc status codes.

use containerd_shim_protos::ttrpc::{Code, Status};
use std::io;
use tether_protocol::{IdError, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    Unimplemented(String),
    /// The request's deadline passed (its runtime call, if any, was killed).
    #[error("{0}")]
    DeadlineExceeded(String),
    /// A bound was reached (parked waits, queued requests).
    #[error("{0}")]
    ResourceExhausted(String),
    /// The OCI runtime refused or failed; the message is its own last error.
    #[error("{0}")]
    Runtime(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Id(#[from] IdError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub type Result<T> = std::result::Result<T, ShimError>;

impl ShimError {
    pub fn io(context: impl Into<String>) -> impl FnOnce(io::Error) -> ShimError {
        let context = context.into();
        move |source| ShimError::Io { context, source }
    }

    pub fn nix(context: impl Into<String>) -> impl FnOnce(nix::Error) -> ShimError {
        let context = context.into();
        move |e| ShimError::Io {
            context,
            source: io::Error::from(e),
        }
    }

    /// The ttrpc code containerd maps back to its errdefs (NotFound, AlreadyExists, ...).
    pub fn code(&self) -> Code {
        match self {
            ShimError::InvalidArgument(_) | ShimError::Id(_) => Code::INVALID_ARGUMENT,
            ShimError::NotFound(_) => Code::NOT_FOUND,
            ShimError::AlreadyExists(_) => Code::ALREADY_EXISTS,
            ShimError::FailedPrecondition(_) => Code::FAILED_PRECONDITION,
            ShimError::Unimplemented(_) => Code::UNIMPLEMENTED,
            ShimError::DeadlineExceeded(_) => Code::DEADLINE_EXCEEDED,
            ShimError::ResourceExhausted(_) => Code::RESOURCE_EXHAUSTED,
            ShimError::Runtime(_) => Code::UNKNOWN,
            ShimError::Io { .. } | ShimError::Store(_) => Code::INTERNAL,
        }
    }

    pub fn to_status(&self) -> Status {
        Status {
            code: self.code().into(),
            message: self.to_string(),
            ..Default::default()
        }
    }
}
