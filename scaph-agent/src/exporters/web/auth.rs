//! `basic_auth_users`: HTTP basic authentication against bcrypt hashes.
//!
//! bcrypt is slow on purpose (tens of ms at cost 10). As in the
//! exporter-toolkit, a successful check is remembered by a digest of user,
//! password and hash, so a scraper that sends the same credentials each time
//! pays once; checks run one at a time on the blocking pool, so wrong
//! passwords cost one core at most and never stall the server's threads.
use std::{
    collections::{BTreeMap, HashSet},
    sync::{Arc, Mutex, OnceLock},
};

use base64::Engine as _;
use hyper::header::HeaderValue;

/// Successful checks remembered; the set is emptied when full.
const CACHE_ENTRIES: usize = 128;

/// Compared against when the user is unknown, so that an unknown user costs
/// the same time as a wrong password.
fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| bcrypt::hash("scaph decoy password", 10).unwrap_or_default())
}

pub struct BasicAuth {
    users: BTreeMap<String, String>,
    verified: Mutex<HashSet<[u8; 32]>>,
    one_at_a_time: tokio::sync::Mutex<()>,
}

impl BasicAuth {
    /// User name to bcrypt hash (already checked to parse).
    #[must_use]
    pub fn new(users: BTreeMap<String, String>) -> Self {
        Self {
            users,
            verified: Mutex::new(HashSet::new()),
            one_at_a_time: tokio::sync::Mutex::new(()),
        }
    }

    /// True when `authorization` holds the credentials of a configured user.
    pub async fn allows(self: &Arc<Self>, authorization: Option<&HeaderValue>) -> bool {
        let Some((user, password)) = authorization.and_then(credentials) else {
            return false;
        };
        let hash = self.users.get(&user).cloned();
        let known = hash.is_some();
        let key = digest(&user, &password, hash.as_deref().unwrap_or_default());
        if known && self.verified.lock().is_ok_and(|set| set.contains(&key)) {
            return true;
        }
        let _turn = self.one_at_a_time.lock().await;
        let check = tokio::task::spawn_blocking(move || {
            let matches = match &hash {
                Some(hash) => bcrypt::verify(password, hash),
                None => bcrypt::verify(password, decoy_hash()),
            };
            matches.unwrap_or(false)
        });
        let matches = check.await.unwrap_or(false);
        if matches && known {
            if let Ok(mut set) = self.verified.lock() {
                if set.len() >= CACHE_ENTRIES {
                    set.clear();
                }
                set.insert(key);
            }
        }
        matches && known
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
