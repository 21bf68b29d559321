//! The grammar of Redis ACL rules (Redis 7), so that a rule Redis would
//! refuse at start-up (and echo, with the user's password, into its log) is
//! refused by `validate` instead. Password rules are handled by the caller.

/// Keywords, case-insensitive as Redis reads them.
const KEYWORDS: [&str; 10] = [
    "on",
    "off",
    "allkeys",
    "allchannels",
    "allcommands",
    "nocommands",
    "resetkeys",
    "resetchannels",
    "clearselectors",
    "sanitize-payload",
];
/// Keywords Redis accepts only outside a selector.
const USER_ONLY: [&str; 4] = ["on", "off", "clearselectors", "sanitize-payload"];
const MORE_KEYWORDS: [&str; 1] = ["skip-sanitize-payload"];

/// Command categories (ACL CAT of Redis 7).
pub const CATEGORIES: [&str; 21] = [
    "keyspace", "read", "write", "set", "sortedset", "list", "hash", "string", "bitmap",
    "hyperloglog", "geo", "stream", "pubsub", "admin", "fast", "slow", "blocking", "dangerous",
    "connection", "transaction", "scripting",
];

/// Top-level commands: COMMAND LIST of Redis 7.0, plus those 7.2 and 7.4 added.
const COMMANDS: &[&str] = &[
    "acl", "append", "asking", "auth", "bgrewriteaof", "bgsave", "bitcount", "bitfield", "bitfield_ro", "bitop", "bitpos", "blmove", "blmpop", "blpop", "brpop", "brpoplpush", "bzmpop", "bzpopmax", "bzpopmin", "client", "cluster", "command", "config", "copy", "dbsize", "debug", "decr", "decrby", "del", "discard", "dump", "echo", "eval", "eval_ro", "evalsha", "evalsha_ro", "exec", "exists", "expire", "expireat", "expiretime", "failover", "fcall", "fcall_ro", "flushall", "flushdb", "function", "geoadd", "geodist", "geohash", "geopos", "georadius", "georadius_ro", "georadiusbymember", "georadiusbymember_ro", "geosearch", "geosearchstore", "get", "getbit", "getdel", "getex", "getrange", "getset", "hdel", "hello", "hexists", "hget", "hgetall", "hincrby", "hincrbyfloat", "hkeys", "hlen", "hmget", "hmset", "hrandfield", "hscan", "hset", "hsetnx", "hstrlen", "hvals", "incr", "incrby", "incrbyfloat", "info", "keys", "lastsave", "latency", "lcs", "lindex", "linsert", "llen", "lmove", "lmpop", "lolwut", "lpop", "lpos", "lpush", "lpushx", "lrange", "lrem", "lset", "ltrim", "memory", "mget", "migrate", "module", "monitor", "move", "mset", "msetnx", "multi", "object", "persist", "pexpire", "pexpireat", "pexpiretime", "pfadd", "pfcount", "pfdebug", "pfmerge", "pfselftest", "ping", "psetex", "psubscribe", "psync", "pttl", "publish", "pubsub", "punsubscribe", "quit", "randomkey", "readonly", "readwrite", "rename", "renamenx", "replconf", "replicaof", "reset", "restore", "restore-asking", "role", "rpop", "rpoplpush", "rpush", "rpushx", "sadd", "save", "scan", "scard", "script", "sdiff", "sdiffstore", "select", "set", "setbit", "setex", "setnx", "setrange", "shutdown", "sinter", "sintercard", "sinterstore", "sismember", "slaveof", "slowlog", "smembers", "smismember", "smove", "sort", "sort_ro", "spop", "spublish", "srandmember", "srem", "sscan", "ssubscribe", "strlen", "subscribe", "substr", "sunion", "sunionstore", "sunsubscribe", "swapdb", "sync", "time", "touch", "ttl", "type", "unlink", "unsubscribe", "unwatch", "wait", "watch", "xack", "xadd", "xautoclaim", "xclaim", "xdel", "xgroup", "xinfo", "xlen", "xpending", "xrange", "xread", "xreadgroup", "xrevrange", "xsetid", "xtrim", "zadd", "zcard", "zcount", "zdiff", "zdiffstore", "zincrby", "zinter", "zintercard", "zinterstore", "zlexcount", "zmpop", "zmscore", "zpopmax", "zpopmin", "zrandmember", "zrange", "zrangebylex", "zrangebyscore", "zrangestore", "zrank", "zrem", "zremrangebylex", "zremrangebyrank", "zremrangebyscore", "zrevrange", "zrevrangebylex", "zrevrangebyscore", "zrevrank", "zscan", "zscore", "zunion", "zunionstore", 
    "waitaof", "hexpire", "hpexpire", "hexpireat", "hpexpireat", "httl", "hpttl",
    "hexpiretime", "hpexpiretime", "hpersist",
];

/// Why Redis would refuse `rule` (not a password rule), with a hint; None
/// when it is valid. `in_selector`: the rule is inside `( ... )`.
pub fn check(rule: &str, in_selector: bool) -> Option<(String, &'static str)> {
    let lower = rule.to_ascii_lowercase();
    if KEYWORDS.contains(&lower.as_str()) || MORE_KEYWORDS.contains(&lower.as_str()) {
        if in_selector && USER_ONLY.contains(&lower.as_str()) {
            return Some((
                "is not allowed inside a selector".into(),
                "put on, off, clearselectors and sanitize-payload outside the parentheses",
            ));
        }
        return None;
    }
    let pattern = |p: &str| {
        (p.is_empty()).then(|| {
            (
                "has no pattern after it".to_owned(),
                "give a key or channel glob, e.g. ~app:* or &news.*",
            )
        })
    };
    if let Some(p) = rule.strip_prefix('~').or_else(|| rule.strip_prefix('&')) {
        return pattern(p);
    }
    if let Some(rest) = rule.strip_prefix('%') {
        let Some((perms, p)) = rest.split_once('~') else {
            return Some((
                "is not a key permission".into(),
                "write %R~pattern, %W~pattern or %RW~pattern",
            ));
        };
        let valid = !perms.is_empty() && perms.chars().all(|c| matches!(c, 'R' | 'W' | 'r' | 'w'));
        if !valid {
            return Some((
                format!("has the permission `{perms}`, which is neither R, W nor RW"),
                "write %R~pattern, %W~pattern or %RW~pattern",
            ));
        }
        return pattern(p);
    }
    let Some(body) = rule.strip_prefix('+').or_else(|| rule.strip_prefix('-')) else {
        return Some((
            "is not an ACL rule".into(),
            "use on/off, ~pattern, %R~ %W~ %RW~pattern, &pattern, +command, -command, +@category, -@category, +command|subcommand, allkeys, allchannels, allcommands, nocommands, resetkeys, resetchannels, or a (selector)",
        ));
    };
    if let Some(category) = body.strip_prefix('@') {
        let category = category.to_ascii_lowercase();
        if category == "all" || CATEGORIES.contains(&category.as_str()) {
            return None;
        }
        return Some((
            format!("names the unknown category `@{category}`"),
            "categories are @all, @keyspace, @read, @write, @set, @sortedset, @list, @hash, @string, @bitmap, @hyperloglog, @geo, @stream, @pubsub, @admin, @fast, @slow, @blocking, @dangerous, @connection, @transaction, @scripting",
        ));
    }
    let (command, sub) = match body.split_once('|') {
        Some((c, s)) => (c, Some(s)),
        None => (body, None),
    };
    if !COMMANDS.contains(&command.to_ascii_lowercase().as_str()) {
        return Some((
            format!("names the unknown command `{command}`"),
            "check the spelling against Redis's COMMAND LIST; grant groups with +@category",
        ));
    }
    if sub.is_some_and(|s| s.is_empty() || s.contains('|')) {
        return Some((
            "has an empty or nested subcommand".into(),
            "write +command|subcommand, e.g. +config|get",
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_grammar_and_refuses_what_redis_refuses() {
        for ok in [
            "on", "OFF", "allkeys", "allchannels", "allcommands", "nocommands", "resetkeys",
            "resetchannels", "clearselectors", "~app:*", "%R~app:*", "%W~x", "%RW~*", "&news.*",
            "+get", "-flushall", "+@read", "-@dangerous", "+@all", "+config|get", "-client|kill",
            "+cluster|slots",
        ] {
            assert_eq!(check(ok, false), None, "{ok}");
        }
        for bad in [
            "+notacommand", "+@nope", "~", "%X~a", "%R", "app", "+config|", "allkey", "+get|a|b",
        ] {
            assert!(check(bad, false).is_some(), "{bad}");
        }
        assert!(check("on", true).is_some(), "on inside a selector");
        assert_eq!(check("+get", true), None);
    }
}
