//! Deployment leases: a controller takes one on every agent before it
//! changes anything, so a second controller gets "locked by ... since ..."
//! instead of interleaving. A lease is identified by a random token; it
//! expires unless its holder renews it, and expired leases are purged, so
//! neither a dead controller nor a flood of requests keeps memory.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

// Expiry on tokio's clock, so paused-time tests can move it.
use tokio::time::Instant;

/// Leases kept at once (all deployments); past it, new ones are refused.
pub const MAX_LEASES: usize = 1024;
pub const MIN_TTL: Duration = Duration::from_secs(1);
pub const MAX_TTL: Duration = Duration::from_secs(600);

/// Who asks for a lease, as its holder described itself, and who holds
/// one: the shared model's types.
pub use paddock_model::{HeldLease as HeldBy, LeaseId as Owner};

struct Lease {
    owner: Owner,
    since_unix_ms: i64,
    expires: Instant,
}

impl Lease {
    fn held_by(&self) -> HeldBy {
        HeldBy {
            holder: self.owner.holder.clone(),
            machine_id: self.owner.machine_id.clone(),
            pid_namespace: self.owner.pid_namespace,
            pid: self.owner.pid,
            since_unix_ms: self.since_unix_ms,
        }
    }
}

#[derive(Default)]
pub struct Locks {
    leases: Mutex<HashMap<String, Lease>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Granted,
    Held(HeldBy),
    /// Too many leases (of other deployments) are held.
    Full,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Locks {
    fn purge(leases: &mut HashMap<String, Lease>, now: Instant) {
        leases.retain(|_, l| l.expires > now);
    }

    /// Grants (or renews, for the same token) the lease on `deployment`.
    pub fn lock(&self, deployment: &str, owner: Owner, ttl: Duration, now: Instant) -> Outcome {
        let ttl = ttl.clamp(MIN_TTL, MAX_TTL);
        let mut leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
        Self::purge(&mut leases, now);
        let since = match leases.get(deployment) {
            Some(l) if l.owner.token != owner.token => return Outcome::Held(l.held_by()),
            Some(l) => l.since_unix_ms,
            None if leases.len() >= MAX_LEASES => return Outcome::Full,
            None => now_ms(),
        };
        leases.insert(
            deployment.to_owned(),
            Lease {
                owner,
                since_unix_ms: since,
                expires: now + ttl,
            },
        );
        Outcome::Granted
    }

    /// Releases the lease if `token` has it, or whoever has it with
    /// `force`. Ok: the lease that was released, if any; Err: who holds it.
    pub fn unlock(
        &self,
        deployment: &str,
        token: &str,
        force: bool,
        now: Instant,
    ) -> Result<Option<HeldBy>, HeldBy> {
        let mut leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
        Self::purge(&mut leases, now);
        match leases.get(deployment) {
            None => Ok(None),
            Some(l) if force || l.owner.token == token => {
                Ok(leases.remove(deployment).map(|l| l.held_by()))
            }
            Some(l) => Err(l.held_by()),
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.leases.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(token: &str) -> Owner {
        Owner {
            token: token.repeat(16),
            holder: format!("{token}@ws pid 1"),
            machine_id: "m1".into(),
            pid_namespace: 4026531836,
            pid: 1,
        }
    }

    #[test]
    fn a_second_holder_is_refused_until_release_or_expiry() {
        let locks = Locks::default();
        let t0 = Instant::now();
        let ttl = Duration::from_secs(30);
        assert_eq!(locks.lock("lab", owner("a"), ttl, t0), Outcome::Granted);
        assert_eq!(
            locks.lock("lab", owner("a"), ttl, t0 + Duration::from_secs(20)),
            Outcome::Granted,
            "renewal"
        );
        assert!(
            matches!(locks.lock("lab", owner("b"), ttl, t0 + Duration::from_secs(40)), Outcome::Held(h) if h.holder == "a@ws pid 1"),
            "renewed at 20 s, so still held at 40 s"
        );
        assert_eq!(
            locks.lock("other", owner("b"), ttl, t0),
            Outcome::Granted,
            "per deployment"
        );
        assert!(
            locks.unlock("lab", &owner("b").token, false, t0).is_err(),
            "only the holder releases"
        );
        assert!(matches!(
            locks.unlock("lab", &owner("a").token, false, t0),
            Ok(Some(_))
        ));
        assert_eq!(locks.lock("lab", owner("b"), ttl, t0), Outcome::Granted);
        assert_eq!(
            locks.lock("lab", owner("c"), ttl, t0 + ttl + Duration::from_secs(1)),
            Outcome::Granted,
            "expired"
        );
    }

    /// Expiry and renewal on tokio's clock, the one the service reads
    /// `now` from: a lease renewed before its TTL runs out stays held; one
    /// left alone past it is taken over.
    #[tokio::test(start_paused = true)]
    async fn lease_deadlines_follow_tokio_time() {
        let locks = Locks::default();
        let ttl = Duration::from_secs(10);
        assert_eq!(
            locks.lock("lab", owner("a"), ttl, Instant::now()),
            Outcome::Granted
        );
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(matches!(
            locks.lock("lab", owner("b"), ttl, Instant::now()),
            Outcome::Held(_)
        ));
        // Renewed at 9 s: it now runs to 19 s.
        assert_eq!(
            locks.lock("lab", owner("a"), ttl, Instant::now()),
            Outcome::Granted
        );
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(
            matches!(
                locks.lock("lab", owner("b"), ttl, Instant::now()),
                Outcome::Held(_)
            ),
            "18 s: still held after the renewal"
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(
            locks.lock("lab", owner("b"), ttl, Instant::now()),
            Outcome::Granted,
            "19 s: expired, taken over"
        );
        let since = match locks.lock("lab", owner("c"), ttl, Instant::now()) {
            Outcome::Held(h) => h,
            other => panic!("{other:?}"),
        };
        assert_eq!(since.holder, "b@ws pid 1");
    }

    #[test]
    fn force_breaks_any_lease_and_says_whose() {
        let locks = Locks::default();
        let t0 = Instant::now();
        locks.lock("lab", owner("a"), Duration::from_secs(30), t0);
        let broken = locks.unlock("lab", &owner("b").token, true, t0).unwrap();
        assert_eq!(broken.unwrap().holder, "a@ws pid 1");
        assert_eq!(locks.unlock("lab", &owner("b").token, true, t0), Ok(None));
    }

    #[test]
    fn expired_leases_are_purged_and_the_table_is_bounded() {
        let locks = Locks::default();
        let t0 = Instant::now();
        for i in 0..MAX_LEASES {
            let name = format!("d{i}");
            assert_eq!(
                locks.lock(&name, owner("a"), Duration::from_secs(5), t0),
                Outcome::Granted
            );
        }
        assert_eq!(
            locks.lock("one-more", owner("a"), Duration::from_secs(5), t0),
            Outcome::Full
        );
        let later = t0 + Duration::from_secs(6);
        assert_eq!(
            locks.lock("one-more", owner("a"), Duration::from_secs(5), later),
            Outcome::Granted
        );
        assert_eq!(locks.len(), 1, "the expired ones are gone");
    }
}
