//! Per-process state kept as one vector sorted by [`ProcessKey`].
//!
//! Every cycle walks each per-process table once, in key order, with a
//! sample that is itself in key order (the CPU time sources sort theirs).
//! A merge over two sorted vectors reads memory front to back; a hash map
//! costs a cache miss per process at 10,000 processes, and holds empty
//! buckets besides. Lookups of single keys are binary searches.
use crate::model::ProcessKey;

/// Values by process, in key order, each key once.
#[derive(Clone, Debug)]
pub struct Keyed<V> {
    rows: Vec<(ProcessKey, V)>,
}

impl<V> Default for Keyed<V> {
    fn default() -> Self {
        Self { rows: Vec::new() }
    }
}

impl<V> Keyed<V> {
    #[must_use]
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    #[must_use]
    pub fn get(&self, key: &ProcessKey) -> Option<&V> {
        let i = self.rows.binary_search_by_key(key, |(k, _)| *k).ok()?;
        Some(&self.rows[i].1)
    }

    /// In key order.
    pub fn iter(&self) -> impl Iterator<Item = (&ProcessKey, &V)> {
        self.rows.iter().map(|(k, v)| (k, v))
    }

    /// In key order.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.rows.iter_mut().map(|(_, v)| v)
    }

    /// Keeps the rows `keep` says yes to (in key order), then gives memory
    /// back if the table shrank a lot.
    pub fn retain(&mut self, mut keep: impl FnMut(&ProcessKey, &mut V) -> bool) {
        self.rows.retain_mut(|(k, v)| keep(k, v));
        if self.rows.capacity() > 64 && self.rows.len() < self.rows.capacity() / 4 {
            self.rows.shrink_to(self.rows.len() * 2);
        }
    }

    /// Removes the rows of `keys` (sorted, as [`Keyed::retain`] and
    /// [`Keyed::iter`] give them) and hands each removed value to `removed`,
    /// in key order.
    pub fn remove_sorted(&mut self, keys: &[ProcessKey], mut removed: impl FnMut(V)) {
        if keys.is_empty() {
            return;
        }
        debug_assert!(keys.is_sorted());
        let mut gone = keys.iter().peekable();
        let mut kept = Vec::with_capacity(self.rows.len());
        for (key, value) in self.rows.drain(..) {
            while gone.next_if(|k| **k < key).is_some() {}
            if gone.next_if(|k| **k == key).is_some() {
                removed(value);
            } else {
                kept.push((key, value));
            }
        }
        self.rows = kept;
        self.retain(|_, _| true);
    }

    /// Applies `items` to their rows: `update` for each item, on a row made
    /// by `new` when the key has none. Items sorted by key (a key may
    /// repeat) take one pass over the table, and one more to place new rows;
    /// an item out of order is still applied, by a binary search.
    pub fn upsert_sorted<T>(
        &mut self,
        items: impl IntoIterator<Item = (ProcessKey, T)>,
        mut new: impl FnMut(&ProcessKey, &T) -> V,
        mut update: impl FnMut(&mut V, T),
    ) {
        // Sorted, and every key in it is at most the latest in-order item's.
        let mut added: Vec<(ProcessKey, V)> = Vec::new();
        let mut at = 0;
        let mut previous: Option<ProcessKey> = None;
        for (key, item) in items {
            if previous.is_some_and(|p| key < p) {
                if let Ok(i) = self.rows.binary_search_by_key(&key, |(k, _)| *k) {
                    update(&mut self.rows[i].1, item);
                } else {
                    let i = added
                        .binary_search_by_key(&key, |(k, _)| *k)
                        .unwrap_or_else(|i| {
                            added.insert(i, (key, new(&key, &item)));
                            i
                        });
                    update(&mut added[i].1, item);
                }
                continue;
            }
            previous = Some(key);
            while at < self.rows.len() && self.rows[at].0 < key {
                at += 1;
            }
            if at < self.rows.len() && self.rows[at].0 == key {
                update(&mut self.rows[at].1, item);
            } else if let Some((_, value)) = added.last_mut().filter(|(k, _)| *k == key) {
                update(value, item);
            } else {
                let mut value = new(&key, &item);
                update(&mut value, item);
                added.push((key, value));
            }
        }
        if added.is_empty() {
            return;
        }
        let old = std::mem::take(&mut self.rows);
        let mut rows = Vec::with_capacity(old.len() + added.len());
        let mut added = added.into_iter().peekable();
        for row in old {
            while let Some(new_row) = added.next_if(|(k, _)| *k < row.0) {
                rows.push(new_row);
            }
            rows.push(row);
        }
        rows.extend(added);
        self.rows = rows;
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn key(pid: u32) -> ProcessKey {
        ProcessKey { pid, start_ns: 1 }
    }

    proptest! {
        /// The same as a map that adds each item to its key's value, in
        /// order or not.
        #[test]
        fn upserts_and_removals_match_a_map(
            rounds in prop::collection::vec(
                (prop::collection::vec((0_u32..40, 1_u64..100), 0..30), prop::collection::vec(0_u32..40, 0..10)),
                1..8,
            ),
            sorted in any::<bool>(),
        ) {
            let mut table: Keyed<u64> = Keyed::default();
            let mut model = std::collections::BTreeMap::new();
            for (items, remove) in rounds {
                let mut items: Vec<(ProcessKey, u64)> =
                    items.into_iter().map(|(p, n)| (key(p), n)).collect();
                if sorted {
                    items.sort_by_key(|(k, _)| *k);
                }
                for (k, n) in &items {
                    *model.entry(*k).or_insert(1000) += n;
                }
                table.upsert_sorted(items, |_, _| 1000, |v, n| *v += n);
                let mut remove: Vec<ProcessKey> = remove.into_iter().map(key).collect();
                remove.sort();
                remove.dedup();
                let mut removed = Vec::new();
                table.remove_sorted(&remove, |v| removed.push(v));
                let expected: Vec<u64> = remove.iter().filter_map(|k| model.remove(k)).collect();
                prop_assert_eq!(removed, expected);
                let rows: Vec<(ProcessKey, u64)> = table.iter().map(|(k, v)| (*k, *v)).collect();
                let want: Vec<(ProcessKey, u64)> = model.iter().map(|(k, v)| (*k, *v)).collect();
                prop_assert_eq!(rows, want);
                for (k, v) in &model {
                    prop_assert_eq!(table.get(k), Some(v));
                }
            }
        }
    }
}
