//! The Grafana dashboard (deploy/grafana) against a real Prometheus scraping
//! a real scaph: every query of every panel must return data. scaph runs
//! with --containers, on a fake RAPL package, with a burner in a cgroup
//! shaped like a Kubernetes pod's container, so the container and pod panels
//! have something to show.
mod container_support;
mod exporter_support;
mod prometheus_support;

use std::{collections::HashSet, path::PathBuf, time::Duration};

use container_support::{container_id, pod_uid, CgroupTree, Workload};
use exporter_support::{free_port, http_get, loopback_prometheus, scaph, wait_for};
use prometheus_support::Prometheus;
use scaph_integration_tests::{powercap::FakeRapl, require_root};
use serde_json::Value;

fn deploy() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana")
}

fn dashboard() -> Value {
    let path = deploy().join("scaph-dashboard.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// (panel title, refId, expr) of every query.
fn queries(dash: &Value) -> Vec<(String, String, String)> {
    let panels = dash["panels"].as_array().expect("panels");
    let nested = panels
        .iter()
        .flat_map(|p| p["panels"].as_array().cloned().unwrap_or_default());
    panels
        .iter()
        .cloned()
        .chain(nested)
        .flat_map(|p| {
            let title = p["title"].as_str().unwrap_or_default().to_owned();
            let targets = p["targets"].as_array().cloned().unwrap_or_default();
            targets.into_iter().map(move |t| {
                (
                    title.clone(),
                    t["refId"].as_str().unwrap_or("?").to_owned(),
                    t["expr"].as_str().unwrap_or("").to_owned(),
                )
            })
        })
        .collect()
}

/// Grafana's variables as a test sets them: every node, a 10 s rate window.
fn substitute(expr: &str) -> String {
    let out = expr
        .replace("${instance}", ".*")
        .replace("$instance", ".*")
        .replace("$__rate_interval", "10s")
        .replace("$__interval", "2s")
        .replace("$__range", "1m");
    assert!(!out.contains('$'), "unknown variable in {expr}");
    out
}

/// The JSON is what Grafana expects: unique ids, every query on the
/// `$datasource` variable, panels inside the 24-column grid, a node variable.
#[test]
fn dashboard_and_provisioning_are_well_formed() {
    let dash = dashboard();
    assert!(dash["uid"].as_str().is_some_and(|u| !u.is_empty()));
    let vars: Vec<&str> = dash["templating"]["list"]
        .as_array()
        .expect("templating")
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert_eq!(vars, ["datasource", "instance"]);
    let mut ids = HashSet::new();
    for panel in dash["panels"].as_array().expect("panels") {
        assert!(
            ids.insert(panel["id"].as_i64().expect("id")),
            "duplicate panel id {}",
            panel["id"]
        );
        let grid = &panel["gridPos"];
        let (x, w) = (
            grid["x"].as_i64().expect("x"),
            grid["w"].as_i64().expect("w"),
        );
        assert!(
            x >= 0 && w > 0 && x + w <= 24,
            "{} outside the grid",
            panel["title"]
        );
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(
            panel["datasource"]["uid"], "${datasource}",
            "{}",
            panel["title"]
        );
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{} has no query", panel["title"]);
        for t in targets {
            assert_eq!(t["datasource"]["uid"], "${datasource}");
            let expr = t["expr"].as_str().unwrap_or_default();
            assert!(
                expr.contains("instance=~\"$instance\""),
                "{}: every query follows the node selection",
                panel["title"]
            );
        }
    }
    let provider = std::fs::read_to_string(deploy().join("provisioning/dashboards/scaph.yaml"))
        .expect("provider");
    assert!(
        provider.contains("type: file")
            && provider.contains("path: /var/lib/grafana/dashboards/scaph")
    );
    let datasource =
        std::fs::read_to_string(deploy().join("provisioning/datasources/prometheus.yaml"))
            .expect("datasource");
    assert!(datasource.contains("type: prometheus"));
}

#[test]
fn every_dashboard_query_returns_data_from_a_real_scaph() {
    require_root();
    let dash = dashboard();
    let mut tree = CgroupTree::new(&format!("scaph-test-{}-dashboard", std::process::id()));
    let (pod, id) = (pod_uid(), container_id());
    let dir = tree.create(&format!(
        "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{id}.scope",
        pod.replace('-', "_")
    ));
    let rapl = FakeRapl::start(25.0, 1_000_000);
    let port = free_port();
    let (root, port_arg) = (rapl.root(), port.to_string());
    let [flag, prefix] = tree.prefix_args();
    let mut args = vec![
        "--containers",
        &flag,
        &prefix,
        "--powercap-root",
        root.to_str().expect("utf-8"),
        "--sensor",
        "powercap_rapl",
    ];
    args.extend(loopback_prometheus(&port_arg));
    let mut scaph = scaph(&args);
    // A pod's container burning half a CPU for the whole test.
    let _workload = Workload::burn(&dir, 1, &["--ms", "40000"]);
    wait_for(
        "scaph to report the pod's container",
        Duration::from_secs(20),
        || {
            assert!(scaph.running(), "scaph exited:\n{}", scaph.log());
            let body = http_get(port, "/metrics").ok()?.body;
            body.contains(&format!("container_id=\"{id}\""))
                .then_some(())
        },
    );
    let prometheus = Prometheus::scraping(port);
    prometheus.wait_for_samples("scaph_container_energy_joules_total", 12, "15s");

    let mut empty = Vec::new();
    let all = queries(&dash);
    for (title, ref_id, expr) in &all {
        let promql = substitute(expr);
        match prometheus.query(&promql) {
            Ok(result) if !result.is_empty() => {
                eprintln!("{title} [{ref_id}]: {} series", result.len())
            }
            Ok(_) => empty.push(format!("{title} [{ref_id}]: no data for {promql}")),
            Err(e) => empty.push(format!("{title} [{ref_id}]: error {e} for {promql}")),
        }
    }
    assert!(
        empty.is_empty(),
        "queries without data:\n{}",
        empty.join("\n")
    );
    eprintln!("all {} queries of the dashboard returned data", all.len());
    assert!(all.len() >= 15);
}
