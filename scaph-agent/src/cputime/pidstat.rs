//! `/proc/PID/stat`, the one per-process file read every cycle in procfs
//! mode (and once per process for its start time and name otherwise), and
//! the clock-tick conversions that go with it.
//!
//! Parsed by hand rather than with `procfs::process::Stat`: the crate parses
//! all 52 fields and allocates the name. Measured with `scaph-bench --only 7`
//! over 10,000 processes: 0.25 µs a line here against 1.2 µs. With the open
//! and read (the hot path of procfs mode, once per process per cycle), 7.4 µs
//! against 8.6 µs was measured while the crate's side still read with
//! `read_to_end`; the bench now reads both sides with the same reader, so
//! that row differs by the parse alone. Only four fields are needed; the
//! crate's parse stays as the reference both are tested against.
use crate::fsroot::read::Extent;

/// `/proc/PID/stat`: one line, under 1 KiB in practice.
pub const PID_STAT: Extent = Extent {
    limit: 64 * 1024,
    single_line: true,
};

/// The fields of `/proc/PID/stat` that scaph uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatFields<'a> {
    pub pid: u32,
    /// Raw `comm`, without the parentheses.
    pub comm: &'a [u8],
    /// `utime + stime` in clock ticks.
    pub cpu_ticks: u64,
    /// `starttime`: clock ticks since boot.
    pub start_ticks: u64,
}

/// Parses `/proc/PID/stat`: `pid (comm) state ppid ... utime stime ... starttime ...`.
///
/// `comm` may contain spaces and parentheses, so it ends at the *last* `)`.
/// `None` on anything malformed.
#[must_use]
pub fn parse_stat(buf: &[u8]) -> Option<StatFields<'_>> {
    let open = buf.iter().position(|&b| b == b'(')?;
    let close = buf.iter().rposition(|&b| b == b')')?;
    if close < open {
        return None;
    }
    let pid = u32::try_from(parse_u64(buf[..open].trim_ascii())?).ok()?;
    // Fields after the comm, numbered as in proc(5): the first one is field 3.
    let mut fields = buf[close + 1..]
        .split(u8::is_ascii_whitespace)
        .filter(|f| !f.is_empty());
    let _state = fields.next()?;
    let utime = parse_u64(fields.nth(10)?)?; // field 14
    let stime = parse_u64(fields.next()?)?; // field 15
    let start_ticks = parse_u64(fields.nth(6)?)?; // field 22
    Some(StatFields {
        pid,
        comm: &buf[open + 1..close],
        cpu_ticks: utime.saturating_add(stime),
        start_ticks,
    })
}

/// The same four fields through `procfs::process::Stat` (the crate's full
/// parser): the reference the hand-written one is measured and tested
/// against (`scaph-bench --only 7`). Not used by the agent.
#[doc(hidden)]
#[must_use]
pub fn parse_stat_with_crate(buf: &[u8]) -> Option<(u32, String, u64, u64)> {
    use ::procfs::FromRead as _;
    let stat = ::procfs::process::Stat::from_read(buf).ok()?;
    Some((
        u32::try_from(stat.pid).ok()?,
        stat.comm,
        stat.utime.saturating_add(stat.stime),
        stat.starttime,
    ))
}

/// A decimal `u64` made of ASCII digits only.
#[must_use]
pub fn parse_u64(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |acc, &b| {
        let digit = b.checked_sub(b'0').filter(|d| *d < 10)?;
        acc.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

/// Clock ticks per second of `/proc` figures (`USER_HZ`), 100 if unknown.
#[must_use]
pub fn ticks_per_second() -> u64 {
    match ::procfs::ticks_per_second() {
        0 => 100,
        tps => tps,
    }
}

/// Clock ticks to ns, saturating.
#[must_use]
pub fn ticks_to_ns(ticks: u64, ticks_per_second: u64) -> u64 {
    let ns = u128::from(ticks) * 1_000_000_000 / u128::from(ticks_per_second.max(1));
    u64::try_from(ns).unwrap_or(u64::MAX)
}

/// ns to clock ticks, truncating as the kernel does.
#[must_use]
pub fn ns_to_ticks(ns: u64, ticks_per_second: u64) -> u64 {
    let ticks = u128::from(ns) * u128::from(ticks_per_second) / 1_000_000_000;
    u64::try_from(ticks).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    #[test]
    fn parse_stat_handles_odd_comm() {
        let line = b"1234 (a) b (c)) S 1 1 1 0 -1 0 0 0 0 0 7 8 0 0 20 0 3 0 555 0 0\n";
        let stat = parse_stat(line).unwrap();
        assert_eq!(stat.pid, 1234);
        assert_eq!(stat.comm, b"a) b (c)");
        assert_eq!(stat.cpu_ticks, 15);
        assert_eq!(stat.start_ticks, 555);
    }

    #[test]
    fn parse_stat_rejects_garbage() {
        for garbage in [
            &b""[..],
            b"(",
            b")(",
            b"(x)",
            b"1 (x)",
            b"1 (x) S",
            b"x (y) S 1 1 1 0 -1 0 0 0 0 0 7 8 0 0 20 0 3 0 555",
            b"1 (y) S 1 1 1 0 -1 0 0 0 0 0 -7 8 0 0 20 0 3 0 555",
            b"1 (y) S 1 1 1 0 -1 0 0 0 0 0 7 8 0 0 20 0 3 0",
            b"99999999999 (y) S 1 1 1 0 -1 0 0 0 0 0 7 8 0 0 20 0 3 0 5",
            b"1 (y) S 1 1 1 0 -1 0 0 0 0 0 99999999999999999999 8 0 0 20 0 3 0 5",
            b"\xff\xfe (\xff) \xff",
        ] {
            assert_eq!(
                parse_stat(garbage),
                None,
                "{:?}",
                String::from_utf8_lossy(garbage)
            );
        }
    }

    proptest::proptest! {
        /// Any bytes: no panic.
        #[test]
        fn parse_stat_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..400)) {
            let _ = parse_stat(&bytes);
        }

        /// Any comm the kernel can print (no NUL, up to 64 bytes, parentheses
        /// and spaces included) parses back with the right numbers.
        #[test]
        fn parse_stat_round_trips(
            pid in 1u32..=4_194_304,
            comm in proptest::collection::vec(1u8..=255, 0..64),
            utime in proptest::num::u64::ANY,
            stime in proptest::num::u64::ANY,
            start in proptest::num::u64::ANY,
        ) {
            let mut line = format!("{pid} (").into_bytes();
            line.extend_from_slice(&comm);
            line.extend_from_slice(
                format!(") S 1 1 1 0 -1 0 0 0 0 0 {utime} {stime} 0 0 20 0 1 0 {start} 0 0\n").as_bytes(),
            );
            let stat = parse_stat(&line).unwrap();
            proptest::prop_assert_eq!(stat.pid, pid);
            proptest::prop_assert_eq!(stat.comm, &comm[..]);
            proptest::prop_assert_eq!(stat.cpu_ticks, utime.saturating_add(stime));
            proptest::prop_assert_eq!(stat.start_ticks, start);
        }

        /// On what the kernel writes (a UTF-8 name here, all fields), both
        /// parsers agree.
        #[test]
        fn the_crate_agrees(
            pid in 1u32..=4_194_304,
            comm in "[^\\x00]{0,15}",
            utime in 0u64..1 << 40,
            stime in 0u64..1 << 40,
            start in 0u64..1 << 40,
        ) {
            let line = format!(
                "{pid} ({comm}) S 1 1 1 0 -1 4194560 100 0 0 0 {utime} {stime} 0 0 20 0 1 0 {start} \
                 1000 100 18446744073709551615 1 1 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n"
            );
            let ours = parse_stat(line.as_bytes()).unwrap();
            let theirs = parse_stat_with_crate(line.as_bytes()).unwrap();
            proptest::prop_assert_eq!(
                (ours.pid, String::from_utf8_lossy(ours.comm).into_owned(), ours.cpu_ticks, ours.start_ticks),
                theirs
            );
        }
    }

    #[test]
    fn parse_u64_is_strict() {
        assert_eq!(parse_u64(b"0"), Some(0));
        assert_eq!(parse_u64(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_u64(b"18446744073709551616"), None);
        assert_eq!(parse_u64(b""), None);
        assert_eq!(parse_u64(b"+1"), None);
        assert_eq!(parse_u64(b"1a"), None);
    }

    #[test]
    fn tick_conversions() {
        assert_eq!(ticks_to_ns(3, 100), 30_000_000);
        assert_eq!(ticks_to_ns(u64::MAX, 1), u64::MAX);
        assert_eq!(ticks_to_ns(5, 0), 5 * SEC);
        assert_eq!(ns_to_ticks(29_999_999, 100), 2);
        assert_eq!(ns_to_ticks(u64::MAX, 1000), 18_446_744_073_709);
    }
}
