//! `cargo xtask fuzz`: builds the fuzz targets of `fuzz/` (cargo-fuzz,
//! nightly, AddressSanitizer), runs each for a fixed time from its seeds
//! (`fuzz/seeds/<target>`, committed) plus what earlier runs found
//! (`fuzz/corpus/<target>`, not committed), and reports the executions.
//! A crash fails the command; libFuzzer leaves the input under
//! `fuzz/artifacts/<target>/`.
use std::{
    fmt::Write as _,
    fs,
    path::Path,
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{bail, Context as _, Result};

use crate::{setup, workspace_root};

/// One target's run.
struct Outcome {
    target: String,
    /// Wall time of the run, including loading the corpus.
    seconds: f64,
    executions: u64,
    crashed: bool,
}

pub fn run(seconds: u64, report: bool) -> Result<()> {
    setup::ensure_cargo_fuzz()?;
    let root = workspace_root();
    let fuzz = root.join("fuzz");
    eprintln!("xtask: building the fuzz targets (nightly, AddressSanitizer)");
    // The rustup proxy, so that `+nightly` applies (`cargo xtask` runs on the default toolchain).
    let mut build = Command::new("cargo");
    build
        .current_dir(&fuzz)
        .env_remove("RUSTUP_TOOLCHAIN")
        .args(["+nightly", "fuzz", "build"]);
    // The parsers do not need the kernel program: skip its build.
    crate::status(build.env("AYA_BUILD_SKIP", "1"))?;
    let bin_dir = fuzz
        .join("target")
        .join(setup::nightly_host()?)
        .join("release");
    let mut outcomes = Vec::new();
    for target in targets(&fuzz)? {
        eprintln!("xtask: fuzzing {target} for {seconds} s");
        outcomes.push(run_target(&fuzz, &bin_dir.join(&target), &target, seconds)?);
    }
    let table = table(&outcomes);
    eprint!("{table}");
    if report {
        let path = root.join("FUZZING.md");
        fs::write(&path, fuzzing_md(&table, seconds))
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("xtask: wrote {}", path.display());
    }
    let crashed: Vec<&str> = outcomes
        .iter()
        .filter(|o| o.crashed)
        .map(|o| o.target.as_str())
        .collect();
    if !crashed.is_empty() {
        bail!(
            "fuzzing found a crash in {}: see fuzz/artifacts/<target>/",
            crashed.join(", ")
        );
    }
    Ok(())
}

/// The targets: `fuzz/fuzz_targets/*.rs`, sorted.
fn targets(fuzz: &Path) -> Result<Vec<String>> {
    let dir = fuzz.join("fuzz_targets");
    let mut names: Vec<String> = fs::read_dir(&dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|e| {
            e.ok()?
                .file_name()
                .to_str()?
                .strip_suffix(".rs")
                .map(str::to_owned)
        })
        .collect();
    names.sort();
    Ok(names)
}

fn run_target(fuzz: &Path, binary: &Path, target: &str, seconds: u64) -> Result<Outcome> {
    let corpus = fuzz.join("corpus").join(target);
    let artifacts = fuzz.join("artifacts").join(target);
    for dir in [&corpus, &artifacts] {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let started = Instant::now();
    let out = Command::new(binary)
        .arg(format!("-max_total_time={seconds}"))
        .arg("-print_final_stats=1")
        // An input that takes a second is a hang for these parsers.
        .arg("-timeout=1")
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .arg(&corpus)
        .arg(fuzz.join("seeds").join(target))
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("starting {}", binary.display()))?;
    let log = String::from_utf8_lossy(&out.stderr);
    let crashed = !out.status.success();
    if crashed {
        eprintln!("{}", tail(&log, 60));
    }
    let executions = final_stat(&log, "stat::number_of_executed_units").unwrap_or(0);
    let seconds = started.elapsed().as_secs_f64();
    Ok(Outcome {
        target: target.to_owned(),
        seconds,
        executions,
        crashed,
    })
}

/// A `stat::name: value` line of libFuzzer's `-print_final_stats=1`.
fn final_stat(log: &str, name: &str) -> Option<u64> {
    log.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':')?.trim().parse().ok())
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn table(outcomes: &[Outcome]) -> String {
    let mut t = String::from(
        "| target | seconds | executions | exec/s | crashes |\n|---|---:|---:|---:|---:|\n",
    );
    for o in outcomes {
        let _ = writeln!(
            t,
            "| `{}` | {:.0} | {} | {:.0} | {} |",
            o.target,
            o.seconds,
            o.executions,
            o.executions as f64 / o.seconds.max(0.001),
            u8::from(o.crashed)
        );
    }
    t
}

fn fuzzing_md(table: &str, seconds: u64) -> String {
    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok();
    let date = date
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    format!(
        "# Fuzzing\n\n\
         Generated by `cargo xtask fuzz --seconds {seconds} --report` on {date} ({cpus} CPUs, one target at a time, \
         one libFuzzer process each, AddressSanitizer, debug assertions on). Each target starts from its seeds in \
         `fuzz/seeds/<target>` (real samples and the unit tests' fixtures) and from what earlier runs on the same \
         machine kept in `fuzz/corpus/<target>`. Executions are libFuzzer's `stat::number_of_executed_units`. \
         The targets are the functions of `scaph-agent/src/fuzzing.rs`.\n\n{table}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_final_executions() {
        let log = "#1234\tDONE   cov: 10 ft: 20\nstat::number_of_executed_units: 987654\nstat::average_exec_per_sec:     32921\n";
        assert_eq!(
            final_stat(log, "stat::number_of_executed_units"),
            Some(987_654)
        );
        assert_eq!(final_stat(log, "stat::peak_rss_mb"), None);
        assert_eq!(
            final_stat(
                "stat::number_of_executed_units: x",
                "stat::number_of_executed_units"
            ),
            None
        );
    }
}
