//! containerd's wire types, from `containerd-shim-protos`, under names that read well here.
//!
//! The crate generates the task service as `containerd.task.v3.Task`; the messages are the same
//! ones containerd 1.6/1.7 send under `containerd.task.v2.Task` (see [`crate::task_service`]).

pub use containerd_shim_protos::api as task;
/// containerd 2.3+'s `start` handshake: `BootstrapParams` in, `BootstrapResult` out.
pub use containerd_shim_protos::bootstrap_api as bootstrap;
pub use containerd_shim_protos::cgroups::metrics as cgroups_v1;
pub use containerd_shim_protos::cgroups_v2::metrics as cgroups_v2;
pub use containerd_shim_protos::events::task as events;
pub use containerd_shim_protos::protobuf;
pub use containerd_shim_protos::shim::events as forward;
pub use containerd_shim_protos::shim::oci as runc_options;
pub use containerd_shim_protos::shim::{events_ttrpc, shim_ttrpc};
pub use containerd_shim_protos::ttrpc;
/// `RuntimeInfo`, what a shim's `-info` prints (containerd 2.2+).
pub use containerd_shim_protos::types::introspection;

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

/// The prefix Go's `anypb` puts before a type name; containerd's own URLs have none.
const GOOGLE_PREFIX: &str = "type.googleapis.com/";

/// Why an `Any` could not be read as the message asked for.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("options of type {got:?} are not supported (want {want})")]
    WrongType { got: String, want: &'static str },
    #[error("malformed {want}: {source}")]
    Malformed {
        want: &'static str,
        #[source]
        source: protobuf::Error,
    },
}

/// A message of type `M` from a request's optional `Any` (runtime or checkpoint options), read
/// as containerd's shims read them: absent or empty gives the defaults; the type URL must be
/// `M`'s, bare or with Go's `type.googleapis.com/` prefix; bytes that do not parse are refused.
/// The `Any` comes from outside: nothing in it can panic this.
pub fn unpack_any_or_default<M: TypeUrl + Default>(any: Option<&Any>) -> Result<M, UnpackError> {
    let Some(any) = any else {
        return Ok(M::default());
    };
    if any.type_url.is_empty() && any.value.is_empty() {
        return Ok(M::default());
    }
    let bare = any
        .type_url
        .strip_prefix(GOOGLE_PREFIX)
        .unwrap_or(&any.type_url);
    if bare != M::TYPE_URL {
        return Err(UnpackError::WrongType {
            got: any.type_url.clone(),
            want: M::TYPE_URL,
        });
    }
    M::parse_from_bytes(&any.value).map_err(|source| UnpackError::Malformed {
        want: M::TYPE_URL,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn type_urls_are_the_proto_full_names() {
        for (url, full_name) in super::all_type_urls() {
            assert_eq!(url, full_name);
        }
    }

    #[test]
    fn absent_or_empty_options_are_the_defaults() {
        let o: runc_options::Options = unpack_any_or_default(None).expect("none");
        assert_eq!(o, Default::default());
        let o: runc_options::Options = unpack_any_or_default(Some(&Any::default())).expect("empty");
        assert_eq!(o, Default::default());
        let e = unpack_any_or_default::<runc_options::Options>(Some(&Any {
            type_url: "containerd.runc.v1.CheckpointOptions".into(),
            ..Default::default()
        }))
        .expect_err("another type");
        assert!(matches!(e, UnpackError::WrongType { .. }), "{e}");
    }

    fn options() -> impl Strategy<Value = runc_options::Options> {
        (
            ".{0,40}",
            ".{0,40}",
            any::<bool>(),
            any::<bool>(),
            ".{0,20}",
            any::<u32>(),
        )
            .prop_map(|(binary_name, root, systemd, pivot, criu, uid)| {
                runc_options::Options {
                    binary_name,
                    root,
                    systemd_cgroup: systemd,
                    no_pivot_root: pivot,
                    criu_image_path: criu,
                    io_uid: uid,
                    ..Default::default()
                }
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Whatever a client puts in the `Any`, unpacking answers (value or error), never panics,
        /// and a URL other than the type's is always refused.
        #[test]
        fn arbitrary_any_never_panics(
            url in prop_oneof![
                Just("containerd.runc.v1.Options".to_string()),
                Just("type.googleapis.com/containerd.runc.v1.Options".to_string()),
                ".{0,60}",
            ],
            value in proptest::collection::vec(any::<u8>(), 0..512),
        ) {
            let any = Any { type_url: url.clone(), value, ..Default::default() };
            let r = unpack_any_or_default::<runc_options::Options>(Some(&any));
            let bare = url.strip_prefix(GOOGLE_PREFIX).unwrap_or(&url);
            if bare != "containerd.runc.v1.Options" && !(url.is_empty() && any.value.is_empty()) {
                prop_assert!(matches!(r, Err(UnpackError::WrongType { .. })), "{r:?}");
            }
            let _ = unpack_any_or_default::<runc_options::CheckpointOptions>(Some(&any));
        }

        /// Options packed by `pack_any` come back as they were.
        #[test]
        fn packed_options_round_trip(o in options()) {
            let any = pack_any(&o).expect("pack");
            let back: runc_options::Options =
                unpack_any_or_default(Some(&any)).expect("unpack what was packed");
            prop_assert_eq!(back, o);
        }
    }
}
