//! The web configuration in force, re-read when its file or a file it names
//! changes (checked at most once per [`CHECK_EVERY`], on use). A broken
//! file at start is an error; a broken file later keeps the last good
//! configuration and is reported once per change. A reload never removes
//! TLS or basic authentication from a running server: a file cut short or
//! emptied must not turn the port into plain, open HTTP. Dropping either
//! takes a restart.
use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant, SystemTime},
};

use hyper::header::{HeaderName, HeaderValue};
use log::{info, warn};
use tokio_rustls::TlsAcceptor;

use super::{
    auth::BasicAuth,
    config::{self, WebConfig, WebConfigError},
    tls,
};

pub const CHECK_EVERY: Duration = Duration::from_secs(1);

/// What a connection and its requests are served with.
#[derive(Default)]
pub struct Active {
    pub tls: Option<TlsAcceptor>,
    pub auth: Option<Arc<BasicAuth>>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    files: Vec<PathBuf>,
}

impl Active {
    /// Reads and checks `path` and everything it names.
    pub fn load(path: &Path) -> Result<Self, WebConfigError> {
        let config = config::load(path)?;
        Self::from_config(&config)
    }

    pub fn from_config(config: &WebConfig) -> Result<Self, WebConfigError> {
        let tls = match &config.tls {
            Some(settings) => Some(TlsAcceptor::from(tls::server_config(settings)?)),
            None => None,
        };
        let auth =
            (!config.users.is_empty()).then(|| Arc::new(BasicAuth::new(config.users.clone())));
        Ok(Self {
            tls,
            auth,
            headers: config.headers.clone(),
            files: config.files(),
        })
    }

    /// Why `self` may not replace `running` without a restart, if it may not.
    fn downgrades(&self, running: &Self) -> Option<&'static str> {
        if running.tls.is_some() && self.tls.is_none() {
            return Some("it removes TLS");
        }
        if running.auth.is_some() && self.auth.is_none() {
            return Some("it removes basic authentication");
        }
        None
    }
}

/// Identity and change marks of each file; None where it cannot be read.
type Fingerprint = Vec<Option<(u64, u64, u64, SystemTime, SystemTime)>>;

fn fingerprint(files: impl Iterator<Item = PathBuf>) -> Fingerprint {
    use std::os::unix::fs::MetadataExt as _;
    files
        .map(|path| {
            let m = std::fs::metadata(path).ok()?;
            Some((
                m.dev(),
                m.ino(),
                m.len(),
                m.modified().ok()?,
                SystemTime::UNIX_EPOCH + ctime(&m),
            ))
        })
        .collect()
}

fn ctime(m: &std::fs::Metadata) -> Duration {
    use std::os::unix::fs::MetadataExt as _;
    Duration::new(
        m.ctime().max(0).unsigned_abs(),
        u32::try_from(m.ctime_nsec()).unwrap_or(0),
    )
}

pub struct Reloader {
    path: Option<PathBuf>,
    state: Mutex<State>,
}

struct State {
    active: Arc<Active>,
    seen: Fingerprint,
    checked: Instant,
}

impl Reloader {
    /// No file: plain HTTP, no authentication.
    #[must_use]
    pub fn fixed(active: Active) -> Self {
        let state = State {
            active: Arc::new(active),
            seen: Vec::new(),
            checked: Instant::now(),
        };
        Self {
            path: None,
            state: Mutex::new(state),
        }
    }

    /// Loads `path` now: its errors are the caller's to report.
    pub fn watching(path: PathBuf) -> Result<Self, WebConfigError> {
        let active = Active::load(&path)?;
        let seen = Self::marks(&path, &active.files);
        let state = State {
            active: Arc::new(active),
            seen,
            checked: Instant::now(),
        };
        Ok(Self {
            path: Some(path),
            state: Mutex::new(state),
        })
    }

    fn marks(path: &Path, files: &[PathBuf]) -> Fingerprint {
        fingerprint(std::iter::once(path.to_owned()).chain(files.iter().cloned()))
    }

    /// The configuration in force, re-read first if a file changed.
    pub fn current(&self) -> Arc<Active> {
        // A panic elsewhere while the lock was held leaves a whole state
        // behind: serve it rather than a default without TLS or passwords.
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(path) = &self.path else {
            return state.active.clone();
        };
        if state.checked.elapsed() < CHECK_EVERY {
            return state.active.clone();
        }
        state.checked = Instant::now();
        let marks = Self::marks(path, &state.active.files);
        if marks == state.seen {
            return state.active.clone();
        }
        state.seen = marks;
        match Active::load(path) {
            Err(e) => warn!("{e}; keeping the previous web configuration"),
            Ok(active) => match active.downgrades(&state.active) {
                Some(why) => warn!(
                    "{}: web configuration not reloaded: {why} (that takes a restart); \
                     keeping the previous one",
                    path.display()
                ),
                None => {
                    info!("{}: web configuration reloaded", path.display());
                    // Watch the files the new configuration names.
                    state.seen = Self::marks(path, &active.files);
                    state.active = Arc::new(active);
                }
            },
        }
        state.active.clone()
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeMap, sync::Arc};

    use super::{Active, Reloader};
    use crate::exporters::web::config::WebConfig;

    /// A panic while the state was locked must not leave the server
    /// without its passwords.
    #[test]
    fn a_poisoned_state_still_serves_the_configuration() {
        let hash = bcrypt::hash("s3cret", 4).expect("hash");
        let config = WebConfig {
            users: BTreeMap::from([("alice".to_owned(), hash)]),
            ..WebConfig::default()
        };
        let reloader = Arc::new(Reloader::fixed(
            Active::from_config(&config).expect("config"),
        ));
        let poisoner = reloader.clone();
        let panicked = std::thread::spawn(move || {
            let _held = poisoner.state.lock();
            panic!("poisoning the state on purpose");
        })
        .join();
        assert!(panicked.is_err() && reloader.state.is_poisoned());
        assert!(reloader.current().auth.is_some(), "basic auth kept");
    }
}
