//! Placement of a running cluster (`place_keeping`): what runs stays where
//! it is; only what the inventory adds is placed; what it drops is named.

use paddock_inventory::{Existing, Inventory, Placement, Role, parse, place, place_keeping};

/// A cluster inventory; `zones[h]` is host h's zone ("" for none); host h
/// is named `h{ids[h]}` at 10.0.0.{ids[h]+1}, so a host keeps its name when
/// another is removed.
fn cluster(masters: u32, replicas: u32, ids: &[usize], zones: &[&str]) -> Inventory {
    let mut text = format!(
        "[deployment]\nname = \"k\"\ntopology = \"cluster\"\nmasters = {masters}\nreplicas_per_master = {replicas}\n"
    );
    for (h, id) in ids.iter().enumerate() {
        text += &format!(
            "[[hosts]]\nname = \"h{id}\"\naddress = \"10.0.0.{}\"\n",
            id + 1
        );
        if let Some(zone) = zones.get(h).filter(|z| !z.is_empty()) {
            text += &format!("zone = \"{zone}\"\n");
        }
    }
    parse("k.toml", &text).unwrap_or_else(|e| panic!("{e}"))
}

fn plain(masters: u32, replicas: u32, hosts: usize) -> Inventory {
    let ids: Vec<usize> = (0..hosts).collect();
    cluster(masters, replicas, &ids, &[])
}

/// What runs, as a placement made it (replicas in rank order).
fn running(p: &Placement) -> Vec<Existing> {
    p.redis()
        .map(|i| Existing {
            host: i.host,
            port: i.port,
            name: i.name.clone(),
            shard: i.shard,
            role: i.role,
        })
        .collect()
}

/// "host:port role shard" per instance, e.g. "0:7000 M0".
fn layout<'a>(instances: impl Iterator<Item = &'a paddock_inventory::PlacedInstance>) -> String {
    instances
        .map(|i| {
            let role = if i.role == Role::Master { 'M' } else { 'R' };
            format!("{}:{} {role}{}", i.host, i.port, i.shard)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Every kept instance of `before` is in `after` with its host, port and name.
fn kept_in_place(before: &[Existing], after: &Placement) -> usize {
    before
        .iter()
        .filter(|e| {
            after
                .instances
                .iter()
                .any(|i| i.host == e.host && i.port == e.port && i.name == e.name)
        })
        .count()
}

#[test]
fn without_running_instances_it_is_place() {
    for (masters, replicas, hosts) in [(3, 1, 3), (4, 1, 4), (3, 2, 5), (6, 1, 3), (3, 0, 3)] {
        let inv = plain(masters, replicas, hosts);
        assert_eq!(place_keeping(&inv, &[]), place(&inv));
    }
    // Outside the cluster topology, what runs does not matter either.
    let text = "[deployment]\nname = \"s\"\ntopology = \"sentinel\"\n\
                [[hosts]]\nname = \"a\"\naddress = \"10.0.0.1\"\n\
                [[hosts]]\nname = \"b\"\naddress = \"10.0.0.2\"\n\
                [[hosts]]\nname = \"c\"\naddress = \"10.0.0.3\"\n";
    let inv = parse("s.toml", text).unwrap();
    let p = place(&inv);
    assert_eq!(place_keeping(&inv, &running(&p)), p);
}

#[test]
fn what_runs_as_placed_is_placed_again_exactly() {
    let zoned = ["a", "b", "c", "a", "b", "c"];
    for hosts in 3..=6 {
        for masters in 3..=6 {
            for replicas in 0..=2 {
                for zones in [&[][..], &zoned[..hosts]] {
                    let ids: Vec<usize> = (0..hosts).collect();
                    let inv = cluster(masters, replicas, &ids, zones);
                    let p = place(&inv);
                    assert_eq!(
                        place_keeping(&inv, &running(&p)),
                        p,
                        "{masters}x{replicas} on {hosts} hosts, zones {zones:?}"
                    );
                }
            }
        }
    }
}

#[test]
fn scale_out_then_in_keeps_every_instance() {
    // 3 hosts x (3 masters + 1 replica), then a 4th host and a 4th master.
    let three = place(&plain(3, 1, 3));
    let before = running(&three);
    let four = place_keeping(&plain(4, 1, 4), &before);
    assert_eq!(kept_in_place(&before, &four), 6);
    assert_eq!(
        layout(four.redis()),
        "0:7000 M0, 1:7000 M1, 2:7000 M2, 3:7000 M3, \
         1:7001 R0, 2:7001 R1, 0:7001 R2, 0:7002 R3"
    );
    assert!(four.leaving.is_empty());
    // Back to 3 masters on the 4 hosts: the highest shard leaves whole.
    let now = running(&four);
    let back = place_keeping(&plain(3, 1, 4), &now);
    assert_eq!(layout(back.redis()), layout(three.redis()));
    assert_eq!(layout(back.leaving.iter()), "3:7000 M3, 0:7002 R3");
    // And the 4th host removed once empty: nothing moves.
    let after = running(&back);
    assert_eq!(place_keeping(&plain(3, 1, 3), &after), three);
}

#[test]
fn replicas_raised_then_lowered() {
    let one = place(&plain(3, 1, 3));
    let two = place_keeping(&plain(3, 2, 3), &running(&one));
    assert_eq!(kept_in_place(&running(&one), &two), 6);
    // The new replicas go where a fresh placement puts them.
    assert_eq!(two, place(&plain(3, 2, 3)));
    // Lowered: the highest-rank replicas leave.
    let back = place_keeping(&plain(3, 1, 3), &running(&two));
    assert_eq!(back.instances, one.instances);
    assert_eq!(
        layout(back.leaving.iter()),
        "2:7002 R0, 0:7002 R1, 1:7002 R2"
    );
}

#[test]
fn masters_raised_on_the_same_hosts_spread_over_them() {
    let three = place(&plain(3, 1, 3));
    let six = place_keeping(&plain(6, 1, 3), &running(&three));
    assert_eq!(kept_in_place(&running(&three), &six), 6);
    let masters_on = |h: usize| six.masters().filter(|m| m.host == h).count();
    assert_eq!([masters_on(0), masters_on(1), masters_on(2)], [2, 2, 2]);
    // Anti-affinity: no shard has two instances on one host.
    for shard in 0..6 {
        let hosts: Vec<usize> = six.shard_members(shard).map(|i| i.host).collect();
        assert_eq!(hosts.len(), 2);
        assert_ne!(hosts[0], hosts[1], "shard {shard}");
    }
    // Ports are unique per host.
    for h in 0..3 {
        let mut ports: Vec<u16> = six.on_host(h).map(|i| i.port).collect();
        let n = ports.len();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), n);
    }
}

#[test]
fn a_removed_host_leaves_and_its_roles_are_taken_over() {
    // 4 hosts x (3 masters + 1 replica): h1 holds M1 alone.
    let four = place(&plain(3, 1, 4));
    assert_eq!(
        layout(four.redis()),
        "0:7000 M0, 1:7000 M1, 2:7000 M2, 3:7000 R0, 2:7001 R1, 3:7001 R2"
    );
    // h1 removed: hosts h0, h2, h3 are now 0, 1, 2; h1's index is past them.
    let index = [0usize, 3, 1, 2];
    let now: Vec<Existing> = running(&four)
        .into_iter()
        .map(|e| Existing {
            host: index[e.host],
            ..e
        })
        .collect();
    let after = place_keeping(&cluster(3, 1, &[0, 2, 3], &[]), &now);
    // Shard 1's replica (on h2, now 1) takes over as its master; shard 1
    // gets a new replica on the least-loaded other host; the rest stays.
    assert_eq!(
        layout(after.redis()),
        "0:7000 M0, 1:7001 M1, 1:7000 M2, 2:7000 R0, 0:7001 R1, 2:7001 R2"
    );
    assert_eq!(layout(after.leaving.iter()), "3:7000 M1");
    assert_eq!(kept_in_place(&now, &after), 5);
}

#[test]
fn a_removed_host_whose_master_has_no_replica_gets_a_new_master() {
    let four = place(&plain(4, 0, 4));
    let now: Vec<Existing> = running(&four)
        .into_iter()
        .map(|e| Existing {
            host: if e.host == 3 { 9 } else { e.host },
            ..e
        })
        .collect();
    let after = place_keeping(&plain(4, 0, 3), &now);
    assert_eq!(
        layout(after.redis()),
        "0:7000 M0, 1:7000 M1, 2:7000 M2, 0:7001 M3"
    );
    assert_eq!(layout(after.leaving.iter()), "9:7000 M3");
}

#[test]
fn zones_rule_new_instances() {
    // Zones a, b, c on 3 hosts; a 4th host in zone a and a 4th master.
    let three = place(&cluster(3, 1, &[0, 1, 2], &["a", "b", "c"]));
    let inv = cluster(4, 1, &[0, 1, 2, 3], &["a", "b", "c", "a"]);
    let four = place_keeping(&inv, &running(&three));
    assert_eq!(kept_in_place(&running(&three), &four), 6);
    let m3 = four.master_of(3).unwrap();
    // The zone holding the fewest masters is any (one each): the new host,
    // holding nothing, wins among them.
    assert_eq!(m3.host, 3);
    let r3 = four.replicas_of(3).next().unwrap();
    // Its replica avoids the master's zone (a: hosts 0 and 3).
    assert!(r3.host == 1 || r3.host == 2, "{}", layout(four.redis()));
    assert!(four.shards_in_one_zone(&inv.hosts).is_empty());
}
