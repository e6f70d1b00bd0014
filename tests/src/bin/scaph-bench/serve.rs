//! Measures 4 and 5 on the real binary: `/metrics` latency and resident
//! memory with many processes, and memory after heavy process churn.
use std::{
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream},
    os::unix::process::CommandExt as _,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::{
    herd::Herd,
    report::Table,
    util::{fork_child, percentile, reap, rss_bytes},
};

/// A running `scaph prometheus`, killed on drop, and by the kernel should
/// the bench die without dropping it (a signal): no orphan scaph is left.
pub struct Scaph {
    child: Child,
    port: u16,
}

impl Scaph {
    /// Starts `scaph [GLOBAL] prometheus` on a free local port, with
    /// `--step 2`, and returns at once.
    pub fn spawn<S: AsRef<std::ffi::OsStr>>(global: &[S]) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let bin = std::env::current_exe()
            .expect("current_exe")
            .with_file_name("scaph");
        let mut command = Command::new(bin);
        let bench = std::process::id();
        // SAFETY: the closure runs in the forked child before exec and only
        // makes async-signal-safe syscalls (prctl, getppid), no allocation.
        // PR_SET_PDEATHSIG fires when the thread that forked dies; the bench
        // spawns scaph from its main thread, which lives for the whole run.
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The bench died before the prctl took effect: leave now.
                if u32::try_from(libc::getppid()).ok() != Some(bench) {
                    return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
                }
                Ok(())
            })
        };
        let child = command
            .args(["--no-header"])
            .args(global)
            .args([
                "prometheus",
                "-a",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "--step",
                "2",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting scaph prometheus");
        Self { child, port }
    }

    /// Starts scaph and waits until it serves process metrics.
    fn start(extra: &[&str]) -> Self {
        let scaph = Self::spawn(extra);
        let until = Instant::now() + Duration::from_secs(30);
        while scaph
            .scrape()
            .is_none_or(|body| !body.contains("scaph_process_energy_joules_total"))
        {
            assert!(
                Instant::now() < until,
                "scaph prometheus did not serve process metrics within 30 s"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        scaph
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// GET /metrics; the body on success.
    pub fn scrape(&self) -> Option<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .ok()?;
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        response
            .starts_with("HTTP/1.1 200")
            .then(|| response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()))?
    }

    pub fn rss(&self) -> u64 {
        rss_bytes(self.child.id()).expect("scaph RSS")
    }

    /// Panics unless scaph still runs: one that exited (even one not yet
    /// reaped, a zombie) would make every measure of it meaningless.
    pub fn assert_running(&mut self) {
        match self.child.try_wait() {
            Ok(None) => {}
            Ok(Some(status)) => panic!("scaph prometheus exited during the measure ({status})"),
            Err(e) => panic!("checking on scaph prometheus: {e}"),
        }
    }
}

impl Drop for Scaph {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Processes now holding a slot (entries of `PROC_SLOTS`, of the one scaph running).
fn proc_cpu_entries() -> usize {
    aya::maps::loaded_maps()
        .filter_map(Result::ok)
        .filter(|m| m.name_as_str() == Some(scaph_common::maps::PROC_SLOTS))
        .filter_map(|m| aya::maps::MapData::from_id(m.id()).ok())
        .filter_map(|data| {
            aya::maps::HashMap::<_, scaph_common::ProcKey, u32>::try_from(aya::maps::Map::HashMap(
                data,
            ))
            .ok()
        })
        .map(|map| map.keys().count())
        .sum()
}

pub fn scrape_and_memory(quick: bool, table: &mut Table) {
    let sleepers = Herd::spawn(10_000);
    for (label, extra) in [
        ("default `--max-processes 500`", &[][..]),
        (
            "`--max-processes 20000`: a series per process",
            &["--max-processes", "20000"][..],
        ),
    ] {
        let scaph = Scaph::start(extra);
        std::thread::sleep(Duration::from_secs(6)); // a few cycles with every sleeper seen
        let mut latency = Vec::new();
        let mut bytes = 0;
        for _ in 0..if quick { 50 } else { 200 } {
            let t = Instant::now();
            bytes = scaph.scrape().map_or(0, |b| b.len());
            latency.push(t.elapsed().as_secs_f64() * 1e3);
            std::thread::sleep(Duration::from_millis(20));
        }
        let (p50, p99) = (percentile(&latency, 50.0), percentile(&latency, 99.0));
        table.row(
            &format!(
                "10,000 processes, {label}: /metrics latency — columns are p50 / p99 / max ({} kB)",
                bytes / 1024
            ),
            p50,
            p99,
            percentile(&latency, 100.0),
            "ms",
            "p99 ≤ 50 ms",
            p99 <= 50.0,
        );
        let rss = scaph.rss() as f64 / 1e6;
        table.figure(
            &format!("10,000 processes, {label}: scaph RSS"),
            rss,
            "MB",
            "≤ 40 MB",
            rss <= 40.0,
        );
    }
    drop(sleepers);

    // Churn: short-lived processes come and go; with a short retention
    // their state must be released, in userspace and in the kernel map.
    let churn = if quick { 20_000 } else { 100_000 };
    let scaph = Scaph::start(&["--retention", "5s"]);
    std::thread::sleep(Duration::from_secs(10));
    let (rss_before, entries_before) = (scaph.rss(), proc_cpu_entries());
    for _ in 0..churn / 100 {
        let pids: Vec<i32> = (0..100).map(|_| fork_child(|| {})).collect();
        for pid in pids {
            reap(pid, true);
        }
    }
    std::thread::sleep(Duration::from_secs(12)); // retention + two cycles
    let (rss_after, entries_after) = (scaph.rss(), proc_cpu_entries());
    let growth = (rss_after as f64 / rss_before as f64 - 1.0) * 100.0;
    table.figure(
        &format!(
            "RSS after {churn} short-lived processes vs before ({:.1} → {:.1} MB)",
            rss_before as f64 / 1e6,
            rss_after as f64 / 1e6
        ),
        growth,
        "% growth",
        "≤ 10 %",
        growth <= 10.0,
    );
    table.figure(
        &format!(
            "kernel map entries before → after the churn ({entries_before} → {entries_after})"
        ),
        entries_after as f64 - entries_before as f64,
        "entries",
        "≈ 0",
        (entries_after as f64) < entries_before as f64 * 1.1 + 50.0,
    );
}
