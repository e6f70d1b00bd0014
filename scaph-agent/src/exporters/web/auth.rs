//! `basic_auth_users`: HTTP basic authentication against bcrypt hashes.
//!
//! bcrypt is slow on purpose (tens of ms at cost 10). As in the
//! exporter-toolkit, a successful check is remembered by a digest of user,
//! password and hash, so a scraper that sends the same credentials each time
//! pays once and never waits behind other checks. Other checks run one at a
//! time on the blocking pool, holding their turn until bcrypt returns (even
//! when the client has gone), so wrong passwords cost one core at most and
//! never stall the server's threads. At most [`WAITING`] more wait for their
//! turn; beyond that a request is answered "busy" without a check.
use std::{
    collections::{BTreeMap, HashSet},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex, OnceLock,
    },
};

use base64::Engine as _;
use hyper::header::HeaderValue;
use tokio::sync::Semaphore;

/// Successful checks remembered; the set is emptied when full.
const CACHE_ENTRIES: usize = 128;

/// Checks that may wait while one runs.
pub const WAITING: usize = 3;

/// The outcome of a check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    Denied,
    /// Not checked: too many checks running or waiting.
    Busy,
}

/// Compared against when the user is unknown, so that an unknown user costs
/// the same time as a wrong password.
fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| bcrypt::hash("scaph decoy password", 10).unwrap_or_default())
}

pub struct BasicAuth {
    users: BTreeMap<String, String>,
    verified: Mutex<HashSet<[u8; 32]>>,
    /// One permit: the bcrypt running now.
    running: Arc<Semaphore>,
    /// Checks admitted, running or waiting to run.
    admitted: Arc<Semaphore>,
    /// bcrypt calls running now, and the most seen at once.
    busy: Arc<(AtomicUsize, AtomicUsize)>,
}

impl BasicAuth {
    /// User name to bcrypt hash (already checked to parse).
    #[must_use]
    pub fn new(users: BTreeMap<String, String>) -> Self {
        Self {
            users,
            verified: Mutex::new(HashSet::new()),
            running: Arc::new(Semaphore::new(1)),
            admitted: Arc::new(Semaphore::new(1 + WAITING)),
            busy: Arc::default(),
        }
    }

    /// The most bcrypt calls seen running at once.
    #[must_use]
    pub fn peak_checks(&self) -> usize {
        self.busy.1.load(Ordering::Relaxed)
    }

    /// Allowed when `authorization` holds the credentials of a configured
    /// user. The permits move into the blocking task, so a dropped request
    /// (its client gone) still holds its turn until bcrypt returns.
    pub async fn check(self: &Arc<Self>, authorization: Option<&HeaderValue>) -> Verdict {
        let Some((user, password)) = authorization.and_then(credentials) else {
            return Verdict::Denied;
        };
        let hash = self.users.get(&user).cloned();
        let known = hash.is_some();
        let key = digest(&user, &password, hash.as_deref().unwrap_or_default());
        if known && self.verified.lock().is_ok_and(|set| set.contains(&key)) {
            return Verdict::Allowed;
        }
        let Ok(admitted) = self.admitted.clone().try_acquire_owned() else {
            return Verdict::Busy;
        };
        let Ok(turn) = self.running.clone().acquire_owned().await else {
            return Verdict::Busy;
        };
        let busy = self.busy.clone();
        let check = tokio::task::spawn_blocking(move || {
            let _permits = (admitted, turn);
            let now = busy.0.fetch_add(1, Ordering::SeqCst) + 1;
            busy.1.fetch_max(now, Ordering::SeqCst);
            let matches = match &hash {
                Some(hash) => bcrypt::verify(password, hash),
                None => bcrypt::verify(password, decoy_hash()),
            };
            busy.0.fetch_sub(1, Ordering::SeqCst);
            matches.unwrap_or(false)
        });
        let matches = check.await.unwrap_or(false);
        if !(matches && known) {
            return Verdict::Denied;
        }
        if let Ok(mut set) = self.verified.lock() {
            if set.len() >= CACHE_ENTRIES {
                set.clear();
            }
            set.insert(key);
        }
        Verdict::Allowed
    }
}

/// `Basic base64(user:password)`.
fn credentials(header: &HeaderValue) -> Option<(String, String)> {
    let text = header.to_str().ok()?;
    let (scheme, encoded) = text.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

fn digest(user: &str, password: &str, hash: &str) -> [u8; 32] {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    for part in [user, password, hash] {
        context.update(&(part.len() as u64).to_le_bytes());
        context.update(part.as_bytes());
    }
    let mut key = [0; 32];
    key.copy_from_slice(context.finish().as_ref());
    key
}
