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
/// containerd's `typeurl` registers its types as e.g. `containerd.events.TaskExit` (no
/// `type.googleapis.com/` prefix); consumers match on it. The names are constants rather than
/// read from protobuf descriptors: building descriptors costs hundreds of kB of heap per process,
/// and the shim runs once per container.
pub trait TypeUrl: protobuf::Message {
    const TYPE_URL: &'static str;
}

macro_rules! type_urls {
    ($($ty:ty => $url:literal),* $(,)?) => {
        $(impl TypeUrl for $ty {
            const TYPE_URL: &'static str = $url;
        })*
        /// Every type with a URL, for the test that checks them against the descriptors.
        #[cfg(test)]
        fn all_type_urls() -> Vec<(&'static str, String)> {
            use protobuf::MessageFull;
            vec![$(($url, <$ty>::descriptor().full_name().to_string())),*]
        }
    };
}

type_urls! {
    events::TaskCreate => "containerd.events.TaskCreate",
    events::TaskStart => "containerd.events.TaskStart",
    events::TaskDelete => "containerd.events.TaskDelete",
    events::TaskExit => "containerd.events.TaskExit",
    events::TaskOOM => "containerd.events.TaskOOM",
    events::TaskExecAdded => "containerd.events.TaskExecAdded",
    events::TaskExecStarted => "containerd.events.TaskExecStarted",
    events::TaskPaused => "containerd.events.TaskPaused",
    events::TaskResumed => "containerd.events.TaskResumed",
    events::TaskCheckpointed => "containerd.events.TaskCheckpointed",
    runc_options::Options => "containerd.runc.v1.Options",
    runc_options::ProcessDetails => "containerd.runc.v1.ProcessDetails",
    runc_options::CheckpointOptions => "containerd.runc.v1.CheckpointOptions",
    cgroups_v1::Metrics => "io.containerd.cgroups.v1.Metrics",
    cgroups_v2::Metrics => "io.containerd.cgroups.v2.Metrics",
}

/// The type URL of `M`.
pub fn type_url<M: TypeUrl>() -> &'static str {
    M::TYPE_URL
}

/// Packs a message into an `Any` with containerd's type URL.
pub fn pack_any<M: TypeUrl>(msg: &M) -> Result<Any, protobuf::Error> {
    Ok(Any {
        type_url: M::TYPE_URL.to_string(),
        value: msg.write_to_bytes()?,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn type_urls_are_the_proto_full_names() {
        for (url, full_name) in super::all_type_urls() {
            assert_eq!(url, full_name);
        }
    }
}
