//! A real Prometheus server scraping one target every second, on loopback,
//! with its own temporary storage; stopped when dropped.
#![allow(dead_code)]

use std::time::Duration;

use crate::exporter_support::{free_port, http_get, query_escape, tool, wait_for, Proc};

pub struct Prometheus {
    _proc: Proc,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts Prometheus scraping `127.0.0.1:<target>/metrics` as job `scaph`.
    pub fn scraping(target: u16) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: scaph\n    static_configs:\n      - targets: ['127.0.0.1:{target}']\n"
            ),
        )
        .expect("config");
        let port = free_port();
        let proc = Proc::start(
            "prometheus",
            &tool("prometheus", "prometheus"),
            &[
                format!("--config.file={}", config.display()),
                format!("--web.listen-address=127.0.0.1:{port}"),
                format!("--storage.tsdb.path={}", dir.path().join("tsdb").display()),
            ],
        );
        let prometheus = Self {
            _proc: proc,
            port,
            _dir: dir,
        };
        wait_for(
            "Prometheus to scrape its target",
            Duration::from_secs(30),
            || {
                let up = prometheus.query("up{job=\"scaph\"}").ok()?;
                (up.first().and_then(value) == Some(1.0)).then_some(())
            },
        );
        prometheus
    }

    /// An instant query: the result vector, or Prometheus's error.
    pub fn query(&self, promql: &str) -> Result<Vec<serde_json::Value>, String> {
        let response = http_get(
            self.port,
            &format!("/api/v1/query?query={}", query_escape(promql)),
        )
        .map_err(|e| format!("HTTP: {e}"))?;
        let json: serde_json::Value =
            serde_json::from_str(&response.body).map_err(|e| format!("{e}: {}", response.body))?;
        if json["status"] != "success" {
            return Err(format!("{}: {}", json["errorType"], json["error"]));
        }
        Ok(json["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// Waits until Prometheus holds at least `n` samples of `metric` over the last `window`.
    pub fn wait_for_samples(&self, metric: &str, n: usize, window: &str) {
        let promql = format!("max(count_over_time({metric}[{window}]))");
        wait_for(
            &format!("{n} samples of {metric}"),
            Duration::from_secs(60),
            || {
                let count = self.query(&promql).ok()?.first().and_then(value)?;
                (count >= n as f64).then_some(())
            },
        );
    }
}

/// The number in one instant-vector element.
pub fn value(v: &serde_json::Value) -> Option<f64> {
    v["value"][1].as_str().and_then(|s| s.parse::<f64>().ok())
}
