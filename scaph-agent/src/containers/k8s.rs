//! Pod names and namespaces from the Kubernetes API server.
//!
//! One watch on the pods of *this node* (field selector
//! `spec.nodeName=<node>`), served from the API server's watch cache: each
//! node asks for its own few dozen pods, never for every pod of the cluster
//! (Scaphandre listed all pods from every node every 20 s). The watch runs
//! on its own thread and only fills a [`PodDirectory`]; when the API cannot
//! be reached, one line says so and the labels a cgroup path carries (pod
//! UID, QoS, container id) keep working.
//!
//! It starts only when there is something to talk to: inside a cluster
//! (`KUBERNETES_SERVICE_HOST` is set) or with `--kubeconfig`. A kubeconfig
//! lying around on a host is never picked up implicitly.
use std::{collections::HashSet, path::PathBuf, thread, time::Instant};

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};

use super::pods::{split_container_id, ContainerMeta, PodDirectory, PodMeta};

/// Where to find the API server and which node this is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct K8sOptions {
    /// `--node-name` / `NODE_NAME` (the downward API's `spec.nodeName`).
    pub node_name: Option<String>,
    /// `--kubeconfig`: use this file instead of the in-cluster service account.
    pub kubeconfig: Option<PathBuf>,
    /// Whether `KUBERNETES_SERVICE_HOST` is set (taken from the environment by the caller).
    pub in_cluster: bool,
}

/// The running watch; dropping it stops the watch.
#[derive(Debug)]
pub struct PodWatch {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Drop for PodWatch {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Starts the watch when the options allow it; logs one line when they
/// almost do (in a cluster without a node name).
pub fn start(options: &K8sOptions, pods: PodDirectory) -> Option<PodWatch> {
    if options.kubeconfig.is_none() && !options.in_cluster {
        log::info!("--containers: not in a Kubernetes cluster and no --kubeconfig: no pod names, only cgroup labels");
        return None;
    }
    let Some(node) = options.node_name.clone().filter(|n| !n.is_empty()) else {
        log::warn!(
            "--containers: NODE_NAME (or --node-name) is not set, so pod names and namespaces are not fetched \
             (scaph only watches the pods of its own node); container ids and pod UIDs are still labelled"
        );
        return None;
    };
    let kubeconfig = options.kubeconfig.clone();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
    let spawned = thread::Builder::new().name("scaph-k8s".into()).spawn(move || {
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                log::warn!("--containers: cannot start the Kubernetes watch: {e}; pod names unavailable");
                return;
            }
        };
        // kube logs each failed request through `tracing`, which it bridges
        // to `log`: one ERROR line per retry. A subscriber that drops them,
        // for this thread only, leaves the one line below per outage.
        tracing::subscriber::with_default(tracing::subscriber::NoSubscriber::default(), || {
            runtime.block_on(async move {
                tokio::select! {
                    () = watch(node, kubeconfig, pods) => {}
                    _ = stop_rx => {}
                }
            });
        });
    });
    match spawned {
        Ok(thread) => Some(PodWatch {
            stop: Some(stop_tx),
            thread: Some(thread),
        }),
        Err(e) => {
            log::warn!("--containers: cannot start the Kubernetes watch thread: {e}; pod names unavailable");
            None
        }
    }
}

/// Connects, then applies watch events to `pods` until stopped. Errors are
/// logged once (then at debug level) and retried with back-off forever.
async fn watch(node: String, kubeconfig: Option<PathBuf>, pods: PodDirectory) {
    use futures_util::StreamExt as _;
    use kube::runtime::{watcher, WatchStreamExt as _};

    let client = match client(kubeconfig.as_ref()).await {
        Ok(client) => client,
        Err(e) => {
            log::warn!("--containers: no Kubernetes API access ({e}): pod names and namespaces are unavailable; container ids and pod UIDs are still labelled");
            return;
        }
    };
    let api: kube::Api<Pod> = kube::Api::all(client);
    let config = watcher::Config::default()
        .fields(&format!("spec.nodeName={node}"))
        .any_semantic();
    let mut stream = watcher(api, config).default_backoff().boxed();
    let mut failing = false;
    let mut listing: HashSet<String> = HashSet::new();
    log::info!("--containers: watching the pods of node {node}");
    while let Some(event) = stream.next().await {
        let event = match event {
            Ok(event) => event,
            Err(e) => {
                if failing {
                    log::debug!("Kubernetes pod watch: {e}");
                } else {
                    log::warn!("--containers: the Kubernetes pod watch failed ({e}); retrying. Pod names may be missing meanwhile; container ids and pod UIDs are still labelled");
                    failing = true;
                }
                continue;
            }
        };
        // `Init` comes before every (re)list, failed or not: only data means it works.
        if failing && !matches!(event, watcher::Event::Init) {
            log::info!("--containers: the Kubernetes pod watch works again");
            failing = false;
        }
        match event {
            watcher::Event::Init => listing.clear(),
            watcher::Event::InitApply(pod) | watcher::Event::Apply(pod) => {
                if let Some((uid, meta)) = pod_meta(&pod) {
                    listing.insert(uid.clone());
                    pods.apply(uid, meta);
                }
            }
            watcher::Event::InitDone => pods.retain_listed(&listing, Instant::now()),
            watcher::Event::Delete(pod) => {
                if let Some(uid) = pod.metadata.uid.as_deref() {
                    pods.delete(uid, Instant::now());
                }
            }
        }
    }
}

async fn client(kubeconfig: Option<&PathBuf>) -> Result<kube::Client, String> {
    let config = match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| format!("{}: {e}", path.display()))?
        }
        None => kube::Config::incluster().map_err(|e| format!("in-cluster configuration: {e}"))?,
    };
    kube::Client::try_from(config).map_err(|e| e.to_string())
}

/// A pod's UID and names, with the ids of its containers (regular, init and
/// ephemeral). `None` without a UID.
#[must_use]
pub fn pod_meta(pod: &Pod) -> Option<(String, PodMeta)> {
    let uid = pod.metadata.uid.clone().filter(|u| !u.is_empty())?;
    let mut containers = Vec::new();
    if let Some(status) = &pod.status {
        let all = [
            &status.container_statuses,
            &status.init_container_statuses,
            &status.ephemeral_container_statuses,
        ];
        for statuses in all.into_iter().flatten() {
            containers.extend(statuses.iter().filter_map(container_meta));
        }
    }
    let meta = PodMeta {
        name: pod.metadata.name.clone().unwrap_or_default(),
        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
        containers,
    };
    Some((uid, meta))
}

fn container_meta(status: &ContainerStatus) -> Option<ContainerMeta> {
    let (runtime, id) = split_container_id(status.container_id.as_deref()?)?;
    Some(ContainerMeta {
        id: id.to_owned(),
        name: status.name.clone(),
        runtime,
    })
}

#[cfg(test)]
mod tests {
    use k8s_openapi::{api::core::v1::PodStatus, apimachinery::pkg::apis::meta::v1::ObjectMeta};

    use super::*;
    use crate::containers::parse::Runtime;

    fn status(name: &str, id: Option<&str>) -> ContainerStatus {
        ContainerStatus {
            name: name.into(),
            container_id: id.map(str::to_owned),
            ..ContainerStatus::default()
        }
    }

    #[test]
    fn pods_map_to_names_and_container_ids() {
        let pod = Pod {
            metadata: ObjectMeta {
                uid: Some("8b0c9a2e-4d3f-4e6a-9b1c-2d3e4f5a6b7c".into()),
                name: Some("web-7d4b9".into()),
                namespace: Some("shop".into()),
                ..ObjectMeta::default()
            },
            status: Some(PodStatus {
                container_statuses: Some(vec![
                    status("nginx", Some("containerd://aaa")),
                    status("sidecar", Some("cri-o://bbb")),
                    status("starting", None),
                ]),
                init_container_statuses: Some(vec![status("init", Some("docker://ccc"))]),
                ..PodStatus::default()
            }),
            ..Pod::default()
        };
        let (uid, meta) = pod_meta(&pod).expect("a pod with a uid");
        assert_eq!(uid, "8b0c9a2e-4d3f-4e6a-9b1c-2d3e4f5a6b7c");
        assert_eq!(
            (meta.name.as_str(), meta.namespace.as_str()),
            ("web-7d4b9", "shop")
        );
        assert_eq!(
            meta.containers.len(),
            3,
            "a container without an id yet is skipped"
        );
        let nginx = meta.container("aaa").expect("nginx");
        assert_eq!(
            (nginx.name.as_str(), nginx.runtime),
            ("nginx", Some(Runtime::Containerd))
        );
        assert_eq!(
            meta.container("bbb").and_then(|c| c.runtime),
            Some(Runtime::CriO)
        );
        assert_eq!(meta.container("ccc").map(|c| c.name.as_str()), Some("init"));
    }

    #[test]
    fn pods_without_uid_or_status_are_handled() {
        assert!(pod_meta(&Pod::default()).is_none());
        let pod = Pod {
            metadata: ObjectMeta {
                uid: Some("u".into()),
                ..ObjectMeta::default()
            },
            ..Pod::default()
        };
        let (_, meta) = pod_meta(&pod).expect("uid");
        assert_eq!(meta, PodMeta::default());
    }

    #[test]
    fn no_watch_outside_a_cluster_or_without_a_node_name() {
        let pods = PodDirectory::default();
        assert!(start(&K8sOptions::default(), pods.clone()).is_none());
        let in_cluster = K8sOptions {
            in_cluster: true,
            ..K8sOptions::default()
        };
        assert!(
            start(&in_cluster, pods).is_none(),
            "no node name: no cluster-wide watch instead"
        );
    }

    /// An unreachable API server: the watch thread logs and gives up or
    /// retries, and stopping it never hangs.
    #[test]
    fn a_broken_kubeconfig_is_one_log_line_and_stops_cleanly() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config");
        std::fs::write(&path, "not: [a kubeconfig").expect("write");
        let options = K8sOptions {
            node_name: Some("n1".into()),
            kubeconfig: Some(path),
            in_cluster: false,
        };
        let watch = start(&options, PodDirectory::default());
        assert!(watch.is_some());
        drop(watch);
    }
}
