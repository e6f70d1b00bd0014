//! What a process costs scaph, in heap bytes kept, whatever its command
//! line, `exe` path and cgroup path: a hostile process (1 MiB of arguments,
//! 4 KiB paths) may keep at most 1,152 bytes more than a plain one (its
//! `exe` and cgroup path are kept up to 512 characters each), with the
//! default options and with Scaphandre's (`--scaphandre-compat`: a 128
//! character `cmdline`).
//!
//! Heap bytes are counted by a global allocator, per thread (this file holds
//! one test, so nothing else allocates on its thread meanwhile).
use std::{
    alloc::{GlobalAlloc, Layout, System},
    cell::Cell,
    fs,
    os::unix::fs::symlink,
    path::Path,
};

use scaph_agent::cputime::{
    meta::{MetaCache, MetaOptions},
    ProcessKey,
};

struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
}

fn count(delta: isize) {
    // `try_with`: the counter may already be gone while the thread exits.
    let _ = LIVE.try_with(|live| live.set(live.get() + delta));
}

// SAFETY: forwards every call to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        // SAFETY: the caller upholds `alloc`'s contract; passed on unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-(layout.size() as isize));
        // SAFETY: `ptr` came from `System.alloc` with this `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size as isize - layout.size() as isize);
        // SAFETY: `ptr` came from `System` with `layout`; the caller checked `new_size`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> isize {
    LIVE.with(Cell::get)
}

/// Processes per variant.
const PROCESSES: u32 = 200;
/// Most heap bytes a hostile process may keep beyond a plain one.
const EXTRA_MAX: isize = 1152;

struct Shape {
    cmdline: Vec<u8>,
    exe: String,
    cgroup: String,
}

fn plain() -> Shape {
    Shape {
        cmdline: b"/usr/bin/sleep\x00120\x00".to_vec(),
        exe: "/usr/bin/sleep".into(),
        cgroup: "0::/user.slice/user-1000.slice/session-1.scope\n".into(),
    }
}

fn hostile() -> Shape {
    // 1 MiB of arguments: "/usr/bin/sleep 120" and then 'x' arguments.
    let mut cmdline = b"/usr/bin/sleep\x00120\x00".to_vec();
    while cmdline.len() < 1 << 20 {
        cmdline.extend_from_slice(b"x\x00");
    }
    // Paths as long as the kernel lets a user make them.
    let exe = format!("/tmp/{}", "e/".repeat(2000));
    let segments = vec!["d".repeat(250); 16].join("/");
    let cgroup = format!("0::/user.slice/user-1000.slice/user@1000.service/{segments}\n");
    Shape {
        cmdline,
        exe,
        cgroup,
    }
}

fn write_tree(root: &Path, first_pid: u32, shape: &Shape) {
    for pid in first_pid..first_pid + PROCESSES {
        let dir = root.join(pid.to_string());
        fs::create_dir_all(&dir).unwrap();
        let stat = format!(
            "{pid} (sleep) S 1 1 1 0 -1 4194560 10 0 0 0 5 6 0 0 20 0 1 0 1000 1000 100 \
             18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0\n"
        );
        fs::write(dir.join("stat"), stat).unwrap();
        fs::write(dir.join("cmdline"), &shape.cmdline).unwrap();
        fs::write(dir.join("cgroup"), &shape.cgroup).unwrap();
        symlink(&shape.exe, dir.join("exe")).unwrap();
    }
}

/// Heap bytes the cache keeps for `PROCESSES` processes of this shape.
fn kept(root: &Path, first_pid: u32, cmdline_chars: usize) -> isize {
    let mut cache = MetaCache::new(root.to_path_buf());
    cache.set_options(MetaOptions {
        cmdline_chars,
        ..MetaOptions::default()
    });
    // The first lookup sizes the cache's own buffers; the table is sized for
    // every process up front so its growth is not counted as theirs.
    for pid in first_pid..first_pid + PROCESSES {
        cache.get(ProcessKey { pid, start_ns: 0 });
    }
    cache.retain(|_| false);
    let before = live();
    for pid in first_pid..first_pid + PROCESSES {
        assert!(
            cache.get(ProcessKey { pid, start_ns: 0 }).is_some(),
            "pid {pid} read"
        );
    }
    let after = live();
    drop(cache);
    after - before
}

#[test]
fn a_hostile_process_keeps_at_most_1152_bytes_more_than_a_plain_one() {
    let root = tempfile::tempdir().unwrap();
    write_tree(root.path(), 1000, &plain());
    write_tree(root.path(), 5000, &hostile());
    for (options, cmdline_chars) in [("default", 0), ("--scaphandre-compat", 128)] {
        let plain = kept(root.path(), 1000, cmdline_chars);
        let hostile = kept(root.path(), 5000, cmdline_chars);
        let extra = (hostile - plain) / PROCESSES as isize;
        eprintln!(
            "{options}: {} B per plain process, {} B per hostile one ({extra} B more)",
            plain / PROCESSES as isize,
            hostile / PROCESSES as isize
        );
        assert!(
            extra <= EXTRA_MAX,
            "{options}: a hostile process keeps {extra} B more than a plain one"
        );
    }
}
