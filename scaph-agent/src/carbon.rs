//! Carbon intensity of the electricity, in grams of CO2-equivalent per kWh:
//! a fixed value (`--carbon-intensity`) or the first line of a file that an
//! operator (or a job fed by a grid-intensity service) rewrites
//! (`--carbon-intensity-file`). The agent asks once per step; the metrics
//! turn each step's joules into grams at the value in force then.
//!
//! A file that is missing, unreadable, too long or not a number in range is
//! logged once (until it is good again) and the last good value stays in
//! force; before any good value there is none, and no grams are counted.
use std::{
    fs::File,
    io::Read as _,
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
};

use log::{info, warn};

/// Highest intensity accepted, g/kWh (the dirtiest grids are near 1000; lignite plants about 1200).
pub const MAX_INTENSITY: f64 = 5000.0;
/// Most bytes read from the file: one number fits many times over.
const MAX_FILE_BYTES: u64 = 4096;
pub use crate::amounts::{grams, JOULES_PER_KWH};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CarbonError {
    #[error("{path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("{path}: not a regular file")]
    NotAFile { path: PathBuf },
    #[error("{path}: longer than {MAX_FILE_BYTES} bytes")]
    TooLong { path: PathBuf },
    /// The content is never shown: the path may lead to a secret.
    #[error(
        "{path}: its first line ({bytes} bytes) is not a number of grams per kWh from 0 to {MAX_INTENSITY}"
    )]
    Invalid { path: PathBuf, bytes: usize },
}

/// Parses an intensity: a finite number from 0 to [`MAX_INTENSITY`].
#[must_use]
pub fn parse(text: &str) -> Option<f64> {
    let value: f64 = text.trim().parse().ok()?;
    (value.is_finite() && (0.0..=MAX_INTENSITY).contains(&value)).then_some(value)
}

/// Where the intensity comes from.
#[derive(Debug)]
pub enum IntensitySource {
    Fixed(f64),
    File(IntensityFile),
}

impl IntensitySource {
    /// A file source, read once now so a bad file is reported at start.
    #[must_use]
    pub fn file(path: PathBuf) -> Self {
        let mut file = IntensityFile {
            path,
            last_good: None,
            failing: false,
        };
        file.refresh();
        Self::File(file)
    }

    /// The intensity for the step that just ended (re-reads the file).
    pub fn current(&mut self) -> Option<f64> {
        match self {
            Self::Fixed(value) => Some(*value),
            Self::File(file) => file.refresh(),
        }
    }
}

#[derive(Debug)]
pub struct IntensityFile {
    path: PathBuf,
    last_good: Option<f64>,
    /// The latest read failed (already logged).
    failing: bool,
}

impl IntensityFile {
    /// Reads the file; on failure keeps the last good value and logs once
    /// per run of failures.
    fn refresh(&mut self) -> Option<f64> {
        match read(&self.path) {
            Ok(value) => {
                if self.failing || self.last_good != Some(value) {
                    info!(
                        "carbon intensity {value} g/kWh from {}",
                        self.path.display()
                    );
                }
                self.failing = false;
                self.last_good = Some(value);
            }
            Err(e) => {
                if !self.failing {
                    match self.last_good {
                        Some(kept) => warn!("carbon intensity: {e}; keeping {kept} g/kWh"),
                        None => {
                            warn!("carbon intensity: {e}; no grams are counted until it is valid")
                        }
                    }
                }
                self.failing = true;
            }
        }
        self.last_good
    }
}

/// The first line of `path` as an intensity, read up to
/// [`MAX_FILE_BYTES`]. Links are followed (a Kubernetes ConfigMap is one),
/// but only a regular file is ever opened for reading: the path is first
/// opened with `O_PATH`, which has no effect on a device or FIFO, its type
/// checked, and only then is that same file opened, without blocking,
/// through `/proc/self/fd`.
pub fn read(path: &Path) -> Result<f64, CarbonError> {
    use std::os::fd::AsRawFd as _;
    let failed = |e: std::io::Error| CarbonError::Read {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    let handle = File::options()
        .read(true)
        .custom_flags(libc::O_PATH)
        .open(path)
        .map_err(failed)?;
    if !handle.metadata().map_err(failed)?.is_file() {
        return Err(CarbonError::NotAFile {
            path: path.to_owned(),
        });
    }
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(crate::fsroot::own_fd(handle.as_raw_fd()))
        .map_err(failed)?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(failed)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(CarbonError::TooLong {
            path: path.to_owned(),
        });
    }
    let text = String::from_utf8_lossy(&bytes);
    let first = text.lines().next().unwrap_or_default();
    parse(first).ok_or_else(|| CarbonError::Invalid {
        path: path.to_owned(),
        bytes: first.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grams_are_joules_times_intensity_over_a_kilowatt_hour() {
        // One kWh at 56 g/kWh (France, 2023) is 56 g; 1 J at 1000 g/kWh is 1/3600 g.
        assert_eq!(grams(3.6e6, 56.0), 56.0);
        assert_eq!(grams(1.0, 1000.0), 1000.0 / 3.6e6);
        assert_eq!(grams(0.0, 5000.0), 0.0);
    }

    #[test]
    fn intensities_are_numbers_in_range() {
        let cases: [(&str, Option<f64>); 9] = [
            ("56", Some(56.0)),
            (" 412.5 \t", Some(412.5)),
            ("0", Some(0.0)),
            ("5000", Some(5000.0)),
            ("5000.1", None),
            ("-1", None),
            ("NaN", None),
            ("inf", None),
            ("56 g/kWh", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse(text), want, "{text:?}");
        }
    }

    #[test]
    fn a_bad_file_keeps_the_last_good_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("intensity");
        let mut source = IntensitySource::file(path.clone());
        assert_eq!(source.current(), None, "missing before any good value");
        let steps: [(Option<&[u8]>, Option<f64>); 8] = [
            (Some(b"120\n# from the grid feed\n"), Some(120.0)),
            (Some(b"garbage\n"), Some(120.0)),
            (Some(b""), Some(120.0)),
            (Some(b"80"), Some(80.0)),
            (None, Some(80.0)), // deleted
            (Some(&[b'7'; 5000]), Some(80.0)),
            (Some(b"9999"), Some(80.0)),
            (Some(b"0.5\r\n"), Some(0.5)),
        ];
        for (contents, want) in steps {
            match contents {
                Some(bytes) => std::fs::write(&path, bytes).unwrap(),
                None => std::fs::remove_file(&path).unwrap(),
            }
            assert_eq!(source.current(), want, "{:?}", contents.map(|b| b.len()));
        }
    }

    #[test]
    fn errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let err = read(dir.path()).unwrap_err();
        assert_eq!(
            err,
            CarbonError::NotAFile {
                path: dir.path().to_owned()
            }
        );
        let path = dir.path().join("x");
        std::fs::write(&path, "secret-token\n").unwrap();
        let message = read(&path).unwrap_err().to_string();
        assert!(
            message.starts_with(&format!("{}: its first line (12 bytes)", path.display())),
            "{message}"
        );
        assert!(!message.contains("secret"), "the content is never shown");
    }

    /// A link to a device is refused without the device being opened for
    /// reading (opening some devices has effects: a watchdog arms).
    #[test]
    fn a_link_to_a_device_is_refused_without_opening_it() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("intensity");
        std::os::unix::fs::symlink("/dev/null", &link).unwrap();
        assert_eq!(
            read(&link).unwrap_err(),
            CarbonError::NotAFile { path: link.clone() }
        );
        // A link to a regular file (a ConfigMap's layout) is followed.
        let target = dir.path().join("value");
        std::fs::write(&target, "250\n").unwrap();
        let link = dir.path().join("configmap");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert_eq!(read(&link), Ok(250.0));
    }
}
