//! `scaph json -f PATH`: the output file, opened so that root cannot be
//! tricked into writing elsewhere, and written so that a full disk costs
//! lines, never the agent or a torn line.
//!
//! - A `PATH` that is not a symbolic link is opened without following one
//!   (`O_NOFOLLOW`), created (0644) or truncated.
//! - A `PATH` that is a symbolic link is followed only when the link and the
//!   existing file it leads to are both owned by scaph's user (the file is
//!   checked once open, then truncated): a link another user planted (in
//!   /tmp, say) cannot make root truncate or write a file, and a dangling
//!   link creates nothing.
//! - A FIFO is never waited for (opened non-blocking).
//! - A line that cannot be written (a full disk, an I/O error) is dropped,
//!   whatever part of it was written is cut off again, and the failure is
//!   logged (the 1st, 2nd, 4th, 8th... in a row); writing resumes at the
//!   next line once there is room.
use std::{
    fs::File,
    io::{self, Seek as _, SeekFrom, Write},
    os::fd::OwnedFd,
    path::{Path, PathBuf},
};

use log::{info, warn};
use rustix::{
    fs::{self as rfs, FileType, Mode, OFlags, CWD},
    io::Errno,
};

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("{path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: refused: {why}")]
    Refused { path: PathBuf, why: String },
}

/// The `-f` file. Each `write` call is one line, written whole or not at all.
#[derive(Debug)]
pub struct FileOutput {
    file: File,
    path: PathBuf,
    /// Length of the complete lines written (`None` when not seekable).
    good: Option<u64>,
    failures: u64,
}

impl FileOutput {
    /// Opens (creates or truncates) `path` as described in the module.
    ///
    /// # Errors
    /// When the file cannot be opened, or is refused.
    pub fn create(path: &Path) -> Result<Self, OutputError> {
        let fd = open(path)?;
        let file = File::from(fd);
        let good = file
            .metadata()
            .ok()
            .filter(std::fs::Metadata::is_file)
            .map(|_| 0);
        Ok(Self {
            file,
            path: path.to_path_buf(),
            good,
            failures: 0,
        })
    }

    /// Lines dropped in a row so far.
    #[must_use]
    pub const fn failures(&self) -> u64 {
        self.failures
    }

    fn failed(&mut self, e: &io::Error) {
        // Cut what part of the line got written, so that the next line
        // starts at a line boundary.
        if let Some(good) = self.good {
            let _ = self
                .file
                .set_len(good)
                .and_then(|()| self.file.seek(SeekFrom::Start(good)));
        }
        self.failures += 1;
        if self.failures.is_power_of_two() {
            warn!(
                "json: writing {} failed ({} lines dropped in a row; measuring goes on): {e}",
                self.path.display(),
                self.failures
            );
        }
    }
}

impl Write for FileOutput {
    /// Writes `buf` (one line) whole; a failure is logged and the line
    /// dropped, never returned.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.file.write_all(buf) {
            Ok(()) => {
                if self.failures > 0 {
                    info!(
                        "json: writing {} works again after {} lines dropped",
                        self.path.display(),
                        self.failures
                    );
                    self.failures = 0;
                }
                if let Some(good) = &mut self.good {
                    *good += buf.len() as u64;
                }
            }
            Err(e) => self.failed(&e),
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn open(path: &Path) -> Result<OwnedFd, OutputError> {
    let err = |e: Errno| OutputError::Open {
        path: path.to_path_buf(),
        source: e.into(),
    };
    let refused = |why: String| OutputError::Refused {
        path: path.to_path_buf(),
        why,
    };
    let base = OFlags::WRONLY | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let fd = match rfs::openat(
        CWD,
        path,
        base | OFlags::CREATE | OFlags::TRUNC | OFlags::NOFOLLOW,
        Mode::from_raw_mode(0o644),
    ) {
        Ok(fd) => fd,
        Err(Errno::LOOP) => {
            // A link: followed to an existing file only, truncated once its
            // owner is checked.
            let euid = rustix::process::geteuid().as_raw();
            let link = rfs::lstat(path).map_err(err)?;
            if link.st_uid != euid {
                return Err(refused(format!(
                    "a symbolic link owned by uid {}, not by scaph's uid {euid}",
                    link.st_uid
                )));
            }
            let fd = rfs::openat(CWD, path, base, Mode::empty()).map_err(|e| match e {
                Errno::NOENT => refused("a symbolic link to nothing".into()),
                e => err(e),
            })?;
            let stat = rfs::fstat(&fd).map_err(err)?;
            if stat.st_uid != euid {
                return Err(refused(format!(
                    "a symbolic link to a file owned by uid {}, not by scaph's uid {euid}",
                    stat.st_uid
                )));
            }
            if FileType::from_raw_mode(stat.st_mode) == FileType::RegularFile {
                rfs::ftruncate(&fd, 0).map_err(err)?;
            }
            fd
        }
        Err(Errno::NXIO) => return Err(refused("a FIFO nobody reads".into())),
        Err(e) => return Err(err(e)),
    };
    // Writes block again (a pipe's reader may be slow, not absent).
    let flags = rfs::fcntl_getfl(&fd).map_err(err)?;
    rfs::fcntl_setfl(&fd, flags - OFlags::NONBLOCK).map_err(err)?;
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use std::{fs, os::unix::fs::symlink};

    use super::*;
    use crate::exporters::{
        json::{Consumers, JsonExporter},
        push::tests::sample_snapshot,
        Exporter,
    };

    #[test]
    fn creates_or_truncates_a_plain_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        fs::write(&path, "old contents\n").unwrap();
        let mut out = FileOutput::create(&path).unwrap();
        out.write_all(b"{}\n").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "{}\n");
    }

    #[test]
    fn follows_a_link_only_to_an_existing_file_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("mine.jsonl");
        fs::write(&target, "old\n").unwrap();
        symlink(&target, dir.path().join("link")).unwrap();
        let mut out = FileOutput::create(&dir.path().join("link")).unwrap();
        out.write_all(b"{}\n").unwrap();
        assert_eq!(
            fs::read_to_string(&target).unwrap(),
            "{}\n",
            "followed, truncated"
        );

        symlink(dir.path().join("missing"), dir.path().join("dangling")).unwrap();
        let err = FileOutput::create(&dir.path().join("dangling")).unwrap_err();
        assert!(matches!(err, OutputError::Refused { .. }), "{err}");
        assert!(
            !dir.path().join("missing").exists(),
            "nothing created through a link"
        );
    }

    #[test]
    fn a_fifo_without_a_reader_is_refused_not_waited_for() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        rfs::mknodat(CWD, &fifo, FileType::Fifo, Mode::from_raw_mode(0o600), 0).unwrap();
        assert!(matches!(
            FileOutput::create(&fifo),
            Err(OutputError::Refused { .. })
        ));
    }

    #[test]
    fn a_full_disk_drops_lines_and_measuring_goes_on() {
        let out = FileOutput::create(Path::new("/dev/full")).unwrap();
        let consumers = Consumers {
            max: 3,
            regex: None,
            cmdline_max_len: 0,
        };
        let mut exporter = JsonExporter::new(out, consumers);
        let snap = sample_snapshot(crate::sensors::EnergyOrigin::Measured);
        for _ in 0..3 {
            exporter
                .export(&snap)
                .expect("a failed write is not an error");
        }
        assert_eq!(exporter.output().failures(), 3);
    }
}
