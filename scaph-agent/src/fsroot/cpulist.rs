//! The kernel's CPU-list format (`0-3,8,10-11`), as in
//! `/sys/devices/system/cpu/{online,possible}` and cpusets.
//!
//! Kept here, once: `aya::util` parses it only for the fixed paths it reads
//! itself (its parser is private), and the `procfs` crate only for the
//! `Cpus_allowed_list` of a process's status.
use std::path::Path;

use super::read::{read_small_file, Extent, ReadFailure};

/// CPU ids at or above this are refused as garbage (the kernel allows at
/// most 8192): a list such as `0-4294967295` would otherwise allocate
/// gigabytes. The list parsed holds each id once, so it never has more
/// than this many entries, however often a range is repeated.
pub const MAX_CPUS: u32 = 1 << 16;

/// Most bytes of a CPU-list file read (the kernel's are a few dozen).
const LIST_FILE: Extent = Extent {
    limit: 64 << 10,
    single_line: false,
};

/// Parses a CPU list. Sorted, without duplicates; `None` on garbage.
///
/// Ranges are merged before they are expanded, so the work and memory are
/// bounded by the text's length plus [`MAX_CPUS`], whatever it repeats.
#[must_use]
pub fn parse(text: &str) -> Option<Vec<u32>> {
    let text = text.trim();
    if text.is_empty() {
        return Some(Vec::new());
    }
    let mut ranges: Vec<(u32, u32)> = Vec::new();
    for part in text.split(',') {
        let part = part.trim();
        let (lo, hi): (u32, u32) = match part.split_once('-') {
            Some((lo, hi)) => (lo.parse().ok()?, hi.parse().ok()?),
            None => {
                let cpu = part.parse().ok()?;
                (cpu, cpu)
            }
        };
        if hi < lo || hi >= MAX_CPUS {
            return None;
        }
        ranges.push((lo, hi));
    }
    ranges.sort_unstable();
    let mut cpus: Vec<u32> = Vec::new();
    for (lo, hi) in ranges {
        // Sorted by start: only the part above the last id taken is new.
        let from = cpus.last().map_or(lo, |&last| lo.max(last + 1));
        if from <= hi {
            cpus.extend(from..=hi);
        }
    }
    Some(cpus)
}

/// The highest CPU id of a list (`None` when empty or garbage).
#[must_use]
pub fn highest(text: &str) -> Option<u32> {
    parse(text)?.last().copied()
}

/// Reads and parses the list at `path` (refused past 64 KiB); the error
/// says what went wrong.
pub fn read(path: &Path) -> Result<Vec<u32>, String> {
    let mut buf = Vec::new();
    read_small_file(path, &mut buf, LIST_FILE).map_err(|failure| {
        let error = match failure {
            ReadFailure::Gone => std::io::ErrorKind::NotFound.into(),
            ReadFailure::Other(error) => error,
        };
        format!("reading {}: {error}", path.display())
    })?;
    if buf.len() >= LIST_FILE.limit {
        return Err(format!(
            "{}: longer than {} bytes, not a CPU list",
            path.display(),
            LIST_FILE.limit
        ));
    }
    let text = String::from_utf8_lossy(&buf);
    parse(&text).ok_or_else(|| {
        format!(
            "{}: cannot parse {:?} as a CPU list",
            path.display(),
            crate::label::bound(&text, 80)
        )
    })
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
        // Overlapping and out of order: merged, each id once.
        assert_eq!(parse("8,2-5,0-3,4"), Some(vec![0, 1, 2, 3, 4, 5, 8]));
    }

    /// A repeated full range stays [`MAX_CPUS`] entries, not one per repeat.
    #[test]
    fn repeated_ranges_are_bounded() {
        let full = format!("0-{}", MAX_CPUS - 1);
        let text = vec![full.as_str(); 10_000].join(",");
        let cpus = parse(&text).expect("parses");
        assert_eq!(cpus.len(), MAX_CPUS as usize);
        assert!(cpus.windows(2).all(|w| w[0] < w[1]));
        // Through the file reader: at most 64 KiB is read, and a list cut
        // there is refused (its last range may be cut short).
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("online");
        std::fs::write(&path, &text).expect("write");
        assert!(text.len() > LIST_FILE.limit);
        let error = read(&path).expect_err("cut");
        assert!(error.contains("longer than"), "{error}");
        std::fs::write(&path, "0-3\n").expect("write");
        assert_eq!(read(&path), Ok(vec![0, 1, 2, 3]));
    }
}
