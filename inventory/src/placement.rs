//! Which instance runs on which host, on which port.

use crate::model::{Host, Inventory, RedisSettings, Topology};

/// Every instance of a deployment and where it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// Masters first (shard order), then replicas rank by rank (the first
    /// replica of every shard, then the second ...), then sentinels.
    pub instances: Vec<PlacedInstance>,
    /// Running instances a change of shape removes ([`crate::place_keeping`]):
    /// drained, stopped and forgotten by apply. Always empty from [`place`].
    /// `host` may index past [`Inventory::hosts`]: a host no longer listed.
    pub leaving: Vec<PlacedInstance>,
}

/// One Redis or Sentinel process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacedInstance {
    /// `redis-<port>` or `sentinel-<port>`: unique on its host.
    pub name: String,
    /// Index into [`Inventory::hosts`].
    pub host: usize,
    pub port: u16,
    /// Cluster shard (0-based). Always 0 for replication and sentinel
    /// topologies, and for sentinels.
    pub shard: u32,
    pub role: Role,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Master,
    Replica,
    Sentinel,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Master => "master",
            Role::Replica => "replica",
            Role::Sentinel => "sentinel",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PlacedInstance {
    /// A redis-server (master or replica), as opposed to a sentinel.
    pub fn is_redis(&self) -> bool {
        self.role != Role::Sentinel
    }
}

impl Placement {
    /// The instances on one host, in port order per kind.
    pub fn on_host(&self, host: usize) -> impl Iterator<Item = &PlacedInstance> {
        self.instances.iter().filter(move |i| i.host == host)
    }

    /// The master and replicas of one shard (never sentinels).
    pub fn shard_members(&self, shard: u32) -> impl Iterator<Item = &PlacedInstance> {
        self.redis().filter(move |i| i.shard == shard)
    }

    pub fn master_of(&self, shard: u32) -> Option<&PlacedInstance> {
        self.shard_members(shard).find(|i| i.role == Role::Master)
    }

    pub fn replicas_of(&self, shard: u32) -> impl Iterator<Item = &PlacedInstance> {
        self.shard_members(shard)
            .filter(|i| i.role == Role::Replica)
    }

    pub fn masters(&self) -> impl Iterator<Item = &PlacedInstance> {
        self.instances.iter().filter(|i| i.role == Role::Master)
    }

    /// All redis-server instances (masters and replicas).
    pub fn redis(&self) -> impl Iterator<Item = &PlacedInstance> {
        self.instances.iter().filter(|i| i.is_redis())
    }

    pub fn sentinels(&self) -> impl Iterator<Item = &PlacedInstance> {
        self.instances.iter().filter(|i| i.role == Role::Sentinel)
    }

    /// The memory the Redis instances on `host` may use together, to check
    /// against what the host has; `None` when `maxmemory` is unlimited.
    pub fn maxmemory_on_host(&self, redis: &RedisSettings, host: usize) -> Option<u64> {
        let instances = self.on_host(host).filter(|i| i.is_redis()).count();
        redis
            .maxmemory_bytes
            .map(|per_instance| per_instance.saturating_mul(instances as u64))
    }
}

/// Computes where every instance of `inv` runs.
///
/// The algorithm is greedy and deterministic (same inventory, same result):
///
/// 1. **Masters**: master `i` goes to the host with the fewest Redis
///    instances so far, ties broken by host order; so masters land on hosts
///    0, 1, 2, ... and wrap around when there are more masters than hosts.
/// 2. **Replicas**, rank by rank (the first replica of shard 0, 1, 2, ...,
///    then the second replica of each shard, ...): among the hosts that hold
///    no instance of that shard yet (anti-affinity), the least-loaded one,
///    ties broken in rotating order starting at the host after the shard's
///    master. The rotation is what makes 3 hosts × (3 masters + 3 replicas)
///    come out as "every host has one master and a replica of another
///    host's master", and it spreads replicas onto empty hosts first, so
///    instances share a host only when there are fewer hosts than instances.
/// 3. **Sentinels**: sentinel `k` goes to host `k mod hosts`, sharing hosts
///    with Redis instances (the classic layout) and, when there are more
///    sentinels than hosts, with each other.
///
/// **Zones** (`zone` on hosts): with two zones or more, steps 1 and 2
/// spread across zones first, then hosts (see [`assign_in_zones`]). With
/// no zones, or every host in one zone, placement is exactly the above.
///
/// Ports: on each host, Redis instances take `redis.port`, `+1`, ... in the
/// order they were assigned (named `redis-<port>`), and sentinels take
/// `sentinel.port`, `+1`, ... (named `sentinel-<port>`).
///
/// `parse` only returns inventories for which this works out: enough hosts
/// for anti-affinity, ports that fit and do not clash. For a hand-built
/// inventory that violates this, the function still does not panic: with
/// no hosts it places nothing, a replica that cannot avoid its master goes
/// to the least-loaded host anyway, and ports saturate at 65535.
#[must_use]
pub fn place(inv: &Inventory) -> Placement {
    let sentinels = match (inv.deployment.topology, &inv.sentinel) {
        (Topology::Sentinel, Some(s)) => Some((s.count, s.port)),
        _ => None,
    };
    let hosts = inv.hosts.len();
    let mut next_redis_port = vec![inv.redis.port; hosts];
    let mut instances = Vec::new();
    for slot in assign_in_zones(
        &zone_indices(&inv.hosts),
        inv.deployment.masters,
        inv.deployment.replicas_per_master,
    ) {
        let port = next_redis_port[slot.host];
        next_redis_port[slot.host] = port.saturating_add(1);
        instances.push(PlacedInstance {
            name: format!("redis-{port}"),
            host: slot.host,
            port,
            shard: slot.shard,
            role: slot.role,
        });
    }
    if let Some((count, first_port)) = sentinels {
        let mut next_port = vec![first_port; hosts];
        for host in sentinel_hosts(hosts, count) {
            let port = next_port[host];
            next_port[host] = port.saturating_add(1);
            instances.push(PlacedInstance {
                name: format!("sentinel-{port}"),
                host,
                port,
                shard: 0,
                role: Role::Sentinel,
            });
        }
    }
    Placement {
        instances,
        leaving: Vec::new(),
    }
}

/// A Redis instance assigned to a host, before ports are given out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Slot {
    pub host: usize,
    pub shard: u32,
    pub role: Role,
}

/// Steps 1 and 2 of [`place`]: Redis instances to hosts, in assignment
/// order. Shared with validation so that port checks see the real layout.
pub(crate) fn assign(hosts: usize, masters: u32, replicas_per_master: u32) -> Vec<Slot> {
    if hosts == 0 {
        return Vec::new();
    }
    let mut load = vec![0usize; hosts];
    let mut slots = Vec::new();
    // Hosts already holding an instance of each shard.
    let mut shard_hosts: Vec<Vec<usize>> = Vec::new();
    for shard in 0..masters {
        let host = least_loaded(&load, 0, |_| true).unwrap_or(0);
        load[host] += 1;
        shard_hosts.push(vec![host]);
        slots.push(Slot {
            host,
            shard,
            role: Role::Master,
        });
    }
    for _rank in 0..replicas_per_master {
        for (shard, taken) in (0..masters).zip(shard_hosts.iter_mut()) {
            let start = (taken[0] + 1) % hosts;
            let host = least_loaded(&load, start, |h| !taken.contains(&h))
                .or_else(|| least_loaded(&load, start, |_| true))
                .unwrap_or(0);
            load[host] += 1;
            taken.push(host);
            slots.push(Slot {
                host,
                shard,
                role: Role::Replica,
            });
        }
    }
    slots
}

/// Each host's zone as an index (zones numbered in order of first
/// appearance). A host without a zone is in a zone of its own kind, shared
/// with the other hosts without one: validation allows only all or none.
pub(crate) fn zone_indices(hosts: &[Host]) -> Vec<usize> {
    index_zones(hosts.iter().map(|h| h.zone.as_deref()))
}

pub(crate) fn index_zones<'a>(zones: impl Iterator<Item = Option<&'a str>>) -> Vec<usize> {
    let mut seen: Vec<Option<&str>> = Vec::new();
    zones
        .map(|z| {
            seen.iter().position(|s| *s == z).unwrap_or_else(|| {
                seen.push(z);
                seen.len() - 1
            })
        })
        .collect()
}

/// Steps 1 and 2 of [`place`] with each host's zone (`zone[h]`, an
/// index). With fewer than two zones this is [`assign`], unchanged, so an
/// inventory without zones keeps the placement it always had.
///
/// With zones, the same greedy steps rank hosts by zone first:
///
/// 1. **Masters**: master `i` goes to a host of the zone holding the fewest
///    masters so far; among those, the host with the fewest Redis
///    instances, ties broken by host order. So no zone holds more than
///    ceil(masters / zones) masters, the least any layout achieves.
/// 2. **Replicas**, rank by rank: among the hosts holding no instance of
///    the shard, those in the zone holding the fewest of the shard's
///    instances; among those, the least-loaded, ties broken in rotating
///    order from the host after the master. So a shard's first replica is
///    always in another zone than its master.
///
/// Zones come before hosts: with uneven zones a host in a small zone may
/// carry more than hosts in a big one, as surviving a zone is the point.
pub(crate) fn assign_in_zones(zone: &[usize], masters: u32, replicas_per_master: u32) -> Vec<Slot> {
    let hosts = zone.len();
    let zones = zone.iter().max().map_or(0, |z| z + 1);
    if zones < 2 {
        return assign(hosts, masters, replicas_per_master);
    }
    let mut load = vec![0usize; hosts];
    let mut zone_masters = vec![0usize; zones];
    let mut slots = Vec::new();
    let mut shard_hosts: Vec<Vec<usize>> = Vec::new();
    for shard in 0..masters {
        // `min_by_key` keeps the first of equals: host order breaks ties.
        let host = (0..hosts)
            .min_by_key(|&h| (zone_masters[zone[h]], load[h]))
            .unwrap_or(0);
        load[host] += 1;
        zone_masters[zone[host]] += 1;
        shard_hosts.push(vec![host]);
        slots.push(Slot {
            host,
            shard,
            role: Role::Master,
        });
    }
    for _rank in 0..replicas_per_master {
        for (shard, taken) in (0..masters).zip(shard_hosts.iter_mut()) {
            let start = (taken[0] + 1) % hosts;
            let in_zone = |h: usize| taken.iter().filter(|&&t| zone[t] == zone[h]).count();
            let host = (0..hosts)
                .map(|i| (start + i) % hosts)
                .filter(|h| !taken.contains(h))
                .min_by_key(|&h| (in_zone(h), load[h]))
                .or_else(|| least_loaded(&load, start, |_| true))
                .unwrap_or(0);
            load[host] += 1;
            taken.push(host);
            slots.push(Slot {
                host,
                shard,
                role: Role::Replica,
            });
        }
    }
    slots
}

/// Step 3 of [`place`]: the host of each sentinel.
pub(crate) fn sentinel_hosts(hosts: usize, count: u32) -> impl Iterator<Item = usize> {
    (0..count as usize)
        .filter(move |_| hosts > 0)
        .map(move |k| k % hosts)
}

/// The allowed host with the smallest load; among equals, the first one
/// met when going round the hosts from `start`.
pub(crate) fn least_loaded(
    load: &[usize],
    start: usize,
    allowed: impl Fn(usize) -> bool,
) -> Option<usize> {
    let n = load.len();
    (0..n)
        .map(|i| (start + i) % n)
        .filter(|&h| allowed(h))
        .min_by_key(|&h| load[h])
}

/// The most masters one host should hold: ceil(masters / hosts). No
/// assignment does better, and placement starts there.
#[must_use]
pub fn master_limit(masters: u32, hosts: usize) -> u32 {
    let hosts = u32::try_from(hosts).unwrap_or(u32::MAX).max(1);
    masters.div_ceil(hosts)
}

/// Whether losing `lost` of `total` cluster masters at once stops the
/// cluster for good: Redis Cluster marks a master failed, and elects its
/// replica, only with the votes of a strict majority of all masters, so the
/// survivors must be more than half.
#[must_use]
pub fn loss_is_fatal(lost: u32, total: u32) -> bool {
    total > 0 && lost > 0 && lost.saturating_mul(2) >= total
}

/// A host whose loss would leave a cluster's masters without a majority.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FatalHostLoss {
    /// Index into [`Inventory::hosts`].
    pub host: usize,
    /// The masters placed on it.
    pub masters: u32,
    pub total: u32,
}

impl Placement {
    /// Hosts whose loss the placed masters would not survive (cluster
    /// topology only; with one master, a failover is the sentinels' or the
    /// agent's business). Placement already spreads masters as evenly as
    /// possible, so what this returns no failover can avoid: it takes more
    /// hosts (or a different number of masters).
    #[must_use]
    pub fn fatal_host_losses(&self, topology: Topology) -> Vec<FatalHostLoss> {
        if topology != Topology::Cluster {
            return Vec::new();
        }
        let total = u32::try_from(self.masters().count()).unwrap_or(u32::MAX);
        let mut hosts: Vec<usize> = self.masters().map(|m| m.host).collect();
        hosts.sort_unstable();
        hosts.dedup();
        hosts
            .into_iter()
            .filter_map(|host| {
                let masters =
                    u32::try_from(self.masters().filter(|m| m.host == host).count()).ok()?;
                loss_is_fatal(masters, total).then_some(FatalHostLoss {
                    host,
                    masters,
                    total,
                })
            })
            .collect()
    }
}

/// A zone whose loss would leave a cluster's masters without a majority.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FatalZoneLoss {
    pub zone: String,
    /// The masters placed in it, and on how many hosts.
    pub masters: u32,
    pub hosts: u32,
    pub total: u32,
}

/// A shard with a replica whose every instance is in one zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardInOneZone {
    pub shard: u32,
    pub zone: String,
}

impl Placement {
    /// Zones whose loss the placed masters would not survive (cluster
    /// topology, two zones or more: with one zone, losing it loses
    /// everything whatever the placement). `hosts` are the inventory's.
    /// Placement spreads masters over zones as evenly as possible, so what
    /// this returns takes more zones (or another number of masters).
    #[must_use]
    pub fn fatal_zone_losses(&self, topology: Topology, hosts: &[Host]) -> Vec<FatalZoneLoss> {
        let zone = zone_indices(hosts);
        if topology != Topology::Cluster || zone.iter().all(|&z| z == 0) {
            return Vec::new();
        }
        let total = u32::try_from(self.masters().count()).unwrap_or(u32::MAX);
        let mut out = Vec::new();
        for z in 0..zone.iter().max().map_or(0, |z| z + 1) {
            let on: Vec<usize> = self
                .masters()
                .map(|m| m.host)
                .filter(|&h| zone.get(h) == Some(&z))
                .collect();
            let masters = u32::try_from(on.len()).unwrap_or(u32::MAX);
            if !loss_is_fatal(masters, total) {
                continue;
            }
            let mut distinct = on.clone();
            distinct.sort_unstable();
            distinct.dedup();
            let name = zone
                .iter()
                .position(|&x| x == z)
                .and_then(|h| hosts[h].zone.clone());
            out.push(FatalZoneLoss {
                zone: name.unwrap_or_default(),
                masters,
                hosts: u32::try_from(distinct.len()).unwrap_or(u32::MAX),
                total,
            });
        }
        out
    }

    /// Shards with a replica whose instances all sit in one zone, when the
    /// inventory has two zones or more.
    #[must_use]
    pub fn shards_in_one_zone(&self, hosts: &[Host]) -> Vec<ShardInOneZone> {
        let zone = zone_indices(hosts);
        if zone.iter().all(|&z| z == 0) {
            return Vec::new();
        }
        let mut shards: Vec<u32> = self.redis().map(|i| i.shard).collect();
        shards.sort_unstable();
        shards.dedup();
        shards
            .into_iter()
            .filter_map(|shard| {
                let members: Vec<usize> = self.shard_members(shard).map(|i| i.host).collect();
                let first = *members.first()?;
                let one_zone = members.iter().all(|&h| zone.get(h) == zone.get(first));
                (members.len() > 1 && one_zone).then(|| ShardInOneZone {
                    shard,
                    zone: hosts
                        .get(first)
                        .and_then(|h| h.zone.clone())
                        .unwrap_or_default(),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod balance_tests {
    use super::*;

    #[test]
    fn master_limit_is_ceil() {
        for (masters, hosts, limit) in [
            (3, 3, 1),
            (3, 2, 2),
            (4, 3, 2),
            (3, 6, 1),
            (6, 3, 2),
            (7, 3, 3),
        ] {
            assert_eq!(master_limit(masters, hosts), limit, "{masters} on {hosts}");
        }
        assert_eq!(master_limit(3, 0), 3, "no hosts does not divide by zero");
    }

    #[test]
    fn loss_is_fatal_without_a_strict_majority_left() {
        for (lost, total, fatal) in [
            (1, 3, false),
            (2, 3, true),
            (2, 4, true),
            (1, 4, false),
            (2, 5, false),
            (3, 5, true),
            (0, 3, false),
            (3, 3, true),
        ] {
            assert_eq!(loss_is_fatal(lost, total), fatal, "{lost} of {total}");
        }
    }
}
