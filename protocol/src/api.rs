//! containerd's wire types, from `containerd-shim-protos`, under names that read well here.
//!
//! The crate generates the task service as `containerd.task.v3.Task`; the messages are the same
//! ones containerd 1.6/1.7 send under `containerd.task.v2.Task` (see [`crate::task_service`]).

pub use containerd_shim_protos::api as task;
pub use containerd_shim_protos::cgroups::metrics as cgroups_v1;
pub use containerd_shim_protos::cgroups_v2::metrics as cgroups_v2;
pub use containerd_shim_protos::events::task as events;
pub use containerd_shim_protos::protobuf;
pub use containerd_shim_protos::shim::events as forward;
pub use containerd_shim_protos::shim::oci as runc_options;
pub use containerd_shim_protos::shim::{events_ttrpc, shim_ttrpc};
pub use containerd_shim_protos::ttrpc;

/// `Any` as containerd uses it (events, options, exec specs).
pub use protobuf::well_known_types::any::Any;
pub use protobuf::well_known_types::empty::Empty;
pub use protobuf::well_known_types::timestamp::Timestamp;

/// The `Any` type URL containerd uses for one of its messages: the full proto name, bare.
///
/// containerd's `typeurl` registers its event types as `containerd.events.TaskExit` (no
/// `type.googleapis.com/` prefix); consumers match on it.
pub fn type_url<M: protobuf::MessageFull>() -> String {
    M::descriptor().full_name().to_string()
}

/// Packs a message into an `Any` with containerd's type URL.
pub fn pack_any<M: protobuf::MessageFull>(msg: &M) -> Result<Any, protobuf::Error> {
    Ok(Any {
        type_url: type_url::<M>(),
        value: protobuf::Message::write_to_bytes(msg)?,
        ..Default::default()
    })
}
