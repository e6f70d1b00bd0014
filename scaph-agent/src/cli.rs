//! Command line, shaped like Scaphandre's: `scaph [global options] <exporter> [options]`.
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(name = "scaph", version, about = "Energy per process, from exact kernel CPU time and RAPL")]
pub struct Cli {
    /// More log output (-v info, -vv debug, -vvv trace). RUST_LOG overrides it.
    #[arg(short, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    /// Don't print the banner line on start.
    #[arg(long, global = true)]
    pub no_header: bool,

    /// Guest mode: read the energy the hypervisor's `scaph qemu` writes for this VM.
    #[arg(long, global = true)]
    pub vm: bool,

    /// Where the guest tree is mounted in --vm mode.
    #[arg(long, env = "SCAPHANDRE_POWERCAP_PATH", default_value = "/var/scaphandre", global = true)]
    pub vm_path: PathBuf,

    /// Energy sensor: powercap_rapl (RAPL counters), estimate (linear model of CPU
    /// utilisation, labelled as estimated), or auto (powercap if readable, else estimate).
    #[arg(short = 's', long, value_enum, default_value_t = SensorChoice::Auto)]
    pub sensor: SensorChoice,

    /// Root of the powercap tree.
    #[arg(long, default_value = "/sys/class/powercap", global = true)]
    pub powercap_root: PathBuf,

    /// Root of procfs.
    #[arg(long, default_value = "/proc", global = true, hide = true)]
    pub proc_root: PathBuf,

    /// Root of sysfs (CPU topology).
    #[arg(long, default_value = "/sys", global = true, hide = true)]
    pub sys_root: PathBuf,

    /// Read CPU time from /proc/PID/stat instead of loading the kernel program.
    #[arg(long, global = true)]
    pub fallback_procfs: bool,

    /// Make loading the kernel program fail, to exercise the procfs fallback.
    #[arg(long, global = true, hide = true)]
    pub simulate_bpf_failure: bool,

    /// Use the kernel program's timestamp variant even where BTF allows the exact one.
    #[arg(long, global = true, hide = true)]
    pub bpf_timestamp: bool,

    /// Estimate sensor: power of one socket with all its CPUs idle, watts.
    #[arg(long, default_value_t = crate::sensors::estimate::DEFAULT_IDLE_WATTS, global = true)]
    pub estimate_idle_watts: f64,

    /// Estimate sensor: power of one socket with all its CPUs busy, watts.
    #[arg(long, default_value_t = crate::sensors::estimate::DEFAULT_MAX_WATTS, global = true)]
    pub estimate_max_watts: f64,

    /// What to do with energy that busy CPU time does not claim: leave it as
    /// idle/unattributed (Scaphandre 1.0's split) or share it by CPU time.
    #[arg(long, value_enum, default_value_t = IdlePolicyChoice::Unattributed, global = true)]
    pub idle_policy: IdlePolicyChoice,

    #[command(subcommand)]
    pub exporter: Exporter,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SensorChoice {
    Auto,
    #[value(name = "powercap_rapl")]
    PowercapRapl,
    Estimate,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum IdlePolicyChoice {
    Unattributed,
    Proportional,
}

#[derive(Debug, Subcommand)]
pub enum Exporter {
    /// Print host, sockets and top consumers to the terminal.
    Stdout(StdoutArgs),
}

#[derive(Debug, Args)]
pub struct StdoutArgs {
    /// Stop after this many seconds (negative: run until interrupted).
    #[arg(short, long, default_value_t = 10, allow_negative_numbers = true)]
    pub timeout: i64,

    /// Seconds between measurements.
    #[arg(short, long, default_value_t = 2)]
    pub step: u64,

    /// How many of the top consumers to show.
    #[arg(short, long, default_value_t = 5)]
    pub processes: usize,

    /// Show only processes whose exe or cmdline matches this regex (instead of the top N).
    #[arg(short, long, conflicts_with = "processes")]
    pub regex_filter: Option<String>,

    /// Print every metric as `name = value {labels}` instead of the summary.
    #[arg(long)]
    pub raw_metrics: bool,
}
