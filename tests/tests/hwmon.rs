//! `-s hwmon` with the real binary on a fixture tree: an ACPI power meter
//! whose `power1_average` stays at a known power. The host energy scaph
//! reports must be that power times the time, within 1 %, and `auto` must
//! pick hwmon when there is no RAPL.
use std::time::Duration;

mod exporter_support;

use exporter_support::{free_port, http_get, sample_value, scaph, wait_for};
use scaph_integration_tests::require_root;

const WATTS: f64 = 150.0;

/// `hwmon0` (a thermal zone, ignored) and `hwmon1`, an `acpi_power_meter`
/// drawing [`WATTS`], laid out as the kernel does.
fn power_meter_tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = [
        ("hwmon0/name", "acpitz\n".to_owned()),
        ("hwmon0/temp1_input", "27800\n".to_owned()),
        ("hwmon1/name", "power_meter\n".to_owned()),
        (
            "hwmon1/power1_average",
            format!("{}\n", (WATTS * 1e6) as u64),
        ),
        ("hwmon1/power1_average_interval", "1000\n".to_owned()),
        ("hwmon1/power1_is_battery", "0\n".to_owned()),
    ];
    for (path, content) in files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, content).expect("fixture");
    }
    dir
}

/// The JSON lines of a `scaph json` run's log.
fn json_lines(log: &str) -> Vec<serde_json::Value> {
    log.lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn constant_power_meter_gives_watts_times_time() {
    require_root();
    let tree = power_meter_tree();
    let mut scaph = scaph(&[
        "--no-header",
        "--fallback-procfs",
        "--sensor",
        "hwmon",
        "--hwmon-root",
        tree.path().to_str().expect("utf-8"),
        "json",
        "-t",
        "6",
        "-s",
        "1",
    ]);
    let status = scaph.wait(Duration::from_secs(20));
    let log = scaph.log();
    assert!(status.success(), "{log}");
    let lines = json_lines(&log);
    assert!(lines.len() >= 4, "{log}");
    let (first, last) = (&lines[0], &lines[lines.len() - 1]);
    assert_eq!(last["sensor"], "hwmon", "{last}");
    assert_eq!(last["estimated"], false, "{last}");
    for line in &lines[1..] {
        let watts = line["host"]["power_watts"].as_f64().expect("host power");
        assert!(
            (watts - WATTS).abs() <= 0.01 * WATTS,
            "each step: {watts} W, the meter reads {WATTS} W\n{line}"
        );
    }
    let joules = last["host"]["energy_joules"].as_f64().expect("energy")
        - first["host"]["energy_joules"].as_f64().expect("energy");
    let seconds = last["timestamp"].as_f64().expect("timestamp")
        - first["timestamp"].as_f64().expect("timestamp");
    let expected = WATTS * seconds;
    eprintln!(
        "host {joules:.3} J over {seconds:.3} s = {:.3} W; meter {WATTS} W, {:.4} % off",
        joules / seconds,
        100.0 * (joules - expected).abs() / expected
    );
    assert!(
        (joules - expected).abs() <= 0.01 * expected,
        "host {joules} J in {seconds} s, expected {expected} J within 1 %"
    );
}

#[test]
fn auto_without_rapl_picks_hwmon_and_says_measured() {
    require_root();
    let tree = power_meter_tree();
    let no_rapl = tempfile::tempdir().expect("tempdir");
    let port = free_port().to_string();
    let mut scaph = scaph(&[
        "--fallback-procfs",
        "--powercap-root",
        no_rapl.path().to_str().expect("utf-8"),
        "--hwmon-root",
        tree.path().to_str().expect("utf-8"),
        "prometheus",
        "-a",
        "127.0.0.1",
        "-p",
        &port,
        "--step",
        "1",
    ]);
    let port: u16 = port.parse().expect("port");
    // Three measured steps: enough for the host pool to be split a few times.
    let body = wait_for("3 s of host energy", Duration::from_secs(20), || {
        assert!(scaph.running(), "scaph exited:\n{}", scaph.log());
        let body = http_get(port, "/metrics").ok()?.body;
        sample_value(&body, "scaph_host_energy_joules_total", &[])
            .filter(|j| *j > 2.5 * WATTS)
            .map(|_| body)
    });
    let sum = |name: &str| -> f64 {
        body.lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let host = sum("scaph_host_energy_joules_total");
    let gap =
        sum("scaph_process_energy_joules_total") + sum("scaph_idle_energy_joules_total") - host;
    eprintln!("host {host:.3} J, Σ processes + idle − host = {gap:e} J");
    assert!(
        gap.abs() < 1e-6 * host,
        "Σ processes + idle differs from host ({host} J) by {gap} J"
    );
    let info = body
        .lines()
        .find(|l| l.starts_with("scaph_sensor_info{"))
        .unwrap_or_else(|| panic!("no scaph_sensor_info:\n{body}"));
    eprintln!("{info}");
    assert!(info.contains("sensor=\"hwmon\""), "{info}");
    assert!(info.contains("estimated=\"false\""), "{info}");
}
