//! Command line, shaped like Scaphandre's: `scaph [global options] <exporter> [options]`.
use std::{path::PathBuf, time::Duration};

use clap::{Parser, Subcommand, ValueEnum};

pub use crate::exporters::{
    json::JsonArgs, otlp::OtlpArgs, prometheus::PrometheusArgs, prometheus_push::PushArgs,
    qemu::QemuArgs, riemann::RiemannArgs, stdout::StdoutArgs, warp10::Warp10Args,
};
use crate::{
    cli_ranges as ranges,
    cputime::meta::{MetaOptions, CMDLINE_READ_MAX},
    exporters::{ExporterArgs, WithArgs},
    metrics::{MetricsConfig, DEFAULT_CMDLINE_MAX_LEN, DEFAULT_MAX_PROCESSES},
    vm_label::VmTrust,
};

/// Characters of each command line kept for `--regex-filter` and
/// `--process-regex` to match (they never show them).
pub const CMDLINE_MATCH_CHARS: usize = 1024;

#[derive(Debug, Parser)]
#[command(
    name = "scaph",
    version,
    about = "Energy per process, from exact kernel CPU time and RAPL"
)]
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
    #[arg(
        long,
        env = "SCAPHANDRE_POWERCAP_PATH",
        default_value = "/var/scaphandre",
        global = true
    )]
    pub vm_path: PathBuf,

    /// Energy sensor: powercap_rapl (RAPL counters), estimate (linear model of CPU
    /// utilisation, labelled as estimated), hwmon (power meters under --hwmon-root), or auto
    /// (powercap if readable, else hwmon if a power sensor is found, else estimate).
    #[arg(short = 's', long, value_enum, default_value_t = SensorChoice::Auto)]
    pub sensor: SensorChoice,

    /// Root of the powercap tree.
    #[arg(long, default_value = "/sys/class/powercap", global = true)]
    pub powercap_root: PathBuf,

    /// Root of the hwmon tree (`--sensor hwmon`, and `auto` without RAPL).
    #[arg(long, default_value = crate::sensors::hwmon::DEFAULT_HWMON_ROOT, global = true)]
    pub hwmon_root: PathBuf,

    /// Root of procfs.
    #[arg(long, default_value = crate::fsroot::DEFAULT_PROC_ROOT, global = true, hide = true)]
    pub proc_root: PathBuf,

    /// Root of sysfs (CPU topology).
    #[arg(long, default_value = crate::fsroot::DEFAULT_SYS_ROOT, global = true, hide = true)]
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
    #[arg(
        long,
        default_value_t = crate::sensors::estimate::DEFAULT_IDLE_WATTS,
        global = true,
        value_parser = ranges::watts
    )]
    pub estimate_idle_watts: f64,

    /// Estimate sensor: power of one socket with all its CPUs busy, watts.
    #[arg(
        long,
        default_value_t = crate::sensors::estimate::DEFAULT_MAX_WATTS,
        global = true,
        value_parser = ranges::watts
    )]
    pub estimate_max_watts: f64,

    /// What to do with energy that busy CPU time does not claim: leave it as
    /// idle/unattributed (Scaphandre 1.0's split) or share it by CPU time.
    #[arg(long, value_enum, default_value_t = IdlePolicyChoice::Unattributed, global = true)]
    pub idle_policy: IdlePolicyChoice,

    /// How long an exited process keeps its series (final values), e.g. 600, 90s, 10m, 1h.
    /// After that its energy moves into the summed series. Keep it well above the scrape interval.
    #[arg(long, value_parser = ranges::retention, default_value = "10m", global = true)]
    pub retention: Duration,

    /// Also expose Scaphandre's metric names and labels (microwatts, microjoules,
    /// load, memory, disks...), so existing Scaphandre dashboards keep working.
    #[arg(long, global = true)]
    pub scaphandre_compat: bool,

    /// Processes with their own series, the top ones by recent power; the others are
    /// summed into one series (pid=""), so totals stay right. 0: only that sum.
    #[arg(long, default_value_t = DEFAULT_MAX_PROCESSES, global = true, value_parser = ranges::count)]
    pub max_processes: usize,

    /// Show command lines (a `cmdline` label, the JSON `cmdline` field), cut to this many
    /// characters. Off by default: arguments can hold secrets. --scaphandre-compat turns it
    /// on at 128 unless this is given; 0 keeps it off.
    #[arg(long, global = true, value_name = "N", value_parser = ranges::cmdline_len)]
    pub cmdline_max_len: Option<usize>,

    /// Users whose qemu/KVM processes are VMs (names or numeric uids, comma-separated), by
    /// real uid. A qemu process of anyone else is an ordinary process, unless it runs in
    /// libvirt's or systemd-machined's cgroup (machine.slice/machine-qemu…scope).
    #[arg(long, global = true, value_delimiter = ',', default_value = crate::vm_label::DEFAULT_TRUSTED_USERS)]
    pub vm_trusted_users: Vec<String>,

    /// With --containers: also count containers in users' own cgroup subtrees
    /// (user@UID.service: rootless podman or docker), labelled container_owner_uid. Off by
    /// default, because any user can name a cgroup there after a real container.
    #[arg(long, global = true)]
    pub containers_rootless: bool,

    /// With --containers: a cgroup the host's container runtimes are nested under (as
    /// /proc/PID/cgroup shows it, e.g. /lxc.payload.ct1), repeatable. Without it, only
    /// runtime trees at the top of the hierarchy (system.slice, machine.slice, kubepods…)
    /// name containers: root in a nested container cannot pass for one of the host's.
    #[arg(long, global = true, value_name = "PATH")]
    pub containers_cgroup_prefix: Vec<String>,

    /// Also expose energy and CPU time per executable (scaph_exe_*).
    #[arg(long, global = true)]
    pub per_exe: bool,

    /// Also expose energy and CPU time per cgroup (scaph_cgroup_*).
    #[arg(long, global = true)]
    pub per_cgroup: bool,

    /// Label processes with their container, pod and systemd unit, and expose energy and
    /// CPU time per container and pod (scaph_container_*). On Kubernetes, pod names come
    /// from a watch on this node's pods (needs NODE_NAME and get/list/watch on pods).
    #[arg(long, global = true)]
    pub containers: bool,

    /// The cgroup filesystem to resolve cgroup ids in (the host's, when scaph runs in a container).
    #[arg(long, default_value = crate::containers::DEFAULT_CGROUP_ROOT, global = true)]
    pub cgroup_root: PathBuf,

    /// Kubernetes node this scaph runs on (--containers: only this node's pods are watched).
    #[arg(long, env = "NODE_NAME", global = true)]
    pub node_name: Option<String>,

    /// Reach the Kubernetes API with this kubeconfig instead of the in-cluster service account.
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,

    /// Carbon intensity of the electricity, grams of CO2-equivalent per kWh (0 to 5000):
    /// adds scaph_*_co2_grams_total counters, each step's joules times this / 3.6e6.
    #[arg(long, global = true, value_name = "G_PER_KWH", value_parser = ranges::carbon_intensity, conflicts_with = "carbon_intensity_file")]
    pub carbon_intensity: Option<f64>,

    /// Like --carbon-intensity, from the first line of this file, read every step (a
    /// grid-intensity feed can rewrite it); a bad or missing file keeps the last good value.
    #[arg(long, global = true, value_name = "PATH")]
    pub carbon_intensity_file: Option<PathBuf>,

    #[command(subcommand)]
    pub exporter: Exporter,
}

impl Cli {
    /// Characters of command lines shown: `--cmdline-max-len`, else 128 with
    /// `--scaphandre-compat` (its dashboards need the label), else none.
    #[must_use]
    pub fn cmdline_max_len(&self) -> usize {
        self.cmdline_max_len
            .unwrap_or(if self.scaphandre_compat {
                DEFAULT_CMDLINE_MAX_LEN
            } else {
                0
            })
            .min(CMDLINE_READ_MAX)
    }

    /// What the CPU time source keeps of each process: the command line
    /// only as far as some exporter shows it or matches it, who runs VMs,
    /// and scaph's own command line without its options.
    #[must_use]
    pub fn meta_options(&self) -> MetaOptions {
        let exporter = self.exporter.summary();
        let matches = exporter.matches_cmdlines;
        let shown = self.cmdline_max_len();
        MetaOptions {
            cmdline_chars: if matches {
                shown.max(CMDLINE_MATCH_CHARS)
            } else {
                shown
            },
            vm_trust: VmTrust::resolve(&self.vm_trusted_users),
            own_cmdline: format!("scaph {}", exporter.name).into(),
        }
    }

    /// Parses the command line, then checks the options that depend on each
    /// other ([`ranges::check`]); on an error, prints it and exits with status 2.
    #[must_use]
    pub fn parse_checked() -> Self {
        let cli = Self::parse();
        if let Err(e) = ranges::check(&cli) {
            <Self as clap::CommandFactory>::command()
                .error(clap::error::ErrorKind::ArgumentConflict, e)
                .exit();
        }
        cli
    }

    /// The carbon intensity source, when asked for.
    #[must_use]
    pub fn carbon_source(&self) -> Option<crate::carbon::IntensitySource> {
        use crate::carbon::IntensitySource;
        self.carbon_intensity
            .map(IntensitySource::Fixed)
            .or_else(|| {
                self.carbon_intensity_file
                    .clone()
                    .map(IntensitySource::file)
            })
    }

    /// The metric options, with the exporter's `--qemu`.
    #[must_use]
    pub fn metrics_config(&self, qemu: bool) -> MetricsConfig {
        MetricsConfig {
            compat: self.scaphandre_compat,
            max_processes: self.max_processes,
            cmdline_max_len: self.cmdline_max_len(),
            per_exe: self.per_exe,
            per_cgroup: self.per_cgroup,
            qemu,
            containers: self.containers.then(|| crate::metrics::ContainerLabels {
                node_name: self.node_name.clone(),
            }),
        }
    }

    /// `--containers` and its options, for the agent (which resolves them).
    #[must_use]
    pub fn containers_config(&self) -> Option<crate::containers::ContainersConfig> {
        self.containers
            .then(|| crate::containers::ContainersConfig {
                cgroup_root: self.cgroup_root.clone(),
                node_name: self.node_name.clone(),
                kubeconfig: self.kubeconfig.clone(),
                kubernetes: true,
                rootless: self.containers_rootless,
                cgroup_prefixes: self.containers_cgroup_prefix.clone(),
            })
    }
}

/// `600`, `600s`, `10m`, `1h`, `500ms`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?}: expected a number with an optional unit (ms, s, m, h)"))?;
    let seconds = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "{text:?}: unknown unit {other:?} (use ms, s, m or h)"
            ))
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SensorChoice {
    Auto,
    #[value(name = "powercap_rapl")]
    PowercapRapl,
    Estimate,
    /// Power and energy channels under `--hwmon-root` (ACPI power meter, amd_energy, ...).
    Hwmon,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum IdlePolicyChoice {
    Unattributed,
    Proportional,
}

/// The exporters; each one's options are declared in its own module, with
/// their [`ExporterArgs`].
#[derive(Debug, Subcommand)]
pub enum Exporter {
    /// Print host, sockets and top consumers to the terminal.
    Stdout(StdoutArgs),
    /// Write one JSON object per line, one line per measurement.
    Json(JsonArgs),
    /// Serve metrics over HTTP for Prometheus to scrape.
    Prometheus(PrometheusArgs),
    /// Push metrics to a Prometheus pushgateway every step.
    PrometheusPush(PushArgs),
    /// Send every metric as events to a Riemann server (protobuf over TCP or mutual TLS).
    Riemann(RiemannArgs),
    /// Send every metric to Warp 10 (GTS input format over HTTP).
    #[command(alias = "warpten")]
    Warp10(Warp10Args),
    /// Push metrics to an OpenTelemetry collector (OTLP over gRPC or HTTP/protobuf) every step.
    Otlp(OtlpArgs),
    /// On a hypervisor: write each qemu/KVM VM's energy where its guest's `scaph --vm` reads it.
    Qemu(QemuArgs),
}

impl Exporter {
    /// Calls `work` with the chosen exporter's options: the one place that
    /// tells the exporters apart.
    pub fn with_args<'a, W: WithArgs<'a>>(&'a self, work: W) -> W::Output {
        match self {
            Self::Stdout(a) => work.call(a),
            Self::Json(a) => work.call(a),
            Self::Prometheus(a) => work.call(a),
            Self::PrometheusPush(a) => work.call(a),
            Self::Riemann(a) => work.call(a),
            Self::Warp10(a) => work.call(a),
            Self::Otlp(a) => work.call(a),
            Self::Qemu(a) => work.call(a),
        }
    }

    /// The subcommand's name.
    #[must_use]
    pub fn name(&self) -> &'static str {
        self.summary().name
    }

    /// Time between two measurements.
    #[must_use]
    pub fn step(&self) -> Duration {
        self.summary().step
    }

    fn summary(&self) -> Summary {
        self.with_args(Summarize)
    }
}

/// What the command line itself needs of the chosen exporter's options.
struct Summary {
    name: &'static str,
    step: Duration,
    matches_cmdlines: bool,
}

struct Summarize;

impl WithArgs<'_> for Summarize {
    type Output = Summary;

    fn call<A: ExporterArgs>(self, args: &A) -> Summary {
        Summary {
            name: args.name(),
            step: args.step(),
            matches_cmdlines: args.matches_cmdlines(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("600"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5d").is_err());
    }

    #[test]
    fn scaphandre_command_lines_parse() {
        let cli = Cli::try_parse_from([
            "scaph",
            "--scaphandre-compat",
            "prometheus",
            "-a",
            "127.0.0.1",
            "-p",
            "9100",
            "-s",
            "m",
            "--qemu",
        ])
        .expect("prometheus");
        assert!(cli.scaphandre_compat);
        let Exporter::Prometheus(a) = &cli.exporter else {
            panic!("prometheus")
        };
        assert_eq!(
            (a.address.as_str(), a.port, a.suffix.as_str(), a.qemu),
            ("127.0.0.1", 9100, "m", true)
        );
        let cli = Cli::try_parse_from([
            "scaph",
            "prometheus-push",
            "-H",
            "gw",
            "-S",
            "https",
            "-s",
            "5",
            "--job",
            "j",
            "--no-tls-check",
        ])
        .expect("push");
        assert_eq!(cli.exporter.step(), Duration::from_secs(5));
        let cli = Cli::try_parse_from([
            "scaph",
            "json",
            "-t",
            "4",
            "-s",
            "1",
            "--max-top-consumers",
            "3",
            "-f",
            "/tmp/x",
        ])
        .expect("json");
        assert_eq!(cli.exporter.name(), "json");
        // The compat flag also works after the exporter.
        let cli = Cli::try_parse_from([
            "scaph",
            "prometheus",
            "--scaphandre-compat",
            "--max-processes",
            "0",
        ])
        .expect("after");
        assert!(cli.scaphandre_compat);
        assert_eq!(cli.metrics_config(false).max_processes, 0);
    }

    #[test]
    fn web_flags_parse_with_their_dotted_names() {
        let cli = Cli::try_parse_from([
            "scaph",
            "prometheus",
            "--web.config.file",
            "/etc/scaph/web.yml",
            "--web.max-connections=50",
            "--web.max-connections-per-client",
            "5",
        ])
        .expect("web flags");
        let Exporter::Prometheus(a) = &cli.exporter else {
            panic!("prometheus")
        };
        assert_eq!(
            a.web_config_file.as_deref(),
            Some(std::path::Path::new("/etc/scaph/web.yml"))
        );
        assert_eq!(
            (a.web_max_connections, a.web_max_connections_per_client),
            (50, 5)
        );
        let cli = Cli::try_parse_from(["scaph", "prometheus"]).expect("defaults");
        let Exporter::Prometheus(a) = &cli.exporter else {
            panic!("prometheus")
        };
        assert_eq!(
            (
                a.web_config_file.as_ref(),
                a.web_max_connections,
                a.web_max_connections_per_client
            ),
            (None, 200, 32)
        );
        assert!(
            Cli::try_parse_from(["scaph", "prometheus", "--web.max-connections", "0"]).is_err()
        );
    }

    #[test]
    fn containers_flags_fill_the_metrics_config() {
        let cli = Cli::try_parse_from([
            "scaph",
            "prometheus",
            "--containers",
            "--cgroup-root",
            "/host/sys/fs/cgroup",
            "--node-name",
            "node-1",
        ])
        .expect("prometheus --containers");
        let containers = cli.containers_config().expect("--containers");
        assert_eq!(containers.cgroup_root, PathBuf::from("/host/sys/fs/cgroup"));
        assert_eq!(containers.node_name.as_deref(), Some("node-1"));
        assert!(containers.kubernetes);
        let labels = cli.metrics_config(false).containers.expect("--containers");
        assert_eq!(labels.node_name.as_deref(), Some("node-1"));
        let cli = Cli::try_parse_from(["scaph", "prometheus"]).expect("prometheus");
        assert_eq!(cli.metrics_config(false).containers, None);
        assert_eq!(cli.containers_config(), None);
        let cli = Cli::try_parse_from([
            "scaph",
            "prometheus",
            "--containers",
            "--containers-rootless",
        ])
        .expect("rootless");
        assert!(cli.containers_config().expect("--containers").rootless);
        let cli = Cli::try_parse_from([
            "scaph",
            "prometheus",
            "--containers",
            "--containers-cgroup-prefix",
            "/lxc.payload.ct1",
            "--containers-cgroup-prefix",
            "/scaph-test-1",
        ])
        .expect("prefixes");
        assert_eq!(
            cli.containers_config()
                .expect("--containers")
                .cgroup_prefixes,
            ["/lxc.payload.ct1", "/scaph-test-1"]
        );
    }

    /// Command lines: off by default, on with compat (bounded), or as asked;
    /// kept only as far as shown or matched; scaph's own never with its options.
    #[test]
    fn cmdline_options() {
        let table: &[(&[&str], usize, usize)] = &[
            (&["scaph", "prometheus"], 0, 0),
            (&["scaph", "--scaphandre-compat", "prometheus"], 128, 128),
            (
                &[
                    "scaph",
                    "--scaphandre-compat",
                    "--cmdline-max-len",
                    "0",
                    "prometheus",
                ],
                0,
                0,
            ),
            (&["scaph", "--cmdline-max-len", "40", "json"], 40, 40),
            (
                &["scaph", "--cmdline-max-len", "4096", "json"],
                CMDLINE_READ_MAX,
                CMDLINE_READ_MAX,
            ),
            (
                &["scaph", "json", "--process-regex", "x"],
                0,
                CMDLINE_MATCH_CHARS,
            ),
            (&["scaph", "stdout", "-r", "x"], 0, CMDLINE_MATCH_CHARS),
        ];
        for &(args, shown, kept) in table {
            let cli = Cli::try_parse_from(args).expect("parses");
            assert_eq!(cli.metrics_config(false).cmdline_max_len, shown, "{args:?}");
            assert_eq!(cli.meta_options().cmdline_chars, kept, "{args:?}");
        }
        // More than is ever read is refused, not silently lowered.
        assert!(Cli::try_parse_from(["scaph", "--cmdline-max-len", "4097", "json"]).is_err());
        let cli = Cli::try_parse_from(["scaph", "prometheus-push", "--job", "j", "-H", "gw"])
            .expect("push");
        assert_eq!(&*cli.meta_options().own_cmdline, "scaph prometheus-push");
    }

    #[test]
    fn vm_trusted_users() {
        let cli = Cli::try_parse_from(["scaph", "prometheus"]).expect("default");
        assert_eq!(cli.vm_trusted_users, ["root", "libvirt-qemu", "qemu"]);
        let cli = Cli::try_parse_from(["scaph", "--vm-trusted-users", "root,107", "qemu"])
            .expect("numeric");
        assert_eq!(cli.meta_options().vm_trust, VmTrust::uids([0, 107]));
    }
}
