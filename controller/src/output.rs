//! Standard output that survives its reader going away (`paddock status |
//! head -1`, `| grep -q`): `println!` panics (exit 101) on a closed pipe.
//! A closed stdout is not a failure of the command: the rest of the output
//! is dropped and the command ends with the exit status its work earned.
//! (Resetting SIGPIPE to its default would do it too, but would also kill
//! the controller on a write to an agent's reset TCP connection: rustls
//! writes with writev, which has no MSG_NOSIGNAL.)

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

static CLOSED: AtomicBool = AtomicBool::new(false);

/// Writes `args` to stdout and flushes. False once stdout is closed (then
/// nothing more is written); other write errors are reported on stderr once
/// and treated the same way.
pub fn write(args: std::fmt::Arguments<'_>) -> bool {
    if CLOSED.load(Ordering::Relaxed) {
        return false;
    }
    let mut out = std::io::stdout().lock();
    let written = out.write_fmt(args).and_then(|()| out.flush());
    match written {
        Ok(()) => true,
        Err(e) => {
            if e.kind() != std::io::ErrorKind::BrokenPipe {
                eprintln!("paddock: cannot write to standard output: {e}");
            }
            CLOSED.store(true, Ordering::Relaxed);
            false
        }
    }
}

/// Whether stdout has been found closed.
pub fn closed() -> bool {
    CLOSED.load(Ordering::Relaxed)
}
