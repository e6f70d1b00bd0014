//! The kernel's CPU-list format (`0-3,8,10-11`), as in
//! `/sys/devices/system/cpu/{online,possible}` and cpusets.
//!
//! Kept here, once: `aya::util` parses it only for the fixed paths it reads
//! itself (its parser is private), and the `procfs` crate only for the
//! `Cpus_allowed_list` of a process's status.
use std::{fs, path::Path};

/// CPU ids at or above this are refused as garbage (the kernel allows at
/// most 8192): a list such as `0-4294967295` would otherwise allocate
/// gigabytes.
pub const MAX_CPUS: u32 = 1 << 16;

/// Parses a CPU list. Sorted, without duplicates; `None` on garbage.
#[must_use]
pub fn parse(text: &str) -> Option<Vec<u32>> {
    let text = text.trim();
    let mut cpus = Vec::new();
    if text.is_empty() {
        return Some(cpus);
    }
    for part in text.split(',') {
        let part = part.trim();
        match part.split_once('-') {
            Some((lo, hi)) => {
                let (lo, hi): (u32, u32) = (lo.parse().ok()?, hi.parse().ok()?);
                if hi < lo || hi >= MAX_CPUS {
                    return None;
                }
                cpus.extend(lo..=hi);
            }
            None => cpus.push(part.parse().ok().filter(|&cpu| cpu < MAX_CPUS)?),
        }
    }
    cpus.sort_unstable();
    cpus.dedup();
    Some(cpus)
}

/// The highest CPU id of a list (`None` when empty or garbage).
#[must_use]
pub fn highest(text: &str) -> Option<u32> {
    parse(text)?.last().copied()
}

/// Reads and parses the list at `path`; the error says what went wrong.
pub fn read(path: &Path) -> Result<Vec<u32>, String> {
    let text = fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    parse(&text).ok_or_else(|| format!("{}: cannot parse {text:?} as a CPU list", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_list_formats() {
        assert_eq!(parse("0-3,8,10-11\n"), Some(vec![0, 1, 2, 3, 8, 10, 11]));
        assert_eq!(parse("0\n"), Some(vec![0]));
        assert_eq!(parse("\n"), Some(vec![]));
        assert_eq!(parse("3-1"), None);
        assert_eq!(parse("a-b"), None);
        assert_eq!(parse("0-4294967295"), None);
        assert_eq!(parse("65536"), None);
        assert_eq!(highest("0-3,8-11\n"), Some(11));
        assert_eq!(highest(""), None);
    }
}
