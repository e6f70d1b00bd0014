//! `cargo xtask test` runs every step even after one failed, then prints one
//! summary of what failed (steps, and the tests inside them by name).
use std::{
    io::{Read as _, Write as _},
    os::unix::process::CommandExt as _,
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicI32, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
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
    /// Past `deadline` its process group is killed and the step fails.
    pub fn tests(&mut self, name: &str, cmd: &mut Command, deadline: Duration) {
        let (ended, stdout) = match run_teed(cmd, deadline) {
            Ok(done) => done,
            Err(err) => return self.record(name, format!("{err:#}"), Vec::new()),
        };
        let reason = match ended {
            Ended::Exited(status) if status.success() => return,
            Ended::Exited(status) => status.to_string(),
            Ended::TimedOut(after) => format!("timed out after {} s", after.as_secs()),
        };
        self.record(name, reason, failed_tests(&stdout));
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

/// How long a step may run before its process group is killed.
pub const INTEGRATION_DEADLINE: Duration = Duration::from_secs(15 * 60);
/// `cargo test` of the workspace: compiling included.
pub const UNIT_DEADLINE: Duration = Duration::from_secs(60 * 60);
/// After the direct child exits, how long output from its leftovers is still read.
const DRAIN: Duration = Duration::from_secs(2);

/// How a teed command ended.
enum Ended {
    Exited(std::process::ExitStatus),
    TimedOut(Duration),
}

/// Runs `cmd` in a process group of its own, with its standard output copied
/// to ours as it arrives, and returns that output as well (stderr is left to
/// the terminal). Reading stops shortly after the direct child exits, so a
/// leftover grandchild holding the pipe cannot stall the run; past `deadline`
/// the whole group is killed. Either way the group's leftovers are killed.
fn run_teed(cmd: &mut Command, deadline: Duration) -> Result<(Ended, String)> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {cmd:?}"))?;
    let group = child.id() as libc::pid_t;
    forward_interrupts_to(group);
    let mut pipe = child.stdout.take().context("child stdout")?;
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    // The reader may stay blocked on a pipe held by a grandchild; it ends
    // when the group is killed below, and is never joined.
    thread::spawn(move || {
        let mut buf = [0u8; 8192];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if tx.send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
    });
    let started = Instant::now();
    let mut seen = Vec::new();
    let mut out = std::io::stdout();
    let mut copy = |chunk: Vec<u8>| {
        // Best effort: a closed terminal must not stop the run.
        let _ = out.write_all(&chunk).and_then(|()| out.flush());
        seen.extend_from_slice(&chunk);
    };
    let ended = loop {
        if let Some(status) = child.try_wait().context("waiting for the tests")? {
            let drain_until = Instant::now() + DRAIN;
            while let Some(left) = drain_until.checked_duration_since(Instant::now()) {
                match rx.recv_timeout(left) {
                    Ok(chunk) => copy(chunk),
                    Err(_) => break,
                }
            }
            break Ended::Exited(status);
        }
        if started.elapsed() >= deadline {
            kill_group(group);
            let _ = child.wait();
            while let Ok(chunk) = rx.try_recv() {
                copy(chunk);
            }
            break Ended::TimedOut(deadline);
        }
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(chunk) => copy(chunk),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            // EOF: only the exit status is left to wait for.
            Err(mpsc::RecvTimeoutError::Disconnected) => thread::sleep(Duration::from_millis(50)),
        }
    };
    // Leftovers (a sleeping burner, a shell) must not outlive their step.
    kill_group(group);
    forward_interrupts_to(0);
    Ok((ended, String::from_utf8_lossy(&seen).into_owned()))
}

/// The process group of the step running now (0: none).
static RUNNING_GROUP: AtomicI32 = AtomicI32::new(0);

/// A step's own process group is not the terminal's foreground group, so a
/// Ctrl-C reaches only xtask: pass it on by killing the step's group, then
/// die of the signal as before.
fn forward_interrupts_to(group: libc::pid_t) {
    extern "C" fn on_signal(signal: libc::c_int) {
        let group = RUNNING_GROUP.load(Ordering::SeqCst);
        // SAFETY: kill, signal and raise are async-signal-safe.
        unsafe {
            if group > 0 {
                libc::kill(-group, libc::SIGKILL);
            }
            libc::signal(signal, libc::SIG_DFL);
            libc::raise(signal);
        }
    }
    RUNNING_GROUP.store(group, Ordering::SeqCst);
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            // SAFETY: the handler only calls async-signal-safe functions.
            unsafe { libc::signal(signal, handler) };
        }
    });
}

fn kill_group(group: libc::pid_t) {
    // SAFETY: kill has no memory effects; a group already gone gives ESRCH.
    unsafe { libc::kill(-group, libc::SIGKILL) };
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
    if let Some(name) = running_when_died(stdout) {
        if !names.iter().any(|n| *n == name) {
            names.push(format!("{name} (no result: the harness died)"));
        }
    }
    names
}

/// With one test thread libtest prints `test NAME ... ` before running the
/// test and its result after: the test that was running when the harness
/// died (segfault, abort, kill) is the last such line with no result and no
/// `test result:` summary after it.
fn running_when_died(stdout: &str) -> Option<&str> {
    let (index, line) = stdout
        .lines()
        .enumerate()
        .filter(|(_, l)| l.starts_with("test ") && l.contains(" ... "))
        .last()?;
    let (name, result) = line.strip_prefix("test ")?.split_once(" ... ")?;
    let finished = ["ok", "FAILED", "ignored"]
        .iter()
        .any(|r| result.starts_with(r));
    let summarised = stdout
        .lines()
        .skip(index + 1)
        .any(|l| l.starts_with("test result:") || l == "ok" || l == "FAILED");
    (!finished && !summarised).then(|| name.trim_end_matches(" - should panic"))
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
        // The harness died inside b: only its progress line names it.
        (
            "running 3 tests\ntest a ... FAILED\ntest b ... ",
            &["a", "b (no result: the harness died)"],
        ),
        // ... also when a child process of b wrote to the same output.
        (
            "running 2 tests\ntest a ... ok\ntest b ... child says hi\nmore\n",
            &["b (no result: the harness died)"],
        ),
        // Output of a child before the result is not a death.
        ("running 1 test\ntest a ... noise\nok\n\ntest result: ok. 1 passed\n", &[]),
        ("running 1 test\ntest a ... ignored, needs root\n", &[]),
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

    fn sh(script: &str) -> Command {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", script]);
        cmd
    }

    #[test]
    fn a_leftover_holding_the_output_does_not_stall_the_step() {
        let started = Instant::now();
        let (ended, out) =
            run_teed(&mut sh("sleep 30 & echo done"), Duration::from_secs(20)).expect("runs");
        assert!(matches!(ended, Ended::Exited(s) if s.success()));
        assert_eq!(out, "done\n");
        // The drain (2 s) and no more; the sleeper (30 s) is not waited for.
        assert!(
            started.elapsed() < Duration::from_secs(6),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn a_step_past_its_deadline_is_killed_with_its_group() {
        let started = Instant::now();
        let (ended, out) = run_teed(
            &mut sh("echo started; sleep 30 & sleep 30"),
            Duration::from_secs(1),
        )
        .expect("runs");
        assert!(matches!(ended, Ended::TimedOut(d) if d == Duration::from_secs(1)));
        assert_eq!(out, "started\n");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
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
