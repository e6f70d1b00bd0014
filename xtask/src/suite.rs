//! `cargo xtask test` runs every step even after one failed, then prints one
//! summary of what failed (steps, and the tests inside them by name).
use std::{
    io::{Read as _, Write as _},
    process::{Command, Stdio},
};

use anyhow::{bail, Context as _, Result};

/// A step that failed: what it was, why, and its failing tests when known.
struct Failure {
    step: String,
    reason: String,
    tests: Vec<String>,
}

#[derive(Default)]
pub struct Suite {
    failures: Vec<Failure>,
}

impl Suite {
    /// Runs a command to completion; a failure is recorded, not returned.
    pub fn step(&mut self, name: &str, cmd: &mut Command) {
        let reason = match cmd.status() {
            Ok(status) if status.success() => return,
            Ok(status) => status.to_string(),
            Err(err) => format!("could not start {cmd:?}: {err}"),
        };
        self.record(name, reason, Vec::new());
    }

    /// Runs a libtest harness (or `cargo test`), passing its standard output
    /// through as it comes, and records the names of the tests that failed.
    pub fn tests(&mut self, name: &str, cmd: &mut Command) {
        let (status, stdout) = match run_teed(cmd) {
            Ok(done) => done,
            Err(err) => return self.record(name, format!("{err:#}"), Vec::new()),
        };
        if !status.success() {
            self.record(name, status.to_string(), failed_tests(&stdout));
        }
    }

    /// Records the outcome of a step that is not a plain command.
    pub fn outcome(&mut self, name: &str, result: Result<()>) {
        if let Err(err) = result {
            self.record(name, format!("{err:#}"), Vec::new());
        }
    }

    fn record(&mut self, step: &str, reason: String, tests: Vec<String>) {
        eprintln!("xtask: {step} failed ({reason}); going on with the rest");
        self.failures.push(Failure {
            step: step.to_owned(),
            reason,
            tests,
        });
    }

    /// Prints the summary; an error when anything failed.
    pub fn finish(self) -> Result<()> {
        if self.failures.is_empty() {
            eprintln!("xtask: every step passed");
            return Ok(());
        }
        eprint!("{}", summary(&self.failures));
        bail!("{} step(s) failed", self.failures.len())
    }
}

fn summary(failures: &[Failure]) -> String {
    let mut text = format!("\nxtask: {} step(s) failed:\n", failures.len());
    for f in failures {
        text += &format!("  {} ({})\n", f.step, f.reason);
        for test in &f.tests {
            text += &format!("      {test}\n");
        }
    }
    text
}

/// Runs `cmd` with its standard output copied to ours as it arrives, and
/// returns that output as well (stderr is left to the terminal).
fn run_teed(cmd: &mut Command) -> Result<(std::process::ExitStatus, String)> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {cmd:?}"))?;
    let mut pipe = child.stdout.take().context("child stdout")?;
    let mut seen = Vec::new();
    let mut buf = [0u8; 8192];
    let mut out = std::io::stdout();
    loop {
        let n = match pipe.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err).context("reading the test output"),
        };
        // Best effort: a closed terminal must not stop the run.
        let _ = out.write_all(&buf[..n]).and_then(|()| out.flush());
        seen.extend_from_slice(&buf[..n]);
    }
    let status = child.wait().context("waiting for the tests")?;
    Ok((status, String::from_utf8_lossy(&seen).into_owned()))
}

/// The failing tests named in libtest's output: the `test NAME ... FAILED`
/// lines (present even when the harness crashed before its summary) and the
/// names listed under the last `failures:` heading, each once, in order.
pub fn failed_tests(stdout: &str) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    let mut add = |name: &str| {
        if !name.is_empty() && !names.iter().any(|n| n == name) {
            names.push(name.to_owned());
        }
    };
    for line in stdout.lines() {
        if let Some(name) = line
            .strip_prefix("test ")
            .and_then(|rest| rest.strip_suffix(" ... FAILED"))
        {
            add(name.trim_end_matches(" - should panic"));
        }
    }
    let lines: Vec<&str> = stdout.lines().collect();
    if let Some(start) = lines.iter().rposition(|l| *l == "failures:") {
        for line in &lines[start + 1..] {
            match line.strip_prefix("    ") {
                Some(name) if !name.starts_with(' ') => add(name.trim()),
                _ => break,
            }
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (libtest output, failing tests it names)
    const CASES: &[(&str, &[&str])] = &[
        (
            "running 2 tests\ntest a ... ok\ntest b::c ... FAILED\n\nfailures:\n\n---- b::c stdout ----\npanicked\n\nfailures:\n    b::c\n\ntest result: FAILED. 1 passed; 1 failed\n",
            &["b::c"],
        ),
        ("running 1 test\ntest a ... ok\n\ntest result: ok. 1 passed\n", &[]),
        // The harness died inside a test: only the progress line names it.
        ("running 2 tests\ntest a ... FAILED\ntest b ... ", &["a"]),
        // A progress line broken by other output: the summary still names it.
        (
            "test x ... FAILED\ntest y ... noise\nFAILED\nfailures:\n    x\n    y\n\ntest result: FAILED\n",
            &["x", "y"],
        ),
        (
            "test p - should panic ... FAILED\n",
            &["p"],
        ),
    ];

    #[test]
    fn names_of_failing_tests_from_libtest_output() {
        for (stdout, expected) in CASES {
            assert_eq!(failed_tests(stdout), *expected, "{stdout:?}");
        }
    }

    #[test]
    fn summary_names_every_failed_step_and_its_tests() {
        let failures = [
            Failure {
                step: "integration tests qemu".into(),
                reason: "exit status: 101".into(),
                tests: vec!["round_trip".into()],
            },
            Failure {
                step: "fuzz smoke".into(),
                reason: "crash".into(),
                tests: vec![],
            },
        ];
        assert_eq!(
            summary(&failures),
            "\nxtask: 2 step(s) failed:\n  integration tests qemu (exit status: 101)\n      round_trip\n  fuzz smoke (crash)\n"
        );
    }
}
