//! `scaph prometheus` against unfriendly peers, with its default limits:
//! 1,000 connections that send an endless request head and 1,000 that send
//! 100 requests and never read the responses, all at once. scaph's resident memory
//! stays under 64 MB, a scrape from another address is answered in under
//! 100 ms meanwhile, and its descriptors return to their baseline once the
//! peers leave. Needs no root (procfs CPU time, estimated energy).
//!
//! SCAPH_WEB_LIMITS_BINARY runs the same test against another scaph binary
//! (an older build, to see the bound fail).
mod exporter_support;

use std::{
    io::{ErrorKind, Write as _},
    net::{SocketAddr, TcpStream},
    os::fd::FromRawFd as _,
    path::PathBuf,
    time::{Duration, Instant},
};

use exporter_support::{free_port, http_get, quick_prometheus_args, rss_kib, wait_for, Proc};

const PEERS: usize = 1000;
/// How much of a request head each oversized peer tries to send.
const HEAD_BYTES: usize = 400 << 10;
const RSS_LIMIT_KB: u64 = 64 << 10;

fn binary() -> PathBuf {
    std::env::var_os("SCAPH_WEB_LIMITS_BINARY")
        .map_or_else(scaph_integration_tests::scaph_binary, PathBuf::from)
}

fn fd_count(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(Iterator::count)
        .unwrap_or(0)
}

/// This process may hold a few thousand sockets.
fn raise_own_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on a struct we own.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur = limit.rlim_max.min(1 << 16);
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
    }
    assert!(
        limit.rlim_cur >= 3 * PEERS as u64,
        "need {} open files, have {}",
        3 * PEERS,
        limit.rlim_cur
    );
}

/// A TCP connection to `addr` with a 4 KiB receive buffer, set before
/// connecting so the window stays small: the server's writes stall at once.
fn small_window_connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    // SAFETY: a fresh socket owned by the TcpStream from here on.
    let stream = unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let stream = TcpStream::from_raw_fd(fd);
        let size: libc::c_int = 4096;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&raw const size).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        stream
    };
    let SocketAddr::V4(v4) = addr else {
        unreachable!("IPv4 loopback")
    };
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: v4.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*v4.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    use std::os::fd::AsRawFd as _;
    // SAFETY: connect on our socket with a valid sockaddr_in.
    let rc = unsafe {
        libc::connect(
            stream.as_raw_fd(),
            (&raw const sin).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(stream)
}

/// Writes as much of `bytes` as the socket takes without blocking.
fn push(stream: &mut TcpStream, bytes: &[u8]) {
    let _ = stream.set_nonblocking(true);
    let mut sent = 0;
    while sent < bytes.len() {
        match stream.write(&bytes[sent..]) {
            Ok(0) => break,
            Ok(n) => sent += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => break, // would block, reset, closed
        }
    }
}

/// One scrape from 127.0.0.2 (another client than the peers): its time.
fn timed_scrape(port: u16) -> Duration {
    let started = Instant::now();
    let response = scrape_from(port, [127, 0, 0, 2]).expect("a scrape during the attack");
    let took = started.elapsed();
    assert_eq!(response.0, 200, "scrape during the attack: {}", response.1);
    took
}

/// GET /metrics from the local address `from`: status and body.
fn scrape_from(port: u16, from: [u8; 4]) -> std::io::Result<(u16, String)> {
    use std::{io::Read as _, os::fd::AsRawFd as _};
    // SAFETY: a fresh socket owned by the TcpStream.
    let mut stream = unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        TcpStream::from_raw_fd(fd)
    };
    let sin = |ip: [u8; 4], port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_be_bytes(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    let local = sin(from, 0);
    let remote = sin([127, 0, 0, 1], port);
    // SAFETY: bind and connect our socket with valid sockaddr_in values.
    unsafe {
        if libc::bind(stream.as_raw_fd(), (&raw const local).cast(), len) != 0
            || libc::connect(stream.as_raw_fd(), (&raw const remote).cast(), len) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, text))
}

#[test]
fn two_thousand_unfriendly_peers_cost_little_and_do_not_block_a_scrape() {
    raise_own_fd_limit();
    let port = free_port();
    let args = quick_prometheus_args(&port.to_string(), &[]);
    let mut scaph = Proc::start("scaph", &binary(), &args);
    let pid = scaph.pid();
    wait_for("scaph to serve", Duration::from_secs(20), || {
        assert!(scaph.running(), "scaph exited:\n{}", scaph.log());
        (http_get(port, "/metrics").ok()?.status == 200).then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    let (fds_before, rss_before) = (fd_count(pid), rss_kib(pid).unwrap_or(0));
    let exposition = http_get(port, "/metrics").expect("scrape").body.len();

    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut head = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Filler: ".to_vec();
    head.resize(HEAD_BYTES, b'a');
    // 100 requests in a row: far more response than the socket buffers
    // hold, so the server's writes stall on a peer that never reads.
    let pipelined = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".repeat(100);
    let started = Instant::now();
    let mut peers = Vec::with_capacity(2 * PEERS);
    let mut peak_kb = rss_before;
    let mut scrapes = Vec::new();
    for i in 0..PEERS {
        if let Ok(mut s) = TcpStream::connect(addr) {
            push(&mut s, &head);
            peers.push(s);
        }
        if let Ok(mut s) = small_window_connect(addr) {
            push(&mut s, &pipelined);
            peers.push(s);
        }
        if i % 100 == 99 {
            peak_kb = peak_kb.max(rss_kib(pid).unwrap_or(0));
            scrapes.push(timed_scrape(port));
        }
    }
    let opened = started.elapsed();
    // Keep them open a while longer, still pushing heads and scraping.
    for _ in 0..20 {
        for s in peers.iter_mut().step_by(2) {
            push(s, &head[..4096]);
        }
        peak_kb = peak_kb.max(rss_kib(pid).unwrap_or(0));
        scrapes.push(timed_scrape(port));
        std::thread::sleep(Duration::from_millis(100));
    }
    let fds_during = fd_count(pid);
    assert!(
        scaph.running(),
        "scaph died under the attack:\n{}",
        scaph.log()
    );
    drop(peers);
    let settled = Instant::now();
    let fds_after = wait_for(
        "descriptors back to their baseline",
        Duration::from_secs(30),
        || {
            let now = fd_count(pid);
            (now <= fds_before + 4).then_some(now)
        },
    );
    scrapes.sort();
    let median = scrapes[scrapes.len() / 2];
    let slowest = *scrapes.last().expect("scrapes");
    eprintln!(
        "web limits: exposition {exposition} B; {} peers opened in {opened:?}; RSS {rss_before} kB before, \
         peak {peak_kb} kB; {} scrapes during: median {median:?}, slowest {slowest:?}; descriptors {fds_before} \
         before, {fds_during} during, {fds_after} {:?} after the peers left",
        2 * PEERS,
        scrapes.len(),
        settled.elapsed()
    );
    assert!(
        peak_kb < RSS_LIMIT_KB,
        "resident memory reached {peak_kb} kB (limit {RSS_LIMIT_KB} kB)"
    );
    assert!(
        median < Duration::from_millis(100),
        "a scrape took {median:?} (median of {})",
        scrapes.len()
    );
    let (status, _) = scrape_from(port, [127, 0, 0, 1]).expect("a scrape after");
    assert_eq!(status, 200, "scaph serves again once the peers left");
}

/// CPU time of `pid` so far, in clock ticks (utime + stime).
fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after_comm = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(11) + field(12) // fields 14 and 15 of stat, counted after the state
}

/// With a hard limit of 48 open files (so scaph cannot raise it), 100
/// silent connections exhaust its descriptors: accept fails with EMFILE,
/// scaph backs off instead of spinning, and serves again once they leave.
#[test]
fn out_of_descriptors_the_server_backs_off_and_recovers() {
    raise_own_fd_limit();
    let port = free_port();
    let mut args = vec!["--nofile=48:48".to_owned(), binary().display().to_string()];
    // One client may take them all: the descriptors run out first.
    args.extend(quick_prometheus_args(
        &port.to_string(),
        &["--web.max-connections-per-client", "200"],
    ));
    let mut scaph = Proc::start(
        "scaph",
        &exporter_support::tool("prlimit", "util-linux"),
        &args,
    );
    let pid = scaph.pid();
    wait_for("scaph to serve", Duration::from_secs(20), || {
        assert!(scaph.running(), "scaph exited:\n{}", scaph.log());
        (http_get(port, "/metrics").ok()?.status == 200).then_some(())
    });
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let peers: Vec<TcpStream> = (0..100)
        .filter_map(|_| TcpStream::connect(addr).ok())
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let (ticks, started) = (cpu_ticks(pid), Instant::now());
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_ticks(pid) - ticks;
    let fds = fd_count(pid);
    assert!(
        scaph.running(),
        "scaph died out of descriptors:\n{}",
        scaph.log()
    );
    drop(peers);
    let recovered = Instant::now();
    wait_for("scaph to serve again", Duration::from_secs(20), || {
        (scrape_from(port, [127, 0, 0, 2]).ok()?.0 == 200).then_some(())
    });
    eprintln!(
        "out of descriptors: {} peers, scaph at {fds} descriptors, {used} ticks of CPU in {:?}; served again after {:?}",
        100,
        started.elapsed(),
        recovered.elapsed()
    );
    assert!(
        scaph.log().contains("Too many open files"),
        "EMFILE was not hit:\n{}",
        scaph.log()
    );
    assert!(
        used < 40,
        "{used} clock ticks in 2 s out of descriptors: spinning"
    );
}
