//! `scaph prometheus` against the real tools: promtool lints a real scrape,
//! and a real Prometheus server scrapes scaph and answers queries about it.
//! Everything listens on 127.0.0.1 only, on ports picked at run time.
mod exporter_support;

use std::time::Duration;

use exporter_support::{
    free_port, http_get, loopback_prometheus, promtool_check, query_escape, sample_value, scaph,
    tool, wait_for, Proc,
};
use scaph_agent::metrics::names;
use scaph_integration_tests::{burn, powercap::FakeRapl, reap, require_root};

/// scaph prometheus on a free port, plus `extra` global options.
fn start(extra: &[&str]) -> (Proc, u16) {
    let port = free_port();
    let port_arg = port.to_string();
    let mut args: Vec<&str> = extra.to_vec();
    args.extend(loopback_prometheus(&port_arg));
    (scaph(&args), port)
}

/// Waits for a scrape that has host energy and at least one process.
fn scrape_when_ready(proc: &mut Proc, port: u16) -> String {
    wait_for(
        "a scrape with host energy and processes",
        Duration::from_secs(20),
        || {
            assert!(proc.running(), "scaph exited:\n{}", proc.log());
            let response = http_get(port, "/metrics").ok()?;
            let prefix = "scaph_process_energy_joules_total{pid=\"";
            let ready = response.status == 200
                && response.body.contains("\nscaph_host_energy_joules_total ")
                && response.body.lines().any(|l| {
                    l.strip_prefix(prefix)
                        .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
                });
            ready.then_some(response.body)
        },
    )
}

#[test]
fn default_scrape_passes_promtool_with_no_finding() {
    require_root();
    let (mut scaph, port) = start(&[]);
    scrape_when_ready(&mut scaph, port);
    let response = http_get(port, "/metrics").expect("scrape");
    assert_eq!(
        response.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let (ok, findings) = promtool_check(&response.body);
    eprintln!(
        "promtool check metrics (default scrape, {} lines): {findings:?}",
        response.body.lines().count()
    );
    assert!(
        ok && findings.trim().is_empty(),
        "promtool found problems:\n{findings}"
    );
    // One HELP/TYPE per family, and families are not interleaved.
    let mut seen = std::collections::HashSet::new();
    let mut current = "";
    for line in response.body.lines().filter(|l| !l.starts_with('#')) {
        let name = line.split(['{', ' ']).next().unwrap_or_default();
        if name != current {
            assert!(
                seen.insert(name.to_owned()),
                "family {name} appears in two places"
            );
            current = name;
        }
    }
}

#[test]
fn compat_scrape_has_only_the_findings_scaphandre_names_force() {
    require_root();
    let (mut scaph, port) = start(&["--scaphandre-compat"]);
    let body = scrape_when_ready(&mut scaph, port);
    for name in [
        "scaph_host_power_microwatts",
        "scaph_host_energy_microjoules",
        "scaph_process_power_consumption_microwatts{",
        "scaph_host_load_avg_fifteen",
    ] {
        assert!(body.contains(name), "{name} missing");
    }
    let (_, findings) = promtool_check(&body);
    eprintln!("promtool check metrics (--scaphandre-compat):\n{findings}");
    let compat: Vec<&str> = names::ALL
        .iter()
        .filter(|d| d.compat)
        .map(|d| d.name)
        .collect();
    assert!(
        !findings.trim().is_empty(),
        "microjoule counters without _total should be reported"
    );
    for line in findings.lines().filter(|l| !l.trim().is_empty()) {
        let metric = line.split_whitespace().next().unwrap_or_default();
        assert!(
            compat.contains(&metric),
            "finding not forced by a Scaphandre name: {line}"
        );
        assert!(
            !line.contains("error while linting") && !line.contains("parse"),
            "{line}"
        );
    }
    assert!(
        !findings.contains("scaph_host_energy_joules_total"),
        "the default set stays clean"
    );
}

#[test]
fn unknown_paths_get_404_and_scrapers_see_the_same_numbers() {
    require_root();
    let (mut scaph, port) = start(&[]);
    scrape_when_ready(&mut scaph, port);
    let response = http_get(port, "/nowhere").expect("GET /nowhere");
    assert_eq!(response.status, 404);
    assert!(response.body.contains("/metrics"), "{}", response.body);
    // The landing page links to the metrics, as Prometheus exporters' do.
    let response = http_get(port, "/").expect("GET /");
    assert_eq!(response.status, 200);
    assert!(
        response.body.contains("href=\"/metrics\""),
        "{}",
        response.body
    );
    // Two scrapes within one measurement step get identical bytes: a scrape only reads.
    let same = (0..10).any(|_| {
        let a = http_get(port, "/metrics").expect("scrape a").body;
        let b = http_get(port, "/metrics").expect("scrape b").body;
        let stamp = |t: &str| sample_value(t, "scaph_measurement_timestamp_seconds", &[]);
        stamp(&a) == stamp(&b) && a == b
    });
    assert!(same, "two scrapes of the same measurement differed");
}

/// A process that lived 20 ms is still there, with its CPU time and energy,
/// seconds later (a scraper every 15–60 s sees it).
#[test]
fn a_20_ms_process_is_seen_after_it_exited() {
    require_root();
    let (mut scaph, port) = start(&[]);
    scrape_when_ready(&mut scaph, port);
    let (pid, truth_ns) = reap(burn(&["--ms", "20"]));
    std::thread::sleep(Duration::from_secs(3));
    let body = http_get(port, "/metrics").expect("scrape").body;
    let needle = format!("pid=\"{pid}\"");
    let cpu = sample_value(&body, "scaph_process_cpu_seconds_total", &[&needle])
        .unwrap_or_else(|| panic!("no series for pid {pid}"));
    let energy = sample_value(&body, "scaph_process_energy_joules_total", &[&needle])
        .expect("energy series");
    eprintln!(
        "20 ms process {pid}: rusage {:.6} s, exposed {cpu:.6} s and {energy:.4} J, 3 s after exit",
        truth_ns as f64 / 1e9
    );
    // Exact kernel runtime against wait4's µs figures: within 0.1 % + 0.1 ms
    // (within 1 µs in 5 runs).
    let truth = truth_ns as f64 / 1e9;
    assert!(
        (cpu - truth).abs() < 0.001 * truth + 0.0001,
        "cpu {cpu} s vs rusage {truth} s"
    );
    assert!(energy > 0.0);
}

/// A real Prometheus scrapes scaph (fake RAPL drawing 25 W, so the values are
/// known), and its HTTP API returns the host counter, its rate, processes, and
/// a sum that matches the host.
#[test]
fn real_prometheus_scrapes_scaph() {
    require_root();
    const WATTS: f64 = 25.0;
    let rapl = FakeRapl::start(WATTS, 1_000_000);
    let mut args = vec!["--sensor", "powercap_rapl"];
    let rapl_args = rapl.scaph_args();
    args.extend(rapl_args.iter().map(String::as_str));
    let (mut scaph, port) = start(&args);
    scrape_when_ready(&mut scaph, port);

    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: scaph\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n"),
    )
    .expect("config");
    let prom_port = free_port();
    let prometheus = Proc::start(
        "prometheus",
        &tool("prometheus", "prometheus"),
        &[
            format!("--config.file={}", config.display()),
            format!("--web.listen-address=127.0.0.1:{prom_port}"),
            format!("--storage.tsdb.path={}", dir.path().join("tsdb").display()),
        ],
    );
    let query_at = |promql: &str, time: Option<f64>| -> Option<Vec<serde_json::Value>> {
        let at = time.map(|t| format!("&time={t:.3}")).unwrap_or_default();
        let response = http_get(
            prom_port,
            &format!("/api/v1/query?query={}{at}", query_escape(promql)),
        )
        .ok()?;
        let json: serde_json::Value = serde_json::from_str(&response.body).ok()?;
        (json["status"] == "success").then(|| {
            json["data"]["result"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
    };
    let query = |promql: &str| query_at(promql, None);
    let number = |v: &serde_json::Value| v["value"][1].as_str().and_then(|s| s.parse::<f64>().ok());

    wait_for(
        "Prometheus to scrape scaph successfully",
        Duration::from_secs(30),
        || {
            let up = query("up{job=\"scaph\"}")?;
            (up.first().and_then(number) == Some(1.0)).then_some(())
        },
    );
    wait_for(
        "8 s of samples in Prometheus",
        Duration::from_secs(30),
        || {
            let n = query("count_over_time(scaph_host_energy_joules_total[10s])")?
                .first()
                .and_then(number)?;
            (n >= 9.0).then_some(())
        },
    );
    // Power from what Prometheus stored at two instants 5 s apart: energy over
    // the measurement timestamps stored with it (same scrape, same snapshot).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64()
        - 1.0;
    let at = |promql: &str, t: f64| {
        let result = query_at(promql, Some(t));
        result
            .as_ref()
            .and_then(|r| r.first().and_then(number))
            .unwrap_or_else(|| panic!("{promql} at {t}: {result:?}"))
    };
    let rate = (at("scaph_host_energy_joules_total", now)
        - at("scaph_host_energy_joules_total", now - 5.0))
        / (at("scaph_measurement_timestamp_seconds", now)
            - at("scaph_measurement_timestamp_seconds", now - 5.0));
    let promql_rate =
        query("rate(scaph_host_energy_joules_total[6s])").and_then(|r| r.first().and_then(number));
    let host = query("scaph_host_energy_joules_total")
        .and_then(|r| r.first().and_then(number))
        .expect("host energy");
    let processes = query("count(scaph_process_energy_joules_total{pid!=\"\"})")
        .and_then(|r| r.first().and_then(number))
        .expect("processes");
    let own = query("scaph_process_cpu_seconds_total{comm=\"scaph\"}")
        .and_then(|r| r.first().and_then(number));
    let gap = query("abs(sum(scaph_process_energy_joules_total) + sum(scaph_idle_energy_joules_total) - sum(scaph_host_energy_joules_total))")
        .and_then(|r| r.first().and_then(number))
        .expect("sum query");
    let sensor = query("scaph_sensor_info").expect("sensor info");
    eprintln!(
        "Prometheus: host {host:.3} J, {rate:.3} W from stored samples, rate() {promql_rate:?} W (fake RAPL {WATTS} W), {processes} process series, \
         scaph's own CPU {own:?} s, |Σ processes + idle − host| = {gap:e} J, sensor {}",
        sensor.first().map(|s| s["metric"].to_string()).unwrap_or_default()
    );
    assert!(
        (rate - WATTS).abs() / WATTS < 0.05,
        "{rate} W from stored samples, fake RAPL draws {WATTS} W"
    );
    assert!(host > 0.0 && host < WATTS * 120.0, "host {host} J");
    assert!(processes >= 1.0);
    assert!(own.is_some_and(|s| s > 0.0), "scaph's own series");
    assert!(
        gap < 1e-6 * host.max(1.0),
        "Σ processes + idle differs from host by {gap} J"
    );
    assert_eq!(
        sensor.first().map(|s| s["metric"]["estimated"].clone()),
        Some(serde_json::json!("false"))
    );
    drop(prometheus);
}
