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
//! Nothing here measures: every figure comes from the snapshot's processes.
pub mod aggregate;
#[cfg(feature = "kubernetes")]
pub mod k8s;
pub mod parse;
pub mod pods;
pub mod resolve;

use std::{path::PathBuf, sync::Arc};

pub use aggregate::{ContainerView, Tracker};
pub use parse::{CgroupLabels, Qos, Runtime, Trees};
pub use pods::{PodDirectory, PodMeta};

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

/// Where one process runs: what its cgroup path says, and what the API
/// server says about its pod.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Workload {
    pub cgroup: Arc<CgroupLabels>,
    pub pod: Option<Arc<PodMeta>>,
}

impl Workload {
    /// The runtime from the path, else from the pod's status.
    #[must_use]
    pub fn runtime(&self) -> Option<Runtime> {
        self.cgroup.runtime.or_else(|| {
            let id = self.cgroup.container_id.as_deref()?;
            self.pod.as_ref()?.container(id)?.runtime
        })
    }

    /// The container's name in its pod (Kubernetes only).
    #[must_use]
    pub fn container_name(&self) -> Option<&str> {
        let id = self.cgroup.container_id.as_deref()?;
        Some(self.pod.as_ref()?.container(id)?.name.as_str())
    }

    #[must_use]
    pub fn pod_name(&self) -> Option<&str> {
        self.pod
            .as_ref()
            .map(|p| p.name.as_str())
            .filter(|n| !n.is_empty())
    }

    #[must_use]
    pub fn pod_namespace(&self) -> Option<&str> {
        self.pod
            .as_ref()
            .map(|p| p.namespace.as_str())
            .filter(|n| !n.is_empty())
    }

    /// In a container or a pod.
    #[must_use]
    pub fn is_workload(&self) -> bool {
        self.cgroup.is_workload()
    }
}
