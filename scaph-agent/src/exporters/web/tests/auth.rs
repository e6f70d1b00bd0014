//! Password checks under a flood of wrong passwords: one bcrypt at a time
//! even when clients hang up, a bounded queue, and a remembered scraper that
//! never waits.
use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use base64::Engine as _;
use bytes::Bytes;
use hyper::header::HeaderValue;
use tokio::net::TcpStream;

use super::{exchange, start};
use crate::exporters::web::{
    auth::{BasicAuth, Verdict, WAITING},
    config::WebConfig,
    reload::{Active, Reloader},
    Limits,
};

/// Slow enough that a check outlives the 2 ms a hostile client waits.
const COST: u32 = 8;

fn users() -> BTreeMap<String, String> {
    let hash = bcrypt::hash("s3cret", COST).expect("hash");
    BTreeMap::from([("alice".to_owned(), hash)])
}

fn basic(credentials: &str) -> HeaderValue {
    let encoded = base64::engine::general_purpose::STANDARD.encode(credentials);
    HeaderValue::from_str(&format!("Basic {encoded}")).expect("header")
}

/// hyper drops a request's future when its client closes the connection;
/// the bcrypt it started goes on, and so must its claim on the one turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_abandoned_by_its_client_keeps_its_turn_until_bcrypt_returns() {
    let auth = Arc::new(BasicAuth::new(users()));
    for _ in 0..12 {
        let auth = auth.clone();
        let request = tokio::spawn(async move { auth.check(Some(&basic("alice:wrong"))).await });
        tokio::time::sleep(Duration::from_millis(2)).await;
        request.abort();
    }
    assert_eq!(
        auth.check(Some(&basic("alice:s3cret"))).await,
        Verdict::Allowed,
        "waits for its turn, then is checked"
    );
    assert_eq!(auth.peak_checks(), 1, "bcrypt calls running at once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_beyond_the_queue_are_busy_and_a_remembered_password_skips_it() {
    let auth = Arc::new(BasicAuth::new(users()));
    let started = Instant::now();
    assert_eq!(
        auth.check(Some(&basic("alice:s3cret"))).await,
        Verdict::Allowed
    );
    let one_check = started.elapsed();
    let flood: Vec<_> = (0..10)
        .map(|_| {
            let auth = auth.clone();
            tokio::spawn(async move { auth.check(Some(&basic("alice:wrong"))).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(2)).await;
    let started = Instant::now();
    assert_eq!(
        auth.check(Some(&basic("alice:s3cret"))).await,
        Verdict::Allowed
    );
    let cached = started.elapsed();
    assert!(
        cached < one_check / 2,
        "remembered: {cached:?}, one bcrypt: {one_check:?}"
    );
    let mut verdicts = Vec::new();
    for request in flood {
        verdicts.push(request.await.expect("check"));
    }
    let denied = verdicts.iter().filter(|v| **v == Verdict::Denied).count();
    let busy = verdicts.iter().filter(|v| **v == Verdict::Busy).count();
    assert!(
        (1..=1 + WAITING).contains(&denied) && denied + busy == 10,
        "{verdicts:?}"
    );
    assert_eq!(auth.peak_checks(), 1);
}

/// Over the wire: a busy server answers 503 with Retry-After (never 401,
/// which would say the password is wrong) and still serves the scraper whose
/// password it remembers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_wrong_passwords_gets_503_and_the_scraper_is_served() {
    let config = WebConfig {
        users: users(),
        ..WebConfig::default()
    };
    let active = Active::from_config(&config).expect("config");
    let (addr, _server) = start(
        Limits::default(),
        Reloader::fixed(active),
        Bytes::from_static(b"x 1\n"),
    )
    .await;
    let ask = move |credentials: &'static str| async move {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let request = format!(
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: {}\r\n\r\n",
            basic(credentials).to_str().expect("ascii")
        );
        exchange(&mut stream, request.as_bytes()).await
    };
    assert!(ask("alice:s3cret").await.starts_with("HTTP/1.1 200"));
    let flood: Vec<_> = (0..16).map(|_| tokio::spawn(ask("alice:wrong"))).collect();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let scrape = ask("alice:s3cret").await;
    assert!(
        scrape.starts_with("HTTP/1.1 200") && scrape.ends_with("x 1\n"),
        "{scrape:?}"
    );
    let mut replies = Vec::new();
    for request in flood {
        replies.push(request.await.expect("reply"));
    }
    assert!(
        replies
            .iter()
            .all(|r| r.starts_with("HTTP/1.1 401") || r.starts_with("HTTP/1.1 503")),
        "{replies:?}"
    );
    let busy: Vec<_> = replies
        .iter()
        .filter(|r| r.starts_with("HTTP/1.1 503"))
        .collect();
    assert!(!busy.is_empty(), "16 at once overflow the queue");
    assert!(
        busy.iter()
            .all(|r| r.contains("retry-after: 1\r\n") && !r.contains("x 1")),
        "{busy:?}"
    );
}
