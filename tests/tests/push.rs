//! `scaph prometheus-push` against a real pushgateway on loopback: pushes
//! arrive and read back through the gateway's API; when the gateway goes
//! away scaph keeps running, says so once, and pushes again when it returns.
mod exporter_support;

use std::time::Duration;

use exporter_support::{free_port, http_get, sample_value, scaph, tool, wait_for, Proc};
use scaph_integration_tests::require_root;

fn pushgateway(port: u16) -> Proc {
    Proc::start(
        "pushgateway",
        &tool("prometheus-pushgateway", "prometheus-pushgateway"),
        &[format!("--web.listen-address=127.0.0.1:{port}")],
    )
}

/// The gateway's own exposition, once it holds our job's host energy.
fn pushed_host_energy(port: u16, job: &str) -> Option<f64> {
    let response = http_get(port, "/metrics").ok()?;
    sample_value(
        &response.body,
        "scaph_host_energy_joules_total",
        &[&format!("job=\"{job}\"")],
    )
}

#[test]
fn pushes_arrive_and_resume_after_the_gateway_returns() {
    require_root();
    let port = free_port();
    let job = "scaph_push_test";
    let mut gateway = pushgateway(port);
    wait_for("the pushgateway to listen", Duration::from_secs(20), || {
        http_get(port, "/-/ready").ok().filter(|r| r.status == 200)
    });

    let port_arg = port.to_string();
    let mut scaph = scaph(&[
        "prometheus-push",
        "-H",
        "127.0.0.1",
        "-p",
        &port_arg,
        "-s",
        "1",
        "--job",
        job,
    ]);
    let first = wait_for("a push with host energy", Duration::from_secs(20), || {
        assert!(scaph.running(), "scaph exited:\n{}", scaph.log());
        pushed_host_energy(port, job)
    });

    // Read the group back through the API: job and instance labels, and processes.
    let api = http_get(port, "/api/v1/metrics").expect("pushgateway API");
    let groups: serde_json::Value = serde_json::from_str(&api.body).expect("API answers JSON");
    let group = groups["data"]
        .as_array()
        .and_then(|g| g.iter().find(|g| g["labels"]["job"] == job))
        .unwrap_or_else(|| panic!("no group for job {job}: {}", api.body));
    let instance = group["labels"]["instance"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(!instance.is_empty(), "instance label: {group}");
    for family in [
        "scaph_host_energy_joules_total",
        "scaph_process_energy_joules_total",
        "scaph_build_info",
        "push_time_seconds",
    ] {
        assert!(
            group.get(family).is_some(),
            "{family} missing from the pushed group"
        );
    }
    let processes = group["scaph_process_energy_joules_total"]["metrics"]
        .as_array()
        .map_or(0, Vec::len);
    eprintln!("pushgateway: job {job}, instance {instance}, host {first:.3} J, {processes} process series");
    assert!(processes >= 1);

    // The gateway goes away: scaph keeps running through several failed pushes.
    drop(gateway);
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        scaph.running(),
        "scaph stopped when the gateway went away:\n{}",
        scaph.log()
    );
    let log = scaph.log();
    let failures = log.lines().filter(|l| l.contains("push failed")).count();
    eprintln!("while the gateway was down, scaph logged {failures} failure line(s)");
    assert_eq!(
        failures, 1,
        "failures are rate-limited to one line a minute:\n{log}"
    );

    // It returns (empty: no persistence) and receives pushes again.
    gateway = pushgateway(port);
    let again = wait_for("pushes to resume", Duration::from_secs(20), || {
        pushed_host_energy(port, job)
    });
    eprintln!("after the restart: host {again:.3} J (before {first:.3} J)");
    assert!(
        again > first,
        "the counter kept growing while the gateway was away"
    );
    assert!(
        scaph.log().contains("works again"),
        "recovery is logged:\n{}",
        scaph.log()
    );
    drop(gateway);
}
