//! Placement of a running cluster: every instance that runs now stays where
//! it is (host, port, name); only what the inventory adds is placed, with
//! the rules of [`place`], and what it drops is named.

use crate::model::{Inventory, Topology};
use crate::placement::{PlacedInstance, Placement, Role, least_loaded, place, zone_indices};

/// An instance that runs now, as the live cluster sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Existing {
    /// Index into [`Inventory::hosts`]; an index past them is a host the
    /// inventory no longer lists (everything on it leaves).
    pub host: usize,
    pub port: u16,
    pub name: String,
    /// The shard it serves: a replica belongs to its master's. Shards are
    /// numbered 0.. in the caller's order (the live cluster's masters by
    /// their lowest slot); the highest go first when `masters` is lowered.
    pub shard: u32,
    /// Master or replica (a sentinel is ignored).
    pub role: Role,
}

/// Where every instance of `inv` runs, given what runs now.
///
/// Without running Redis instances, or outside the cluster topology, this
/// is [`place`] exactly. Otherwise, shard by shard (`existing` shards
/// `0..masters` are kept):
///
/// - the master stays; on a host no longer listed, the shard's first kept
///   replica takes its place (promoted by apply), or else a new master is
///   placed (the old one is drained);
/// - replicas stay, in the order given (their rank); beyond
///   `replicas_per_master` the last ones leave;
/// - what is missing is placed as [`place`] would, counting what stays:
///   a new master on the host (zone first, with zones) holding the fewest
///   masters, then the fewest instances, ties by host order; a new replica,
///   rank by rank, on a host without an instance of its shard, the zone
///   holding the fewest of the shard's instances first, then the least
///   loaded, ties in rotating order from the host after the master;
/// - a new instance takes the lowest free port from `redis.port` on its
///   host (a port of an instance that leaves is not free: it still runs).
///
/// Shards `masters..` leave whole, as does everything on a host no longer
/// listed. Leaving instances are in [`Placement::leaving`], in `existing`
/// order.
#[must_use]
pub fn place_keeping(inv: &Inventory, existing: &[Existing]) -> Placement {
    let redis: Vec<&Existing> = existing
        .iter()
        .filter(|e| e.role != Role::Sentinel)
        .collect();
    if inv.deployment.topology != Topology::Cluster || redis.is_empty() || inv.hosts.is_empty() {
        return place(inv);
    }
    let hosts = inv.hosts.len();
    let masters = inv.deployment.masters;
    let replicas = inv.deployment.replicas_per_master as usize;
    let mut leaving: Vec<&Existing> = Vec::new();
    let mut shards: Vec<Shard> = (0..masters).map(|_| Shard::default()).collect();
    for e in &redis {
        match shards.get_mut(e.shard as usize) {
            Some(s) if e.host < hosts => match e.role {
                Role::Master if s.master.is_none() => s.master = Some(Member::kept(e)),
                _ => s.replicas.push(Member::kept(e)),
            },
            _ => leaving.push(e),
        }
    }
    for s in &mut shards {
        if s.master.is_none() && !s.replicas.is_empty() {
            // The master's host is gone: its replica takes over (apply
            // fails over before the old master is removed).
            s.master = Some(s.replicas.remove(0));
        }
        if s.replicas.len() > replicas {
            for r in s.replicas.split_off(replicas) {
                leaving.extend(redis.iter().find(|e| e.host == r.host && e.port == r.port));
            }
        }
    }
    let mut state = State::new(inv, &shards, &redis);
    for (shard, s) in shards.iter_mut().enumerate() {
        if s.master.is_none() {
            s.master = Some(state.new_master(shard));
        }
    }
    for rank in 0..replicas {
        for (shard, s) in shards.iter_mut().enumerate() {
            if s.replicas.len() <= rank {
                let master = s.master.as_ref().map_or(0, |m| m.host);
                s.replicas.push(state.new_replica(shard, master));
            }
        }
    }
    let mut instances = Vec::new();
    for (shard, s) in shards.iter().enumerate() {
        instances.extend(s.master.iter().map(|m| m.placed(shard, Role::Master)));
    }
    for rank in 0..replicas {
        for (shard, s) in shards.iter().enumerate() {
            instances.extend(s.replicas.get(rank).map(|m| m.placed(shard, Role::Replica)));
        }
    }
    Placement {
        instances,
        leaving: leaving
            .into_iter()
            .map(|e| PlacedInstance {
                name: e.name.clone(),
                host: e.host,
                port: e.port,
                shard: e.shard,
                role: e.role,
            })
            .collect(),
    }
}

#[derive(Default)]
struct Shard {
    master: Option<Member>,
    /// In rank order.
    replicas: Vec<Member>,
}

struct Member {
    host: usize,
    port: u16,
    name: String,
}

impl Member {
    fn kept(e: &Existing) -> Member {
        Member {
            host: e.host,
            port: e.port,
            name: e.name.clone(),
        }
    }
    fn placed(&self, shard: usize, role: Role) -> PlacedInstance {
        PlacedInstance {
            name: self.name.clone(),
            host: self.host,
            port: self.port,
            shard: u32::try_from(shard).unwrap_or(u32::MAX),
            role,
        }
    }
}

/// The greedy placement's counters, starting from what stays.
struct State {
    zone: Vec<usize>,
    zones: usize,
    load: Vec<usize>,
    masters_on: Vec<usize>,
    zone_masters: Vec<usize>,
    /// Hosts holding an instance of each shard.
    shard_hosts: Vec<Vec<usize>>,
    /// Ports in use per host (kept and leaving instances alike).
    taken: Vec<Vec<u16>>,
    first_port: u16,
}

impl State {
    fn new(inv: &Inventory, shards: &[Shard], redis: &[&Existing]) -> State {
        let hosts = inv.hosts.len();
        let zone = zone_indices(&inv.hosts);
        let zones = zone.iter().max().map_or(0, |z| z + 1);
        let mut state = State {
            zone_masters: vec![0; zones],
            zone,
            zones,
            load: vec![0; hosts],
            masters_on: vec![0; hosts],
            shard_hosts: vec![Vec::new(); shards.len()],
            taken: vec![Vec::new(); hosts],
            first_port: inv.redis.port,
        };
        for e in redis.iter().filter(|e| e.host < hosts) {
            state.taken[e.host].push(e.port);
        }
        for (shard, s) in shards.iter().enumerate() {
            if let Some(m) = &s.master {
                state.masters_on[m.host] += 1;
                state.zone_masters[state.zone[m.host]] += 1;
            }
            for m in s.master.iter().chain(&s.replicas) {
                state.load[m.host] += 1;
                state.shard_hosts[shard].push(m.host);
            }
        }
        state
    }

    fn new_master(&mut self, shard: usize) -> Member {
        let hosts = self.load.len();
        let taken = &self.shard_hosts[shard];
        let zone_masters = |h: usize| {
            if self.zones < 2 {
                0
            } else {
                self.zone_masters[self.zone[h]]
            }
        };
        // `min_by_key` keeps the first of equals: host order breaks ties.
        let host = (0..hosts)
            .filter(|h| !taken.contains(h))
            .min_by_key(|&h| (zone_masters(h), self.masters_on[h], self.load[h]))
            .or_else(|| least_loaded(&self.load, 0, |_| true))
            .unwrap_or(0);
        self.masters_on[host] += 1;
        self.zone_masters[self.zone[host]] += 1;
        self.add(shard, host)
    }

    fn new_replica(&mut self, shard: usize, master: usize) -> Member {
        let hosts = self.load.len();
        let start = (master + 1) % hosts;
        let taken = &self.shard_hosts[shard];
        let in_zone = |h: usize| {
            if self.zones < 2 {
                0
            } else {
                taken
                    .iter()
                    .filter(|&&t| self.zone[t] == self.zone[h])
                    .count()
            }
        };
        let host = (0..hosts)
            .map(|i| (start + i) % hosts)
            .filter(|h| !taken.contains(h))
            .min_by_key(|&h| (in_zone(h), self.load[h]))
            .or_else(|| least_loaded(&self.load, start, |_| true))
            .unwrap_or(0);
        self.add(shard, host)
    }

    fn add(&mut self, shard: usize, host: usize) -> Member {
        self.load[host] += 1;
        self.shard_hosts[shard].push(host);
        let mut port = self.first_port;
        while self.taken[host].contains(&port) && port < u16::MAX {
            port += 1;
        }
        self.taken[host].push(port);
        Member {
            host,
            port,
            name: format!("redis-{port}"),
        }
    }
}
