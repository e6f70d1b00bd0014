//! The hypervisor → guest round trip on the real kernel.
//!
//! Hypervisor: `scaph qemu` with a fake RAPL package of known power, and a
//! process whose command line looks like a libvirt VM named `vm1`. Guest: a
//! second `scaph --vm` whose tree is the one written for vm1. The VM-like
//! process is first seen (a short burn), then idles while the guest starts,
//! then burns one CPU for a known time, then idles; the guest runs across
//! everything that follows.
//!
//! Then the VM restarts (a new qemu process of the same name) and burns again
//! while the hypervisor is killed (SIGKILL) and restarted.
//!
//! Checked: the tree's layout; the counter is in microjoules (one burn of
//! known CPU time adds its exact share of the package's energy, not that
//! divided by the step as with Scaphandre's #428); no read ever sees a torn
//! number; it never goes backwards, restarts included; and the energy the
//! guest reports as its host energy equals what the hypervisor wrote for vm1
//! over the same time, within 2 %.
use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use scaph_integration_tests::{
    powercap::{FakeRapl, MAX_RANGE_UJ},
    require_root, scaph_binary,
};

const WATTS: f64 = 40.0;
/// Hypervisor step, seconds: not 1, so that µW written as µJ would show.
const HV_STEP: u64 = 2;
/// First burn (checks the unit), then a second one across a hypervisor restart.
const BURN_MS: u64 = 6_000;
const BURN2_MS: u64 = 8_000;
const PAUSE_MS: u64 = 8_000;
/// When the main burn starts, after the VM-like process was started.
const BURN_START: Duration = Duration::from_millis(300 + PAUSE_MS);

/// Kills and reaps a child when dropped.
struct Guard(Child);

impl Guard {
    fn signal(&mut self, sig: i32) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.0.id() as i32, sig) };
    }

    fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.0.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `scaph qemu` on the fake package, returned once its CPU time source is
/// open (the kernel program attached). A process that ran only before that
/// and then sleeps is not seen until it runs again, so the VM must start
/// after this. Its log goes on to the test's stderr.
fn hypervisor(rapl: &FakeRapl, root: &Path) -> Guard {
    let mut child = Command::new(scaph_binary())
        .args(["--no-header", "-v"])
        .args(rapl.scaph_args())
        .args(["-s", "powercap_rapl", "qemu", "--root"])
        .arg(root)
        .args(["--step", &HV_STEP.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting scaph qemu");
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().expect("piped stderr");
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)).map_while(Result::ok) {
            eprintln!("[hypervisor] {line}");
            if line.contains("CPU time source:") {
                let _ = ready_tx.send(());
            }
        }
    });
    let started = Instant::now();
    ready_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("scaph qemu opened its CPU time source");
    eprintln!("hypervisor ready after {:?}", started.elapsed());
    Guard(child)
}

/// (time, value) of the counter, sampled every 10 ms by a thread.
struct Sampler {
    samples: Arc<Mutex<Vec<(Instant, u64)>>>,
    /// Contents that were not a number (a torn write would show here).
    bad: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    fn start(file: PathBuf) -> Self {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let bad = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (samples, bad, stop) = (samples.clone(), bad.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(text) = std::fs::read_to_string(&file) {
                        match text.strip_suffix('\n').and_then(|t| t.parse::<u64>().ok()) {
                            Some(value) => samples.lock().unwrap().push((Instant::now(), value)),
                            None => bad.lock().unwrap().push(text),
                        }
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            })
        };
        Self {
            samples,
            bad,
            stop,
            thread: Some(thread),
        }
    }

    fn snapshot(&self) -> Vec<(Instant, u64)> {
        self.samples.lock().unwrap().clone()
    }

    /// The last value, once it has not changed for `quiet`.
    fn wait_quiet(&self, quiet: Duration, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        loop {
            let samples = self.snapshot();
            if let Some(&(_, last)) = samples.last() {
                let since = samples
                    .iter()
                    .rev()
                    .take_while(|(_, v)| *v == last)
                    .last()
                    .map(|(t, _)| *t);
                if since.is_some_and(|t| t.elapsed() >= quiet) {
                    return last;
                }
            }
            assert!(
                Instant::now() < deadline,
                "the counter did not settle within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// CPUs of the fake package's one socket (`FakeRapl::sys_root`).
fn cpus() -> f64 {
    FakeRapl::cpus() as f64
}

/// The guest's host energy in joules since it started (the `energy_joules`
/// of its last JSON line), how many lines it wrote, and whether every line
/// names the hypervisor's tree as its sensor.
fn guest_joules(stdout: &str) -> (f64, usize, bool) {
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let joules = lines
        .iter()
        .filter_map(|l| l["host"]["energy_joules"].as_f64())
        .next_back()
        .unwrap_or(0.0);
    let from_vm = lines.iter().all(|l| l["sensor"] == "vm");
    (joules, lines.len(), from_vm)
}

/// A process that looks like the libvirt VM `vm1`: the burner with `args`,
/// pinned to CPU 1, its command line `qemu-system-x86_64 ... -name guest=vm1,...`.
fn vm_process(args: &[&str]) -> Guard {
    let burner = scaph_binary().with_file_name("scaph-burn");
    let child = Command::new("bash")
        .args(["-c", r#"exec -a qemu-system-x86_64 "$0" "$@""#])
        .arg(&burner)
        .args(["--cpu", "1"])
        .args(args)
        .args([
            "--sleep-ms",
            "120000",
            "--",
            "-name",
            "guest=vm1,debug-threads=on",
            "-S",
        ])
        .stdout(Stdio::null())
        .spawn()
        .expect("starting the VM-like process");
    Guard(child)
}

#[test]
fn qemu_round_trip_in_microjoules_never_backwards() {
    require_root();
    let rapl = FakeRapl::start(WATTS, 0);
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("scaphandre");
    let mut hv = hypervisor(&rapl, &root);

    // Phase 1. The VM is seen (300 ms burn), idles PAUSE_MS, burns BURN_MS
    // on CPU 1, then idles.
    let mut vm = vm_process(&[
        "--warmup-ms",
        "300",
        "--pause-ms",
        &PAUSE_MS.to_string(),
        "--ms",
        &BURN_MS.to_string(),
    ]);
    let started = Instant::now();
    let tree = root.join("vm1");
    let counter = tree.join("intel-rapl:0/energy_uj");
    wait_until(
        "the tree of vm1",
        Duration::from_secs(2 * HV_STEP + 10),
        || counter.is_file(),
    );
    let sampler = Sampler::start(counter.clone());

    // The tree a guest reads.
    let zone = tree.join("intel-rapl:0");
    assert_eq!(
        std::fs::read_to_string(zone.join("name")).unwrap().trim(),
        "package-0"
    );
    let range: u64 = std::fs::read_to_string(zone.join("max_energy_range_uj"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(range, MAX_RANGE_UJ);
    assert!(tree.join("intel-rapl:0:0").is_dir(), "domain folder");

    // The guest starts while the VM idles, once the warm-up's energy is
    // written: its baseline is the idle value.
    let quiet = Duration::from_millis(HV_STEP * 1000 + 500);
    let baseline = sampler.wait_quiet(quiet, Duration::from_secs(8));
    assert!(
        started.elapsed() + Duration::from_millis(1500) < BURN_START,
        "the guest must start before the burn"
    );
    let guest = Command::new(scaph_binary())
        .args(["--no-header", "--fallback-procfs", "--vm", "--vm-path"])
        .arg(&tree)
        .args(["json", "-t", "90", "-s", "1", "--max-top-consumers", "1"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting the guest scaph");
    let mut guest = Guard(guest);
    // The guest's JSON, read as it arrives (the check below waits on it).
    let out = Arc::new(Mutex::new(String::new()));
    let reader = {
        let (out, stdout) = (out.clone(), guest.0.stdout.take().expect("piped stdout"));
        std::thread::spawn(move || {
            for line in
                std::io::BufRead::lines(std::io::BufReader::new(stdout)).map_while(Result::ok)
            {
                let mut out = out.lock().unwrap();
                out.push_str(&line);
                out.push('\n');
            }
        })
    };

    // The burn's energy, in µJ: the fake package draws WATTS over all CPUs,
    // so BURN_MS of one CPU is worth WATTS × BURN_MS / CPUs. (Scaphandre's
    // microwatts-as-microjoules would give 1/HV_STEP of it.)
    wait_until("the burn", Duration::from_secs(30), || {
        started.elapsed() >= BURN_START + Duration::from_millis(BURN_MS)
    });
    // A loaded machine stretches the burn in wall time: wait for it.
    let after_burn = sampler.wait_quiet(quiet, Duration::from_secs(30));
    let burn_joules = (after_burn - baseline) as f64 / 1e6;
    let expected = WATTS * BURN_MS as f64 / 1000.0 / cpus();
    let ratio = burn_joules / expected;
    eprintln!(
        "energy_uj grew by {burn_joules:.3} J for {BURN_MS} ms of one CPU ({expected:.3} J expected, ratio {ratio:.4})"
    );
    // The bound only has to tell µJ from Scaphandre's µW-per-step (ratio
    // 1/HV_STEP = 0.5) or a wrong power of ten. On a quiet machine the ratio
    // is within 0.5 % of 1; heavy load from other programs (thousands of
    // processes, switch storms) was seen to move one 6 s burn by up to 30 %,
    // which is the agent's attribution, checked elsewhere (energy_e2e).
    assert!(
        (0.7..1.4).contains(&ratio),
        "{burn_joules:.3} J, expected {expected:.3} J: the counter must be in µJ"
    );

    // Phase 2. The VM restarts (a new qemu process, same name) and burns
    // again; meanwhile the hypervisor is killed and restarted.
    drop(vm);
    vm = vm_process(&["--ms", &BURN2_MS.to_string()]);
    let burn2 = Instant::now();
    wait_until("the second burn", Duration::from_secs(10), || {
        burn2.elapsed() >= Duration::from_millis(BURN2_MS / 2)
    });
    hv.signal(libc::SIGKILL);
    hv.wait_exit(Duration::from_secs(5)).expect("killed");
    let before_restart = sampler.snapshot().last().unwrap().1;
    std::thread::sleep(Duration::from_millis(1000));
    let mut hv = hypervisor(&rapl, &root);
    wait_until(
        "a write after the restart",
        Duration::from_secs(3 * HV_STEP + 15),
        || {
            sampler
                .snapshot()
                .last()
                .is_some_and(|&(_, v)| v > before_restart)
        },
    );

    // After the burn, once the counter settled: what the guest saw.
    wait_until("the second burn's end", Duration::from_secs(20), || {
        burn2.elapsed() >= Duration::from_millis(BURN2_MS)
    });
    let end = sampler.wait_quiet(quiet, Duration::from_secs(20));
    let written = (end - baseline) as f64 / 1e6;
    // The guest reads the settled counter on its next cycles (1 s each):
    // wait until it reported it, then stop it. A guest that never catches
    // up fails the 0.01 % check below, with its output.
    let caught_up = Instant::now() + Duration::from_secs(15);
    while Instant::now() < caught_up {
        let (seen, _, _) = guest_joules(&out.lock().unwrap());
        if (seen - written).abs() / written < 1e-4 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    guest.signal(libc::SIGINT);
    let status = guest
        .wait_exit(Duration::from_secs(10))
        .expect("the guest stops on SIGINT");
    assert!(status.success(), "guest: {status}");
    reader.join().expect("the guest's output");
    let out = std::mem::take(&mut *out.lock().unwrap());
    drop(vm);

    assert!(
        sampler.bad.lock().unwrap().is_empty(),
        "torn reads: {:?}",
        sampler.bad.lock().unwrap()
    );
    let samples = sampler.snapshot();
    eprintln!(
        "{} reads of energy_uj, {} → {} µJ",
        samples.len(),
        samples[0].1,
        end
    );
    for pair in samples.windows(2) {
        assert!(
            pair[1].1 >= pair[0].1,
            "energy_uj went backwards: {} then {}",
            pair[0].1,
            pair[1].1
        );
    }
    assert!(
        end > after_burn,
        "the restarted hypervisor continued the counter"
    );

    let (seen, cycles, from_vm) = guest_joules(&out);
    eprintln!(
        "hypervisor wrote {written:.6} J for vm1 while the guest ran; the guest reported {seen:.6} J as its host energy \
         over {cycles} cycles ({:+.5} %)",
        (seen - written) / written * 100.0
    );
    assert!(cycles >= 20, "guest output:\n{out}");
    // The guest's own energy total against the counter: µJ for µJ (both
    // read once the counter settled), so within 0.01 %.
    assert!(
        (seen - written).abs() / written < 1e-4,
        "guest {seen:.3} J vs hypervisor {written:.3} J"
    );
    assert!(from_vm, "the guest labels its source:\n{out}");

    hv.signal(libc::SIGTERM);
    assert!(
        hv.wait_exit(Duration::from_secs(10))
            .is_some_and(|s| s.success()),
        "scaph qemu stops cleanly"
    );
}
