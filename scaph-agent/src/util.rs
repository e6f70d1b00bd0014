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

/// Hands free heap back to the system after a burst of processes is gone.
///
/// Freed per-process state stays in glibc's free lists, so without this
/// the agent keeps the memory of its largest burst forever. `malloc_trim`
/// walks every arena (`scaph` uses one); it runs only when the number of
/// tracked processes has fallen to half of its peak since the last trim, by
/// at least [`HeapTrim::MIN_DROP`], and once more at the next cycle, when
/// what the trimmed cycle still held (older snapshots, maps shrunk since)
/// has been freed too.
#[derive(Debug, Default)]
pub struct HeapTrim {
    peak: usize,
    /// Trim again at the next cycle, for memory freed after a trim (maps
    /// shrunk later, the exporters' copies of older snapshots).
    again: bool,
}

impl HeapTrim {
    /// Drops smaller than this are not worth a trim.
    const MIN_DROP: usize = 512;

    /// Notes how many processes are tracked now; returns whether it trimmed.
    pub fn observe(&mut self, tracked: usize) -> bool {
        if std::mem::take(&mut self.again) {
            // SAFETY: malloc_trim only releases memory that is already free.
            unsafe { libc::malloc_trim(0) };
            return true;
        }
        if tracked >= self.peak {
            self.peak = tracked;
            return false;
        }
        if self.peak - tracked < Self::MIN_DROP || tracked > self.peak / 2 {
            return false;
        }
        self.peak = tracked;
        self.again = true;
        // SAFETY: malloc_trim only releases memory that is already free.
        unsafe { libc::malloc_trim(0) };
        true
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
    fn the_heap_is_trimmed_once_a_burst_has_halved() {
        let mut trim = HeapTrim::default();
        let seen: Vec<bool> =
            [10, 5000, 4000, 2600, 2400, 2400, 1300, 1300, 1100, 1100, 20, 20, 20].iter().map(|&n| trim.observe(n)).collect();
        // 5000 is the peak; 2400 is the first count at or under half of it,
        // and the next cycle trims again; then 2400 is the reference, and
        // 1100 falls under half of that (trim, and again next cycle); then 20
        // is under half of 1100 by more than MIN_DROP (trim, and again).
        assert_eq!(seen, [false, false, false, false, true, true, false, false, true, true, true, true, false]);
    }

    #[test]
    fn small_bursts_never_trim() {
        let mut trim = HeapTrim::default();
        assert!(![500, 10, 400, 0].iter().any(|&n| trim.observe(n)));
    }

    #[test]
    fn a_full_map_is_left_alone() {
        let mut map: HashMap<u32, u64> = (0..1000).map(|i| (i, 0)).collect();
        let before = map.capacity();
        shrink_if_sparse(&mut map);
        assert_eq!(map.capacity(), before);
    }
}
