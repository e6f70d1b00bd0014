//! `cargo xtask`: the developer commands (setup, run, test).
mod fuzz;
mod setup;
mod suite;

use std::{
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Developer tasks for scaph")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building the kernel program needs (rust-src, LLVM 22, bpf-linker).
    Setup,
    /// Set up, build (release) and start `scaph` (default: the stdout exporter).
    Run {
        /// Arguments passed to scaph, e.g. `-- prometheus`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Measure overhead, scale and accuracy (root) and write BENCHMARKS.md.
    Bench {
        /// Fewer and shorter runs (about 3 to 4 minutes), to keep the harness alive in CI.
        #[arg(long)]
        quick: bool,
    },
    /// Run every fuzz target (fuzz/, nightly) for some seconds each; fails on a crash.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Write the executions per target to FUZZING.md.
        #[arg(long)]
        report: bool,
    },
    /// Set up, then run every unit test and the root-only integration tests,
    /// then each fuzz target for a few seconds.
    Test {
        /// Extra arguments for the integration test binary (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> Result<()> {
    match Cli::parse().task {
        Task::Setup => setup::ensure(),
        Task::Run { args } => run(&args),
        Task::Test { args } => test(&args),
        Task::Bench { quick } => bench(quick),
        Task::Fuzz { seconds, report } => fuzz::run(seconds, report),
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(workspace_root());
    cmd
}

fn status(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

/// A command that runs as root: itself when already root, else through `sudo -E`.
fn as_root(program: &Path) -> Command {
    if setup::is_root() {
        Command::new(program)
    } else {
        let mut cmd = Command::new("sudo");
        cmd.arg("-E").arg(program);
        cmd
    }
}

fn run(args: &[String]) -> Result<()> {
    setup::ensure()?;
    status(cargo().args(["build", "--release", "--package", "scaph-agent"]))?;
    let binary = workspace_root().join("target/release/scaph");
    let args: Vec<String> = if args.is_empty() {
        vec!["stdout".into()]
    } else {
        args.to_vec()
    };
    eprintln!("xtask: running {} {}", binary.display(), args.join(" "));
    // exec: scaph receives SIGINT/SIGTERM itself and detaches its program cleanly.
    let err = as_root(&binary).args(&args).exec();
    Err(err).with_context(|| format!("executing {}", binary.display()))
}

fn bench(quick: bool) -> Result<()> {
    setup::ensure()?;
    status(cargo().args([
        "build",
        "--release",
        "--package",
        "scaph-agent",
        "--package",
        "scaph-integration-tests",
        "--bins",
    ]))?;
    let root = workspace_root();
    let mut cmd = as_root(&root.join("target/release/scaph-bench"));
    cmd.arg("--out").arg(root.join("BENCHMARKS.md"));
    if quick {
        cmd.arg("--quick");
    }
    status(&mut cmd)?;
    eprintln!("xtask: wrote {}", root.join("BENCHMARKS.md").display());
    Ok(())
}

fn test(args: &[String]) -> Result<()> {
    // Every step runs even when an earlier one failed; one summary at the end.
    let mut suite = suite::Suite::default();
    // Without the BPF toolchain nothing that builds the agent can run.
    let toolchain = setup::ensure();
    let have_toolchain = toolchain.is_ok();
    suite.outcome("setup (BPF toolchain)", toolchain);
    // Only some integration tests need these; they fail by name without them.
    suite.outcome(
        "setup (exporter test tools)",
        setup::ensure_exporter_test_tools(),
    );
    setup::ensure_riemann_client(&workspace_root());
    setup::ensure_otlp_receiver(&workspace_root());
    setup::ensure_deploy_test_tools(&workspace_root());
    // Formatting: the tree is formatted with stable rustfmt; a difference fails the run.
    suite.step(
        "cargo fmt --check",
        cargo().args(["fmt", "--all", "--check"]),
    );
    // Lints: the workspace's [lints] plus clippy's defaults, as errors. (The
    // kernel crate only builds for the bpf target; it is linted on its own.)
    suite.step(
        "cargo clippy -D warnings",
        cargo().args([
            "clippy",
            "--workspace",
            "--exclude",
            "scaph-ebpf",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
    );
    if have_toolchain {
        // The kernel crate, linted on its own as aya-template does: for the
        // bpf target, with the toolchain that builds it (its binaries hold
        // their own panic handler). That toolchain is an unpinned nightly,
        // whose new lints must not fail a run with no change to the code:
        // only undocumented unsafe blocks and clippy's correctness lints
        // are errors there, the rest are warnings.
        suite.step(
            "cargo clippy (kernel crate: unsafe docs and correctness denied)",
            &mut kernel_clippy(),
        );
        // Unit tests of every default member: no root needed.
        suite.tests(
            "unit tests",
            cargo().args([
                "test",
                "--workspace",
                "--exclude",
                "scaph-ebpf",
                "--exclude",
                "scaph-integration-tests",
                "--no-fail-fast",
            ]),
            suite::UNIT_DEADLINE,
        );
        // Integration tests: real kernel program, so root, and one thread (shared kernel state).
        let integration = integration_tests(&mut suite, args);
        suite.outcome("integration tests", integration);
    } else {
        eprintln!("xtask: skipping the unit and integration tests (no BPF toolchain)");
    }
    // A smoke run of the fuzz targets (the long run is `cargo xtask fuzz`).
    suite.outcome("fuzz smoke", fuzz::run(FUZZ_SMOKE_SECONDS, false));
    suite.finish()
}

/// `cargo clippy` of scaph-ebpf for the bpf target, as aya-build builds it.
fn kernel_clippy() -> Command {
    let mut cmd = Command::new("rustup");
    cmd.current_dir(workspace_root())
        .args(["run", setup::EBPF_TOOLCHAIN, "cargo", "clippy"])
        .args(["--package", "scaph-ebpf", "--bins", "--lib"])
        .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core"])
        .args(["--", "-D", "clippy::undocumented_unsafe_blocks"])
        .args(["-D", "clippy::correctness"])
        // The toolchain's own rustc, not the one that runs xtask.
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CARGO");
    cmd
}

/// Builds the agent and the integration test binaries, then runs each of
/// them as root, one thread, recording failures in `suite`.
fn integration_tests(suite: &mut suite::Suite, args: &[String]) -> Result<()> {
    status(cargo().args(["build", "--package", "scaph-agent"]))?;
    let out = cargo()
        .args([
            "test",
            "--package",
            "scaph-integration-tests",
            "--no-run",
            "--message-format=json",
        ])
        .output()
        .context("building the integration tests")?;
    if !out.status.success() {
        std::io::Write::write_all(&mut std::io::stderr(), &out.stderr)?;
        bail!("building the integration tests failed");
    }
    for binary in test_executables(&out.stdout) {
        eprintln!("xtask: running {} as root, one thread", binary.display());
        let name = binary
            .file_name()
            .map(|n| test_name(&n.to_string_lossy()).to_owned())
            .unwrap_or_default();
        suite.tests(
            &format!("integration tests {name}"),
            as_root(&binary).args(["--test-threads=1"]).args(args),
            suite::INTEGRATION_DEADLINE,
        );
    }
    Ok(())
}

/// A test binary's name without cargo's hash suffix (`qemu-3f2a…` -> `qemu`).
fn test_name(file_name: &str) -> &str {
    match file_name.rsplit_once('-') {
        Some((name, hash)) if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
            name
        }
        _ => file_name,
    }
}

/// Seconds per fuzz target in `cargo xtask test`.
const FUZZ_SMOKE_SECONDS: u64 = 5;

/// The test executables cargo reported in its JSON messages (test
/// harnesses only, not the helper binaries built alongside them).
fn test_executables(json_lines: &[u8]) -> Vec<PathBuf> {
    String::from_utf8_lossy(json_lines)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["profile"]["test"] == true)
        .filter_map(|m| m["executable"].as_str().map(PathBuf::from))
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn test_binary_names_lose_cargo_hash() {
        for (file, name) in [
            ("bpf_cputime-3f2a1b4c5d6e7f80", "bpf_cputime"),
            ("energy_e2e-0123456789abcdef", "energy_e2e"),
            ("web-tls", "web-tls"),
            ("x-0123", "x-0123"),
            ("plain", "plain"),
        ] {
            assert_eq!(super::test_name(file), name);
        }
    }
}
