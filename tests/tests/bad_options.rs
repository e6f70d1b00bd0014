//! Bad option values: the real `scaph` binary refuses each one with a
//! message naming the problem, exit status 2 (clap's usage error), and
//! never panics. None of these needs root, but the binary is the one
//! `cargo xtask test` builds.
use std::{
    io::Read as _,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use scaph_integration_tests::scaph_binary;

/// A command line, and a piece of the message it must print.
const CASES: &[(&[&str], &str)] = &[
    (&["stdout", "-s", "0"], "at least 1 second"),
    (&["stdout", "-s", "60"], "at most 30 s"),
    (&["stdout", "-s", "18446744073709551615"], "at most 30 s"),
    (&["stdout", "-s", "18446744073709551616"], "whole number"),
    (&["stdout", "--step=-5"], "whole number"),
    (&["stdout", "-s", "two"], "whole number"),
    (&["stdout", "-t", "9223372036854775807"], "at most"),
    (&["stdout", "-t", "-9223372036854775809"], "whole number"),
    (&["stdout", "-p", "99999999999"], "at most"),
    (&["json", "-s", "0", "--step-nano", "0"], "at least 100 ms"),
    (
        &[
            "json",
            "-s",
            "18446744073709551615",
            "--step-nano",
            "999999999",
        ],
        "at most 30 s",
    ),
    (&["json", "--step-nano", "4294967295"], "below 1000000000"),
    (&["json", "--step-nano", "4294967296"], "whole number"),
    (&["json", "-t", "9223372036854775807"], "at most"),
    (
        &["json", "--max-top-consumers", "18446744073709551615"],
        "at most",
    ),
    (&["prometheus", "--step", "61"], "at most 30 s"),
    (&["prometheus", "-p", "65536"], "port"),
    (&["prometheus-push", "-s", "0"], "at least 1 second"),
    (&["prometheus-push", "-p", "0"], "1 to 65535"),
    (&["riemann", "--dispatch-interval", "86400"], "at most 30 s"),
    (&["riemann", "-p", "-1"], "unexpected argument"),
    (&["warp10", "-t", "token", "-s", "0"], "at least 1 second"),
    (&["warp10", "-t", "token", "-p", "0"], "1 to 65535"),
    (&["qemu", "-s", "1000"], "at most 30 s"),
    (
        &["qemu", "--cleanup-after", "18446744073709551615"],
        "at most",
    ),
    (&["--retention", "0s", "stdout"], "between 1s"),
    (&["--retention", "1e999", "stdout"], "unit"),
    (
        &["--retention", "184467440737095516160h", "stdout"],
        "retention",
    ),
    (&["--retention", "48h", "stdout"], "between 1s"),
    (&["--retention", "2s", "stdout", "-s", "2"], "two steps"),
    (&["--estimate-idle-watts", "NaN", "stdout"], "watts"),
    (&["--estimate-max-watts", "inf", "stdout"], "watts"),
    (&["--estimate-max-watts=-3", "stdout"], "watts"),
    (
        &[
            "--estimate-idle-watts",
            "30",
            "--estimate-max-watts",
            "20",
            "stdout",
        ],
        "above",
    ),
    (
        &["--cmdline-max-len", "18446744073709551615", "stdout"],
        "at most 4096",
    ),
    (&["--max-processes", "1e9", "stdout"], "whole number"),
];

#[test]
fn each_bad_value_exits_with_a_message_and_no_panic() {
    let mut failures = Vec::new();
    for (args, word) in CASES {
        let (code, stderr) = run(args);
        let ok = code == Some(2) && stderr.contains(word) && !stderr.contains("panicked");
        eprintln!(
            "{args:?}: exit {code:?}: {}",
            stderr.lines().next().unwrap_or("")
        );
        if !ok {
            failures.push(format!(
                "{args:?}: exit {code:?}, wanted 2 and {word:?}; stderr:\n{stderr}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} bad values:\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n")
    );
}

/// Exit code (None if it was still running after 5 s and was killed) and stderr.
fn run(args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(scaph_binary())
        .args(["--fallback-procfs", "--no-header"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting scaph");
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for scaph") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    let _ = child
        .stderr
        .take()
        .expect("piped")
        .read_to_string(&mut stderr);
    (status.and_then(|s| s.code()), stderr)
}
