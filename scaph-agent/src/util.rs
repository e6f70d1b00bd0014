//! Small helpers shared across the pipeline.
use std::{
    collections::HashMap,
    hash::{BuildHasher, Hash},
};

use crate::{fsroot::Roots, host::HostReader};

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

/// Hands free heap back to the system when the resident set has grown by
/// [`GrowthTrim::MIN_GROWTH`] since the last trim. Meant to run right after
/// work that allocates and frees a lot (building an exposition of tens of
/// thousands of series): what the allocator would keep as free lists goes
/// back, so the agent's resident memory stays near what it really holds.
/// Below that growth nothing is trimmed; at 10,000 series a trim takes a
/// few ms.
#[derive(Debug)]
pub struct GrowthTrim {
    /// Resident bytes right after the last trim (none yet: trims at once).
    base: Option<u64>,
    reader: HostReader,
}

impl Default for GrowthTrim {
    fn default() -> Self {
        Self {
            base: None,
            // scaph's own memory: always the running process's, whatever
            // tree `--proc-root` observes.
            reader: HostReader::with_roots(Roots::running()),
        }
    }
}

impl GrowthTrim {
    const MIN_GROWTH: u64 = 4 << 20;

    /// Trims if worth it; returns whether it did.
    pub fn after_cycle(&mut self) -> bool {
        let Some(rss) = self.resident_bytes() else {
            return false;
        };
        if self.base.is_some_and(|base| !Self::worth_it(base, rss)) {
            self.base = self.base.map(|base| base.min(rss));
            return false;
        }
        // SAFETY: malloc_trim only releases memory that is already free.
        unsafe { libc::malloc_trim(0) };
        self.base = self.resident_bytes();
        true
    }

    fn resident_bytes(&mut self) -> Option<u64> {
        self.reader.self_memory().map(|m| m.resident_bytes)
    }

    fn worth_it(base: u64, rss: u64) -> bool {
        rss >= base.saturating_add(Self::MIN_GROWTH)
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
        let seen: Vec<bool> = [
            10, 5000, 4000, 2600, 2400, 2400, 1300, 1300, 1100, 1100, 20, 20, 20,
        ]
        .iter()
        .map(|&n| trim.observe(n))
        .collect();
        // 5000 is the peak; 2400 is the first count at or under half of it,
        // and the next cycle trims again; then 2400 is the reference, and
        // 1100 falls under half of that (trim, and again next cycle); then 20
        // is under half of 1100 by more than MIN_DROP (trim, and again).
        assert_eq!(
            seen,
            [false, false, false, false, true, true, false, false, true, true, true, true, false]
        );
    }

    #[test]
    fn growth_of_the_resident_set_is_trimmed_from_4_mib() {
        // (resident bytes after the last trim, now, trim?)
        let mib = 1 << 20;
        for (base, rss, trim) in [
            (20 * mib, 20 * mib, false),
            (20 * mib, 24 * mib - 1, false),
            (20 * mib, 24 * mib, true),
            (20 * mib, 50 * mib, true),
            (20 * mib, 5 * mib, false),
        ] {
            assert_eq!(GrowthTrim::worth_it(base, rss), trim, "{base} → {rss}");
        }
    }

    #[test]
    fn the_first_growth_trim_happens_at_once_and_sets_the_base() {
        let mut trim = GrowthTrim::default();
        assert!(trim.after_cycle(), "no base yet");
        assert!(trim.base.is_some());
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
