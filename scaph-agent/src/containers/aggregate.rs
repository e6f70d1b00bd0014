//! Energy and CPU time per container, from the per-process amounts.
//!
//! The agent runs every cycle through [`Tracker::update`] with what each
//! process used during it: the very joules the energy accumulator added to
//! the process's total, and its CPU time of the cycle. Each is added to the
//! container the process is in *now* (so a process moved into a container
//! counts there from then on), with the grams the accumulator counted for
//! those joules. Nothing is derived back from totals, so nothing needs
//! reconciling. The series are:
//!
//! - one per container or pod (pod-level processes such as a runtime's
//!   monitor count for the pod, with an empty `container_id`);
//! - `host`: processes outside containers and pods (and of unknown cgroup);
//! - `others`: containers without their own series any more, because their
//!   last process left the snapshot (it exited longer than `--retention`
//!   ago), or beyond [`MAX_CONTAINERS`]. It only grows. A container that
//!   comes back later starts a new series from 0 (with a new
//!   [`ContainerSeries::since`], so that the counter guard reads it as a
//!   new series, not as a decrease).
//!
//! Σ containers + host + others = Σ of every process the agent reported
//! (live, exited, retired) = host energy − idle, at every update (the
//! conservation of [`crate::attribution`], summed in another order), and no
//! series ever decreases: amounts are never negative, and a folded
//! container's total moves into `others` and is never taken back out of it.
use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::Instant,
};

use super::{
    parse::{parse, CgroupLabels, Trees},
    pods::{PodDirectory, PodMeta},
    resolve::{Layout, Resolver},
    workload, ContainersConfig,
};
use crate::{
    amounts::Amounts,
    snapshot::{ContainerSeries, ContainerTotals, ProcessKey, ProcessSnapshot, Snapshot, Workload},
};

/// Containers with their own series at most (a node runs a few hundred;
/// this bounds a host that churns through short-lived containers).
pub const MAX_CONTAINERS: usize = 2000;
/// Parsed paths kept at most (then the cache starts over).
const MAX_PARSED: usize = 50_000;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct BucketKey {
    /// A rootless container is never merged with a root one of the same id.
    owner_uid: Option<u32>,
    pod_uid: Option<String>,
    container_id: Option<String>,
}

#[derive(Debug)]
struct Bucket {
    workload: Arc<Workload>,
    amounts: Amounts,
    /// The update that created it.
    since: u64,
    /// The latest update that added to it.
    generation: u64,
}

/// The labels made of one parsed path and one pod: the `Arc`s are kept so
/// that the addresses keying [`Tracker::labelled`] are never reused.
#[derive(Debug)]
struct Labelled {
    _cgroup: Arc<CgroupLabels>,
    _pod: Option<Arc<PodMeta>>,
    workload: Arc<Workload>,
    /// The latest update that used it.
    generation: u64,
}

/// State kept between updates.
#[derive(Debug)]
pub struct Tracker {
    resolver: Resolver,
    parsed: HashMap<Arc<str>, Arc<CgroupLabels>>,
    /// Labels by (parsed path, pod) address: built once, shared by every
    /// process of a container and every snapshot until the pod changes.
    /// Only those some process used in the latest update are kept (each pod
    /// watch event makes a new pod `Arc`, hence a new key).
    labelled: HashMap<(usize, usize), Labelled>,
    unknown: Arc<CgroupLabels>,
    pods: PodDirectory,
    /// `--containers-rootless`, `--containers-cgroup-prefix`.
    trees: Trees,
    #[cfg(feature = "kubernetes")]
    _watch: Option<super::k8s::PodWatch>,
    buckets: BTreeMap<BucketKey, Bucket>,
    host: Amounts,
    others: Amounts,
    generation: u64,
}

impl Tracker {
    /// Detects the cgroup layout and, when configured and possible, starts
    /// the Kubernetes pod watch.
    #[must_use]
    pub fn new(config: &ContainersConfig) -> Self {
        let pods = PodDirectory::default();
        let mut tracker = Self::with_pods(config, pods.clone());
        let layout = tracker.resolver.layout().clone();
        log::info!("--containers: cgroup layout {layout:?}");
        if config.kubernetes {
            tracker.start_watch(config, pods);
        }
        tracker
    }

    /// A tracker reading pod names from `pods` (filled by someone else).
    #[must_use]
    pub fn with_pods(config: &ContainersConfig, pods: PodDirectory) -> Self {
        Self {
            resolver: Resolver::new(Layout::detect(&config.cgroup_root)),
            parsed: HashMap::new(),
            labelled: HashMap::new(),
            unknown: Arc::new(CgroupLabels::default()),
            pods,
            trees: Trees {
                rootless: config.rootless,
                prefixes: config.cgroup_prefixes.clone(),
            },
            #[cfg(feature = "kubernetes")]
            _watch: None,
            buckets: BTreeMap::new(),
            host: Amounts::default(),
            others: Amounts::default(),
            generation: 0,
        }
    }

    #[cfg(feature = "kubernetes")]
    fn start_watch(&mut self, config: &ContainersConfig, pods: PodDirectory) {
        let options = super::k8s::K8sOptions {
            node_name: config.node_name.clone(),
            kubeconfig: config.kubeconfig.clone(),
            in_cluster: std::env::var_os("KUBERNETES_SERVICE_HOST").is_some(),
        };
        self._watch = super::k8s::start(&options, pods);
    }

    #[cfg(not(feature = "kubernetes"))]
    fn start_watch(&mut self, config: &ContainersConfig, _pods: PodDirectory) {
        if config.kubeconfig.is_some() || std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
            log::warn!(
                "--containers: this scaph was built without the kubernetes feature: no pod names, only cgroup labels"
            );
        }
    }

    /// Folds one cycle in (every cycle, in order): labels each process of
    /// its snapshot, adds what `used` says each used during the cycle
    /// (joules, CPU seconds and grams; never negative: the accumulator
    /// refuses negative or non-finite joules, CPU time is a count of ns) to
    /// its container, and sets the snapshot's container totals.
    pub fn update(&mut self, snap: &mut Snapshot, used: impl Fn(&ProcessKey) -> Amounts) {
        self.generation += 1;
        let generation = self.generation;
        let now = Instant::now();
        if self.parsed.len() > MAX_PARSED {
            self.parsed.clear();
        }
        // Ids are resolved only for processes whose /proc path does not
        // already name a container (or that were never read: short-lived).
        let mut ids = Vec::new();
        for p in &snap.processes {
            let named = p
                .cgroup_path()
                .map(|path| &**path)
                .is_some_and(|path| self.labels_of_path(path).is_workload());
            if !named {
                ids.extend(p.cgroup_id);
            }
        }
        self.resolver.prepare(ids, now);

        let pods = self.pods.clone();
        pods.with(|pod_of| {
            for p in &mut snap.processes {
                let cgroup = self.cgroup_of(p, now);
                let pod = cgroup.pod_uid.as_deref().and_then(pod_of);
                let workload = self.labels(cgroup.clone(), pod, generation);
                let delta = used(&p.key);
                debug_assert!(
                    delta.joules >= 0.0 && delta.cpu_seconds >= 0.0 && delta.grams >= 0.0,
                    "a negative amount: {delta:?}"
                );
                if cgroup.is_workload() {
                    let key = BucketKey {
                        owner_uid: cgroup.owner_uid,
                        pod_uid: cgroup.pod_uid.clone(),
                        container_id: cgroup.container_id.clone(),
                    };
                    if let Some(bucket) = self.buckets.get_mut(&key) {
                        bucket.amounts.add(delta);
                        bucket.generation = generation;
                        bucket.workload = workload.clone();
                    } else if self.buckets.len() < MAX_CONTAINERS {
                        self.buckets.insert(
                            key,
                            Bucket {
                                workload: workload.clone(),
                                amounts: delta,
                                since: generation,
                                generation,
                            },
                        );
                    } else {
                        self.others.add(delta);
                    }
                } else {
                    self.host.add(delta);
                }
                p.workload = Some(workload);
            }
        });

        let others = &mut self.others;
        self.buckets.retain(|_, b| {
            let keep = b.generation == generation;
            if !keep {
                others.add(b.amounts);
            }
            keep
        });
        self.labelled.retain(|_, l| l.generation == generation);
        crate::util::shrink_if_sparse(&mut self.labelled);

        snap.containers = Some(ContainerTotals {
            containers: self
                .buckets
                .values()
                .map(|b| ContainerSeries {
                    workload: b.workload.clone(),
                    amounts: b.amounts,
                    since: b.since,
                })
                .collect(),
            host: self.host,
            others: self.others,
            healthy: self.resolver.healthy(),
            seconds: now.elapsed().as_secs_f64(),
        });
    }

    /// The labels of `cgroup` with `pod`, shared while both stay the same;
    /// marks them used in update `generation`.
    fn labels(
        &mut self,
        cgroup: Arc<CgroupLabels>,
        pod: Option<Arc<PodMeta>>,
        generation: u64,
    ) -> Arc<Workload> {
        let key = (
            Arc::as_ptr(&cgroup) as usize,
            pod.as_ref().map_or(0, |p| Arc::as_ptr(p) as usize),
        );
        let labelled = self.labelled.entry(key).or_insert_with(|| Labelled {
            workload: Arc::new(workload(&cgroup, pod.as_deref())),
            _cgroup: cgroup,
            _pod: pod,
            generation,
        });
        labelled.generation = generation;
        labelled.workload.clone()
    }

    /// The cgroup labels of a process: from its `/proc/PID/cgroup` path when
    /// that names a container, else from the id the kernel recorded (the
    /// only source for processes that exited before they could be read).
    /// The path wins because the kernel program keeps the cgroup a process
    /// had when it first ran on each CPU, and runtimes move their init into
    /// the container's cgroup only after it started.
    fn cgroup_of(&mut self, p: &ProcessSnapshot, now: Instant) -> Arc<CgroupLabels> {
        let from_path = p
            .cgroup_path()
            .map(|path| &**path)
            .map(|path| self.labels_of_path(path));
        if let Some(labels) = &from_path {
            if labels.is_workload() {
                return labels.clone();
            }
        }
        let from_id = p
            .cgroup_id
            .and_then(|id| self.resolver.get(id, now))
            .map(|path| self.labels_of_path(&path));
        match (from_path, from_id) {
            (_, Some(id)) if id.is_workload() => id,
            (Some(path), _) => path,
            (None, Some(id)) => id,
            (None, None) => self.unknown.clone(),
        }
    }

    fn labels_of_path(&mut self, path: &str) -> Arc<CgroupLabels> {
        if let Some(labels) = self.parsed.get(path) {
            return labels.clone();
        }
        let labels = Arc::new(parse(path, &self.trees));
        self.parsed.insert(Arc::from(path), labels.clone());
        labels
    }
}

/// For tests built on snapshots of totals (the golden fixture): feeds a
/// [`Tracker`] each process's growth since the previous snapshot, as the
/// agent would have fed it cycle by cycle.
#[cfg(test)]
#[derive(Debug)]
pub(crate) struct FromTotals {
    pub tracker: Tracker,
    last: HashMap<ProcessKey, Amounts>,
}

#[cfg(test)]
impl FromTotals {
    pub fn new(tracker: Tracker) -> Self {
        Self {
            tracker,
            last: HashMap::new(),
        }
    }

    pub fn update(&mut self, snap: &mut Snapshot) {
        let mut used = HashMap::new();
        for p in &snap.processes {
            let now = Amounts {
                joules: p.energy.map_or(0.0, |e| e.joules_total),
                cpu_seconds: p.cpu_seconds_total,
                grams: p.co2_grams_total,
            };
            let last = self.last.entry(p.key).or_default();
            used.insert(p.key, Amounts::advance(last, now));
        }
        self.last.retain(|k, _| used.contains_key(k));
        self.tracker
            .update(snap, |k| used.get(k).copied().unwrap_or_default());
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::HashSet, os::unix::fs::MetadataExt as _};

    use proptest::prelude::*;

    use super::*;
    use crate::{
        containers::pods::{ContainerMeta, PodMeta},
        model::ProcessMeta,
        snapshot::Energy,
    };

    const ID_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const ID_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    const UID: &str = "8b0c9a2e-4d3f-4e6a-9b1c-2d3e4f5a6b7c";

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-6 * (1.0 + a.abs().max(b.abs()))
    }

    fn process(
        pid: u32,
        path: Option<String>,
        id: Option<u64>,
        joules: f64,
        cpu: f64,
        exited: bool,
    ) -> ProcessSnapshot {
        ProcessSnapshot {
            key: ProcessKey { pid, start_ns: 1 },
            comm: format!("p{pid}").into(),
            meta: path.map(|path| {
                Arc::new(ProcessMeta {
                    cgroup_path: Some(Arc::from(path)),
                    ..ProcessMeta::default()
                })
            }),
            cgroup_id: id,
            cpu_seconds_total: cpu,
            cpu_ratio: 0.0,
            energy: Some(Energy {
                joules_total: joules,
                watts: 0.0,
            }),
            co2_grams_total: 0.0,
            exited,
            memory: None,
            workload: None,
        }
    }

    /// What one update gave: the container totals, and each process's labels.
    struct View {
        containers: Vec<(Arc<Workload>, Amounts)>,
        since: Vec<u64>,
        host: Amounts,
        others: Amounts,
        by_process: HashMap<ProcessKey, Arc<Workload>>,
    }

    fn run(t: &mut FromTotals, mut snap: Snapshot) -> View {
        t.update(&mut snap);
        let totals = snap.containers.take().expect("container totals");
        View {
            since: totals.containers.iter().map(|c| c.since).collect(),
            containers: totals
                .containers
                .into_iter()
                .map(|c| (c.workload, c.amounts))
                .collect(),
            host: totals.host,
            others: totals.others,
            by_process: snap
                .processes
                .into_iter()
                .map(|p| (p.key, p.workload.expect("labelled")))
                .collect(),
        }
    }

    fn snapshot(processes: Vec<ProcessSnapshot>, retired_joules: f64) -> Snapshot {
        Snapshot::of_processes(
            processes,
            retired_joules,
            crate::snapshot::CpuTimeMethod::BpfRuntime,
        )
    }

    fn no_cgroupfs() -> ContainersConfig {
        ContainersConfig {
            cgroup_root: "/nonexistent".into(),
            ..ContainersConfig::default()
        }
    }

    fn docker(id: &str) -> Option<String> {
        Some(format!("/system.slice/docker-{id}.scope"))
    }

    /// A user's cgroup named after a real container: host energy, not the
    /// container's; with `--containers-rootless`, a container of its own,
    /// owned by the user, never merged with the real one.
    #[test]
    fn a_users_lookalike_never_joins_a_real_container() {
        let fake = Some(format!(
            "/user.slice/user-1000.slice/user@1000.service/app.slice/docker-{ID_A}.scope"
        ));
        let processes = || {
            vec![
                process(1, docker(ID_A), None, 10.0, 1.0, false),
                process(2, fake.clone(), None, 4.0, 0.4, false),
            ]
        };
        let mut t = FromTotals::new(Tracker::with_pods(&no_cgroupfs(), PodDirectory::default()));
        let v = run(&mut t, snapshot(processes(), 0.0));
        assert_eq!(v.containers.len(), 1);
        assert!(close(v.containers[0].1.joules, 10.0));
        assert!(close(v.host.joules, 4.0));
        assert!(!v.by_process[&ProcessKey {
            pid: 2,
            start_ns: 1
        }]
            .is_workload());

        let rootless = ContainersConfig {
            rootless: true,
            ..no_cgroupfs()
        };
        let mut t = FromTotals::new(Tracker::with_pods(&rootless, PodDirectory::default()));
        let v = run(&mut t, snapshot(processes(), 0.0));
        assert_eq!(v.containers.len(), 2);
        let owners: Vec<(Option<u32>, f64)> = v
            .containers
            .iter()
            .map(|(w, a)| (w.owner_uid, a.joules))
            .collect();
        assert!(
            owners.contains(&(None, 10.0)) && owners.contains(&(Some(1000), 4.0)),
            "{owners:?}"
        );
    }

    #[test]
    fn processes_are_grouped_by_container_and_the_totals_hold() {
        let mut t = FromTotals::new(Tracker::with_pods(&no_cgroupfs(), PodDirectory::default()));
        let pod = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{ID_B}.scope",
            UID.replace('-', "_")
        );
        let v = run(
            &mut t,
            snapshot(
                vec![
                    process(1, docker(ID_A), None, 10.0, 1.0, false),
                    process(2, docker(ID_A), None, 5.0, 0.5, false),
                    process(3, Some(pod.clone()), None, 7.0, 0.7, false),
                    process(
                        4,
                        Some("/system.slice/ssh.service".into()),
                        None,
                        1.0,
                        0.1,
                        false,
                    ),
                    process(5, None, None, 2.0, 0.2, false),
                ],
                0.0,
            ),
        );
        assert_eq!(v.containers.len(), 2);
        let a = v
            .containers
            .iter()
            .find(|(w, _)| w.container_id.as_deref() == Some(ID_A))
            .expect("A");
        assert!(close(a.1.joules, 15.0) && close(a.1.cpu_seconds, 1.5));
        let b = v
            .containers
            .iter()
            .find(|(w, _)| w.pod_uid.as_deref() == Some(UID))
            .expect("pod");
        assert!(close(b.1.joules, 7.0));
        assert!(
            close(v.host.joules, 3.0),
            "ssh and the unknown process are host processes"
        );
        assert_eq!(v.others, Amounts::default());
        assert_eq!(
            v.by_process[&ProcessKey {
                pid: 4,
                start_ns: 1
            }]
                .systemd_unit
                .as_deref(),
            Some("ssh.service")
        );

        // Container A's processes exit: its series stays while they are reported...
        let v = run(
            &mut t,
            snapshot(
                vec![
                    process(1, docker(ID_A), None, 12.0, 1.2, true),
                    process(2, docker(ID_A), None, 5.0, 0.5, true),
                    process(3, Some(pod), None, 9.0, 0.9, false),
                ],
                3.0,
            ),
        );
        let a = v
            .containers
            .iter()
            .find(|(w, _)| w.container_id.as_deref() == Some(ID_A))
            .expect("A kept");
        assert!(
            close(a.1.joules, 17.0),
            "exited processes' energy stays: {:?}",
            a.1
        );
        // ...and moves into `others` when they are retired.
        let v = run(&mut t, snapshot(vec![], 3.0 + 17.0 + 9.0));
        assert!(v.containers.is_empty());
        assert!(close(v.others.joules, 26.0), "{:?}", v.others);
        assert!(close(v.host.joules, 3.0));
    }

    /// A container that comes back after its totals moved into `others`
    /// starts a new series: from 0, with a new `since`.
    #[test]
    fn a_container_that_comes_back_starts_a_new_series() {
        let mut t = FromTotals::new(Tracker::with_pods(&no_cgroupfs(), PodDirectory::default()));
        let in_a = |pid, joules| process(pid, docker(ID_A), None, joules, 0.0, false);
        let first = run(&mut t, snapshot(vec![in_a(1, 30.0)], 0.0)).since;
        let again = run(&mut t, snapshot(vec![in_a(1, 31.0)], 0.0)).since;
        assert_eq!(first, again, "one series while it stays");
        let gone = run(&mut t, snapshot(vec![], 31.0));
        assert!(gone.containers.is_empty() && close(gone.others.joules, 31.0));
        let back = run(&mut t, snapshot(vec![in_a(2, 2.0)], 31.0));
        assert!(close(back.containers[0].1.joules, 2.0));
        assert!(back.since[0] > first[0], "{:?} after {first:?}", back.since);
    }

    /// Labels are kept only while some process uses them: every pod watch
    /// event makes new ones, and the old ones must not pile up.
    #[test]
    fn labels_no_process_uses_are_dropped() {
        let pods = PodDirectory::default();
        let meta = |name: &str| PodMeta {
            name: name.into(),
            namespace: "shop".into(),
            containers: Vec::new(),
        };
        let mut t = FromTotals::new(Tracker::with_pods(&no_cgroupfs(), pods.clone()));
        let path = format!("/kubepods/burstable/pod{UID}/{ID_A}");
        for i in 0..100 {
            pods.apply(UID.into(), meta(&format!("web-{i}")));
            let v = run(
                &mut t,
                snapshot(
                    vec![process(1, Some(path.clone()), None, 1.0, 0.1, false)],
                    0.0,
                ),
            );
            assert_eq!(
                v.containers[0].0.pod_name.as_deref(),
                Some(format!("web-{i}").as_str())
            );
        }
        assert_eq!(t.tracker.labelled.len(), 1);
    }

    #[test]
    fn the_path_wins_unless_only_the_id_names_a_container() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("cgroup.controllers"), "").expect("controllers");
        let scope = dir.path().join(format!("system.slice/docker-{ID_B}.scope"));
        std::fs::create_dir_all(&scope).expect("scope");
        let scope_id = std::fs::metadata(&scope).expect("stat").ino();
        let root_id = std::fs::metadata(dir.path()).expect("stat").ino();
        let config = ContainersConfig {
            cgroup_root: dir.path().into(),
            ..ContainersConfig::default()
        };
        let mut t = FromTotals::new(Tracker::with_pods(&config, PodDirectory::default()));
        let v = run(
            &mut t,
            snapshot(
                vec![
                    // Short-lived: never read from /proc, only the kernel's id.
                    process(1, None, Some(scope_id), 1.0, 0.1, true),
                    // Read from /proc after its runtime moved it: the kernel still has the old id.
                    process(2, docker(ID_A), Some(root_id), 1.0, 0.1, false),
                    // The /proc read happened before the move; the id knows better.
                    process(
                        3,
                        Some("/system.slice/containerd.service".into()),
                        Some(scope_id),
                        1.0,
                        0.1,
                        false,
                    ),
                ],
                0.0,
            ),
        );
        let id_of = |pid| {
            v.by_process[&ProcessKey { pid, start_ns: 1 }]
                .container_id
                .clone()
        };
        assert_eq!(id_of(1).as_deref(), Some(ID_B));
        assert_eq!(id_of(2).as_deref(), Some(ID_A));
        assert_eq!(id_of(3).as_deref(), Some(ID_B));
    }

    #[test]
    fn pod_names_come_from_the_directory() {
        let pods = PodDirectory::default();
        pods.apply(
            UID.into(),
            PodMeta {
                name: "web-1".into(),
                namespace: "shop".into(),
                containers: vec![ContainerMeta {
                    id: ID_A.into(),
                    name: "nginx".into(),
                    runtime: None,
                }],
            },
        );
        let mut t = FromTotals::new(Tracker::with_pods(&no_cgroupfs(), pods));
        let path = format!("/kubepods/burstable/pod{UID}/{ID_A}");
        let v = run(
            &mut t,
            snapshot(vec![process(1, Some(path), None, 1.0, 0.1, false)], 0.0),
        );
        let w = &v.containers[0].0;
        assert_eq!(
            (
                w.pod_name.as_deref(),
                w.pod_namespace.as_deref(),
                w.container_name.as_deref()
            ),
            (Some("web-1"), Some("shop"), Some("nginx"))
        );
        assert_eq!(
            w.container_runtime, None,
            "cgroupfs path and no runtime in the status"
        );
    }

    #[test]
    fn beyond_the_cap_containers_count_in_others() {
        let mut t = FromTotals::new(Tracker::with_pods(&no_cgroupfs(), PodDirectory::default()));
        let procs: Vec<ProcessSnapshot> = (0..MAX_CONTAINERS as u32 + 5)
            .map(|i| process(i, docker(&format!("{i:064x}")), None, 1.0, 0.0, false))
            .collect();
        let v = run(&mut t, snapshot(procs, 0.0));
        assert_eq!(v.containers.len(), MAX_CONTAINERS);
        assert!(close(v.others.joules, 5.0));
    }

    /// Processes spawn, run, move between containers, exit and retire; the
    /// series never decrease and always add up to everything reported.
    #[derive(Clone, Debug)]
    enum Step {
        Spawn(u8),
        Run(usize, f64),
        Move(usize, u8),
        Exit(usize),
        Retire(usize),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (0u8..5).prop_map(Step::Spawn),
            (0usize..12, 0.0f64..20.0).prop_map(|(i, j)| Step::Run(i, j)),
            (0usize..12, 0u8..5).prop_map(|(i, c)| Step::Move(i, c)),
            (0usize..12).prop_map(Step::Exit),
            (0usize..12).prop_map(Step::Retire),
        ]
    }

    fn path_of(container: u8) -> Option<String> {
        match container {
            0 => None,
            1 => Some("/system.slice/cron.service".into()),
            c => docker(&format!("{c:064x}")),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        #[test]
        fn series_never_decrease_and_add_up(steps in prop::collection::vec(step(), 1..60)) {
            let mut t = FromTotals::new(Tracker::with_pods(&no_cgroupfs(), PodDirectory::default()));
            // pid -> (container, joules, exited)
            let mut live: BTreeMap<u32, (u8, f64, bool)> = BTreeMap::new();
            let (mut retired, mut next_pid) = (0.0, 1u32);
            let mut before: HashMap<String, f64> = HashMap::new();
            for s in steps {
                match s {
                    Step::Spawn(c) => { live.insert(next_pid, (c, 0.0, false)); next_pid += 1; }
                    Step::Run(i, j) => if let Some(v) = live.values_mut().filter(|v| !v.2).nth(i) { v.1 += j; },
                    Step::Move(i, c) => if let Some(v) = live.values_mut().filter(|v| !v.2).nth(i) { v.0 = c; },
                    Step::Exit(i) => if let Some(v) = live.values_mut().nth(i) { v.2 = true; },
                    Step::Retire(i) => {
                        let pid = live.iter().filter(|(_, v)| v.2).map(|(k, _)| *k).nth(i);
                        if let Some(pid) = pid { retired += live.remove(&pid).map_or(0.0, |v| v.1); }
                    }
                }
                let procs = live.iter().map(|(&pid, &(c, j, exited))| process(pid, path_of(c), None, j, j / 10.0, exited)).collect();
                let v = run(&mut t, snapshot(procs, retired));
                let total: f64 = retired + live.values().map(|v| v.1).sum::<f64>();
                let sum: f64 = v.containers.iter().map(|(_, a)| a.joules).sum::<f64>() + v.host.joules + v.others.joules;
                prop_assert!(close(sum, total), "{} != {}", sum, total);
                let mut now: HashMap<String, f64> = v.containers.iter()
                    .map(|(w, a)| (w.container_id.clone().unwrap_or_default(), a.joules)).collect();
                now.insert("host".into(), v.host.joules);
                now.insert("others".into(), v.others.joules);
                for (name, value) in &now {
                    if let Some(old) = before.get(name) { prop_assert!(*value >= *old, "{} went from {} to {}", name, old, value); }
                }
                // A container that left keeps its last value in `others`; a new series for it starts over.
                let names: HashSet<&String> = now.keys().collect();
                before.retain(|k, _| names.contains(k));
                before.extend(now);
            }
        }
    }
}
