//! Whether a pid is still the process we mean: a pid is recycled once its
//! process is gone, so nothing is signalled or trusted on the number alone.
//! The one place the agent (adopting the Redis it spawned), the controller
//! (the lab, lease takeover) and the end-to-end tests ask it.

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

/// The process's start time (field 22 of /proc/PID/stat, after the command
/// name, which may itself contain spaces and parentheses).
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 2..];
    after_name.split_whitespace().nth(19)?.parse().ok()
}

/// Whether `pid` is the very process recorded as (`pid`, `started`): alive,
/// its command line mentions `name`, and it started at the same time (a
/// recycled pid has another start time).
pub fn is_same(pid: u32, started: u64, name: &str) -> bool {
    process_is(pid, name) && start_time(pid) == Some(started)
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

    #[test]
    fn the_same_process_only_with_its_own_start_time() {
        let me = std::process::id();
        let exe = std::env::current_exe().unwrap();
        let name = exe.file_name().unwrap().to_str().unwrap();
        let started = start_time(me).expect("our own start time");
        assert!(is_same(me, started, name));
        assert!(!is_same(me, started + 1, name), "a recycled pid");
        assert!(!is_same(me, started, "redis-server"), "another program");
    }
}
