//! Which events are the same event: a shim that did not get our reply retries its event, and
//! the daemon itself reports exits it learned while it was down; each must be reported once.
//!
//! Task events that happen once per process are keyed by (namespace, container, exec id, pid,
//! topic). Events that may repeat for the same process (OOM, pause, resume, checkpoint) have no
//! key and are never suppressed.

use serde_json::Value;
use tether_protocol::topics;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    pub namespace: String,
    pub container: String,
    pub exec_id: String,
    pub pid: u64,
    pub topic: String,
}

/// The key of an event, from its decoded fields; `None` for events that may repeat.
pub fn key(namespace: &str, topic: &str, fields: &Value) -> Option<Key> {
    let s = |name: &str| fields.get(name).and_then(Value::as_str).unwrap_or_default();
    let container = s("container_id").to_string();
    let exec_id = match topic {
        // `id` is the exec id, or the container id for the init.
        topics::TASK_EXIT | topics::TASK_DELETE => {
            let id = s("id");
            if id == container {
                ""
            } else {
                id
            }
        }
        topics::TASK_EXEC_ADDED | topics::TASK_EXEC_STARTED => s("exec_id"),
        topics::TASK_CREATE | topics::TASK_START => "",
        _ => return None,
    };
    if container.is_empty() {
        return None;
    }
    Some(Key {
        namespace: namespace.to_string(),
        container,
        exec_id: exec_id.to_string(),
        pid: fields.get("pid").and_then(Value::as_u64).unwrap_or(0),
        topic: topic.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn init_exit_is_keyed_by_container_and_pid() {
        let a = key(
            "ns",
            topics::TASK_EXIT,
            &json!({"container_id":"c","id":"c","pid":7}),
        );
        let b = key(
            "ns",
            topics::TASK_EXIT,
            &json!({"container_id":"c","id":"","pid":7,"exit_status":1}),
        );
        assert_eq!(a, b);
        assert!(a.is_some());
        let exec = key(
            "ns",
            topics::TASK_EXIT,
            &json!({"container_id":"c","id":"e1","pid":7}),
        );
        assert_ne!(a, exec);
        let other_ns = key(
            "x",
            topics::TASK_EXIT,
            &json!({"container_id":"c","id":"c","pid":7}),
        );
        assert_ne!(a, other_ns);
    }

    #[test]
    fn repeatable_events_have_no_key() {
        for t in [topics::TASK_OOM, topics::TASK_PAUSED, topics::TASK_RESUMED] {
            assert_eq!(key("ns", t, &json!({"container_id":"c"})), None);
        }
        assert_eq!(key("ns", topics::TASK_START, &json!({})), None);
    }
}
