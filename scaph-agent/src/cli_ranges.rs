//! Accepted ranges of the numeric options, as clap value parsers, and the
//! checks between options that clap cannot express ([`check`]).
//!
//! A value outside its range is refused on the command line (clap prints
//! the message and exits with status 2) instead of being clamped, wrapped or
//! overflowing later.
use std::time::Duration;

use crate::cli::{parse_duration, Cli, Exporter};

/// Longest `--step`, seconds: half the kernel program's longest recorded
/// slice ([`scaph_common::MAX_SLICE_NS`]). Each measurement closes every
/// on-CPU slice, so a slice lasts at most one step plus the measurement's
/// own delay; a slice over the limit would be dropped, its time lost. The
/// margin covers a measurement that runs late (overload, suspend).
pub const MAX_STEP_SECS: u64 = scaph_common::MAX_SLICE_NS / 2 / 1_000_000_000;
/// Shortest step of `scaph json` (`--step` plus `--step-nano`).
pub const MIN_JSON_STEP: Duration = Duration::from_millis(100);
/// Longest `-t/--timeout`, seconds (ten years; negative: no limit).
pub const MAX_TIMEOUT_SECS: i64 = 10 * 365 * 86_400;
/// Longest `--retention`: exited processes are kept this long, so it bounds
/// their memory under process churn.
pub const MAX_RETENTION: Duration = Duration::from_secs(86_400);
/// Highest `--estimate-*-watts` (per socket).
pub const MAX_WATTS: f64 = 10_000.0;
/// Longest `--cmdline-max-len`, characters (a label, sent with every series).
pub const MAX_CMDLINE_LEN: usize = 4096;
/// Largest count option (`--max-processes`, `--max-top-consumers`, `-p`).
pub const MAX_COUNT: usize = 1_000_000;
/// Longest `scaph qemu --cleanup-after`, seconds (one week).
pub const MAX_CLEANUP_SECS: u64 = 7 * 86_400;

/// `--step` of the exporters measuring every whole second: 1 to [`MAX_STEP_SECS`].
pub fn step(text: &str) -> Result<u64, String> {
    let secs = integer::<u64>(text, "seconds")?;
    if secs == 0 {
        return Err("0: the step is at least 1 second".into());
    }
    step_below_max(secs)
}

/// `scaph json --step`: 0 to [`MAX_STEP_SECS`] (with `--step-nano`, at least 100 ms in all).
pub fn json_step(text: &str) -> Result<u64, String> {
    step_below_max(integer::<u64>(text, "seconds")?)
}

fn step_below_max(secs: u64) -> Result<u64, String> {
    if secs > MAX_STEP_SECS {
        return Err(format!(
            "{secs} s: the step is at most {MAX_STEP_SECS} s (the kernel program drops any single on-CPU slice \
             of {} s or more, and each measurement closes the slices, so a longer step would lose CPU time)",
            scaph_common::MAX_SLICE_NS / 1_000_000_000
        ));
    }
    Ok(secs)
}

/// `--step-nano`: below one second.
pub fn step_nano(text: &str) -> Result<u32, String> {
    let nanos = integer::<u32>(text, "nanoseconds")?;
    if nanos >= 1_000_000_000 {
        return Err(format!(
            "{nanos}: below 1000000000 (whole seconds go in --step)"
        ));
    }
    Ok(nanos)
}

/// `-t/--timeout`: seconds, at most [`MAX_TIMEOUT_SECS`]; negative means no limit.
pub fn timeout(text: &str) -> Result<i64, String> {
    let secs = integer::<i64>(text, "seconds")?;
    if secs > MAX_TIMEOUT_SECS {
        return Err(format!(
            "{secs}: at most {MAX_TIMEOUT_SECS} seconds (negative: no limit)"
        ));
    }
    Ok(secs)
}

/// `--retention`: a duration (see [`parse_duration`]) from 1 s to [`MAX_RETENTION`].
pub fn retention(text: &str) -> Result<Duration, String> {
    let d = parse_duration(text)?;
    if d < Duration::from_secs(1) || d > MAX_RETENTION {
        return Err(format!(
            "{text:?}: between 1s and {}h",
            MAX_RETENTION.as_secs() / 3600
        ));
    }
    Ok(d)
}

/// `--estimate-*-watts`: a finite number from 0 to [`MAX_WATTS`].
pub fn watts(text: &str) -> Result<f64, String> {
    let w: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?}: expected a number of watts"))?;
    if !(0.0..=MAX_WATTS).contains(&w) {
        return Err(format!("{text:?}: watts per socket, from 0 to {MAX_WATTS}"));
    }
    Ok(w)
}

/// `--carbon-intensity`: a finite number of g/kWh from 0 to [`crate::carbon::MAX_INTENSITY`].
pub fn carbon_intensity(text: &str) -> Result<f64, String> {
    crate::carbon::parse(text).ok_or_else(|| {
        format!(
            "{text:?}: grams of CO2-equivalent per kWh, from 0 to {}",
            crate::carbon::MAX_INTENSITY
        )
    })
}

/// `--cmdline-max-len`: 0 to [`MAX_CMDLINE_LEN`].
pub fn cmdline_len(text: &str) -> Result<usize, String> {
    at_most(integer::<usize>(text, "characters")?, MAX_CMDLINE_LEN)
}

/// Counts of processes: 0 to [`MAX_COUNT`].
pub fn count(text: &str) -> Result<usize, String> {
    at_most(integer::<usize>(text, "a count")?, MAX_COUNT)
}

/// `scaph qemu --cleanup-after`: 0 to [`MAX_CLEANUP_SECS`].
pub fn cleanup_secs(text: &str) -> Result<u64, String> {
    let secs = integer::<u64>(text, "seconds")?;
    at_most(secs, MAX_CLEANUP_SECS)
}

/// A port to connect to: 1 to 65535.
pub fn port(text: &str) -> Result<u16, String> {
    match integer::<u16>(text, "a port (1 to 65535)")? {
        0 => Err("0: a port to connect to is 1 to 65535".into()),
        p => Ok(p),
    }
}

fn at_most<T: PartialOrd + std::fmt::Display>(value: T, max: T) -> Result<T, String> {
    if value > max {
        return Err(format!("{value}: at most {max}"));
    }
    Ok(value)
}

fn integer<T: std::str::FromStr>(text: &str, what: &str) -> Result<T, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("{text:?}: expected a whole number ({what}) in range"))
}

/// The checks across options: `scaph json`'s whole step, and the estimate
/// model's idle power against its busy power. Retention must outlast two
/// steps, so that every exited process is seen in a snapshot before it is
/// retired.
pub fn check(cli: &Cli) -> Result<(), String> {
    if let Exporter::Json(a) = &cli.exporter {
        let step = Duration::from_secs(a.step) + Duration::from_nanos(u64::from(a.step_nano));
        if step < MIN_JSON_STEP {
            return Err(format!(
                "--step {} --step-nano {}: the step is at least 100 ms",
                a.step, a.step_nano
            ));
        }
        if step > Duration::from_secs(MAX_STEP_SECS) {
            return Err(format!(
                "--step {} --step-nano {}: the step is at most {MAX_STEP_SECS} s",
                a.step, a.step_nano
            ));
        }
    }
    if cli.estimate_idle_watts > cli.estimate_max_watts {
        return Err(format!(
            "--estimate-idle-watts {} is above --estimate-max-watts {}",
            cli.estimate_idle_watts, cli.estimate_max_watts
        ));
    }
    let step = cli.exporter.step();
    if cli.retention < 2 * step {
        return Err(format!(
            "--retention {:?} is shorter than two steps ({:?}): exited processes would be forgotten unseen",
            cli.retention, step
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, String> {
        let cli = Cli::try_parse_from(std::iter::once("scaph").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        check(&cli)?;
        Ok(cli)
    }

    /// Each line: a command line that must be refused, and a word of the message.
    #[test]
    fn out_of_range_values_are_refused_with_a_message() {
        let table: &[(&[&str], &str)] = &[
            (&["stdout", "-s", "0"], "at least 1 second"),
            (&["stdout", "-s", "31"], "at most 30 s"),
            (&["stdout", "-s", "18446744073709551615"], "at most 30 s"),
            (&["stdout", "-s", "18446744073709551616"], "whole number"),
            (&["stdout", "--step=-1"], "whole number"),
            (&["stdout", "-t", "9223372036854775807"], "at most"),
            (&["stdout", "-p", "1000001"], "at most"),
            (&["json", "-s", "0"], "at least 100 ms"),
            (
                &["json", "-s", "0", "--step-nano", "99999999"],
                "at least 100 ms",
            ),
            (&["json", "-s", "30", "--step-nano", "1"], "at most 30 s"),
            (&["json", "--step-nano", "1000000000"], "below 1000000000"),
            (&["json", "--step-nano", "4294967295"], "below 1000000000"),
            (&["json", "-t", "99999999999"], "at most"),
            (
                &["json", "--max-top-consumers", "18446744073709551615"],
                "at most",
            ),
            (&["prometheus", "--step", "60"], "at most 30 s"),
            (&["prometheus", "--port", "65536"], "port"),
            (&["prometheus-push", "-s", "3600"], "at most 30 s"),
            (&["prometheus-push", "-p", "0"], "1 to 65535"),
            (&["riemann", "-d", "0"], "at least 1 second"),
            (&["riemann", "-p", "0"], "1 to 65535"),
            (&["warp10", "-t", "tok", "-s", "100"], "at most 30 s"),
            (&["warp10", "-t", "tok", "-p", "0"], "1 to 65535"),
            (&["qemu", "-s", "61"], "at most 30 s"),
            (
                &["qemu", "--cleanup-after", "18446744073709551615"],
                "at most",
            ),
            (&["--retention", "0", "stdout"], "between 1s"),
            (&["--retention", "25h", "stdout"], "between 1s"),
            (
                &["--retention", "99999999999999999999999h", "stdout"],
                "retention",
            ),
            (&["--retention", "1e3", "stdout"], "unit"),
            (&["--retention", "3s", "stdout", "-s", "2"], "two steps"),
            (&["--estimate-idle-watts", "NaN", "stdout"], "watts"),
            (&["--estimate-idle-watts", "inf", "stdout"], "watts"),
            (&["--estimate-max-watts=-1", "stdout"], "watts"),
            (&["--estimate-max-watts", "1e300", "stdout"], "watts"),
            (
                &[
                    "--estimate-idle-watts",
                    "50",
                    "--estimate-max-watts",
                    "40",
                    "stdout",
                ],
                "above",
            ),
            (&["--cmdline-max-len", "4097", "stdout"], "at most 4096"),
            (&["--max-processes=-1", "stdout"], "whole number"),
            (&["--carbon-intensity", "5000.5", "stdout"], "per kWh"),
            (&["--carbon-intensity=-1", "stdout"], "per kWh"),
            (&["--carbon-intensity", "NaN", "stdout"], "per kWh"),
            (&["--carbon-intensity", "400g", "stdout"], "per kWh"),
            (
                &[
                    "--carbon-intensity",
                    "1",
                    "--carbon-intensity-file",
                    "/x",
                    "stdout",
                ],
                "cannot be used with",
            ),
        ];
        for (args, word) in table {
            match parse(args) {
                Ok(cli) => panic!("{args:?} accepted: {cli:?}"),
                Err(e) => assert!(e.contains(word), "{args:?}: {e:?} does not say {word:?}"),
            }
        }
    }

    #[test]
    fn values_at_the_edges_of_the_ranges_are_accepted() {
        let table: &[(&[&str], Duration)] = &[
            (&["stdout", "-s", "1", "-t", "-1"], Duration::from_secs(1)),
            (
                &["stdout", "-s", "30", "-t", "315360000"],
                Duration::from_secs(30),
            ),
            (
                &["json", "-s", "0", "--step-nano", "100000000"],
                Duration::from_millis(100),
            ),
            (
                &["json", "-s", "29", "--step-nano", "999999999"],
                Duration::from_nanos(29_999_999_999),
            ),
            (
                &["prometheus", "--step", "30", "-p", "0"],
                Duration::from_secs(30),
            ),
            (&["prometheus-push", "-p", "65535"], Duration::from_secs(30)),
            (&["riemann", "-d", "30"], Duration::from_secs(30)),
            (&["warp10", "-t", "tok", "-s", "1"], Duration::from_secs(1)),
            (&["qemu", "--cleanup-after", "0"], Duration::from_secs(5)),
            (
                &[
                    "--retention",
                    "2s",
                    "--estimate-idle-watts",
                    "0",
                    "--estimate-max-watts",
                    "0",
                    "stdout",
                    "-s",
                    "1",
                ],
                Duration::from_secs(1),
            ),
            (
                &[
                    "--retention",
                    "24h",
                    "--cmdline-max-len",
                    "4096",
                    "--max-processes",
                    "1000000",
                    "stdout",
                ],
                Duration::from_secs(2),
            ),
            (
                &["--carbon-intensity", "0", "stdout"],
                Duration::from_secs(2),
            ),
            (
                &["--carbon-intensity", "5000", "stdout"],
                Duration::from_secs(2),
            ),
        ];
        for (args, step) in table {
            let cli = parse(args).unwrap_or_else(|e| panic!("{args:?} refused: {e}"));
            assert_eq!(cli.exporter.step(), *step, "{args:?}");
        }
    }

    #[test]
    fn step_stays_in_range_for_arguments_built_in_code() {
        let mut cli = parse(&["json"]).expect("defaults");
        if let Exporter::Json(a) = &mut cli.exporter {
            (a.step, a.step_nano) = (u64::MAX, u32::MAX);
        }
        assert_eq!(cli.exporter.step(), Duration::from_secs(MAX_STEP_SECS));
        let mut cli = parse(&["stdout"]).expect("defaults");
        if let Exporter::Stdout(a) = &mut cli.exporter {
            a.step = 0;
        }
        assert_eq!(cli.exporter.step(), Duration::from_secs(1));
    }

    #[test]
    fn the_longest_step_leaves_room_below_the_kernel_slice_limit() {
        assert!(
            Duration::from_secs(MAX_STEP_SECS) * 2
                <= Duration::from_nanos(scaph_common::MAX_SLICE_NS)
        );
    }
}
