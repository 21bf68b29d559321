//! Host facts, read through sysinfo (and statvfs for the data directory).

use std::path::Path;

use sysinfo::System;

use crate::config::resolve_program;

pub use paddock_model::Facts;

pub fn gather(data_dir: &Path, redis_server: &Path) -> Facts {
    let mut system = System::new();
    system.refresh_memory();
    let redis_server_path = resolve_program(redis_server);
    let redis_version = redis_server_path.as_deref().and_then(redis_version);
    Facts {
        hostname: System::host_name().unwrap_or_default(),
        os: System::long_os_version().unwrap_or_default(),
        kernel: System::kernel_version().unwrap_or_default(),
        cpus: std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1),
        memory_total_bytes: system.total_memory(),
        memory_available_bytes: system.available_memory(),
        data_dir_free_bytes: nix::sys::statvfs::statvfs(data_dir)
            .map(|s| s.blocks_available() * s.fragment_size())
            .unwrap_or(0),
        redis_server_path,
        redis_version,
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        redis_server_configured: redis_server.to_owned(),
    }
}

/// "Redis server v=7.0.15 sha=..." -> "7.0.15".
fn redis_version(path: &Path) -> Option<String> {
    let out = std::process::Command::new(path)
        .arg("--version")
        .env_clear()
        .output()
        .ok()?;
    paddock_knowledge::info::version_from_banner(&String::from_utf8_lossy(&out.stdout))
}
