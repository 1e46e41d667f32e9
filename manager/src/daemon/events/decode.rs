//! What an event says, decoded from its protobuf bytes once: the typed message for whoever
//! acts on it (the table, on an init's exit), and its fields as JSON for filters, `--json`
//! output and de-duplication ([`crate::daemon::events::dedup`]).

use super::Event;
use crate::filter::Fields;
use protobuf::reflect::{MessageDescriptor, ReflectFieldRef, ReflectValueRef};
use protobuf::{MessageDyn, MessageFull};
use serde_json::{Map, Value};
use tether_protocol::api::events as ev;

/// An event's message, decoded once (nothing if its type is not a task event's or its bytes do
/// not decode).
#[derive(Debug, Default)]
pub struct Decoded(Option<Box<dyn MessageDyn>>);

impl Decoded {
    /// Decodes `value` as the task event `type_url` names.
    pub fn parse(type_url: &str, value: &[u8]) -> Decoded {
        Decoded(descriptor(type_url).and_then(|d| d.parse_from_bytes(value).ok()))
    }

    /// A message the daemon made itself (nothing to decode).
    pub fn of<M: MessageFull>(message: M) -> Decoded {
        Decoded(Some(Box::new(message)))
    }

    /// The message, if it is an `M`.
    pub fn get<M: MessageFull>(&self) -> Option<&M> {
        self.0.as_deref()?.downcast_ref::<M>()
    }

    /// Its fields as a JSON object (empty when nothing decoded).
    pub fn fields(&self) -> Value {
        match &self.0 {
            Some(m) => message_json(&**m),
            None => Value::Object(Map::new()),
        }
    }
}

/// The task event types containerd's shims publish.
fn descriptor(type_url: &str) -> Option<MessageDescriptor> {
    let name = type_url.rsplit('/').next().unwrap_or(type_url);
    [
        ev::TaskCreate::descriptor(),
        ev::TaskStart::descriptor(),
        ev::TaskDelete::descriptor(),
        ev::TaskExit::descriptor(),
        ev::TaskOOM::descriptor(),
        ev::TaskExecAdded::descriptor(),
        ev::TaskExecStarted::descriptor(),
        ev::TaskPaused::descriptor(),
        ev::TaskResumed::descriptor(),
        ev::TaskCheckpointed::descriptor(),
    ]
    .into_iter()
    .find(|d| d.full_name() == name)
}

/// The fields of an event as a JSON object (empty if its type is unknown or it does not decode).
pub fn decode_fields(type_url: &str, value: &[u8]) -> Value {
    Decoded::parse(type_url, value).fields()
}

fn message_json(msg: &dyn protobuf::MessageDyn) -> Value {
    let d = msg.descriptor_dyn();
    if d.full_name() == "google.protobuf.Timestamp" {
        let get = |name: &str| {
            d.field_by_name(name)
                .and_then(|f| match f.get_singular_field_or_default(msg) {
                    ReflectValueRef::I64(v) => Some(v),
                    ReflectValueRef::I32(v) => Some(i64::from(v)),
                    _ => None,
                })
                .unwrap_or(0)
        };
        return Value::from(
            get("seconds")
                .saturating_mul(1_000_000_000)
                .saturating_add(get("nanos")),
        );
    }
    let mut obj = Map::new();
    for f in d.fields() {
        let v = match f.get_reflect(msg) {
            ReflectFieldRef::Optional(o) => match o.value() {
                Some(v) => value_json(v),
                // proto3 scalars at their default read as unset: show the default (an unset
                // message stays out).
                None => match f.get_singular_field_or_default(msg) {
                    ReflectValueRef::Message(_) => continue,
                    v => value_json(v),
                },
            },
            ReflectFieldRef::Repeated(r) => Value::Array(r.into_iter().map(value_json).collect()),
            ReflectFieldRef::Map(_) => continue,
        };
        obj.insert(f.name().to_string(), v);
    }
    Value::Object(obj)
}

fn value_json(v: ReflectValueRef<'_>) -> Value {
    match v {
        ReflectValueRef::U32(x) => x.into(),
        ReflectValueRef::U64(x) => x.into(),
        ReflectValueRef::I32(x) => x.into(),
        ReflectValueRef::I64(x) => x.into(),
        ReflectValueRef::F32(x) => f64::from(x).into(),
        ReflectValueRef::F64(x) => x.into(),
        ReflectValueRef::Bool(x) => x.into(),
        ReflectValueRef::String(s) => s.into(),
        ReflectValueRef::Bytes(b) => b.len().into(),
        ReflectValueRef::Enum(_, n) => n.into(),
        ReflectValueRef::Message(m) => message_json(&*m),
    }
}

/// An event as filters see it: `topic`, `namespace`, `type_url`, and its fields by name (with or
/// without an `event.` prefix).
pub struct EventFields<'a> {
    pub topic: &'a str,
    pub namespace: &'a str,
    pub type_url: &'a str,
    pub fields: &'a Value,
}

impl Fields for EventFields<'_> {
    fn field(&self, path: &[String]) -> Option<String> {
        match path {
            [one] if one == "topic" => return Some(self.topic.to_string()),
            [one] if one == "namespace" => return Some(self.namespace.to_string()),
            [one] if one == "type_url" => return Some(self.type_url.to_string()),
            _ => {}
        }
        let path = match path.split_first() {
            Some((first, rest)) if first == "event" && !rest.is_empty() => rest,
            _ => path,
        };
        let mut v = self.fields;
        for p in path {
            v = v.get(p)?;
        }
        match v {
            Value::String(s) => Some(s.clone()),
            Value::Null => None,
            other => Some(other.to_string()),
        }
    }
}

impl Event {
    /// The event as filters see it.
    pub fn fields(&self) -> EventFields<'_> {
        EventFields {
            topic: &self.topic,
            namespace: &self.namespace,
            type_url: &self.type_url,
            fields: &self.fields,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protobuf::Message;

    #[test]
    fn decodes_fields_of_task_events() {
        let exit = ev::TaskExit {
            container_id: "c1".into(),
            id: "c1".into(),
            pid: 7,
            exit_status: 3,
            ..Default::default()
        };
        let bytes = exit.write_to_bytes().expect("encode");
        let f = decode_fields("containerd.events.TaskExit", &bytes);
        assert_eq!(f["container_id"], "c1");
        assert_eq!(f["exit_status"], 3);
        let zero = ev::TaskExit {
            container_id: "c".into(),
            ..Default::default()
        };
        let f = decode_fields(
            "containerd.events.TaskExit",
            &zero.write_to_bytes().expect("encode"),
        );
        assert_eq!(f["exit_status"], 0, "defaults are shown: {f}");
        assert_eq!(f["exec_id"], Value::Null, "TaskExit has no exec_id");
        assert!(decode_fields("x.Unknown", b"")
            .as_object()
            .expect("object")
            .is_empty());
    }

    /// One decode serves both the typed reader and the JSON view.
    #[test]
    fn a_decoded_event_is_its_typed_message() {
        let exit = ev::TaskExit {
            container_id: "c1".into(),
            pid: 9,
            ..Default::default()
        };
        let d = Decoded::parse(
            "containerd.events.TaskExit",
            &exit.write_to_bytes().expect("encode"),
        );
        assert_eq!(d.get::<ev::TaskExit>(), Some(&exit));
        assert!(d.get::<ev::TaskStart>().is_none());
        assert_eq!(d.fields()["pid"], 9);
        assert_eq!(Decoded::of(exit.clone()).get::<ev::TaskExit>(), Some(&exit));
        assert!(Decoded::parse("containerd.events.TaskExit", b"\xff")
            .get::<ev::TaskExit>()
            .is_none());
    }
}
