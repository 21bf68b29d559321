//! Zones: placement spreads across zones first, then hosts; without zones
//! (or with one) it is exactly what it was before zones existed.

use paddock_inventory::{Placement, Role, parse, place, warnings};

/// A cluster inventory; `zones[h]` is host h's zone ("" for none).
fn cluster(masters: u32, replicas: u32, zones: &[&str]) -> String {
    let mut text = format!(
        "[deployment]\nname = \"z\"\ntopology = \"cluster\"\nmasters = {masters}\nreplicas_per_master = {replicas}\n"
    );
    for (h, zone) in zones.iter().enumerate() {
        text += &format!(
            "[[hosts]]\nname = \"h{h}\"\naddress = \"10.0.0.{}\"\n",
            h + 1
        );
        if !zone.is_empty() {
            text += &format!("zone = \"{zone}\"\n");
        }
    }
    text
}

fn placed(masters: u32, replicas: u32, zones: &[&str]) -> Placement {
    let text = cluster(masters, replicas, zones);
    place(&parse("z.toml", &text).unwrap_or_else(|e| panic!("{e}")))
}

/// "host role shard" per Redis instance in placement order, e.g. "0M0"
/// (host 0, master of shard 0) or "3R1" (host 3, replica of shard 1).
fn layout(p: &Placement) -> String {
    p.redis()
        .map(|i| {
            let role = if i.role == Role::Master { 'M' } else { 'R' };
            format!("{}{role}{}", i.host, i.shard)
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Today's placements, pinned: an inventory without zones, or with every
/// host in one zone, must keep them exactly.
#[test]
fn without_zones_placement_is_unchanged() {
    let table: [(usize, u32, u32, &str); 9] = [
        (3, 3, 1, PIN_3_3_1),
        (3, 3, 2, PIN_3_3_2),
        (3, 4, 1, PIN_3_4_1),
        (4, 3, 1, PIN_4_3_1),
        (6, 3, 1, PIN_6_3_1),
        (3, 6, 1, PIN_3_6_1),
        (5, 3, 2, PIN_5_3_2),
        (2, 3, 1, PIN_2_3_1),
        (4, 4, 1, PIN_4_4_1),
    ];
    for (hosts, masters, replicas, pinned) in table {
        let none = vec![""; hosts];
        let one = vec!["dc1"; hosts];
        let shape = format!("{masters}x{replicas} on {hosts} hosts");
        assert_eq!(layout(&placed(masters, replicas, &none)), pinned, "{shape}");
        assert_eq!(
            layout(&placed(masters, replicas, &one)),
            pinned,
            "{shape}, one zone"
        );
    }
    for example in [
        include_str!("../examples/vagrant-lab.toml"),
        include_str!("../examples/six-hosts.toml"),
        include_str!("../examples/replication.toml"),
        include_str!("../examples/sentinel.toml"),
    ] {
        let inv = parse("e.toml", example).expect("valid");
        let mut zoned = inv.clone();
        for h in &mut zoned.hosts {
            h.zone = Some("only".into());
        }
        assert_eq!(place(&zoned), place(&inv));
    }
}

// Printed by the code before zones existed; the digits are host, shard.
const PIN_3_3_1: &str = "0M0 1M1 2M2 1R0 2R1 0R2";
const PIN_3_3_2: &str = "0M0 1M1 2M2 1R0 2R1 0R2 2R0 0R1 1R2";
const PIN_3_4_1: &str = "0M0 1M1 2M2 0M3 1R0 2R1 0R2 1R3";
const PIN_4_3_1: &str = "0M0 1M1 2M2 3R0 2R1 3R2";
const PIN_6_3_1: &str = "0M0 1M1 2M2 3R0 4R1 5R2";
const PIN_3_6_1: &str = "0M0 1M1 2M2 0M3 1M4 2M5 1R0 2R1 0R2 1R3 2R4 0R5";
const PIN_5_3_2: &str = "0M0 1M1 2M2 3R0 4R1 3R2 1R0 2R1 4R2";
const PIN_2_3_1: &str = "0M0 1M1 0M2 1R0 0R1 1R2";
const PIN_4_4_1: &str = "0M0 1M1 2M2 3M3 1R0 2R1 3R2 0R3";

/// Every shard spans as many zones as it has instances (up to the number
/// of zones), no zone holds more than ceil(masters / zones) masters, and
/// within that, hosts share the load as before.
#[test]
fn zoned_layouts() {
    // (masters, replicas, zone per host) -> layout ("host role shard")
    let table: [(u32, u32, &[&str], &str); 7] = [
        // 2 zones x 3 hosts: one instance per host, every shard in both.
        (
            3,
            1,
            &["a", "a", "a", "b", "b", "b"],
            "0M0 3M1 1M2 4R0 2R1 5R2",
        ),
        // 3 zones x 1 host: what hosts alone give.
        (3, 1, &["a", "b", "c"], PIN_3_3_1),
        // Uneven zones: the lone host of zone b holds a copy of every shard.
        (3, 1, &["a", "a", "a", "a", "b"], "0M0 4M1 1M2 4R0 2R1 4R2"),
        // replicas_per_master 2 in 3 zones: every shard in all three.
        (
            3,
            2,
            &["a", "a", "b", "b", "c", "c"],
            "0M0 2M1 4M2 3R0 5R1 1R2 4R0 0R1 2R2",
        ),
        // replicas_per_master 2 in 2 zones: both zones, then hosts.
        (
            3,
            2,
            &["a", "a", "a", "b", "b", "b"],
            "0M0 3M1 1M2 4R0 2R1 5R2 1R0 4R1 2R2",
        ),
        (
            4,
            1,
            &["a", "a", "b", "b", "c", "c"],
            "0M0 2M1 4M2 1M3 3R0 5R1 0R2 2R3",
        ),
        // Two masters per zone even though zone c has four hosts.
        (
            6,
            1,
            &["a", "b", "c", "c", "c", "c"],
            "0M0 1M1 2M2 3M3 0M4 1M5 4R0 5R1 0R2 1R3 2R4 3R5",
        ),
    ];
    for (masters, replicas, zones, want) in table {
        assert_eq!(
            layout(&placed(masters, replicas, zones)),
            want,
            "{masters}x{replicas} in {zones:?}"
        );
    }
}

/// Over many shapes and zone layouts: the zone guarantees, anti-affinity,
/// and a placement the parser accepts (no false port clash).
#[test]
fn zone_invariants_over_many_shapes() {
    let layouts: [&[&str]; 6] = [
        &["a", "b"],
        &["a", "a", "b", "b"],
        &["a", "b", "c"],
        &["a", "a", "b", "b", "c", "c"],
        &["a", "a", "a", "a", "b"],
        &["a", "b", "c", "c", "c", "d", "d"],
    ];
    let mut checked = 0;
    for zones in layouts {
        let mut names: Vec<&str> = zones.to_vec();
        names.sort_unstable();
        names.dedup();
        for masters in 3..=7u32 {
            for replicas in 0..=3u32 {
                if replicas as usize + 1 > zones.len() {
                    continue;
                }
                let p = placed(masters, replicas, zones);
                let shape = format!("{masters}x{replicas} in {zones:?}");
                let limit = masters.div_ceil(names.len() as u32) as usize;
                for zone in &names {
                    let n = p.masters().filter(|m| zones[m.host] == *zone).count();
                    assert!(n <= limit, "{shape}: {n} masters in zone {zone}");
                }
                for shard in 0..masters {
                    let hosts: Vec<usize> = p.shard_members(shard).map(|i| i.host).collect();
                    let mut distinct = hosts.clone();
                    distinct.sort_unstable();
                    distinct.dedup();
                    assert_eq!(distinct.len(), hosts.len(), "{shape}: anti-affinity");
                    let mut spanned: Vec<&str> = hosts.iter().map(|&h| zones[h]).collect();
                    spanned.sort_unstable();
                    spanned.dedup();
                    let want = hosts.len().min(names.len());
                    assert_eq!(spanned.len(), want, "{shape}: shard {shard} in {spanned:?}");
                }
                checked += 1;
            }
        }
    }
    assert!(checked > 50);
}

#[test]
fn a_zone_on_some_hosts_only_is_an_error_at_each_host_without() {
    let text = cluster(3, 1, &["a", "", "b", ""]);
    let err = parse("inventory.toml", &text)
        .expect_err("mixed zones")
        .to_string();
    assert!(
        err.contains(
            "inventory.toml:10:1: error: host `h1` has no zone, but host `h0` has one (line 9)"
        ),
        "{err}"
    );
    assert!(err.contains("error: host `h3` has no zone"), "{err}");
    assert!(err.contains("hint: give every host a `zone`"), "{err}");
    assert_eq!(err.matches("has no zone").count(), 2, "{err}");
}

#[test]
fn a_zone_must_look_like_a_name() {
    let text = cluster(3, 1, &["a", "b", "rack a"]);
    let err = parse("inventory.toml", &text)
        .expect_err("bad zone")
        .to_string();
    assert!(
        err.contains("inventory.toml:17:8: error: invalid zone `rack a`"),
        "{err}"
    );
}

fn warned(masters: u32, replicas: u32, zones: &[&str]) -> Vec<String> {
    let inv = parse("z.toml", &cluster(masters, replicas, zones)).expect("valid");
    warnings(&inv).into_iter().map(|w| w.message).collect()
}

#[test]
fn a_zone_whose_loss_is_fatal_is_warned_about() {
    // Two zones: one of them holds two of the three masters, whatever the
    // placement.
    assert_eq!(
        warned(3, 1, &["a", "a", "a", "b", "b", "b"]),
        [
            "losing zone `a` would take out 2 of the 3 masters: the 1 left are not a majority, so Redis Cluster would elect no replica and the cluster would stay down (cluster_state:fail) until that zone is back"
        ]
    );
    // Three zones: one master each.
    assert!(warned(3, 1, &["a", "a", "b", "b", "c", "c"]).is_empty());
    // 5 masters in 3 zones: at most two per zone.
    assert!(warned(5, 1, &["a", "a", "b", "b", "c", "c"]).is_empty());
    // 4 masters in 3 zones: two in one zone is half.
    let w = warned(4, 1, &["a", "a", "b", "b", "c", "c"]);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].starts_with("losing zone `a` would take out 2 of the 4"),
        "{w:?}"
    );
    // A zone of one host: the host warning already says it.
    let w = warned(3, 1, &["a", "b"]);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].starts_with("losing host `h0`"), "{w:?}");
    // No zones, or one: nothing about zones.
    assert!(warned(3, 1, &["", "", ""]).is_empty());
    assert!(warned(3, 1, &["a", "a", "a"]).is_empty());
}

#[test]
fn a_shard_in_one_zone_is_found() {
    let inv = parse("z.toml", &cluster(3, 1, &["a", "a", "b", "b"])).expect("valid");
    let mut p = place(&inv);
    assert!(
        p.shards_in_one_zone(&inv.hosts).is_empty(),
        "{}",
        layout(&p)
    );
    // Move shard 0's replica next to its master's zone, as an older
    // placement might have left it.
    let master = p.master_of(0).map(|m| m.host).expect("master");
    let buddy = (0..4)
        .find(|&h| h != master && inv.hosts[h].zone == inv.hosts[master].zone)
        .expect("a host in the same zone");
    for i in &mut p.instances {
        if i.shard == 0 && i.role == Role::Replica {
            i.host = buddy;
        }
    }
    let found = p.shards_in_one_zone(&inv.hosts);
    assert_eq!(found.len(), 1);
    assert_eq!((found[0].shard, found[0].zone.as_str()), (0, "a"));
}

#[test]
fn the_zones_example() {
    let inv = parse("zones.toml", include_str!("../examples/zones.toml")).expect("valid");
    assert!(warnings(&inv).is_empty());
    let p = place(&inv);
    // Hosts 0-1 are rack-a, 2-3 rack-b, 4-5 rack-c.
    assert_eq!(layout(&p), "0M0 2M1 4M2 3R0 5R1 1R2 4R0 0R1 2R2");
    let zone = |h: usize| inv.hosts[h].zone.as_deref();
    for shard in 0..3 {
        let mut zones: Vec<_> = p.shard_members(shard).map(|i| zone(i.host)).collect();
        zones.sort_unstable();
        assert_eq!(zones, [Some("rack-a"), Some("rack-b"), Some("rack-c")]);
    }
}
