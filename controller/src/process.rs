//! Whether a pid is still the process we mean: the one implementation is
//! the `paddock-process` crate, shared with the agent and the tests.

pub use paddock_process::{cmdline, process_is};
