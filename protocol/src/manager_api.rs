//! The manager's own API (`tether.manager.v1.Manager`), generated from
//! `proto/tether/manager/v1/manager.proto` by `ttrpc-codegen` in `build.rs`.
//!
//! [`manager`] holds the messages, [`manager_ttrpc`] the sync client (`ManagerClient`) and the
//! server side (`Manager` trait, `create_manager`).

#![allow(clippy::all, missing_docs, unused_qualifications)]

include!(concat!(env!("OUT_DIR"), "/manager_api.rs"));

/// The service name the manager serves under.
pub const SERVICE: &str = "tether.manager.v1.Manager";
