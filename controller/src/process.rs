//! Whether a pid is still the process we mean: a pid is recycled once its
//! process is gone, so nothing is signalled or trusted on the number alone.
//! The controller, the lab and the end-to-end tests ask this here; the
//! agent (another crate, which the controller does not depend on) adds the
//! process's start time for the Redis it adopts.

/// The process's command line, one string per argument; None once it is
/// gone. A zombie has an empty one.
pub fn cmdline(pid: u32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|&b| b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect(),
    )
}

/// Whether `pid` is alive and its command line mentions `name` (a
/// redis-server names its address there, a sentinel too).
pub fn process_is(pid: u32, name: &str) -> bool {
    cmdline(pid).is_some_and(|args| args.iter().any(|a| a.contains(name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knows_its_own_process_and_not_a_dead_one() {
        let me = std::process::id();
        let exe = std::env::current_exe().unwrap();
        let name = exe.file_name().unwrap().to_str().unwrap();
        assert!(process_is(me, name));
        assert!(!process_is(me, "certainly-not-this-process"));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(!process_is(pid, "true"), "a reaped child is gone");
    }
}
