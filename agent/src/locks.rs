//! Deployment leases: a controller takes one on every agent before it
//! changes anything, so a second controller gets "locked by ... since ..."
//! instead of interleaving. Leases expire, so a controller that died does
//! not lock a deployment forever.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

struct Lease {
    holder: String,
    since_unix_ms: i64,
    expires: Instant,
}

#[derive(Default)]
pub struct Locks {
    leases: Mutex<HashMap<String, Lease>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Granted,
    Held { holder: String, since_unix_ms: i64 },
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Locks {
    /// Grants (or renews, for the same holder) the lease on `deployment`.
    pub fn lock(&self, deployment: &str, holder: &str, ttl: Duration, now: Instant) -> Outcome {
        let mut leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(l) = leases.get(deployment)
            && l.expires > now
            && l.holder != holder
        {
            return Outcome::Held {
                holder: l.holder.clone(),
                since_unix_ms: l.since_unix_ms,
            };
        }
        let since = match leases.get(deployment) {
            Some(l) if l.holder == holder && l.expires > now => l.since_unix_ms,
            _ => now_ms(),
        };
        leases.insert(
            deployment.to_owned(),
            Lease {
                holder: holder.to_owned(),
                since_unix_ms: since,
                expires: now + ttl,
            },
        );
        Outcome::Granted
    }

    /// Releases the lease if `holder` has it.
    pub fn unlock(&self, deployment: &str, holder: &str) -> Outcome {
        let mut leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
        match leases.get(deployment) {
            Some(l) if l.holder != holder && l.expires > Instant::now() => Outcome::Held {
                holder: l.holder.clone(),
                since_unix_ms: l.since_unix_ms,
            },
            _ => {
                leases.remove(deployment);
                Outcome::Granted
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_until_release_or_expiry() {
        let locks = Locks::default();
        let t0 = Instant::now();
        let ttl = Duration::from_secs(60);
        assert_eq!(locks.lock("lab", "a", ttl, t0), Outcome::Granted);
        assert_eq!(locks.lock("lab", "a", ttl, t0), Outcome::Granted, "renewal");
        assert!(
            matches!(locks.lock("lab", "b", ttl, t0), Outcome::Held { holder, .. } if holder == "a")
        );
        assert_eq!(
            locks.lock("other", "b", ttl, t0),
            Outcome::Granted,
            "per deployment"
        );
        assert!(
            matches!(locks.unlock("lab", "b"), Outcome::Held { .. }),
            "only the holder releases"
        );
        assert_eq!(locks.unlock("lab", "a"), Outcome::Granted);
        assert_eq!(locks.lock("lab", "b", ttl, t0), Outcome::Granted);
        assert_eq!(
            locks.lock("lab", "c", ttl, t0 + ttl + Duration::from_secs(1)),
            Outcome::Granted,
            "expired"
        );
    }
}
