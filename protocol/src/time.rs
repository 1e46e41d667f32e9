//! Wall-clock timestamps as stored on disk (nanoseconds since the Unix epoch) and on the wire.

use crate::api::Timestamp;
use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in nanoseconds since the epoch.
pub fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// A protobuf `Timestamp` for nanoseconds since the epoch.
pub fn to_timestamp(nanos: i64) -> Timestamp {
    Timestamp {
        seconds: nanos.div_euclid(1_000_000_000),
        nanos: nanos.rem_euclid(1_000_000_000) as i32,
        ..Default::default()
    }
}

/// Nanoseconds since the epoch of a protobuf `Timestamp`.
pub fn from_timestamp(ts: &Timestamp) -> i64 {
    ts.seconds
        .saturating_mul(1_000_000_000)
        .saturating_add(i64::from(ts.nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for n in [0, 1, 1_700_000_000_123_456_789, -5] {
            assert_eq!(from_timestamp(&to_timestamp(n)), n);
        }
    }
}
