//! The manager's errors: one line each, for the person at the terminal, and one place that turns
//! them into ttrpc status codes (daemon side) and back (CLI side).

use std::io;
use tether_protocol::api::ttrpc::{self, Code};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Id(#[from] tether_protocol::IdError),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    /// The client is not one the daemon serves.
    #[error("{0}")]
    PermissionDenied(String),
    /// The daemon cannot be reached.
    #[error("{0}")]
    Unavailable(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Store(#[from] tether_protocol::StoreError),
    #[error(transparent)]
    Transition(#[from] tether_protocol::TransitionError),
    #[error(transparent)]
    Filter(#[from] crate::filter::FilterError),
    /// Something the daemon ran did not finish in time (and was killed).
    #[error("{0}")]
    TimedOut(String),
    /// A shim refused or failed a call.
    #[error("{0}")]
    Shim(String),
    /// What the daemon answered (its message is already one clear line).
    #[error("{0}")]
    Remote(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn io(what: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }

    /// A shim's ttrpc error, with what was being done.
    pub fn shim(what: &str, e: ttrpc::Error) -> Error {
        Error::Shim(format!("{what}: {}", ttrpc_message(&e)))
    }

    fn code(&self) -> Code {
        match self {
            Error::Id(_) | Error::InvalidArgument(_) | Error::Filter(_) => Code::INVALID_ARGUMENT,
            Error::NotFound(_) => Code::NOT_FOUND,
            Error::AlreadyExists(_) => Code::ALREADY_EXISTS,
            Error::FailedPrecondition(_) | Error::Transition(_) => Code::FAILED_PRECONDITION,
            Error::Unavailable(_) => Code::UNAVAILABLE,
            Error::PermissionDenied(_) => Code::PERMISSION_DENIED,
            Error::TimedOut(_) => Code::DEADLINE_EXCEEDED,
            _ => Code::INTERNAL,
        }
    }
}

/// The message of a ttrpc error without Rust debug noise.
pub fn ttrpc_message(e: &ttrpc::Error) -> String {
    match e {
        ttrpc::Error::RpcStatus(s) => s.message().to_string(),
        ttrpc::Error::Socket(s) => format!("connection failed: {s}"),
        ttrpc::Error::LocalClosed => "connection closed".into(),
        ttrpc::Error::RemoteClosed => "the other side closed the connection".into(),
        ttrpc::Error::Others(s) => s.clone(),
        other => format!("{other:?}"),
    }
}

/// Whether a ttrpc error says the peer is gone (as opposed to refusing the call).
pub fn is_disconnected(e: &ttrpc::Error) -> bool {
    !matches!(e, ttrpc::Error::RpcStatus(_))
}

impl From<Error> for ttrpc::Error {
    fn from(e: Error) -> Self {
        ttrpc::Error::RpcStatus(ttrpc::get_status(e.code(), e.to_string()))
    }
}
