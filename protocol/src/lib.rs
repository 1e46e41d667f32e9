//! Wire types and on-disk formats shared by the Tether shim and manager.
//!
//! This crate knows no processes: it names things (ids, sockets, topics), encodes them (state
//! records, ttrpc requests) and validates them. The shim and the manager build on it and never on
//! each other.

pub mod admin;
pub mod api;
pub mod id;
pub mod manager_api;
pub mod records;
pub mod runtime_options;
pub mod service_env;
pub mod socket;
pub mod store;
pub mod task_service;
pub mod time;
pub mod topics;
pub mod wire;

pub use id::{validate_id, validate_namespace, IdError};
pub use records::{ContainerRecord, ContainerStatus, ExitRecord, TransitionError};
pub use store::StoreError;
