//! Carbon counters of a real `scaph prometheus` on a fake powercap tree and
//! the real kernel program: every `scaph_*_co2_grams_total` series equals
//! its `*_energy_joules_total` series × intensity / 3.6e6 (relative 1e-9),
//! Σ processes + idle = host in grams, promtool finds nothing to say, and a
//! rewritten `--carbon-intensity-file` changes the rate from the next step
//! on (a bad rewrite keeps the last good value, logged once).
mod exporter_support;

use std::{
    collections::BTreeMap,
    path::Path,
    time::{Duration, Instant},
};

use exporter_support::{
    free_port, http_get, loopback_prometheus, promtool_check, sample_value, scaph, wait_for, Proc,
};
use scaph_integration_tests::{burn, powercap::FakeRapl, reap, require_root};

const WATTS: f64 = 25.0;
const INTENSITY_GAUGE: &str = "scaph_carbon_intensity_grams_per_kilowatt_hour";

/// scaph prometheus (step 1 s) on `rapl`, with `extra` options, once it shows host grams.
fn start(rapl: &FakeRapl, extra: &[&str]) -> (Proc, u16) {
    let port = free_port();
    let port_arg = port.to_string();
    let rapl_args = rapl.scaph_args();
    let mut args = vec!["--sensor", "powercap_rapl"];
    args.extend(rapl_args.iter().map(String::as_str));
    args.extend_from_slice(extra);
    args.extend(loopback_prometheus(&port_arg));
    let mut proc = scaph(&args);
    wait_for("a scrape with host grams", Duration::from_secs(30), || {
        assert!(proc.running(), "scaph exited:\n{}", proc.log());
        let body = http_get(port, "/metrics").ok()?.body;
        body.contains("\nscaph_host_co2_grams_total ").then_some(())
    });
    (proc, port)
}

fn scrape(proc: &mut Proc, port: u16) -> String {
    assert!(proc.running(), "scaph exited:\n{}", proc.log());
    http_get(port, "/metrics").expect("scrape").body
}

/// Every sample of `name`, by its label text (`{...}`, or "" without labels).
fn series(body: &str, name: &str) -> BTreeMap<String, f64> {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            if !rest.starts_with(['{', ' ']) {
                return None;
            }
            let (labels, value) = rest.rsplit_once(' ')?;
            Some((labels.to_owned(), value.parse().ok()?))
        })
        .collect()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1e-12)
}

/// The checks every scrape of a fixed intensity must pass.
fn check_fixed(body: &str, intensity: f64) {
    let pairs = [
        (
            "scaph_host_energy_joules_total",
            "scaph_host_co2_grams_total",
        ),
        (
            "scaph_idle_energy_joules_total",
            "scaph_idle_co2_grams_total",
        ),
        (
            "scaph_socket_energy_joules_total",
            "scaph_socket_co2_grams_total",
        ),
        (
            "scaph_process_energy_joules_total",
            "scaph_process_co2_grams_total",
        ),
    ];
    for (joules_name, grams_name) in pairs {
        let joules = series(body, joules_name);
        let grams = series(body, grams_name);
        assert!(!grams.is_empty(), "no {grams_name}:\n{body}");
        assert_eq!(
            joules.keys().collect::<Vec<_>>(),
            grams.keys().collect::<Vec<_>>(),
            "{grams_name} has the series of {joules_name}"
        );
        for (labels, j) in &joules {
            let g = grams[labels];
            let want = j * intensity / 3.6e6;
            assert!(
                close(g, want),
                "{grams_name}{labels} = {g}, want {j} J × {intensity} / 3.6e6 = {want}"
            );
        }
    }
    let sum = |name: &str| series(body, name).values().sum::<f64>();
    let host = sum("scaph_host_co2_grams_total");
    let parts = sum("scaph_process_co2_grams_total") + sum("scaph_idle_co2_grams_total");
    assert!(
        close(parts, host),
        "Σ processes + idle = {parts} g, host {host} g"
    );
    assert_eq!(sample_value(body, INTENSITY_GAUGE, &[]), Some(intensity));
}

/// A fixed intensity over a burner's life, top-N changes (`--max-processes
/// 3`: the burner outranks, then is folded into pid="" when it ends) and
/// its retirement (`--retention 3s`).
#[test]
fn grams_are_joules_times_the_intensity_and_add_up() {
    require_root();
    const INTENSITY: f64 = 412.5;
    let rapl = FakeRapl::start(WATTS, 1_000_000);
    let (mut proc, port) = start(
        &rapl,
        &[
            "--carbon-intensity",
            "412.5",
            "--max-processes",
            "3",
            "--retention",
            "3s",
        ],
    );
    let burner = burn(&["--ms", "2500"]);
    let end = Instant::now() + Duration::from_secs(8);
    let mut scrapes = 0;
    let mut last = String::new();
    while Instant::now() < end {
        last = scrape(&mut proc, port);
        check_fixed(&last, INTENSITY);
        scrapes += 1;
        std::thread::sleep(Duration::from_millis(300));
    }
    let (pid, _) = reap(burner);
    let (ok, findings) = promtool_check(&last);
    assert!(ok && findings.is_empty(), "promtool: {findings}\n{last}");
    let host = sample_value(&last, "scaph_host_co2_grams_total", &[]).unwrap_or(0.0);
    eprintln!(
        "{scrapes} scrapes checked; last: {host:.9} g for the host (burner pid {pid}); promtool: no finding"
    );
    assert!(host > 0.0);
}

/// `--carbon-intensity-file`: a rewrite applies from the next step; a bad
/// one keeps the last good value and is logged once.
#[test]
fn a_rewritten_intensity_file_changes_the_rate() {
    require_root();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("intensity");
    std::fs::write(&file, "100\n").expect("intensity file");
    let rapl = FakeRapl::start(WATTS, 1_000_000);
    let file_arg = file.display().to_string();
    let (mut proc, port) = start(&rapl, &["--carbon-intensity-file", &file_arg]);
    // The rate between two scrapes that both show `intensity`, past two
    // steps after it appeared: grams grown / joules grown × 3.6e6.
    let rate = |proc: &mut Proc, intensity: f64| {
        let at = |proc: &mut Proc| {
            wait_for(
                &format!("intensity {intensity}"),
                Duration::from_secs(10),
                || {
                    let body = scrape(proc, port);
                    (sample_value(&body, INTENSITY_GAUGE, &[]) == Some(intensity)).then_some(body)
                },
            )
        };
        at(proc);
        std::thread::sleep(Duration::from_millis(1100));
        let first = at(proc);
        std::thread::sleep(Duration::from_millis(2100));
        let second = at(proc);
        let value = |body: &str, name: &str| sample_value(body, name, &[]).expect(name);
        let joules = value(&second, "scaph_host_energy_joules_total")
            - value(&first, "scaph_host_energy_joules_total");
        let grams = value(&second, "scaph_host_co2_grams_total")
            - value(&first, "scaph_host_co2_grams_total");
        assert!(joules > WATTS, "{joules} J in about 2 s");
        grams / joules * 3.6e6
    };
    let write = |text: &str| write_atomically(&file, text);
    for (text, want) in [("100\n", 100.0), ("400\n", 400.0), ("0.5\n", 0.5)] {
        write(text);
        let got = rate(&mut proc, want);
        eprintln!("file {text:?}: {got} g/kWh over two steps");
        assert!(
            (got - want).abs() <= 1e-6 * want,
            "file {text:?}: rate {got}"
        );
    }
    write("not a number\n");
    std::thread::sleep(Duration::from_millis(3500));
    let got = rate(&mut proc, 0.5);
    assert!(
        (got - 0.5).abs() <= 1e-6,
        "the last good value stays: {got}"
    );
    let log = proc.log();
    let warnings = log
        .matches("its first line (12 bytes) is not a number")
        .count();
    assert_eq!(warnings, 1, "logged once:\n{log}");
}

/// Replaces the file in one rename, as a feed job should, so that no step
/// reads it half written.
fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("writing the intensity");
    std::fs::rename(&tmp, path).expect("renaming the intensity");
}
