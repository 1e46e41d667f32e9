//! Record writes that need not hold up their caller: an exit a shim published is journaled
//! (fsync'd) before the table learns it, so its `record.json` is rewritten here, on a thread of
//! its own, atomically (a SIGKILLed daemon leaves the old record or the new one, and learns the
//! exit again from the journal and the shim). On the monitor's loop, a burst of 100 exits cost
//! 100 record writes (create, write, rename in each container's directory) between reading one
//! shim's event and the next.
//!
//! The table's in-memory record changes at once (`ps`, `wait` and `delete` see the exit); the
//! writer writes whatever the record holds when its turn comes, so a later write by another
//! thread is never overwritten by an older state.

use super::{lock, Container};
use std::sync::mpsc::{channel, Sender};
use std::sync::Arc;
use tether_protocol::store;

pub(super) struct Writer {
    tx: Sender<Arc<Container>>,
}

impl Writer {
    /// Starts the writer thread; it ends when the writer is dropped.
    pub(super) fn start() -> std::io::Result<Writer> {
        let (tx, rx) = channel::<Arc<Container>>();
        std::thread::Builder::new()
            .name("record-writer".into())
            .spawn(move || {
                while let Ok(c) = rx.recv() {
                    write(&c);
                }
            })?;
        Ok(Writer { tx })
    }

    /// Writes `c`'s record soon (now, on this thread, if the writer is gone).
    pub(super) fn write_soon(&self, c: Arc<Container>) {
        if let Err(unsent) = self.tx.send(c) {
            write(&unsent.0);
        }
    }
}

fn write(c: &Container) {
    let rec = lock(&c.record);
    // A deleted container's directory is gone (or going): nothing to write.
    if rec.deleted_at != 0 {
        return;
    }
    if let Err(e) = store::write_with(&c.record_path(), &*rec, store::Durability::Atomic) {
        log::warn!("container {}/{}: record exit: {e}", c.key.0, c.key.1);
    }
}
