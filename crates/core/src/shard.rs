//! Splitting the endpoints between replicas: `PINGER_SHARD=i/n`,
//! `DETECTOR_SHARD=i/n`.
//!
//! An endpoint belongs to shard `fnv1a64(name) % n`. The hash is fixed (not
//! Rust's randomised `DefaultHasher`) so that every process, on every
//! machine and version, agrees on who owns which endpoint.

use std::fmt;

use crate::config::{ConfigError, Env};

/// This replica's share: shard `index` of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Shard {
    /// The whole set: one replica does everything.
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// Reads `key` (`i/n`, 0 <= i < n), or [`Shard::ALL`] when unset.
    pub fn from_env(env: &Env, key: &str) -> Result<Shard, ConfigError> {
        match env.get(key) {
            None => Ok(Shard::ALL),
            Some(v) => v.parse().map_err(|m| ConfigError::new(key, m)),
        }
    }

    /// Whether the endpoint called `name` belongs to this shard.
    pub fn owns(&self, name: &str) -> bool {
        stable_hash(name) % u64::from(self.count) == u64::from(self.index)
    }
}

impl std::str::FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> Result<Shard, String> {
        let expected = || format!("expected i/n with 0 <= i < n (for example 0/2), got `{s}`");
        let (i, n) = s.split_once('/').ok_or_else(expected)?;
        let index: u32 = i.trim().parse().map_err(|_| expected())?;
        let count: u32 = n.trim().parse().map_err(|_| expected())?;
        if count == 0 || index >= count {
            return Err(expected());
        }
        Ok(Shard { index, count })
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// 64-bit FNV-1a of the UTF-8 bytes: stable across processes and builds.
pub fn stable_hash(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_reference_values() {
        // Reference values of 64-bit FNV-1a.
        assert_eq!(stable_hash(""), 0xcbf29ce484222325);
        assert_eq!(stable_hash("a"), 0xaf63dc4c8601ec8c);
        assert_eq!(stable_hash("foobar"), 0x85944171f73967e8);
    }

    #[test]
    fn shards_partition_names_without_overlap_or_gap() {
        let names: Vec<String> = (0..1000).map(|i| format!("api-{i}")).collect();
        for n in 1..=5u32 {
            let shards: Vec<Shard> = (0..n).map(|index| Shard { index, count: n }).collect();
            for name in &names {
                let owners = shards.iter().filter(|s| s.owns(name)).count();
                assert_eq!(owners, 1, "{name} with {n} shards");
            }
            // Roughly even: each shard gets at least half its fair share.
            for s in &shards {
                let mine = names.iter().filter(|nm| s.owns(nm)).count();
                assert!(mine * 2 * n as usize >= names.len(), "{s}: {mine}");
            }
        }
    }

    #[test]
    fn parse_accepts_i_of_n_and_rejects_the_rest() {
        assert_eq!(
            "1/3".parse::<Shard>().unwrap(),
            Shard { index: 1, count: 3 }
        );
        for bad in ["3/3", "1/0", "x/2", "1", "-1/2", "1/2/3"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
    }
}
