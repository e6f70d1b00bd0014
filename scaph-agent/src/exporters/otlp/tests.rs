//! `scaph otlp`: option and environment precedence (a table), and the
//! mapping of metric families to OTLP (a golden request, and its agreement
//! with the prometheus exposition of the same snapshot).
use std::{collections::HashMap, sync::Arc, time::Duration};

use opentelemetry_proto::tonic::metrics::v1::{
    metric::Data, number_data_point, AggregationTemporality,
};

use super::{
    config::{self, ConfigError, OtlpArgs, Protocol},
    encode,
};
use crate::{
    exporters::{golden_fixture, Measurement},
    metrics::{encode as prometheus_text, MetricsConfig, MetricsState},
};

fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    move |name| map.get(name).cloned()
}

fn args(cli: &[&str]) -> OtlpArgs {
    use clap::Parser as _;
    #[derive(clap::Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: OtlpArgs,
    }
    let mut argv = vec!["otlp"];
    argv.extend_from_slice(cli);
    Wrapper::try_parse_from(argv).expect("valid options").args
}

/// (command line, environment, protocol, endpoint, gzip, timeout ms)
#[test]
fn options_then_metrics_variables_then_generic_ones_then_defaults() {
    type Row<'a> = (
        &'a [&'a str],
        &'a [(&'a str, &'a str)],
        Protocol,
        &'a str,
        bool,
        u64,
    );
    let table: &[Row] = &[
        (
            &[],
            &[],
            Protocol::HttpProtobuf,
            "http://localhost:4318/v1/metrics",
            false,
            10_000,
        ),
        (
            &["--protocol", "grpc"],
            &[],
            Protocol::Grpc,
            "http://localhost:4317/",
            false,
            10_000,
        ),
        // The generic endpoint gets the metrics path for HTTP, not for gRPC.
        (
            &[],
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c:4318/base/")],
            Protocol::HttpProtobuf,
            "https://c:4318/base/v1/metrics",
            false,
            10_000,
        ),
        (
            &[],
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ],
            Protocol::Grpc,
            "http://c:4317/",
            false,
            10_000,
        ),
        // The metrics-specific endpoint is used as it is, and wins.
        (
            &[],
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://a:1"),
                ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "http://b:2/custom"),
            ],
            Protocol::HttpProtobuf,
            "http://b:2/custom",
            false,
            10_000,
        ),
        // The command line wins over both; a bare URL gets /v1/metrics.
        (
            &["--endpoint", "http://cli:9"],
            &[("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "http://b:2/custom")],
            Protocol::HttpProtobuf,
            "http://cli:9/v1/metrics",
            false,
            10_000,
        ),
        (
            &["--endpoint", "http://cli:9/in"],
            &[],
            Protocol::HttpProtobuf,
            "http://cli:9/in",
            false,
            10_000,
        ),
        (
            &["--protocol", "http/protobuf"],
            &[("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "grpc")],
            Protocol::HttpProtobuf,
            "http://localhost:4318/v1/metrics",
            false,
            10_000,
        ),
        (
            &[],
            &[
                ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "grpc"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ],
            Protocol::Grpc,
            "http://localhost:4317/",
            false,
            10_000,
        ),
        // An empty variable is unset.
        (
            &[],
            &[
                ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", " "),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ],
            Protocol::Grpc,
            "http://localhost:4317/",
            false,
            10_000,
        ),
        (
            &[],
            &[
                ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
                ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
            ],
            Protocol::HttpProtobuf,
            "http://localhost:4318/v1/metrics",
            true,
            2_500,
        ),
        (
            &["--compression", "none", "--export-timeout", "7"],
            &[
                ("OTEL_EXPORTER_OTLP_METRICS_COMPRESSION", "gzip"),
                ("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "2500"),
            ],
            Protocol::HttpProtobuf,
            "http://localhost:4318/v1/metrics",
            false,
            7,
        ),
    ];
    for (cli, env, protocol, endpoint, gzip, timeout) in table {
        let s = config::resolve(&args(cli), &env_of(env))
            .unwrap_or_else(|e| panic!("{cli:?} {env:?}: {e}"));
        assert_eq!(
            (s.protocol, s.endpoint.as_str(), s.gzip, s.timeout),
            (*protocol, *endpoint, *gzip, Duration::from_millis(*timeout)),
            "{cli:?} {env:?}"
        );
    }
}

#[test]
fn headers_merge_and_files_follow_the_same_order() {
    let env = env_of(&[
        ("OTEL_EXPORTER_OTLP_HEADERS", "ignored=1"),
        (
            "OTEL_EXPORTER_OTLP_METRICS_HEADERS",
            "Authorization=Bearer%20abc , x-tenant=a",
        ),
        ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/generic/ca.pem"),
        (
            "OTEL_EXPORTER_OTLP_METRICS_CLIENT_CERTIFICATE",
            "/m/cert.pem",
        ),
        ("OTEL_EXPORTER_OTLP_CLIENT_KEY", "/g/key.pem"),
    ]);
    let s = config::resolve(
        &args(&["--header", "X-Tenant=b", "--ca-file", "/cli/ca.pem"]),
        &env,
    )
    .expect("valid");
    assert_eq!(
        s.headers,
        [
            ("authorization".to_owned(), "Bearer abc".to_owned()),
            ("x-tenant".to_owned(), "b".to_owned())
        ]
    );
    assert_eq!(
        s.ca_file.as_deref(),
        Some(std::path::Path::new("/cli/ca.pem"))
    );
    assert_eq!(
        s.client_cert.as_deref(),
        Some(std::path::Path::new("/m/cert.pem"))
    );
    assert_eq!(
        s.client_key.as_deref(),
        Some(std::path::Path::new("/g/key.pem"))
    );
    let shown = format!("{s:?}");
    assert!(
        !shown.contains("abc"),
        "header values are never printed: {shown}"
    );
}

/// (command line, environment, the start of the message)
#[test]
fn bad_values_are_refused_and_say_where_they_came_from() {
    type Row<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let table: &[Row] = &[
        (
            &[],
            &[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")],
            "OTEL_EXPORTER_OTLP_PROTOCOL = \"http/json\"",
        ),
        (
            &[],
            &[("OTEL_EXPORTER_OTLP_METRICS_COMPRESSION", "zstd")],
            "OTEL_EXPORTER_OTLP_METRICS_COMPRESSION = \"zstd\"",
        ),
        (
            &[],
            &[("OTEL_EXPORTER_OTLP_TIMEOUT", "0")],
            "OTEL_EXPORTER_OTLP_TIMEOUT = \"0\"",
        ),
        (
            &["--export-timeout", "600001"],
            &[],
            "--export-timeout = \"600001\"",
        ),
        (
            &["--endpoint", "localhost:4318"],
            &[],
            "--endpoint = \"localhost:4318\"",
        ),
        (
            &[],
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", "ftp://c")],
            "OTEL_EXPORTER_OTLP_ENDPOINT = \"ftp://c\"",
        ),
        (&["--header", "novalue"], &[], "--header = \"<hidden>\""),
        (
            &["--header", "bad name=1"],
            &[],
            "--header = \"bad name=<hidden>\"",
        ),
        (
            &["--header", "grpc-timeout=1"],
            &[],
            "--header = \"grpc-timeout=<hidden>\"",
        ),
        (
            &["--header", "a=line\nbreak"],
            &[],
            "--header = \"a=<hidden>\": the value",
        ),
        (
            &[],
            &[("OTEL_EXPORTER_OTLP_HEADERS", "a=%FF")],
            "OTEL_EXPORTER_OTLP_HEADERS = \"<hidden>\"",
        ),
        (
            &[],
            &[("OTEL_EXPORTER_OTLP_CLIENT_KEY", "/k.pem")],
            "OTEL_EXPORTER_OTLP_[METRICS_]CLIENT_CERTIFICATE",
        ),
    ];
    for (cli, env, message) in table {
        let err = config::resolve(&args(cli), &env_of(env)).expect_err(message);
        let text = err.to_string();
        assert!(text.starts_with(message), "{cli:?} {env:?}: {text}");
        assert!(matches!(
            err,
            ConfigError::Invalid { .. } | ConfigError::HalfIdentity(_)
        ));
    }
}

fn golden_measurement(config: MetricsConfig) -> Measurement {
    let snapshot = Arc::new(golden_fixture());
    let families = MetricsState::new(config).untimed().update(&snapshot);
    Measurement { snapshot, families }
}

#[test]
fn the_request_matches_its_golden_file() {
    let m = golden_measurement(MetricsConfig::default());
    let request = encode::request(&m, &encode::resource("host-1"), encode::counting_since(&m));
    let json = serde_json::to_string_pretty(&request).expect("JSON") + "\n";
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/exporters/otlp/golden_request.json");
    if std::env::var_os("SCAPH_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &json).expect("writing the golden file");
    }
    let golden = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (SCAPH_UPDATE_GOLDEN=1 creates it)", path.display()));
    assert!(
        golden == json,
        "the OTLP request differs from {} (SCAPH_UPDATE_GOLDEN=1 rewrites it)",
        path.display()
    );
}

/// Every sample of the prometheus exposition, as `name{labels} value`
/// lines, and the same built from the OTLP request: equal once `sensor` and
/// `estimated` (which OTLP adds to energy values) are set aside.
#[test]
fn the_request_carries_every_prometheus_sample_with_kind_unit_and_start() {
    for compat in [false, true] {
        let config = MetricsConfig {
            compat,
            ..MetricsConfig::default()
        };
        let m = golden_measurement(config);
        let start = encode::counting_since(&m);
        let request = encode::request(&m, &encode::resource("host-1"), start);
        let start_ns = 1_700_000_000_250_000_000 - 2_000_000_000;
        let mut from_otlp = Vec::new();
        let scope = &request.resource_metrics[0].scope_metrics[0];
        for metric in &scope.metrics {
            let def = m
                .families
                .iter()
                .find(|f| f.def.name == metric.name)
                .expect("a family")
                .def;
            assert_eq!(metric.unit, encode::ucum(def.unit), "{}", metric.name);
            let points = match metric.data.as_ref().expect("data") {
                Data::Sum(sum) => {
                    assert_eq!(
                        def.kind,
                        crate::metrics::names::Kind::Counter,
                        "{}",
                        metric.name
                    );
                    assert!(sum.is_monotonic);
                    assert_eq!(
                        sum.aggregation_temporality,
                        AggregationTemporality::Cumulative as i32
                    );
                    assert!(sum
                        .data_points
                        .iter()
                        .all(|p| p.start_time_unix_nano == start_ns));
                    &sum.data_points
                }
                Data::Gauge(gauge) => {
                    assert_eq!(
                        def.kind,
                        crate::metrics::names::Kind::Gauge,
                        "{}",
                        metric.name
                    );
                    &gauge.data_points
                }
                other => panic!("{}: {other:?}", metric.name),
            };
            for p in points {
                assert_eq!(p.time_unix_nano, 1_700_000_000_250_000_000);
                let labels: Vec<String> = p
                    .attributes
                    .iter()
                    .filter(|kv| {
                        let source = kv.key == "sensor" || kv.key == "estimated";
                        // Only energy series get them added; the sensor info has its own.
                        !source || metric.name == "scaph_sensor_info"
                    })
                    .map(|kv| match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                        Some(opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(s)) => {
                            format!("{}={s:?}", kv.key)
                        }
                        other => panic!("{other:?}"),
                    })
                    .collect();
                let Some(number_data_point::Value::AsDouble(value)) = p.value else {
                    panic!("a double")
                };
                from_otlp.push(format!("{}{{{}}} {value}", metric.name, labels.join(",")));
            }
        }
        let text = prometheus_text(&m.families);
        let from_text: Vec<String> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| {
                let (series, value) = l.rsplit_once(' ').expect("sample");
                let value: f64 = value.parse().expect("number");
                let series = if series.contains('{') {
                    series.to_owned()
                } else {
                    format!("{series}{{}}")
                };
                format!("{series} {value}")
            })
            .collect();
        assert!(from_text.len() > 20, "{text}");
        assert_eq!(from_otlp, from_text, "compat {compat}");
    }
}

#[test]
fn the_resource_names_host_service_and_version() {
    let resource = encode::resource("node-7");
    let pairs: Vec<(String, String)> = resource
        .attributes
        .iter()
        .map(|kv| {
            (
                kv.key.clone(),
                format!("{:?}", kv.value.as_ref().and_then(|v| v.value.clone())),
            )
        })
        .collect();
    assert_eq!(
        pairs,
        [
            ("host.name".into(), "Some(StringValue(\"node-7\"))".into()),
            ("service.name".into(), "Some(StringValue(\"scaph\"))".into()),
            (
                "service.version".into(),
                format!("Some(StringValue({:?}))", env!("CARGO_PKG_VERSION"))
            ),
        ]
    );
}

/// TLS files that cannot be used stop scaph at start, naming the file, for
/// both transports (a collector that is down never does).
#[tokio::test]
async fn unusable_tls_files_are_refused_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let garbage = dir.path().join("ca.pem");
    std::fs::write(&garbage, "not a certificate\n").expect("write");
    let missing = dir.path().join("missing.pem");
    for protocol in ["grpc", "http/protobuf"] {
        let with = |file: &std::path::Path| {
            let a = OtlpArgs {
                ca_file: Some(file.to_owned()),
                ..args(&["--protocol", protocol, "--endpoint", "https://c:1"])
            };
            let settings = config::resolve(&a, &env_of(&[])).expect("valid settings");
            super::send::Transport::new(&settings)
                .err()
                .map(|e| e.to_string())
        };
        let error = with(&garbage).expect("garbage refused");
        assert!(
            error.ends_with("ca.pem: no PEM certificate in it"),
            "{protocol}: {error}"
        );
        let error = with(&missing).expect("missing file refused");
        assert!(
            error.starts_with(&format!("reading {}", missing.display())),
            "{protocol}: {error}"
        );
    }
    let settings = config::resolve(&args(&["--protocol", "grpc"]), &env_of(&[])).expect("defaults");
    assert!(
        super::send::Transport::new(&settings).is_ok(),
        "no connection is made at start"
    );
}

/// An IPv6 collector works over both transports (its address is bracketed
/// once), and what logs show of an endpoint carries no credentials.
#[tokio::test]
async fn ipv6_endpoints_and_credentials_in_urls() {
    for (protocol, endpoint, shown) in [
        ("grpc", "http://[::1]:4317", "http://[::1]:4317"),
        (
            "http/protobuf",
            "http://[::1]:4318/v1/metrics",
            "http://[::1]:4318/v1/metrics",
        ),
        (
            "http/protobuf",
            "https://user:s3cret@c:1/v1/metrics",
            "https://c:1/v1/metrics",
        ),
    ] {
        let a = args(&["--protocol", protocol, "--endpoint", endpoint]);
        let settings = config::resolve(&a, &env_of(&[])).expect("valid settings");
        let transport = super::send::Transport::new(&settings)
            .unwrap_or_else(|e| panic!("{protocol} {endpoint}: {e}"));
        assert_eq!(transport.url(), shown, "{protocol} {endpoint}");
        assert!(!super::send::shown(&settings.endpoint).contains("s3cret"));
    }
}
