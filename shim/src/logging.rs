//! Logging to the `log` FIFO containerd reads in the bundle, never blocking the shim.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;

/// Writes whole lines to a non-blocking FIFO; drops them when nobody reads (never blocks).
struct FifoWriter(Option<File>);

impl Write for FifoWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(f) = &mut self.0 {
            if let Err(e) = f.write_all(buf) {
                if e.kind() != io::ErrorKind::WouldBlock {
                    self.0 = None;
                }
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Sets up `log` to write to `./log` (the bundle's FIFO) if containerd reads it.
pub fn init(debug: bool, id: &str) {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open("log")
        .ok();
    let level = if debug {
        log::LevelFilter::Debug
    } else {
        log::LevelFilter::Info
    };
    let id = id.to_string();
    let _ = env_logger::Builder::new()
        .filter_level(level)
        .parse_env("TETHER_SHIM_LOG")
        .format(move |buf, record| {
            writeln!(
                buf,
                "level={} msg={:?} runtime=io.containerd.tether.v2 id={id}",
                record.level().as_str().to_lowercase(),
                record.args().to_string()
            )
        })
        .target(env_logger::Target::Pipe(Box::new(FifoWriter(file))))
        .try_init();
}
