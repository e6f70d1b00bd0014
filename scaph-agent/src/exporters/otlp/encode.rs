//! Metric families to one OTLP `ExportMetricsServiceRequest`.
//!
//! The series are those of the prometheus exporters ([`points::points`]: same
//! names, same labels, and `sensor` / `estimated` on energy values). A
//! counter becomes a cumulative monotonic Sum whose start time is when scaph
//! began counting (the first measurement's start), the same for every
//! series: each counter was 0 then, a process seen later included. A gauge
//! becomes a Gauge. Units are UCUM, as OpenTelemetry asks (`J`, `s`, `By`).
use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::{
    collector::metrics::v1::ExportMetricsServiceRequest,
    common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue},
    metrics::v1::{
        metric, number_data_point, AggregationTemporality, Gauge, Metric, NumberDataPoint,
        ResourceMetrics, ScopeMetrics, Sum,
    },
    resource::v1::Resource,
};

use crate::exporters::{
    points::{self, Point},
    Measurement,
};
use crate::metrics::names::{Def, Kind, Unit};

/// `service.name` of every request.
pub const SERVICE_NAME: &str = "scaph";

/// The UCUM unit OpenTelemetry expects for a scaph unit.
#[must_use]
pub const fn ucum(unit: Unit) -> &'static str {
    match unit {
        Unit::Joules => "J",
        Unit::Seconds => "s",
        Unit::Bytes => "By",
        Unit::None => "1",
        Unit::Microjoules => "uJ",
        Unit::Microwatts => "uW",
        Unit::Percent => "%",
        Unit::Grams => "g",
    }
}

fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn string_value(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_owned())),
        }),
        ..KeyValue::default()
    }
}

/// The resource every request describes: this host and this agent.
#[must_use]
pub fn resource(host_name: &str) -> Resource {
    Resource {
        attributes: vec![
            string_value("host.name", host_name),
            string_value("service.name", SERVICE_NAME),
            string_value("service.version", env!("CARGO_PKG_VERSION")),
        ],
        ..Resource::default()
    }
}

/// When the counters of a run started: the first measurement's beginning.
#[must_use]
pub fn counting_since(first: &Measurement) -> SystemTime {
    first
        .snapshot
        .timestamp
        .checked_sub(first.snapshot.interval)
        .unwrap_or(first.snapshot.timestamp)
}

/// One request holding every series of `measurement`; counters count since
/// `start`.
#[must_use]
pub fn request(
    measurement: &Measurement,
    resource: &Resource,
    start: SystemTime,
) -> ExportMetricsServiceRequest {
    let time = unix_nanos(measurement.snapshot.timestamp);
    let start = unix_nanos(start).min(time);
    let points = points::points(measurement);
    let mut metrics: Vec<Metric> = Vec::new();
    let mut current: Option<(&'static Def, Vec<NumberDataPoint>)> = None;
    // `points` keeps the families' order: consecutive points share a Def.
    for point in &points {
        let data_point = data_point(point, start, time);
        match &mut current {
            Some((def, list)) if std::ptr::eq(*def, point.def) => list.push(data_point),
            _ => {
                if let Some((def, list)) = current.take() {
                    metrics.push(metric(def, list));
                }
                current = Some((point.def, vec![data_point]));
            }
        }
    }
    if let Some((def, list)) = current {
        metrics.push(metric(def, list));
    }
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(resource.clone()),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: SERVICE_NAME.to_owned(),
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                    ..InstrumentationScope::default()
                }),
                metrics,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

fn data_point(point: &Point, start: u64, time: u64) -> NumberDataPoint {
    NumberDataPoint {
        attributes: point
            .labels
            .iter()
            .map(|(k, v)| string_value(k, v))
            .collect(),
        start_time_unix_nano: if point.def.kind == Kind::Counter {
            start
        } else {
            0
        },
        time_unix_nano: time,
        value: Some(number_data_point::Value::AsDouble(point.value)),
        ..NumberDataPoint::default()
    }
}

fn metric(def: &'static Def, data_points: Vec<NumberDataPoint>) -> Metric {
    let data = match def.kind {
        Kind::Counter => metric::Data::Sum(Sum {
            data_points,
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
            is_monotonic: true,
        }),
        Kind::Gauge => metric::Data::Gauge(Gauge { data_points }),
    };
    Metric {
        name: def.name.to_owned(),
        description: def.help.to_owned(),
        unit: ucum(def.unit).to_owned(),
        data: Some(data),
        ..Metric::default()
    }
}
