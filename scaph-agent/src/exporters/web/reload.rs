//! The web configuration in force, re-read when its file or a file it names
//! changes (checked at most once per [`CHECK_EVERY`], on use). A broken
//! file at start is an error; a broken file later keeps the last good
//! configuration and is reported once per change.
use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
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
        let Ok(mut state) = self.state.lock() else {
            return Arc::new(Active::default());
        };
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
            Ok(active) => {
                info!("{}: web configuration reloaded", path.display());
                // Watch the files the new configuration names.
                state.seen = Self::marks(path, &active.files);
                state.active = Arc::new(active);
            }
            Err(e) => warn!("{e}; keeping the previous web configuration"),
        }
        state.active.clone()
    }
}
