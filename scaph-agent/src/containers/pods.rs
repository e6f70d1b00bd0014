//! What the Kubernetes API says about the pods of this node, shared between
//! the watch (which writes) and the metrics (which read once per update).
//!
//! Without API access the directory stays empty and only the labels a
//! cgroup path carries (pod UID, QoS, container id) are exposed.
use std::{
    collections::HashMap,
    sync::{Arc, PoisonError, RwLock},
    time::{Duration, Instant},
};

use super::parse::Runtime;

/// Deleted pods stay known this long: their exited processes, and their
/// container series, keep their names for the retention window.
pub const KEEP_DELETED: Duration = Duration::from_secs(3600);
/// At most this many pods are remembered (a node runs at most a few hundred).
pub const MAX_PODS: usize = 10_000;

/// One pod's names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodMeta {
    pub name: String,
    pub namespace: String,
    /// Containers with a known id (from the pod's status).
    pub containers: Vec<ContainerMeta>,
}

/// One container of a pod, from `status.containerStatuses[]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerMeta {
    /// 64 hex digits, without the `containerd://` scheme.
    pub id: String,
    pub name: String,
    pub runtime: Option<Runtime>,
}

impl PodMeta {
    #[must_use]
    pub fn container(&self, id: &str) -> Option<&ContainerMeta> {
        self.containers.iter().find(|c| c.id == id)
    }
}

/// Splits a Kubernetes `containerID` (`containerd://<id>`).
#[must_use]
pub fn split_container_id(text: &str) -> Option<(Option<Runtime>, &str)> {
    let (scheme, id) = text.split_once("://")?;
    (!id.is_empty()).then(|| (Runtime::from_scheme(scheme), id))
}

#[derive(Debug)]
struct Slot {
    meta: Arc<PodMeta>,
    deleted_at: Option<Instant>,
}

/// Pods by UID.
#[derive(Clone, Debug, Default)]
pub struct PodDirectory {
    inner: Arc<RwLock<HashMap<String, Slot>>>,
}

impl PodDirectory {
    /// The pod with this UID, if the API told us about it.
    #[must_use]
    pub fn get(&self, uid: &str) -> Option<Arc<PodMeta>> {
        let map = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        map.get(uid).map(|slot| slot.meta.clone())
    }

    /// Reads many pods under one lock.
    pub fn with<T>(&self, f: impl FnOnce(&dyn Fn(&str) -> Option<Arc<PodMeta>>) -> T) -> T {
        let map = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        let lookup = |uid: &str| map.get(uid).map(|slot| slot.meta.clone());
        f(&lookup)
    }

    /// A pod was added or changed.
    pub fn apply(&self, uid: String, meta: PodMeta) {
        let mut map = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= MAX_PODS && !map.contains_key(&uid) {
            prune(&mut map, Instant::now(), true);
            if map.len() >= MAX_PODS {
                return;
            }
        }
        map.insert(
            uid,
            Slot {
                meta: Arc::new(meta),
                deleted_at: None,
            },
        );
    }

    /// A pod was deleted: kept, marked, for [`KEEP_DELETED`].
    pub fn delete(&self, uid: &str, now: Instant) {
        let mut map = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = map.get_mut(uid) {
            slot.deleted_at.get_or_insert(now);
        }
        prune(&mut map, now, false);
    }

    /// After a full re-list: pods not in `present` were deleted meanwhile.
    pub fn retain_listed(&self, present: &std::collections::HashSet<String>, now: Instant) {
        let mut map = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        for (uid, slot) in map.iter_mut() {
            if !present.contains(uid) {
                slot.deleted_at.get_or_insert(now);
            }
        }
        prune(&mut map, now, false);
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.inner
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Drops pods deleted more than [`KEEP_DELETED`] ago (or, when `urgent`,
/// every deleted pod).
fn prune(map: &mut HashMap<String, Slot>, now: Instant, urgent: bool) {
    map.retain(|_, slot| {
        slot.deleted_at
            .is_none_or(|at| !urgent && now.saturating_duration_since(at) < KEEP_DELETED)
    });
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn meta(name: &str) -> PodMeta {
        PodMeta {
            name: name.into(),
            namespace: "ns".into(),
            containers: Vec::new(),
        }
    }

    #[test]
    fn container_ids_split_by_scheme() {
        assert_eq!(
            split_container_id("containerd://abc"),
            Some((Some(Runtime::Containerd), "abc"))
        );
        assert_eq!(
            split_container_id("cri-o://abc"),
            Some((Some(Runtime::CriO), "abc"))
        );
        assert_eq!(
            split_container_id("docker://abc"),
            Some((Some(Runtime::Docker), "abc"))
        );
        assert_eq!(split_container_id("other://abc"), Some((None, "abc")));
        assert_eq!(split_container_id("containerd://"), None);
        assert_eq!(split_container_id("abc"), None);
    }

    #[test]
    fn deleted_pods_are_kept_then_pruned() {
        let pods = PodDirectory::default();
        let t0 = Instant::now();
        pods.apply("a".into(), meta("pa"));
        pods.apply("b".into(), meta("pb"));
        pods.delete("a", t0);
        assert_eq!(
            pods.get("a").map(|m| m.name.clone()),
            Some("pa".into()),
            "kept after deletion"
        );
        pods.delete("zzz", t0 + KEEP_DELETED + Duration::from_secs(1));
        assert!(pods.get("a").is_none(), "pruned after KEEP_DELETED");
        assert!(pods.get("b").is_some());
        pods.retain_listed(&HashSet::new(), t0);
        assert!(
            pods.get("b").is_some(),
            "a pod missing from a re-list is kept for a while"
        );
        assert_eq!(
            pods.with(|get| get("b").map(|m| m.namespace.clone())),
            Some("ns".into())
        );
    }
}
