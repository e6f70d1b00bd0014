//! Bounds on every value that comes from outside scaph (process names, paths,
//! command lines, VM and container names) before any exporter shows it.
//!
//! Anyone on the host chooses these values: a process's `comm`, its argv, the
//! path it runs from, the name of a cgroup in their delegated subtree. So each
//! one is cut to a fixed number of characters, with one visible marker where
//! it was cut, and control characters (a terminal escape, a carriage return
//! rewriting a line) are replaced, in every exporter.
use std::borrow::Cow;

/// The mark at the end of a value that was cut.
pub const CUT: char = '…';
/// The replacement for a control character.
pub const CONTROL: char = '\u{fffd}';
/// Longest value, in characters, of any label taken from outside scaph
/// (exe, comm, VM name, cgroup path, unit, pod name...). Real ones are far
/// shorter; a cut value ends with [`CUT`]. The command line has its own
/// bound (`--cmdline-max-len`).
pub const MAX_CHARS: usize = 256;
/// Longest path value (`exe`, `cgroup`), in characters: a kubelet's cgroup
/// paths come close to [`MAX_CHARS`].
pub const PATH_MAX_CHARS: usize = 512;

/// `value` with its control characters replaced and cut after `max`
/// characters (then ending with [`CUT`]). Borrowed when nothing changes.
#[must_use]
pub fn bound(value: &str, max: usize) -> Cow<'_, str> {
    let cut = value.char_indices().nth(max).map(|(at, _)| at);
    let kept = &value[..cut.unwrap_or(value.len())];
    if cut.is_none() && !kept.chars().any(char::is_control) {
        return Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(kept.len() + CUT.len_utf8());
    out.extend(
        kept.chars()
            .map(|c| if c.is_control() { CONTROL } else { c }),
    );
    if cut.is_some() {
        out.push(CUT);
    }
    Cow::Owned(out)
}

/// [`bound`] at [`MAX_CHARS`], as an owned label value.
#[must_use]
pub fn value(value: &str) -> String {
    bound(value, MAX_CHARS).into_owned()
}

/// [`bound`] at [`PATH_MAX_CHARS`], as an owned label value.
#[must_use]
pub fn path(value: &str) -> String {
    bound(value, PATH_MAX_CHARS).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let long = "a".repeat(300);
        let cases: &[(&str, usize, &str)] = &[
            ("postgres", 256, "postgres"),
            ("", 10, ""),
            ("abcdef", 6, "abcdef"),
            ("abcdefg", 6, "abcdef…"),
            ("/usr/bin/é --x", 10, "/usr/bin/é…"),
            ("x", 0, "…"),
            (
                "evil\x1b[2J\rname\n",
                256,
                "evil\u{fffd}[2J\u{fffd}name\u{fffd}",
            ),
            (
                "tab\there\u{7f}\u{9b}",
                256,
                "tab\u{fffd}here\u{fffd}\u{fffd}",
            ),
            ("\x1b\x1b\x1b", 2, "\u{fffd}\u{fffd}…"),
        ];
        for (input, max, want) in cases {
            assert_eq!(bound(input, *max), *want, "{input:?} at {max}");
        }
        let cut = value(&long);
        assert_eq!(cut.chars().count(), MAX_CHARS + 1);
        assert!(cut.ends_with(CUT));
    }

    #[test]
    fn unchanged_values_are_borrowed() {
        assert!(matches!(bound("plain", 5), Cow::Borrowed(_)));
        assert!(matches!(bound("plain", 4), Cow::Owned(_)));
    }
}
