//! Container labels and series (`--containers`).
//!
//! Process series get the labels of their container, pod and systemd unit
//! (only those that apply, so a host process adds at most `systemd_unit`).
//! `scaph_container_*` has one series per container or pod, one with
//! `container_id=""` and no pod for processes outside containers, and one
//! with `container_id="[others]"` for containers without their own series
//! any more: their sum plus idle is the host.
use super::{labels::Labels, names, Family};
use crate::snapshot::{Amounts, ContainerTotals, Workload};

/// A series' labels, amounts and owner (see [`super::Sample::owner`]).
type Series = (Labels, Amounts, u64);

/// `container_id` of the series that holds containers without their own series.
pub const OTHERS_CONTAINER_ID: &str = "[others]";

/// Adds a label when there is a value, bounded (pod names and namespaces
/// come from the API server, units from cgroup names anyone may choose).
fn push(labels: &mut Labels, name: &'static str, value: Option<&str>) {
    if let Some(value) = value.filter(|v| !v.is_empty()) {
        labels.push((name, crate::label::value(value)));
    }
}

/// Container, pod and unit labels for one process (those that apply).
pub fn add_process_labels(labels: &mut Labels, w: &Workload) {
    add_workload_labels(labels, w);
    push(labels, "systemd_unit", w.systemd_unit.as_deref());
}

/// The labels that identify a container or pod.
fn add_workload_labels(labels: &mut Labels, w: &Workload) {
    push(labels, "container_id", w.container_id.as_deref());
    push(labels, "container_runtime", w.container_runtime);
    push(labels, "container_name", w.container_name.as_deref());
    push(labels, "pod_uid", w.pod_uid.as_deref());
    push(labels, "pod_qos", w.pod_qos);
    push(labels, "kubernetes_pod_name", w.pod_name.as_deref());
    push(
        labels,
        "kubernetes_pod_namespace",
        w.pod_namespace.as_deref(),
    );
    push(
        labels,
        "container_owner_uid",
        w.owner_uid.map(|uid| uid.to_string()).as_deref(),
    );
}

/// Scaphandre's container labels (`container_scheduler`, `container_runtime`,
/// `container_id`, `kubernetes_pod_*`, `kubernetes_node_name`), for
/// processes in a container or pod.
pub fn add_compat_labels(labels: &mut Labels, w: &Workload, node_name: Option<&str>) {
    if !w.is_workload() {
        return;
    }
    let runtime = w.container_runtime;
    let scheduler = if w.pod_uid.is_some() {
        Some("kubernetes")
    } else {
        runtime
    };
    push(labels, "container_scheduler", scheduler);
    push(labels, "container_runtime", runtime);
    push(labels, "container_id", w.container_id.as_deref());
    if w.pod_uid.is_some() {
        push(labels, "kubernetes_pod_name", w.pod_name.as_deref());
        push(
            labels,
            "kubernetes_pod_namespace",
            w.pod_namespace.as_deref(),
        );
        push(labels, "kubernetes_node_name", node_name);
    }
}

/// `scaph_container_energy_joules_total` (with an energy source) and
/// `scaph_container_cpu_seconds_total`.
#[must_use]
pub fn families(view: &ContainerTotals, has_energy: bool) -> [Family; 2] {
    let mut energy = Family::new(&names::CONTAINER_ENERGY);
    let mut cpu = Family::new(&names::CONTAINER_CPU);
    for (labels, amounts, owner) in series(view) {
        if has_energy {
            energy.push_owned(labels.clone(), amounts.joules, owner);
        }
        cpu.push_owned(labels, amounts.cpu_seconds, owner);
    }
    [energy, cpu]
}

/// `scaph_container_co2_grams_total`, on the series of [`families`].
#[must_use]
pub fn co2_family(view: &ContainerTotals) -> Family {
    let mut co2 = Family::new(&names::CONTAINER_CO2);
    for (labels, amounts, owner) in series(view) {
        co2.push_owned(labels, amounts.grams, owner);
    }
    co2
}

/// Every container series' labels, amounts and owner: a container's
/// series is owned by its start, so that one which comes back after its
/// totals moved into `others` is a new series to the counter guard.
fn series(view: &ContainerTotals) -> Vec<Series> {
    let mut series: Vec<Series> = vec![
        (vec![("container_id", String::new())], view.host, 0),
        (
            vec![("container_id", OTHERS_CONTAINER_ID.to_owned())],
            view.others,
            0,
        ),
    ];
    for container in &view.containers {
        let mut labels = Labels::new();
        add_workload_labels(&mut labels, &container.workload);
        if labels
            .first()
            .is_none_or(|(name, _)| *name != "container_id")
        {
            labels.insert(0, ("container_id", String::new())); // a pod-level series
        }
        series.push((labels, container.amounts, container.since));
    }
    series
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::containers::{
        parse::{parse, Trees},
        pods::PodMeta,
        workload as labels_of,
    };
    use crate::{
        metrics::{ContainerLabels, MetricsConfig, MetricsState},
        snapshot::ContainerSeries,
    };

    const ID: &str = "4f1d5e2a3b6c7d8e9f0a1b2c3d4e5f60718293a4b5c6d7e8f9a0b1c2d3e4f5a6";
    const UID: &str = "8b0c9a2e-4d3f-4e6a-9b1c-2d3e4f5a6b7c";

    fn workload(path: &str, pod: Option<PodMeta>) -> Arc<Workload> {
        let cgroup = parse(
            path,
            &Trees {
                rootless: true,
                ..Trees::default()
            },
        );
        Arc::new(labels_of(&cgroup, pod.as_ref()))
    }

    fn series_of(workload: Arc<Workload>, joules: f64, since: u64) -> ContainerSeries {
        ContainerSeries {
            workload,
            amounts: Amounts {
                joules,
                cpu_seconds: joules / 10.0,
                grams: 0.0,
            },
            since,
        }
    }

    fn names(labels: &Labels) -> Vec<&'static str> {
        labels.iter().map(|(n, _)| *n).collect()
    }

    #[test]
    fn host_processes_get_only_their_unit() {
        let mut labels = Labels::new();
        add_process_labels(&mut labels, &workload("/system.slice/ssh.service", None));
        assert_eq!(labels, vec![("systemd_unit", "ssh.service".to_owned())]);
        let mut compat = Labels::new();
        add_compat_labels(
            &mut compat,
            &workload("/system.slice/ssh.service", None),
            Some("n1"),
        );
        assert!(compat.is_empty());
    }

    #[test]
    fn rootless_containers_name_their_owner() {
        let path =
            format!("/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope");
        let mut labels = Labels::new();
        add_process_labels(&mut labels, &workload(&path, None));
        assert_eq!(
            labels,
            vec![
                ("container_id", ID.to_owned()),
                ("container_runtime", "podman".to_owned()),
                ("container_owner_uid", "1000".to_owned()),
                ("systemd_unit", format!("libpod-{ID}.scope")),
            ]
        );
    }

    #[test]
    fn pod_containers_get_every_label_known() {
        let path = format!(
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-{ID}.scope",
            UID.replace('-', "_")
        );
        let pod = PodMeta {
            name: "web-1".into(),
            namespace: "shop".into(),
            containers: Vec::new(),
        };
        let w = workload(&path, Some(pod));
        let mut labels = Labels::new();
        add_process_labels(&mut labels, &w);
        assert_eq!(
            names(&labels),
            [
                "container_id",
                "container_runtime",
                "pod_uid",
                "pod_qos",
                "kubernetes_pod_name",
                "kubernetes_pod_namespace",
                "systemd_unit"
            ]
        );
        assert!(labels.contains(&("pod_qos", "besteffort".into())));
        let mut compat = Labels::new();
        add_compat_labels(&mut compat, &w, Some("node-7"));
        assert_eq!(
            compat,
            vec![
                ("container_scheduler", "kubernetes".into()),
                ("container_runtime", "containerd".into()),
                ("container_id", ID.into()),
                ("kubernetes_pod_name", "web-1".into()),
                ("kubernetes_pod_namespace", "shop".into()),
                ("kubernetes_node_name", "node-7".into()),
            ]
        );
        let mut docker = Labels::new();
        add_compat_labels(
            &mut docker,
            &workload(&format!("/docker/{ID}"), None),
            Some("node-7"),
        );
        assert_eq!(docker[0], ("container_scheduler", "docker".into()));
        assert_eq!(docker.len(), 3, "no kubernetes labels outside a pod");
    }

    #[test]
    fn container_families_have_host_others_and_pod_level_series() {
        let pod_level = format!("/kubepods/burstable/pod{UID}/crio-conmon-{ID}");
        let view = ContainerTotals {
            containers: vec![
                series_of(workload(&format!("/docker/{ID}"), None), 3.0, 1),
                series_of(workload(&pod_level, None), 1.0, 1),
            ],
            host: Amounts {
                joules: 5.0,
                cpu_seconds: 0.5,
                grams: 0.0,
            },
            others: Amounts {
                joules: 2.0,
                cpu_seconds: 0.2,
                grams: 0.0,
            },
            ..ContainerTotals::default()
        };
        let [energy, cpu] = families(&view, true);
        assert_eq!(energy.samples.len(), 4);
        assert_eq!(energy.samples.iter().map(|s| s.value).sum::<f64>(), 11.0);
        assert_eq!(
            energy.samples[0].labels,
            vec![("container_id", String::new())]
        );
        assert_eq!(
            energy.samples[1].labels,
            vec![("container_id", "[others]".to_owned())]
        );
        assert_eq!(
            energy.samples[3].labels[0],
            ("container_id", String::new()),
            "pod-level: empty container_id"
        );
        assert!(energy.samples[3]
            .labels
            .contains(&("pod_uid", UID.to_owned())));
        assert_eq!(cpu.samples.len(), 4);
        let [energy, _] = families(&view, false);
        assert!(
            energy.samples.is_empty(),
            "no energy source, no energy series"
        );
    }

    /// A container whose last process was retired moves into `others`; a
    /// later process with the same id starts its series over. Even when the
    /// exporter never saw the cycle without it, the lower value is a new
    /// series (a new owner), not a counter going backwards.
    #[test]
    fn a_container_that_comes_back_is_a_new_series() {
        let mut state = MetricsState::new(MetricsConfig {
            containers: Some(ContainerLabels::default()),
            ..MetricsConfig::default()
        })
        .untimed();
        let docker = workload(&format!("/docker/{ID}"), None);
        let mut snap = crate::exporters::golden_fixture();
        let mut exposed = |containers: Vec<ContainerSeries>| {
            snap.containers = Some(ContainerTotals {
                containers,
                healthy: true,
                ..ContainerTotals::default()
            });
            let families = state.update(&snap);
            let energy = families
                .iter()
                .find(|f| f.def.name == names::CONTAINER_ENERGY.name)
                .expect("container energy");
            let violations = families
                .iter()
                .find(|f| f.def.name == names::MONOTONICITY_VIOLATIONS.name)
                .map(|f| f.samples[0].value);
            (energy.samples[2].value, violations)
        };
        assert_eq!(
            exposed(vec![series_of(docker.clone(), 30.0, 1)]),
            (30.0, Some(0.0))
        );
        // Retired into others (a snapshot the exporter skipped), then back.
        assert_eq!(
            exposed(vec![series_of(docker.clone(), 2.0, 7)]),
            (2.0, Some(0.0))
        );
        // The same series going backwards is still held and counted (its
        // energy and its CPU time).
        assert_eq!(exposed(vec![series_of(docker, 1.0, 7)]), (2.0, Some(2.0)));
    }
}
