//! Small helpers shared across the pipeline.
use std::{
    collections::HashMap,
    hash::{BuildHasher, Hash},
};

/// Gives memory back after a map shrank a lot. Maps of per-process state
/// grow with bursts of short-lived processes; without this they would keep
/// the burst's capacity (and the agent its peak memory) forever.
pub fn shrink_if_sparse<K: Eq + Hash, V, S: BuildHasher>(map: &mut HashMap<K, V, S>) {
    if map.capacity() > 64 && map.len() < map.capacity() / 4 {
        map.shrink_to(map.len() * 2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_map_that_emptied_gives_its_capacity_back() {
        let mut map: HashMap<u32, u64> = (0..10_000).map(|i| (i, 0)).collect();
        map.retain(|k, _| *k < 10);
        shrink_if_sparse(&mut map);
        assert!(map.capacity() < 100, "capacity {}", map.capacity());
        assert_eq!(map.len(), 10);
    }

    #[test]
    fn a_full_map_is_left_alone() {
        let mut map: HashMap<u32, u64> = (0..1000).map(|i| (i, 0)).collect();
        let before = map.capacity();
        shrink_if_sparse(&mut map);
        assert_eq!(map.capacity(), before);
    }
}
