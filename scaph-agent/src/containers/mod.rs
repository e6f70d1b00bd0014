//! Containers and pods (`--containers`): which container, pod and systemd
//! unit each process belongs to, and energy and CPU time per container.
//!
//! - [`parse`]: a cgroup path → runtime, container id, pod UID and QoS, unit.
//! - [`resolve`]: the cgroup id the kernel program records → the cgroup's path.
//! - [`pods`], [`k8s`]: pod names and namespaces from the API server.
//! - [`aggregate`]: per-container counters from the per-process ones, so
//!   that Σ containers (with the series of processes outside containers) +
//!   idle = host, and a container whose processes all exited keeps its energy.
//!
//! The agent runs the [`Tracker`] once per cycle, on its own thread (the
//! pod watch has a thread of its own): each process of the snapshot leaves
//! with its labels, and the snapshot with the container totals. The
//! metrics only format them.
pub mod aggregate;
#[cfg(feature = "kubernetes")]
pub mod k8s;
pub mod parse;
pub mod pods;
pub mod resolve;

use std::path::PathBuf;

pub use aggregate::Tracker;
pub use parse::{CgroupLabels, Qos, Runtime, Trees};
pub use pods::{PodDirectory, PodMeta};

use crate::snapshot::Workload;

/// Default of `--cgroup-root`.
pub const DEFAULT_CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// What `--containers` needs to know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainersConfig {
    /// The cgroup filesystem (`/sys/fs/cgroup`; the host's, mounted elsewhere, in a container).
    pub cgroup_root: PathBuf,
    /// The node this runs on (for the pod watch and `kubernetes_node_name`).
    pub node_name: Option<String>,
    /// `--kubeconfig`.
    pub kubeconfig: Option<PathBuf>,
    /// Talk to the API server (in a cluster, or with a kubeconfig). Off in tests.
    pub kubernetes: bool,
    /// `--containers-rootless`: also containers in users' delegated
    /// subtrees (`user@UID.service`), labelled with their owner.
    pub rootless: bool,
    /// `--containers-cgroup-prefix`: cgroups the host's runtimes are nested under.
    pub cgroup_prefixes: Vec<String>,
}

impl Default for ContainersConfig {
    fn default() -> Self {
        Self {
            cgroup_root: PathBuf::from(DEFAULT_CGROUP_ROOT),
            node_name: None,
            kubeconfig: None,
            kubernetes: false,
            rootless: false,
            cgroup_prefixes: Vec::new(),
        }
    }
}

/// The labels of a process whose cgroup path says `cgroup`, with what the
/// API server says about its pod: the runtime from the path, else from the
/// pod's status; the container's name in its pod; pod names only when not empty.
#[must_use]
pub fn workload(cgroup: &CgroupLabels, pod: Option<&PodMeta>) -> Workload {
    let in_pod = cgroup
        .container_id
        .as_deref()
        .and_then(|id| pod?.container(id));
    let named = |text: &str| (!text.is_empty()).then(|| text.to_owned());
    Workload {
        container_id: cgroup.container_id.clone(),
        container_runtime: cgroup
            .runtime
            .or_else(|| in_pod?.runtime)
            .map(Runtime::label),
        container_name: in_pod.map(|c| c.name.clone()),
        pod_uid: cgroup.pod_uid.clone(),
        pod_qos: cgroup.pod_qos.map(Qos::label),
        pod_name: pod.and_then(|p| named(&p.name)),
        pod_namespace: pod.and_then(|p| named(&p.namespace)),
        owner_uid: cgroup.owner_uid,
        systemd_unit: cgroup.systemd_unit.clone(),
    }
}
