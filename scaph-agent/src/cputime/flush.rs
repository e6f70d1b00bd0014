//! Forces a context switch on every CPU just before the maps are read.
//!
//! The kernel program accounts a slice when its task is switched out. A
//! CPU-bound task alone on a CPU can run for seconds without a switch, and an
//! idle CPU stays in its idle slice: without a flush, that time would land in
//! a later interval. One thread pinned to each CPU wakes up, which switches
//! out whatever runs there (closing its slice), and goes back to sleep.
use std::{
    sync::mpsc::{channel, Receiver, Sender},
    thread,
};

use log::debug;

pub struct Flusher {
    wake: Vec<Sender<()>>,
    done: Receiver<()>,
}

impl Flusher {
    /// One pinned thread per CPU in `cpus`. CPUs a thread cannot be pinned to
    /// (offline, outside the agent's cpuset) get no thread.
    pub fn new(cpus: &[u32]) -> Self {
        let (done_tx, done) = channel();
        let wake = cpus
            .iter()
            .filter_map(|&cpu| spawn_pinned(cpu, done_tx.clone()))
            .collect();
        Self { wake, done }
    }

    /// Returns once every pinned thread has run on its CPU.
    pub fn flush(&self) {
        let woken = self.wake.iter().filter(|tx| tx.send(()).is_ok()).count();
        for _ in 0..woken {
            if self.done.recv().is_err() {
                break;
            }
        }
    }
}

fn spawn_pinned(cpu: u32, done: Sender<()>) -> Option<Sender<()>> {
    let (tx, rx) = channel::<()>();
    let (ready_tx, ready_rx) = channel::<bool>();
    thread::Builder::new()
        .name(format!("scaph-flush-{cpu}"))
        .spawn(move || {
            let pinned = pin_current_thread(cpu);
            let _ = ready_tx.send(pinned);
            if !pinned {
                return;
            }
            while rx.recv().is_ok() {
                if done.send(()).is_err() {
                    break;
                }
            }
        })
        .ok()?;
    if ready_rx.recv().unwrap_or(false) {
        Some(tx)
    } else {
        debug!("cannot pin a flush thread to CPU {cpu}; its last slice of each interval is reported late");
        None
    }
}

fn pin_current_thread(cpu: u32) -> bool {
    // SAFETY: cpu_set_t is plain data; CPU_SET stays inside it for cpu < CPU_SETSIZE.
    unsafe {
        if cpu as usize >= libc::CPU_SETSIZE as usize {
            return false;
        }
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu as usize, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}
