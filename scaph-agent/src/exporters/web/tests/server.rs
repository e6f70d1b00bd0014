//! The limits and basic authentication, on real loopback sockets.
use std::{collections::BTreeMap, time::Duration};

use bytes::Bytes;
use tokio::{
    io::AsyncWriteExt as _,
    net::{TcpSocket, TcpStream},
};

use super::{exchange, start, GET_METRICS};
use crate::exporters::web::{
    config::WebConfig,
    reload::{Active, Reloader},
    Limits,
};

fn plain() -> Reloader {
    Reloader::fixed(Active::default())
}

/// A request that is served, from `from` (a loopback address).
async fn served(addr: std::net::SocketAddr, from: [u8; 4]) -> String {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.bind((from, 0).into()).expect("bind");
    let mut stream = socket.connect(addr).await.expect("connect");
    exchange(&mut stream, GET_METRICS).await
}

#[tokio::test]
async fn an_oversized_request_head_gets_431_and_the_connection_closes() {
    let (addr, _server) = start(Limits::default(), plain(), Bytes::from_static(b"x 1\n")).await;
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let mut head = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Filler: ".to_vec();
    head.resize(64 << 10, b'a'); // unterminated, 8 times the limit
    let reply = exchange(&mut stream, &head).await;
    assert!(reply.starts_with("HTTP/1.1 431"), "{reply:?}");
    // A head just under the limit is served.
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let mut head = b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Filler: ".to_vec();
    head.resize(7 << 10, b'a');
    head.extend_from_slice(b"\r\n\r\n");
    let reply = exchange(&mut stream, &head).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply:?}");
}

#[tokio::test]
async fn connections_over_the_cap_are_closed_at_once() {
    let limits = Limits {
        max_connections: 2,
        ..Limits::default()
    };
    let (addr, _server) = start(limits, plain(), Bytes::from_static(b"x 1\n")).await;
    let first = TcpStream::connect(addr).await.expect("connect");
    let _second = TcpStream::connect(addr).await.expect("connect");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = std::time::Instant::now();
    let mut third = TcpStream::connect(addr).await.expect("connect");
    let reply = exchange(&mut third, GET_METRICS).await;
    assert_eq!(reply, "", "over the cap: closed without a reply");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "closed at once, not queued: {:?}",
        started.elapsed()
    );
    drop(first);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let reply = served(addr, [127, 0, 0, 1]).await;
    assert!(
        reply.starts_with("HTTP/1.1 200"),
        "a freed slot serves again: {reply:?}"
    );
}

#[tokio::test]
async fn one_client_cannot_take_every_connection() {
    let limits = Limits {
        max_connections: 10,
        max_connections_per_client: 2,
        ..Limits::default()
    };
    let (addr, _server) = start(limits, plain(), Bytes::from_static(b"x 1\n")).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(TcpStream::connect(addr).await.expect("connect"));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        served(addr, [127, 0, 0, 1]).await,
        "",
        "a third from 127.0.0.1 is over its cap"
    );
    let reply = served(addr, [127, 0, 0, 2]).await;
    assert!(
        reply.starts_with("HTTP/1.1 200"),
        "another client is served: {reply:?}"
    );
}

/// With one slot, a client that asks for a large response and never reads
/// holds it only until the write stalls for `write_stall`.
#[tokio::test]
async fn a_client_that_does_not_read_loses_its_connection() {
    let limits = Limits {
        max_connections: 1,
        write_stall: Duration::from_millis(300),
        idle: Duration::from_secs(60),
        ..Limits::default()
    };
    let (addr, _server) = start(limits, plain(), Bytes::from(vec![b'#'; 64 << 20])).await;
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .set_recv_buffer_size(4096)
        .expect("small receive buffer");
    let mut stuck = socket.connect(addr).await.expect("connect");
    stuck.write_all(GET_METRICS).await.expect("request");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        served(addr, [127, 0, 0, 2]).await,
        "",
        "the stuck client holds the only slot"
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    let reply = served(addr, [127, 0, 0, 2]).await;
    assert!(
        reply.starts_with("HTTP/1.1 200"),
        "the slot came back: {:?}",
        &reply[..reply.len().min(100)]
    );
}

/// A connection that sends nothing holds its slot for the header timeout only.
#[tokio::test]
async fn a_silent_connection_is_dropped_after_the_header_timeout() {
    let limits = Limits {
        max_connections: 1,
        header_read_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let (addr, _server) = start(limits, plain(), Bytes::from_static(b"x 1\n")).await;
    let _silent = TcpStream::connect(addr).await.expect("connect");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(served(addr, [127, 0, 0, 2]).await, "");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(served(addr, [127, 0, 0, 2])
        .await
        .starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn basic_auth_answers_401_with_a_challenge_and_serves_the_right_password() {
    let hash = bcrypt::hash("s3cret", 4).expect("hash");
    let config = WebConfig {
        users: BTreeMap::from([("alice".to_owned(), hash)]),
        ..WebConfig::default()
    };
    let active = Active::from_config(&config).expect("config");
    let (addr, _server) = start(
        Limits::default(),
        Reloader::fixed(active),
        Bytes::from_static(b"x 1\n"),
    )
    .await;
    let ask = |credentials: Option<&str>| {
        let header = credentials.map(|c| {
            use base64::Engine as _;
            format!(
                "Authorization: Basic {}\r\n",
                base64::engine::general_purpose::STANDARD.encode(c)
            )
        });
        async move {
            let mut stream = TcpStream::connect(addr).await.expect("connect");
            let request = format!(
                "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{}\r\n",
                header.unwrap_or_default()
            );
            exchange(&mut stream, request.as_bytes()).await
        }
    };
    for credentials in [
        None,
        Some("alice:wrong"),
        Some("bob:s3cret"),
        Some("alice"),
        Some("alice:s3cret:"),
    ] {
        let reply = ask(credentials).await;
        assert!(
            reply.starts_with("HTTP/1.1 401"),
            "{credentials:?}: {reply:?}"
        );
        assert!(
            reply.contains("www-authenticate: Basic realm=\"scaph\"\r\n"),
            "{credentials:?}: {reply:?}"
        );
        assert!(!reply.contains("x 1"), "{credentials:?}");
    }
    for _ in 0..2 {
        let reply = ask(Some("alice:s3cret")).await;
        assert!(
            reply.starts_with("HTTP/1.1 200") && reply.ends_with("x 1\n"),
            "{reply:?}"
        );
    }
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let reply = exchange(
        &mut stream,
        b"GET /-/healthy HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        reply.starts_with("HTTP/1.1 401"),
        "every path needs the password, as in the toolkit: {reply:?}"
    );
}

#[tokio::test]
async fn configured_headers_are_on_every_response() {
    let config = crate::exporters::web::config::parse(
        b"http_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n",
        std::path::Path::new("web.yml"),
    )
    .expect("config");
    let active = Active::from_config(&config).expect("active");
    let (addr, _server) = start(
        Limits::default(),
        Reloader::fixed(active),
        Bytes::from_static(b"x 1\n"),
    )
    .await;
    for path in ["/metrics", "/", "/nowhere"] {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let reply = exchange(&mut stream, request.as_bytes()).await;
        assert!(
            reply.contains("x-content-type-options: nosniff\r\n"),
            "{path}: {reply:?}"
        );
    }
}

/// hyper's header timer also runs while a keep-alive connection waits for
/// its next request: an idle connection is closed after the header timeout.
#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_header_timeout() {
    use tokio::io::AsyncReadExt as _;
    let limits = Limits {
        header_read_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let (addr, _server) = start(limits, plain(), Bytes::from_static(b"x 1\n")).await;
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("request");
    let mut reply = vec![0; 4096];
    let n = stream.read(&mut reply).await.expect("response");
    assert!(
        reply[..n].ends_with(b"x 1\n"),
        "{:?}",
        String::from_utf8_lossy(&reply[..n])
    );
    let started = std::time::Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut reply)).await;
    assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");
    let idle = started.elapsed();
    assert!(
        idle >= Duration::from_millis(250) && idle < Duration::from_secs(2),
        "closed after {idle:?}"
    );
}
