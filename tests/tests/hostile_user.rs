//! What an ordinary local user can do to scaph, on the real kernel: the
//! attacker's processes run as `nobody` (through `setpriv`), scaph as root.
//!
//! - 20 processes with 100,000 one-character arguments each: scaph's
//!   resident memory grows by at most [`RSS_GROWTH_MAX_KIB`], and the scrape
//!   stays valid with bounded lines.
//! - `exec -a qemu-system-x86_64 … -name guest=victim`: no `vmname`, no VM
//!   tree; a root-owned look-alike still is a VM.
//! - A cgroup named like a Docker container's scope inside the user's own
//!   subtree (`user@UID.service`): no container labels; a real container's
//!   cgroup still has them; with `--containers-rootless` the look-alike is a
//!   container owned by the user.
//! - A secret argument: nowhere in the default scrape, JSON or stdout, and
//!   scaph's own options are never shown.
mod container_support;
mod exporter_support;

use std::{
    ffi::CString,
    os::unix::{fs::chown, process::CommandExt as _},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use container_support::{container_id, series, CgroupTree};
use exporter_support::{
    free_port, http_get, loopback_prometheus, promtool_check, rss_kib, scaph, wait_for, Proc,
};
use scaph_integration_tests::require_root;

/// How much scaph's resident memory may grow for the 20 long command lines.
const RSS_GROWTH_MAX_KIB: u64 = 4 * 1024;
/// `nobody` and `nogroup` (Debian).
const NOBODY: u32 = 65534;

/// A process killed and reaped when dropped.
struct Kill(Child);

impl Kill {
    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `args` run as `nobody`, with no supplementary groups.
fn as_nobody(args: &[&str]) -> Command {
    let mut command = Command::new("setpriv");
    command
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    command
}

/// A shell that wakes up five times a second (so the kernel program sees it
/// run) under the command line `argv0 -c LOOP ARGS...`.
fn looping(argv0: &str, args: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = vec![
        "bash".into(),
        "-c".into(),
        format!(r#"exec -a {argv0} bash -c 'while :; do sleep 0.2; done' "$@""#),
        "loop".into(),
    ];
    v.extend(args.iter().map(|s| (*s).to_owned()));
    v
}

fn spawn(mut command: Command) -> Kill {
    Kill(command.spawn().expect("starting a workload"))
}

/// `scaph [extra] prometheus` on a free port with the estimate sensor, step 1 s.
fn prometheus(extra: &[&str], exporter_extra: &[&str]) -> (Proc, u16) {
    let port = free_port();
    let port_arg = port.to_string();
    // Every process gets its own series, however busy the machine is.
    let mut args = vec!["-s", "estimate", "--max-processes", "100000"];
    args.extend_from_slice(extra);
    args.extend(loopback_prometheus(&port_arg));
    args.extend_from_slice(exporter_extra);
    let mut proc = scaph(&args);
    wait_for("a scrape with host energy", Duration::from_secs(30), || {
        assert!(proc.running(), "scaph exited:\n{}", proc.log());
        let body = http_get(port, "/metrics").ok()?.body;
        body.contains("\nscaph_host_energy_joules_total ")
            .then_some(())
    });
    (proc, port)
}

fn scrape(port: u16) -> String {
    http_get(port, "/metrics").expect("scrape").body
}

/// Waits until a scrape has a process series for every pid in `pids`.
fn scrape_listing(port: u16, pids: &[u32]) -> String {
    wait_for(
        "series for the test's processes",
        Duration::from_secs(30),
        || {
            let body = scrape(port);
            pids.iter()
                .all(|pid| body.contains(&format!("{{pid=\"{pid}\"")))
                .then_some(body)
        },
    )
}

/// The lines of a scrape that belong to process `pid`.
fn lines_of(body: &str, pid: u32) -> Vec<&str> {
    let needle = format!("pid=\"{pid}\"");
    body.lines().filter(|l| l.contains(&needle)).collect()
}

/// Issue 12: 20 × 100,000 one-character arguments raised scaph from 11.5 MB
/// to 118 MB. Now each command line costs at most the bound it is shown at
/// (here the largest, 4096 characters): scaph grows by a few MB at most.
#[test]
fn long_command_lines_cost_a_bounded_amount() {
    require_root();
    let (scaph, port) = prometheus(&["--cmdline-max-len", "4096"], &[]);
    std::thread::sleep(Duration::from_secs(3)); // past start-up allocations
    let before = rss_kib(scaph.pid()).expect("VmRSS");
    let mut args = vec!["bash", "-c", "sleep 120; :"];
    args.extend(std::iter::repeat_n("x", 100_000));
    let crowd: Vec<Kill> = (0..20).map(|_| spawn(as_nobody(&args))).collect();
    let pids: Vec<u32> = crowd.iter().map(Kill::pid).collect();
    let body = scrape_listing(port, &pids);
    std::thread::sleep(Duration::from_secs(5)); // as long as the issue watched
    let after = rss_kib(scaph.pid()).expect("VmRSS");
    let growth = after.saturating_sub(before);
    eprintln!("scaph VmRSS: {before} kB before, {after} kB with the 20 processes (+{growth} kB)");
    assert!(
        growth <= RSS_GROWTH_MAX_KIB,
        "scaph grew by {growth} kB (limit {RSS_GROWTH_MAX_KIB} kB)"
    );

    let info = lines_of(&body, pids[0])
        .into_iter()
        .find(|l| l.starts_with("scaph_process_info{"));
    let info = info.unwrap_or_else(|| panic!("no scaph_process_info for pid {}", pids[0]));
    assert!(
        info.contains("cmdline=\"bash -c sleep 120; : x x x"),
        "{info}"
    );
    assert!(
        info.contains("x…\"") || info.contains(" …\""),
        "cut with one mark: {}",
        &info[info.len() - 40..]
    );
    let longest = body.lines().map(str::len).max().unwrap_or(0);
    eprintln!(
        "longest scrape line: {longest} bytes; {} lines",
        body.lines().count()
    );
    assert!(longest < 4096 + 2048, "a line of {longest} bytes");
    let findings = promtool_check(&body).1;
    assert!(findings.is_empty(), "promtool: {findings}");
}

/// Anyone can call a process `qemu-system-x86_64` and name it after a VM;
/// only root's (or the hypervisor user's) is one.
#[test]
fn a_users_qemu_look_alike_is_not_a_vm() {
    require_root();
    let forged = spawn(as_nobody(
        &looping(
            "qemu-system-x86_64",
            &["-name", "guest=victim,debug-threads=on"],
        )
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>(),
    ));
    let mut root_vm = Command::new("bash");
    root_vm
        .args(&looping("qemu-system-x86_64", &["-name", "guest=trusted-vm"])[1..])
        .stdout(Stdio::null());
    let trusted = spawn(root_vm);
    std::thread::sleep(Duration::from_millis(500)); // both exec'd their final command line

    let trees = tempfile::tempdir().expect("tempdir");
    let mut qemu = scaph(&[
        "-s",
        "estimate",
        "qemu",
        "--root",
        trees.path().to_str().expect("utf-8"),
        "--step",
        "1",
    ]);
    let (scaph, port) = prometheus(&[], &["--qemu"]);
    let body = scrape_listing(port, &[forged.pid(), trusted.pid()]);
    assert!(
        lines_of(&body, trusted.pid())
            .iter()
            .any(|l| l.contains("vmname=\"trusted-vm\"")),
        "root's VM is labelled:\n{}",
        lines_of(&body, trusted.pid()).join("\n")
    );
    for line in lines_of(&body, forged.pid()) {
        assert!(!line.contains("vmname"), "{line}");
    }
    assert!(!body.contains("victim"), "no series names the victim VM");
    wait_for("the trusted VM's tree", Duration::from_secs(20), || {
        assert!(qemu.running(), "scaph qemu exited:\n{}", qemu.log());
        trees
            .path()
            .join("trusted-vm/intel-rapl:0/energy_uj")
            .exists()
            .then_some(())
    });
    let names: Vec<String> = std::fs::read_dir(trees.path())
        .expect("trees")
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    eprintln!("qemu trees: {names:?}");
    assert!(!names.iter().any(|n| n.contains("victim")), "{names:?}");
    assert!(!scaph.log().contains("panicked") && !qemu.log().contains("panicked"));
}

/// A user's own subtree is theirs to name: a cgroup there called
/// `docker-<a real container's id>.scope` is not that container.
#[test]
fn a_users_look_alike_container_cgroup_gets_no_container_labels() {
    require_root();
    let id = container_id();
    let mut tree = CgroupTree::new(&format!("scaph-test-hostile-{}", std::process::id()));
    let real = tree.create(&format!("system.slice/docker-{id}.scope"));
    let manager = format!("user.slice/user-{NOBODY}.slice/user@{NOBODY}.service");
    let fake = tree.create(&format!("{manager}/app.slice/docker-{id}.scope"));
    // Delegated to the user, as systemd does for user@UID.service.
    let mut dir = tree.top().join(&manager);
    for part in ["", "app.slice", &format!("docker-{id}.scope")] {
        dir.push(part);
        chown(&dir, Some(NOBODY), Some(NOBODY)).expect("chown");
        for file in ["cgroup.procs", "cgroup.subtree_control", "cgroup.threads"] {
            let _ = chown(dir.join(file), Some(NOBODY), Some(NOBODY));
        }
    }
    eprintln!(
        "real: {}\nfake: {}",
        tree.cgroup_path(&real),
        tree.cgroup_path(&fake)
    );
    let attacker = spawn(born_in(
        &fake,
        as_nobody(
            &looping("burn", &[])
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        ),
    ));
    let mut container = Command::new("bash");
    container
        .args(&looping("app", &[])[1..])
        .stdout(Stdio::null());
    let container = spawn(born_in(&real, container));

    let [flag, prefix] = tree.prefix_args();
    let (scaph, port) = prometheus(&["--containers", &flag, &prefix], &[]);
    let body = scrape_listing(port, &[attacker.pid(), container.pid()]);
    let processes = series(&body, "scaph_process_cpu_seconds_total");
    let of = |pid: u32| {
        processes
            .iter()
            .find(|s| s.label("pid") == pid.to_string())
            .expect("series")
    };
    assert_eq!(
        of(container.pid()).label("container_id"),
        id,
        "the real container"
    );
    assert_eq!(
        of(attacker.pid()).label("container_id"),
        "",
        "the look-alike"
    );
    assert_eq!(of(attacker.pid()).label("container_runtime"), "");
    for line in lines_of(&body, attacker.pid()) {
        assert!(!line.contains("container_"), "{line}");
    }

    // Without the prefix, the test directory is a nested tree (root in an
    // LXC payload or a delegated service could make it): nothing there counts.
    let (unnested, unnested_port) = prometheus(&["--containers"], &[]);
    let body = scrape_listing(unnested_port, &[container.pid()]);
    let real_series = series(&body, "scaph_process_cpu_seconds_total")
        .into_iter()
        .find(|s| s.label("pid") == container.pid().to_string())
        .expect("series");
    assert_eq!(
        real_series.label("container_id"),
        "",
        "system.slice below another cgroup is not the host's"
    );
    drop(unnested);

    let (rootless, rootless_port) = prometheus(
        &["--containers", "--containers-rootless", &flag, &prefix],
        &[],
    );
    let body = scrape_listing(rootless_port, &[attacker.pid()]);
    let processes = series(&body, "scaph_process_cpu_seconds_total");
    let attacker_series = processes
        .iter()
        .find(|s| s.label("pid") == attacker.pid().to_string())
        .expect("series");
    assert_eq!(attacker_series.label("container_id"), id);
    assert_eq!(
        attacker_series.label("container_owner_uid"),
        NOBODY.to_string(),
        "a rootless container, the user's"
    );
    let owned: Vec<_> = series(&body, "scaph_container_cpu_seconds_total")
        .into_iter()
        .filter(|s| s.label("container_id") == id)
        .map(|s| s.label("container_owner_uid").to_owned())
        .collect();
    eprintln!("--containers-rootless: container series for the id, by owner: {owned:?}");
    assert!(
        owned.contains(&String::new()) && owned.contains(&NOBODY.to_string()),
        "kept apart: {owned:?}"
    );
    assert!(!scaph.log().contains("panicked") && !rootless.log().contains("panicked"));
}

/// `command`, moved into the cgroup `dir` before it runs (as a runtime or
/// systemd starts it), then run as whoever it says.
fn born_in(dir: &Path, mut command: Command) -> Command {
    let procs = CString::new(
        dir.join("cgroup.procs")
            .into_os_string()
            .into_encoded_bytes(),
    )
    .expect("path");
    // SAFETY: between fork and exec the hook calls only async-signal-safe
    // functions (open, write, close) on memory allocated before the fork.
    unsafe {
        command.pre_exec(move || {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let written = libc::write(fd, b"0".as_ptr().cast(), 1);
            libc::close(fd);
            if written != 1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command
}

/// Issue 13: command lines can hold secrets, so the default output has
/// none; and scaph's own options never show, even when command lines do.
#[test]
fn a_secret_argument_is_in_no_default_output() {
    require_root();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let secret = format!("hunter2-{}-{nanos}", std::process::id());
    let own_secret = format!("token-{nanos}-{}", std::process::id());
    let password = format!("--password={secret}");
    let victim = spawn(as_nobody(
        &looping("app", &[&password])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    ));
    wait_for(
        "the workload to carry the secret",
        Duration::from_secs(10),
        || {
            let cmdline =
                std::fs::read(format!("/proc/{}/cmdline", victim.pid())).unwrap_or_default();
            String::from_utf8_lossy(&cmdline)
                .contains(&secret)
                .then_some(())
        },
    );
    let pid = victim.pid().to_string();

    let (prom, port) = prometheus(&["--node-name", &own_secret], &[]);
    let body = scrape_listing(port, &[victim.pid()]);
    drop(prom);
    let run = |args: &[&str]| {
        let mut proc = scaph(args);
        proc.wait(Duration::from_secs(30));
        proc.log()
    };
    let json = run(&[
        "-s",
        "estimate",
        "--node-name",
        &own_secret,
        "json",
        "-t",
        "4",
        "-s",
        "1",
        "--max-top-consumers",
        "1000",
    ]);
    let stdout = run(&[
        "-s", "estimate", "stdout", "-t", "4", "-s", "1", "-p", "1000",
    ]);
    for (name, text) in [("prometheus", &body), ("json", &json), ("stdout", &stdout)] {
        assert!(text.contains(&pid), "{name} lists the process");
        assert!(!text.contains(&secret), "{name} shows the secret argument");
        assert!(
            !text.contains(&own_secret),
            "{name} shows scaph's own option"
        );
    }
    // Asked for, command lines show (so the checks above could fail), but
    // scaph's own never carries its options.
    let shown = run(&[
        "-s",
        "estimate",
        "--cmdline-max-len",
        "4096",
        "--node-name",
        &own_secret,
        "json",
        "-t",
        "4",
        "-s",
        "1",
        "--max-top-consumers",
        "1000",
    ]);
    assert!(
        shown.contains(&secret),
        "--cmdline-max-len shows command lines"
    );
    assert!(
        !shown.contains(&own_secret),
        "scaph's own options never show"
    );
    assert!(
        shown.contains("\"cmdline\":\"scaph json\""),
        "scaph's own command line is its exporter"
    );
}
