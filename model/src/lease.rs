//! Deployment leases: who asks for one, and who holds one.

use std::time::Duration;

use crate::Error;

/// A controller's lease: its random token, and where it runs (so another
/// controller can tell a dead process of its own machine and PID namespace).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseId {
    /// Random, 16-64 hex digits: the same token renews or releases.
    pub token: String,
    /// For people: user@host pid N (1-128 printable ASCII characters).
    pub holder: String,
    /// /etc/machine-id (at most 64 letters and digits).
    pub machine_id: String,
    /// The inode of /proc/self/ns/pid.
    pub pid_namespace: u64,
    pub pid: u32,
}

/// Lock or Unlock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRequest {
    pub deployment: String,
    pub id: LeaseId,
    /// Lock only: the lease expires after this long unless renewed.
    pub ttl: Duration,
    /// Unlock only: release whoever holds the lease.
    pub force: bool,
}

/// Who holds a lease, as the agent reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldLease {
    pub holder: String,
    /// Since when, Unix ms.
    pub since_unix_ms: i64,
    pub machine_id: String,
    pub pid_namespace: u64,
    pub pid: u32,
}

/// The answer to Lock or Unlock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockReply {
    /// Lock: granted. Unlock: the lease is gone (or was never there).
    pub granted: bool,
    /// The current holder when Lock was refused, the broken one after a
    /// forced Unlock; None when there was none.
    pub held: Option<HeldLease>,
}

impl LeaseRequest {
    /// The bounds on a lease request's strings, naming the field.
    pub fn validate(&self) -> Result<(), Error> {
        if !crate::valid_name(&self.deployment) {
            return Err(Error::invalid("deployment", "use 1-63 of a-z, 0-9 and '-'"));
        }
        let id = &self.id;
        let printable = |s: &str| s.bytes().all(|b| b.is_ascii_graphic() || b == b' ');
        if id.holder.is_empty() || id.holder.len() > 128 || !printable(&id.holder) {
            return Err(Error::invalid("holder", "1-128 printable ASCII characters"));
        }
        if !(16..=64).contains(&id.token.len()) || !id.token.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(Error::invalid("token", "16-64 hex digits"));
        }
        if id.machine_id.len() > 64 || !id.machine_id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(Error::invalid(
                "machine_id",
                "at most 64 letters and digits",
            ));
        }
        Ok(())
    }
}
