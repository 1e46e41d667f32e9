//! Names that never collide between tests running in parallel, or between test processes.

use std::fs::File;
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// `PREFIX-PID-N-RAND`: this process's pid, a per-process counter and 16 random bits.
///
/// Valid as a containerd container id and namespace name (alphanumerics joined by `-`) as long
/// as `prefix` is alphanumeric; about 20 characters, so socket paths built from it stay short.
pub fn unique_id(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{n}-{:04x}", std::process::id(), random_u16())
}

fn random_u16() -> u16 {
    let mut b = [0u8; 2];
    match File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)) {
        Ok(()) => u16::from_le_bytes(b),
        Err(_) => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos() as u16)
            .unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn unique_and_well_formed() {
        let ids: HashSet<String> = (0..1000).map(|_| unique_id("t")).collect();
        assert_eq!(ids.len(), 1000);
        for id in &ids {
            assert!(id.starts_with(&format!("t-{}-", std::process::id())));
            assert!(id
                .split('-')
                .all(|part| !part.is_empty() && part.chars().all(|c| c.is_ascii_alphanumeric())));
            tether_protocol::id::validate_id(id).expect("a valid container id");
            tether_protocol::id::validate_namespace(id).expect("a valid namespace");
        }
    }
}
