//! What the container tests share: real cgroups shaped like a runtime's,
//! removed when dropped; workloads started inside them with their CPU time
//! as ground truth; and a small reader of the Prometheus text format.
#![allow(dead_code)] // each test file uses a different part

use std::{
    collections::BTreeMap,
    fs,
    io::Read as _,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{SystemTime, UNIX_EPOCH},
};

/// The unified (v2) hierarchy: `/sys/fs/cgroup` on a v2 host,
/// `/sys/fs/cgroup/unified` on a hybrid one. It is where the kernel
/// program's cgroup ids live.
pub fn unified_root() -> PathBuf {
    let root = Path::new("/sys/fs/cgroup");
    if root.join("cgroup.controllers").exists() {
        root.to_path_buf()
    } else if root.join("unified/cgroup.controllers").exists() {
        root.join("unified")
    } else {
        panic!("no cgroup v2 hierarchy at /sys/fs/cgroup or /sys/fs/cgroup/unified")
    }
}

/// 64 hex digits, different on every call (a container id).
pub fn container_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let seed = format!("{nanos:032x}{:08x}", std::process::id());
    let mut id = String::new();
    let mut state = u64::from_str_radix(&seed[seed.len() - 16..], 16).unwrap_or(1) | 1;
    while id.len() < 64 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        id.push_str(&format!("{state:016x}"));
    }
    id.truncate(64);
    id
}

/// A pod UID (8-4-4-4-12 hex digits) from a container id's digits.
pub fn pod_uid() -> String {
    let h = container_id();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// A tree of cgroups below one test directory of the unified hierarchy.
/// Dropping it moves any process left inside back to the root and removes
/// the directories, deepest first.
pub struct CgroupTree {
    root: PathBuf,
    top: PathBuf,
    created: Vec<PathBuf>,
}

impl CgroupTree {
    /// `<unified>/<name>`; everything the test creates goes below it, so a
    /// real kubelet or systemd never sees a stray pod or scope of ours.
    pub fn new(name: &str) -> Self {
        let root = unified_root();
        let top = root.join(name);
        let mut tree = Self {
            root,
            top: top.clone(),
            created: Vec::new(),
        };
        tree.mkdir(&top);
        tree
    }

    pub fn top(&self) -> &Path {
        &self.top
    }

    /// `--containers-cgroup-prefix` and the test directory: the runtimes'
    /// trees the test creates are nested below it, and count only with it.
    pub fn prefix_args(&self) -> [String; 2] {
        [
            "--containers-cgroup-prefix".to_owned(),
            self.cgroup_path(&self.top),
        ]
    }

    /// Creates `relative` (and its parents) below the test directory.
    pub fn create(&mut self, relative: &str) -> PathBuf {
        let mut dir = self.top.clone();
        for part in relative.split('/').filter(|p| !p.is_empty()) {
            dir.push(part);
            if !dir.exists() {
                self.mkdir(&dir);
            }
        }
        dir
    }

    fn mkdir(&mut self, dir: &Path) {
        fs::create_dir(dir).unwrap_or_else(|e| panic!("creating cgroup {}: {e}", dir.display()));
        self.created.push(dir.to_path_buf());
    }

    /// The path of `dir` as `/proc/PID/cgroup` shows it.
    pub fn cgroup_path(&self, dir: &Path) -> String {
        format!(
            "/{}",
            dir.strip_prefix(&self.root)
                .expect("below the root")
                .display()
        )
    }

    /// Removes one empty cgroup now (a container that finished and was deleted).
    pub fn remove(&mut self, dir: &Path) {
        fs::remove_dir(dir).unwrap_or_else(|e| panic!("removing cgroup {}: {e}", dir.display()));
        self.created.retain(|d| d != dir);
    }
}

impl Drop for CgroupTree {
    fn drop(&mut self) {
        for dir in self.created.iter().rev() {
            let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
            for pid in procs.lines() {
                let _ = fs::write(self.root.join("cgroup.procs"), pid);
            }
            let _ = fs::remove_dir(dir);
        }
    }
}

/// A workload started in a cgroup by `scaph-in-cgroup`.
pub struct Workload {
    child: Option<Child>,
}

impl Workload {
    /// Runs `scaph-burn ARGS` `count` times in a row inside `cgroup`.
    pub fn burn(cgroup: &Path, count: u32, burn_args: &[&str]) -> Self {
        let dir = scaph_integration_tests::scaph_binary()
            .parent()
            .expect("profile dir")
            .to_path_buf();
        let child = Command::new(dir.join("scaph-in-cgroup"))
            .arg(cgroup)
            .arg(count.to_string())
            .arg(dir.join("scaph-burn"))
            .args(burn_args)
            .stdout(Stdio::piped())
            .process_group(0) // its own group: dropping it stops the burners too
            .spawn()
            .expect("starting scaph-in-cgroup (built with the integration tests)");
        Self { child: Some(child) }
    }

    /// Waits for the end; returns the pids it started and the CPU time (ns)
    /// of everything that ran in the container: the init and the children
    /// it reaped, as `wait4` reports them to this process.
    pub fn finish(mut self) -> (Vec<u32>, u64) {
        let mut child = self.child.take().expect("running");
        let mut out = String::new();
        child
            .stdout
            .take()
            .expect("stdout")
            .read_to_string(&mut out)
            .expect("reading its output");
        let (status, cpu) = wait4(&child);
        std::mem::forget(child); // reaped
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "scaph-in-cgroup failed: status {status}\n{out}"
        );
        let pids = out
            .lines()
            .filter_map(|l| l.strip_prefix("pid=")?.parse().ok())
            .collect();
        (pids, cpu)
    }
}

/// Reaps `child`: its wait status and CPU time (ns, user + system), its
/// reaped descendants included.
fn wait4(child: &std::process::Child) -> (i32, u64) {
    let mut status = 0;
    // SAFETY: rusage is plain data filled by the kernel; waits for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `child` is ours and unreaped; the pointers are to live locals.
    let ret = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(
        ret,
        child.id() as i32,
        "wait4: {}",
        std::io::Error::last_os_error()
    );
    let ns = |tv: libc::timeval| tv.tv_sec as u64 * 1_000_000_000 + tv.tv_usec as u64 * 1_000;
    (status, ns(usage.ru_utime) + ns(usage.ru_stime))
}

impl Drop for Workload {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: signals the process group this workload started (its id is the helper's pid).
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
        }
    }
}

/// CPUs of socket 0 (the fake RAPL package's CPUs).
pub fn socket0_cpus() -> usize {
    let n = fs::read_dir("/sys/devices/system/cpu")
        .expect("/sys/devices/system/cpu")
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .strip_prefix("cpu")
                .is_some_and(|n| n.parse::<u32>().is_ok())
        })
        .filter(|e| {
            fs::read_to_string(e.path().join("topology/physical_package_id"))
                .is_ok_and(|id| id.trim() == "0")
        })
        .count();
    assert!(n > 0, "no CPU of socket 0");
    n
}

/// True when every online CPU belongs to socket 0.
pub fn single_socket() -> bool {
    // SAFETY: sysconf has no preconditions.
    let online = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    online > 0 && socket0_cpus() == online as usize
}

/// One sample of the text format.
#[derive(Clone, Debug)]
pub struct Series {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Series {
    pub fn label(&self, name: &str) -> &str {
        self.labels.get(name).map_or("", String::as_str)
    }
}

/// Every sample of metric `name` in an exposition.
pub fn series(exposition: &str, name: &str) -> Vec<Series> {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            let (labels, value) = if let Some(body) = rest.strip_prefix('{') {
                let end = body.rfind('}')?;
                (parse_labels(&body[..end]), body[end + 1..].trim())
            } else if rest.starts_with(' ') {
                (BTreeMap::new(), rest.trim())
            } else {
                return None;
            };
            Some(Series {
                labels,
                value: value.split(' ').next()?.parse().ok()?,
            })
        })
        .collect()
}

/// `a="x",b="y\"z"` → map (escapes undone).
fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut chars = text.chars().peekable();
    loop {
        let name: String = chars.by_ref().take_while(|&c| c != '=').collect();
        if name.is_empty() || chars.next() != Some('"') {
            break;
        }
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(other) => value.push(other),
                    None => break,
                },
                '"' => break,
                c => value.push(c),
            }
        }
        labels.insert(name.trim_start_matches(',').to_owned(), value);
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
    labels
}

/// Σ of the values of `name` over every series.
pub fn total(exposition: &str, name: &str) -> f64 {
    series(exposition, name).iter().map(|s| s.value).sum()
}
