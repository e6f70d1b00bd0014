//! From a cgroup path to what it says about the process: its container
//! (runtime and id), its Kubernetes pod (UID and QoS class) and its systemd
//! unit.
//!
//! The path is read segment by segment, so it does not matter where the
//! hierarchy is rooted: `/proc/PID/cgroup` seen from inside a cgroup
//! namespace starts with `/../..`, kubelets with `--cgroup-root` nest
//! `kubepods` under another slice, and rootless runtimes live below
//! `user@UID.service`. The shapes recognised (systemd and cgroupfs drivers,
//! cgroup v1 and v2 write the same names):
//!
//! | runtime | systemd driver | cgroupfs driver |
//! |---|---|---|
//! | docker | `docker-<id>.scope` | `/docker/<id>` |
//! | containerd (CRI) | `cri-containerd-<id>.scope`, `…slice:cri-containerd:<id>` | `/kubepods/…/pod<uid>/<id>` |
//! | containerd (nerdctl) | `nerdctl-<id>.scope` | — |
//! | CRI-O | `crio-<id>.scope`, `…slice:crio:<id>` | `crio-<id>` |
//! | podman | `libpod-<id>.scope` (also `…/container` below it) | `/libpod_parent/libpod-<id>` |
//!
//! Only runtimes' trees count, because anyone may name a cgroup of their own
//! after a real container: a user owns `user.slice/user-UID.slice/
//! user@UID.service/…` on a systemd host and can create
//! `…/app.slice/docker-<a real container's id>.scope` there and run in it.
//! So container and pod shapes are read only in the trees runtimes use: a
//! path whose first segment is `system.slice`, `machine.slice`, `docker`,
//! `libpod_parent` or `kubepods…` (or a slice holding a `…kubepods…` slice,
//! kubelet's `--cgroup-root`). The first segment is the one after the
//! hierarchy's root, after the leading `..` of a cgroup namespace's view
//! (where the container or pod itself may come first), or after a prefix
//! given with `--containers-cgroup-prefix` (a host nested in an LXC payload):
//! root inside a nested container or a delegated subtree cannot make a
//! `…/system.slice/docker-<id>.scope` of its own count. Nothing inside a
//! user's delegated subtree (`user@UID.service`) counts, unless rootless
//! containers are asked for (`--containers-rootless`): then what is found
//! there is labelled with its owner's uid ([`CgroupLabels::owner_uid`]) and
//! kept apart from any root container of the same id.
//!
//! Pods: `kubepods[-<qos>]-pod<uid>.slice` (systemd escapes the UID's dashes
//! as underscores) or `/kubepods[/<qos>]/pod<uid>`; no QoS level means
//! Guaranteed. The runtimes' monitor processes (`crio-conmon-<id>.scope`,
//! `libpod-conmon-<id>.scope`) belong to the pod or host, not to the
//! container. A container id is 64 lowercase hex digits, as every runtime
//! above writes it; anything else is not taken for one.
use std::fmt;

/// The software that created the container.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Runtime {
    Docker,
    Containerd,
    CriO,
    Podman,
}

impl Runtime {
    /// The label value (`container_runtime`).
    #[must_use]
    pub const fn label(self) -> &'static str {
        match self {
            Self::Docker => "docker",
            Self::Containerd => "containerd",
            Self::CriO => "cri-o",
            Self::Podman => "podman",
        }
    }

    /// The runtime named by a Kubernetes `containerID` scheme (`containerd://…`).
    #[must_use]
    pub fn from_scheme(scheme: &str) -> Option<Self> {
        match scheme {
            "docker" => Some(Self::Docker),
            "containerd" => Some(Self::Containerd),
            "cri-o" | "crio" => Some(Self::CriO),
            "podman" => Some(Self::Podman),
            _ => None,
        }
    }
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// Kubernetes QoS class of a pod, from the slice it lives in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Qos {
    Guaranteed,
    Burstable,
    BestEffort,
}

impl Qos {
    /// The label value (`pod_qos`).
    #[must_use]
    pub const fn label(self) -> &'static str {
        match self {
            Self::Guaranteed => "guaranteed",
            Self::Burstable => "burstable",
            Self::BestEffort => "besteffort",
        }
    }
}

/// What one cgroup path says. Every field is optional: a host process has
/// at most a systemd unit.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct CgroupLabels {
    /// Known from the path; in a Kubernetes cgroupfs layout the path does not
    /// tell, and the pod's status may (see `pods`).
    pub runtime: Option<Runtime>,
    /// 64 hex digits.
    pub container_id: Option<String>,
    /// With dashes (`1f0c…-…`), as the API server writes it.
    pub pod_uid: Option<String>,
    pub pod_qos: Option<Qos>,
    /// The innermost `*.service` or `*.scope` segment.
    pub systemd_unit: Option<String>,
    /// The user whose delegated subtree (`user@UID.service`) holds the
    /// container or pod: a rootless one (only with `rootless`).
    pub owner_uid: Option<u32>,
}

impl CgroupLabels {
    /// True when the path names a container or a pod.
    #[must_use]
    pub fn is_workload(&self) -> bool {
        self.container_id.is_some() || self.pod_uid.is_some()
    }
}

/// Segments of the trees runtimes create their cgroups in.
const RUNTIME_ROOTS: &[&str] = &["system.slice", "machine.slice", "docker", "libpod_parent"];

/// `user@<uid>.service`: the root of a user's delegated subtree.
#[must_use]
pub fn is_user_manager(segment: &str) -> bool {
    user_manager_uid(segment).is_some()
}

fn user_manager_uid(segment: &str) -> Option<u32> {
    let uid = segment.strip_prefix("user@")?.strip_suffix(".service")?;
    uid.bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| uid.parse().ok())
        .flatten()
}

/// Which cgroup trees count as runtimes' (from `--containers-rootless` and
/// `--containers-cgroup-prefix`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Trees {
    /// Also containers in users' delegated subtrees (`user@UID.service`),
    /// labelled with their owner.
    pub rootless: bool,
    /// Cgroups the host's runtimes are nested under (an LXC payload, a test
    /// directory), as `/proc/PID/cgroup` shows them: `/lxc.payload.ct1`.
    /// Without any, runtimes' trees start at the root of the hierarchy.
    pub prefixes: Vec<String>,
}

impl Trees {
    /// Only the host's own runtimes' trees, at the root.
    #[must_use]
    pub fn rootful() -> Self {
        Self::default()
    }
}

/// The segments of `path` after `prefix` when `path` lies below (or is) it.
fn strip_segments<'a>(path: &'a str, prefix: &str) -> Option<Vec<&'a str>> {
    let mut segments = path.split('/').filter(|s| !s.is_empty() && *s != ".");
    for want in prefix.split('/').filter(|s| !s.is_empty() && *s != ".") {
        if segments.next() != Some(want) {
            return None;
        }
    }
    Some(segments.collect())
}

/// Whether the first segments of a path (below the hierarchy's root, a
/// nesting prefix, or a cgroup namespace's `..`) are a runtime's tree:
/// `system.slice`, `machine.slice`, `docker`, `libpod_parent`, a
/// `kubepods…` segment, or a slice holding a `…kubepods…` slice (kubelet
/// `--cgroup-root`). In a cgroup namespace's view the container or pod
/// segment may come first: scaph's namespace is itself inside that tree.
fn is_runtime_tree(segments: &[&str], namespaced: bool) -> bool {
    let Some(&first) = segments.first() else {
        return false;
    };
    if unit_before_workload(segments) {
        return false;
    }
    RUNTIME_ROOTS.contains(&first)
        || first.contains("kubepods")
        || (first.ends_with(".slice")
            && segments
                .get(1)
                .is_some_and(|s| s.ends_with(".slice") && s.contains("kubepods")))
        || (namespaced
            && (container_segment(first, "", false).is_some()
                || first
                    .split_once(':')
                    .is_some_and(|(_, rest)| colon_container_segment(rest).is_some())))
}

/// Whether a systemd unit other than a runtime's own comes before the first
/// container or pod segment: a service with `Delegate=yes` (and maybe
/// `User=`) may create any cgroup below itself, e.g.
/// `/system.slice/x.service/docker/<id>`. containerd's service holds the
/// pods it creates itself (`…slice:cri-containerd:<id>`, k3s and kind).
fn unit_before_workload(segments: &[&str]) -> bool {
    for &segment in segments {
        let workload = segment.contains("kubepods")
            || container_segment(segment, "", true).is_some()
            || pod_segment(segment, "").is_some()
            || segment
                .split_once(':')
                .is_some_and(|(_, rest)| colon_container_segment(rest).is_some());
        if workload {
            return false;
        }
        if (segment.ends_with(".service") || segment.ends_with(".scope"))
            && segment != "containerd.service"
        {
            return true;
        }
    }
    false
}

/// Where a path may name containers: `Some(None)` in a runtime's tree,
/// `Some(Some(uid))` in user `uid`'s delegated subtree when `rootless`,
/// `None` where nothing counts. The path is the one `/proc/PID/cgroup`
/// shows, never a whole line of it: cgroup v2 allows `:` in names.
fn container_scope(path: &str, trees: &Trees) -> Option<Option<u32>> {
    let segments: Vec<&str> = path
        .split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .collect();
    if let Some(uid) = segments.iter().find_map(|s| user_manager_uid(s)) {
        return trees.rootless.then_some(Some(uid));
    }
    let lead = segments.iter().take_while(|s| **s == "..").count();
    if is_runtime_tree(&segments[lead..], lead > 0) {
        return Some(None);
    }
    trees
        .prefixes
        .iter()
        .filter_map(|prefix| strip_segments(path, prefix))
        .any(|below| is_runtime_tree(&below, false))
        .then_some(None)
}

/// Reads a cgroup path (see the module documentation for the shapes and
/// which trees count). Never fails: what is not recognised is left out.
#[must_use]
pub fn parse(path: &str, trees: &Trees) -> CgroupLabels {
    let Some(owner) = container_scope(path, trees) else {
        return CgroupLabels {
            systemd_unit: path
                .split('/')
                .rev()
                .find(|s| s.ends_with(".service") || s.ends_with(".scope"))
                .map(str::to_owned),
            ..CgroupLabels::default()
        };
    };
    let mut labels = shapes(path);
    if labels.is_workload() {
        labels.owner_uid = owner;
    }
    labels
}

/// Whether a path has the shape of a container or pod anywhere in it,
/// whoever may have created it (for refusing trust, never for labels).
#[must_use]
pub fn looks_like_workload(path: &str) -> bool {
    shapes(path).is_workload()
}

/// The container, pod and unit a path's segments name, wherever they are.
fn shapes(path: &str) -> CgroupLabels {
    let mut labels = CgroupLabels::default();
    let mut in_kubepods = false;
    let mut parent = "";
    for segment in path
        .split('/')
        .filter(|s| !s.is_empty() && *s != "." && *s != "..")
    {
        if segment.ends_with(".service") || segment.ends_with(".scope") {
            labels.systemd_unit = Some(segment.to_owned());
        }
        if segment.contains("kubepods") {
            in_kubepods = true;
        }
        // `kubepods-burstable-pod<uid>.slice:cri-containerd:<id>` (containerd
        // creating the cgroup under its own service, e.g. k3s, kind).
        let (pod_part, colon_container) = match segment.split_once(':') {
            Some((slice, rest)) => (slice, Some(rest)),
            None => (segment, None),
        };
        if labels.pod_uid.is_none() && in_kubepods {
            if let Some((uid, qos)) = pod_segment(pod_part, parent) {
                labels.pod_uid = Some(uid);
                labels.pod_qos = Some(qos);
            }
        }
        if labels.container_id.is_none() {
            let found = match colon_container {
                Some(rest) => colon_container_segment(rest),
                None => container_segment(segment, parent, in_kubepods && labels.pod_uid.is_some()),
            };
            if let Some((runtime, id)) = found {
                labels.runtime = runtime;
                labels.container_id = Some(id);
            }
        }
        parent = segment;
    }
    if labels.runtime.is_none() && labels.pod_uid.is_some() && labels.container_id.is_none() {
        // A runtime's monitor in the pod (conmon) says which runtime it is.
        labels.runtime = monitor_runtime(path);
    }
    labels
}

/// `<64 hex>`.
fn is_container_id(text: &str) -> bool {
    text.len() == 64
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The id after `prefix` and before an optional `suffix`.
fn id_between<'a>(segment: &'a str, prefix: &str, suffix: &str) -> Option<&'a str> {
    let rest = segment.strip_prefix(prefix)?;
    let id = rest.strip_suffix(suffix).unwrap_or(rest);
    is_container_id(id).then_some(id)
}

/// A segment naming a container on its own (see the table above).
fn container_segment(
    segment: &str,
    parent: &str,
    in_pod: bool,
) -> Option<(Option<Runtime>, String)> {
    const SCOPES: &[(&str, Runtime)] = &[
        ("docker-", Runtime::Docker),
        ("cri-containerd-", Runtime::Containerd),
        ("nerdctl-", Runtime::Containerd),
        ("crio-", Runtime::CriO),
        ("libpod-", Runtime::Podman),
    ];
    for &(prefix, runtime) in SCOPES {
        if let Some(id) = id_between(segment, prefix, ".scope") {
            return Some((Some(runtime), id.to_owned()));
        }
    }
    if is_container_id(segment) {
        let runtime = match parent {
            "docker" => Some(Runtime::Docker),
            "libpod_parent" => Some(Runtime::Podman),
            _ if in_pod => None, // the pod's status names the runtime
            _ => return None,    // a bare id anywhere else is too weak a hint
        };
        return Some((runtime, segment.to_owned()));
    }
    None
}

/// `cri-containerd:<id>`, `crio:<id>`, `docker:<id>` (after the slice and a colon).
fn colon_container_segment(rest: &str) -> Option<(Option<Runtime>, String)> {
    let (prefix, id) = rest.split_once(':')?;
    let runtime = match prefix {
        "cri-containerd" | "containerd" => Runtime::Containerd,
        "crio" | "cri-o" => Runtime::CriO,
        "docker" => Runtime::Docker,
        "libpod" | "podman" => Runtime::Podman,
        _ => return None,
    };
    is_container_id(id).then(|| (Some(runtime), id.to_owned()))
}

/// A pod segment: `kubepods[-<qos>]-pod<uid>.slice` (systemd) or `pod<uid>`
/// below `kubepods[/<qos>]` (cgroupfs). Returns the UID with dashes.
fn pod_segment(segment: &str, parent: &str) -> Option<(String, Qos)> {
    if let Some(stem) = segment.strip_suffix(".slice") {
        let (before, uid) = stem.rsplit_once("-pod")?;
        let uid = normalize_uid(uid)?;
        let qos = if before.ends_with("-burstable") {
            Qos::Burstable
        } else if before.ends_with("-besteffort") {
            Qos::BestEffort
        } else if before.ends_with("kubepods") {
            Qos::Guaranteed
        } else {
            return None;
        };
        return Some((uid, qos));
    }
    let uid = normalize_uid(segment.strip_prefix("pod")?)?;
    let qos = match parent {
        "burstable" => Qos::Burstable,
        "besteffort" => Qos::BestEffort,
        _ => Qos::Guaranteed,
    };
    Some((uid, qos))
}

/// A pod UID (8-4-4-4-12 hex digits) with systemd's `_` turned back into `-`.
fn normalize_uid(text: &str) -> Option<String> {
    let uid: String = text
        .chars()
        .map(|c| {
            if c == '_' {
                '-'
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect();
    let groups: Vec<&str> = uid.split('-').collect();
    let shape = [8, 4, 4, 4, 12];
    let ok = groups.len() == shape.len()
        && groups
            .iter()
            .zip(shape)
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()));
    ok.then_some(uid)
}

/// The runtime whose monitor process lives at `path` (`crio-conmon-…`, `libpod-conmon-…`).
fn monitor_runtime(path: &str) -> Option<Runtime> {
    let last = path.rsplit('/').find(|s| !s.is_empty())?;
    if last.starts_with("crio-conmon-") {
        Some(Runtime::CriO)
    } else if last.starts_with("libpod-conmon-") {
        Some(Runtime::Podman)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4f1d5e2a3b6c7d8e9f0a1b2c3d4e5f60718293a4b5c6d7e8f9a0b1c2d3e4f5a6";
    const UID: &str = "8b0c9a2e-4d3f-4e6a-9b1c-2d3e4f5a6b7c";
    const UID_: &str = "8b0c9a2e_4d3f_4e6a_9b1c_2d3e4f5a6b7c";

    struct Case {
        path: String,
        runtime: Option<Runtime>,
        container: bool,
        pod: Option<Qos>,
        unit: Option<String>,
    }

    fn case(
        path: &str,
        runtime: Option<Runtime>,
        container: bool,
        pod: Option<Qos>,
        unit: Option<&str>,
    ) -> Case {
        let fill = |s: &str| {
            s.replace("{id}", ID)
                .replace("{uid}", UID)
                .replace("{uid_}", UID_)
        };
        Case {
            path: fill(path),
            runtime,
            container,
            pod,
            unit: unit.map(fill),
        }
    }

    use Qos::{BestEffort, Burstable, Guaranteed};
    use Runtime::{Containerd, CriO, Docker, Podman};

    /// Real shapes, one per runtime, driver and cgroup version.
    fn cases() -> Vec<Case> {
        vec![
            // Docker.
            case("/system.slice/docker-{id}.scope", Some(Docker), true, None, Some("docker-{id}.scope")),
            case("/docker/{id}", Some(Docker), true, None, None),
            case("/system.slice/docker-{id}.scope/init.scope", Some(Docker), true, None, Some("init.scope")),
            case("/../../docker-{id}.scope", Some(Docker), true, None, Some("docker-{id}.scope")),
            // A user's own subtree: not a runtime's (see `rootless_containers`).
            case(
                "/user.slice/user-1000.slice/user@1000.service/docker.service/docker/{id}",
                None,
                false,
                None,
                Some("docker.service"),
            ),
            case(
                "/user.slice/user-1000.slice/user@1000.service/app.slice/docker-{id}.scope",
                None,
                false,
                None,
                Some("docker-{id}.scope"),
            ),
            case(
                "/user.slice/user-1000.slice/user@1000.service/kubepods.slice/kubepods-pod{uid_}.slice/cri-containerd-{id}.scope",
                None,
                false,
                None,
                Some("cri-containerd-{id}.scope"),
            ),
            // Kubernetes, systemd driver.
            case(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_}.slice/cri-containerd-{id}.scope",
                Some(Containerd),
                true,
                Some(Burstable),
                Some("cri-containerd-{id}.scope"),
            ),
            case(
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid_}.slice/crio-{id}.scope",
                Some(CriO),
                true,
                Some(BestEffort),
                Some("crio-{id}.scope"),
            ),
            case(
                "/kubepods.slice/kubepods-pod{uid_}.slice/cri-containerd-{id}.scope",
                Some(Containerd),
                true,
                Some(Guaranteed),
                Some("cri-containerd-{id}.scope"),
            ),
            case(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_}.slice/docker-{id}.scope",
                Some(Docker),
                true,
                Some(Burstable),
                Some("docker-{id}.scope"),
            ),
            case(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_}.slice/crio-conmon-{id}.scope",
                Some(CriO),
                false,
                Some(Burstable),
                Some("crio-conmon-{id}.scope"),
            ),
            case(
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid_}.slice",
                None,
                false,
                Some(BestEffort),
                None,
            ),
            // kubelet --cgroup-root=/kubelet.slice, and a namespaced view.
            case(
                "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-burstable.slice/kubelet-kubepods-burstable-pod{uid_}.slice/cri-containerd-{id}.scope",
                Some(Containerd),
                true,
                Some(Burstable),
                Some("cri-containerd-{id}.scope"),
            ),
            case(
                "/../../kubepods-besteffort-pod{uid_}.slice/cri-containerd-{id}.scope",
                Some(Containerd),
                true,
                Some(BestEffort),
                Some("cri-containerd-{id}.scope"),
            ),
            // containerd under its own service (k3s, kind).
            case(
                "/system.slice/containerd.service/kubepods-burstable-pod{uid_}.slice:cri-containerd:{id}",
                Some(Containerd),
                true,
                Some(Burstable),
                Some("containerd.service"),
            ),
            // Kubernetes, cgroupfs driver (v1 and v2).
            case("/kubepods/burstable/pod{uid}/{id}", None, true, Some(Burstable), None),
            case("/kubepods/besteffort/pod{uid}/{id}", None, true, Some(BestEffort), None),
            case("/kubepods/pod{uid}/{id}", None, true, Some(Guaranteed), None),
            case("/kubepods/burstable/pod{uid}/crio-{id}", Some(CriO), true, Some(Burstable), None),
            case("/kubepods/burstable/pod{uid}/crio-conmon-{id}", Some(CriO), false, Some(Burstable), None),
            // Podman.
            case("/machine.slice/libpod-{id}.scope", Some(Podman), true, None, Some("libpod-{id}.scope")),
            case("/machine.slice/libpod-{id}.scope/container", Some(Podman), true, None, Some("libpod-{id}.scope")),
            case(
                "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{id}.scope",
                None,
                false,
                None,
                Some("libpod-{id}.scope"),
            ),
            case("/machine.slice/libpod-conmon-{id}.scope", None, false, None, Some("libpod-conmon-{id}.scope")),
            case("/libpod_parent/libpod-{id}", Some(Podman), true, None, None),
            case("/libpod_parent/{id}", Some(Podman), true, None, None),
            // nerdctl.
            case("/system.slice/nerdctl-{id}.scope", Some(Containerd), true, None, Some("nerdctl-{id}.scope")),
            // Host processes.
            case("/", None, false, None, None),
            case("", None, false, None, None),
            case("/system.slice/ssh.service", None, false, None, Some("ssh.service")),
            case("/system.slice/containerd.service", None, false, None, Some("containerd.service")),
            case("/user.slice/user-1000.slice/session-3.scope", None, false, None, Some("session-3.scope")),
            case(
                "/user.slice/user-1000.slice/user@1000.service/app.slice/app-firefox.scope",
                None,
                false,
                None,
                Some("app-firefox.scope"),
            ),
            case("/init.scope", None, false, None, Some("init.scope")),
            // Container shapes outside every runtime's tree.
            case("/user.slice/docker-{id}.scope", None, false, None, Some("docker-{id}.scope")),
            case("/users/alice/docker-{id}.scope", None, false, None, Some("docker-{id}.scope")),
            // Runtimes' trees below something else: not the host's (see `nested_hosts`).
            case("/scaph-test-1/system.slice/docker-{id}.scope", None, false, None, Some("docker-{id}.scope")),
            case("/lxc.payload.ct1/system.slice/docker-{id}.scope", None, false, None, Some("docker-{id}.scope")),
            case(
                "/machine.slice/systemd-nspawn@ct1.service/payload/system.slice/docker-{id}.scope",
                None,
                false,
                None,
                Some("docker-{id}.scope"),
            ),
            // A delegated service's own subtree (Delegate=yes, maybe User=).
            case("/system.slice/x.service/docker/{id}", None, false, None, Some("x.service")),
            case("/system.slice/x.service/system.slice/docker-{id}.scope", None, false, None, Some("docker-{id}.scope")),
            case("/system.slice/x.service/kubepods/pod{uid}/{id}", None, false, None, Some("x.service")),
            case("/../../lxc.payload.ct1/system.slice/docker-{id}.scope", None, false, None, Some("docker-{id}.scope")),
            case("/machine.slice/machine-ct1.scope/kubepods/pod{uid}/{id}", None, false, None, Some("machine-ct1.scope")),
        ]
    }

    #[test]
    fn real_path_shapes() {
        for c in cases() {
            let got = parse(&c.path, &Trees::rootful());
            assert_eq!(got.runtime, c.runtime, "runtime of {}", c.path);
            assert_eq!(
                got.container_id.as_deref(),
                c.container.then_some(ID),
                "container of {}",
                c.path
            );
            assert_eq!(
                got.pod_uid.as_deref(),
                c.pod.map(|_| UID),
                "pod of {}",
                c.path
            );
            assert_eq!(got.pod_qos, c.pod, "qos of {}", c.path);
            assert_eq!(got.systemd_unit, c.unit, "unit of {}", c.path);
            assert_eq!(
                got.is_workload(),
                c.container || c.pod.is_some(),
                "{}",
                c.path
            );
            assert_eq!(got.owner_uid, None, "{}", c.path);
            if !c.path.contains("user@") {
                assert_eq!(
                    parse(
                        &c.path,
                        &Trees {
                            rootless: true,
                            ..Trees::default()
                        }
                    ),
                    got,
                    "rootless changes nothing outside user@UID.service"
                );
            }
        }
    }

    /// `--containers-rootless`: containers in a user's subtree count, owned by that user.
    #[test]
    fn rootless_containers() {
        let table: &[(&str, Option<Runtime>, bool, Option<Qos>)] = &[
            ("/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{id}.scope", Some(Podman), true, None),
            ("/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{id}.scope/container", Some(Podman), true, None),
            ("/user.slice/user-1000.slice/user@1000.service/docker.service/docker/{id}", Some(Docker), true, None),
            ("/user.slice/user-1000.slice/user@1000.service/app.slice/docker-{id}.scope", Some(Docker), true, None),
            (
                "/user.slice/user-1000.slice/user@1000.service/kubepods.slice/kubepods-pod{uid_}.slice/cri-containerd-{id}.scope",
                Some(Containerd),
                true,
                Some(Guaranteed),
            ),
            ("/user.slice/user-1000.slice/user@1000.service/app.slice/app-firefox.scope", None, false, None),
        ];
        for &(path, runtime, container, pod) in table {
            let path = path.replace("{id}", ID).replace("{uid_}", UID_);
            let got = parse(&path, &ROOTLESS);
            assert_eq!(got.runtime, runtime, "{path}");
            assert_eq!(
                got.container_id.as_deref(),
                container.then_some(ID),
                "{path}"
            );
            assert_eq!(got.pod_qos, pod, "{path}");
            let owner = (container || pod.is_some()).then_some(1000);
            assert_eq!(got.owner_uid, owner, "{path}");
            assert!(
                !parse(&path, &Trees::rootful()).is_workload(),
                "{path} without the option"
            );
        }
        assert!(is_user_manager("user@0.service"));
        for not in [
            "user@.service",
            "user@1000.slice",
            "user-1000.slice",
            "user@10x0.service",
            "user@99999999999.service",
        ] {
            assert!(!is_user_manager(not), "{not}");
        }
    }

    #[test]
    fn near_misses_are_not_containers() {
        for path in [
            "/docker/abc",                      // short id
            "/system.slice/docker-{id}X.scope", // not hex
            "/system.slice/docker.service",     // the daemon itself
            "/some/{id}",                       // a bare id outside docker, podman or a pod
            "/system.slice/docker-{ID}.scope",  // upper case
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podnot-a-uid.slice",
            "/pod{uid}/{id}", // a pod-like segment outside kubepods
            // A whole /proc/PID/cgroup line is never what is parsed.
            "0::/system.slice/docker-{id}.scope",
            // `:` is allowed in cgroup v2 names: a user's `a::` is not a line's head.
            "/user.slice/user-1000.slice/user@1000.service/a::/system.slice/docker-{id}.scope",
            "/user.slice/user-1000.slice/user@1000.service/a::/kubepods/pod{uid}/{id}",
            "/user.slice/user-1000.slice/user@1000.service/a::/kubepods.slice/kubepods-pod{uid_}.slice/cri-containerd-{id}.scope",
        ] {
            let path = path
                .replace("{id}", ID)
                .replace("{ID}", &ID.to_uppercase())
                .replace("{uid}", UID)
                .replace("{uid_}", UID_);
            let got = parse(&path, &Trees::rootful());
            assert!(!got.is_workload(), "{path}: {got:?}");
            let got = parse(&path, &ROOTLESS);
            assert!(
                got.owner_uid.is_some() || !got.is_workload(),
                "rootless: {path}: {got:?}"
            );
        }
    }

    const ROOTLESS: Trees = Trees {
        rootless: true,
        prefixes: Vec::new(),
    };

    /// `--containers-cgroup-prefix`: a host nested below another cgroup.
    #[test]
    fn nested_hosts() {
        let trees = Trees {
            rootless: false,
            prefixes: vec!["/lxc.payload.ct1".into(), "scaph-test-7/".into()],
        };
        let table: &[(&str, bool)] = &[
            ("/lxc.payload.ct1/system.slice/docker-{id}.scope", true),
            ("/lxc.payload.ct1/kubepods/burstable/pod{uid}/{id}", true),
            ("/scaph-test-7/system.slice/docker-{id}.scope", true),
            ("/scaph-test-7/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-pod{uid_}.slice/cri-containerd-{id}.scope", true),
            ("/system.slice/docker-{id}.scope", true),
            // Only at the prefix itself, not deeper, and not a mere name prefix.
            ("/lxc.payload.ct1/x/system.slice/docker-{id}.scope", false),
            ("/lxc.payload.ct10/system.slice/docker-{id}.scope", false),
            ("/other/system.slice/docker-{id}.scope", false),
            ("/scaph-test-7/user.slice/user-1000.slice/user@1000.service/system.slice/docker-{id}.scope", false),
        ];
        for &(path, want) in table {
            let path = path
                .replace("{id}", ID)
                .replace("{uid}", UID)
                .replace("{uid_}", UID_);
            let got = parse(&path, &trees);
            assert_eq!(got.container_id.is_some(), want, "{path}: {got:?}");
            assert_eq!(got.owner_uid, None, "{path}");
            if path.starts_with("/lxc") || path.starts_with("/scaph") {
                assert!(
                    !parse(&path, &Trees::rootful()).is_workload(),
                    "{path} without the prefix"
                );
            }
        }
    }

    #[test]
    fn shapes_anywhere() {
        assert!(looks_like_workload(&format!(
            "/lxc.payload.ct1/system.slice/docker-{ID}.scope"
        )));
        assert!(looks_like_workload(&format!(
            "/user.slice/user-1000.slice/user@1000.service/app.slice/libpod-{ID}.scope"
        )));
        assert!(!looks_like_workload("/system.slice/libvirtd.service"));
        assert!(!looks_like_workload(
            "/machine.slice/machine-qemu\\x2d1\\x2dvm1.scope/libvirt/emulator"
        ));
    }

    #[test]
    fn uids_are_normalized() {
        assert_eq!(normalize_uid(UID_).as_deref(), Some(UID));
        assert_eq!(normalize_uid(&UID.to_uppercase()).as_deref(), Some(UID));
        assert_eq!(normalize_uid("8b0c9a2e-4d3f-4e6a-9b1c"), None);
        assert_eq!(normalize_uid(""), None);
    }

    #[test]
    fn outermost_container_wins() {
        let inner = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let got = parse(
            &format!("/system.slice/docker-{ID}.scope/docker/{inner}"),
            &Trees::rootful(),
        );
        assert_eq!(got.container_id.as_deref(), Some(ID));
    }

    #[test]
    fn garbage_never_panics() {
        for path in [
            "::::",
            "/:/:/",
            "/\u{0}/\u{fffd}é/",
            "-pod.slice",
            "kubepods/pod",
            "/kubepods-pod.slice:x:y",
        ] {
            let _ = parse(path, &ROOTLESS);
        }
        let long = "/kubepods".repeat(10_000);
        let _ = parse(&long, &Trees::rootful());
    }

    #[test]
    fn runtime_schemes() {
        assert_eq!(Runtime::from_scheme("containerd"), Some(Containerd));
        assert_eq!(Runtime::from_scheme("cri-o"), Some(CriO));
        assert_eq!(Runtime::from_scheme("docker"), Some(Docker));
        assert_eq!(Runtime::from_scheme("rkt"), None);
        assert_eq!(CriO.to_string(), "cri-o");
    }
}
