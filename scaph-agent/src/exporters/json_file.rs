//! `scaph json -f PATH`: the output file, opened so that root cannot be
//! tricked into writing elsewhere, and written so that a full disk costs
//! lines, never the agent or a torn line.
//!
//! - No symbolic link is followed anywhere in `PATH`
//!   (`openat2(RESOLVE_NO_SYMLINKS)`; before Linux 5.6 a walk that opens one
//!   component at a time with `O_NOFOLLOW`): another user's link to a
//!   folder (`/tmp/d` -> `/etc`) cannot make root truncate a file there.
//! - One exception: a final component that is a link owned by scaph's user
//!   is followed to an existing file, reached from the link's folder without
//!   any further link; a dangling link creates nothing.
//! - What was opened (created 0644 if missing) is then checked before
//!   anything is truncated: a regular file owned by scaph's user with one
//!   hard link, or a character device (only root makes those: /dev/null).
//!   A FIFO, with or without a reader, another user's file, and a file with
//!   other hard links are refused.
//! - A line that cannot be written (a full disk, an I/O error) is dropped,
//!   whatever part of it was written is cut off again, and the failure is
//!   logged ([`super::retry`]: the first, then once a minute); writing resumes at the
//!   next line once there is room.
use std::{
    fs::File,
    io::{self, Seek as _, SeekFrom, Write},
    os::{
        fd::{AsFd, BorrowedFd, OwnedFd},
        unix::ffi::OsStrExt as _,
    },
    path::{Component, Path, PathBuf},
    time::Instant,
};

use rustix::{
    fs::{self as rfs, FileType, Mode, OFlags, ResolveFlags, CWD},
    io::Errno,
};

use super::retry::Retry;

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
    retry: Retry,
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
            retry: Retry::every_step(module_path!()),
        })
    }

    /// Lines dropped in a row so far.
    #[must_use]
    pub const fn failures(&self) -> u64 {
        self.retry.failures()
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
        let path = self.path.display();
        self.retry.failed(Instant::now(), |streak| {
            format!(
                "json: writing {path} failed ({} lines dropped in a row; measuring goes on): {e}",
                streak.failures
            )
        });
    }
}

impl Write for FileOutput {
    /// Writes `buf` (one line) whole; a failure is logged and the line
    /// dropped, never returned.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.file.write_all(buf) {
            Ok(()) => {
                let path = self.path.display();
                self.retry.succeeded(|n| {
                    format!("json: writing {path} works again after {n} lines dropped")
                });
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
    let euid = rustix::process::geteuid().as_raw();
    let base = OFlags::WRONLY | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let fd = match open_no_links(CWD, path, base | OFlags::CREATE, Mode::from_raw_mode(0o644)) {
        Ok(fd) => fd,
        Err(Errno::LOOP) => follow_own_link(path, base, euid)?,
        Err(Errno::NXIO) => return Err(refused("a FIFO".into())),
        Err(e) => return Err(err(e)),
    };
    // Nothing is truncated before this check.
    let stat = rfs::fstat(&fd).map_err(err)?;
    match FileType::from_raw_mode(stat.st_mode) {
        FileType::RegularFile if stat.st_uid != euid => {
            return Err(refused(format!(
                "owned by uid {}, not by scaph's uid {euid}",
                stat.st_uid
            )));
        }
        FileType::RegularFile if stat.st_nlink > 1 => {
            return Err(refused(format!(
                "a file with {} hard links (only one is written to)",
                stat.st_nlink
            )));
        }
        FileType::RegularFile => rfs::ftruncate(&fd, 0).map_err(err)?,
        // Only root makes device nodes (/dev/null, /dev/full), whoever owns
        // them, and opening one for writing already passed the kernel's check.
        FileType::CharacterDevice => {}
        other => return Err(refused(format!("not a regular file ({other:?})"))),
    }
    // Writes may block again (a device may be slow).
    let flags = rfs::fcntl_getfl(&fd).map_err(err)?;
    rfs::fcntl_setfl(&fd, flags - OFlags::NONBLOCK).map_err(err)?;
    Ok(fd)
}

/// Opens the existing file a final-component link at `path` leads to, when
/// that link belongs to `euid`; neither the link's folder nor its target
/// may pass through another link.
fn follow_own_link(path: &Path, flags: OFlags, euid: u32) -> Result<OwnedFd, OutputError> {
    let err = |e: Errno| OutputError::Open {
        path: path.to_path_buf(),
        source: e.into(),
    };
    let refused = |why: &str| OutputError::Refused {
        path: path.to_path_buf(),
        why: why.into(),
    };
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(refused("a symbolic link in the path"));
    };
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    let dir_flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
    // `O_DIRECTORY | O_NOFOLLOW` on a link is ENOTDIR; the path did not
    // fail with ENOTDIR, so that too means a link.
    let dir = open_no_links(CWD, parent, dir_flags, Mode::empty()).map_err(|e| match e {
        Errno::LOOP | Errno::NOTDIR => refused("a symbolic link in the path"),
        e => err(e),
    })?;
    let link = rfs::openat(
        &dir,
        name,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(err)?;
    let stat = rfs::fstat(&link).map_err(err)?;
    if FileType::from_raw_mode(stat.st_mode) != FileType::Symlink {
        return Err(refused("changed while opened"));
    }
    if stat.st_uid != euid {
        return Err(OutputError::Refused {
            path: path.to_path_buf(),
            why: format!(
                "a symbolic link owned by uid {}, not by scaph's uid {euid}",
                stat.st_uid
            ),
        });
    }
    let target = rfs::readlinkat(&link, "", Vec::new()).map_err(err)?;
    let target = Path::new(std::ffi::OsStr::from_bytes(target.as_bytes()));
    open_no_links(&dir, target, flags, Mode::empty()).map_err(|e| match e {
        Errno::NOENT => refused("a symbolic link to nothing"),
        Errno::LOOP => refused("a symbolic link whose target passes through another link"),
        Errno::NXIO => refused("a symbolic link to a FIFO"),
        e => err(e),
    })
}

/// `openat` that follows no symbolic link anywhere in `path` (`ELOOP` if
/// there is one): `openat2(RESOLVE_NO_SYMLINKS)`, or on kernels without it
/// (before 5.6) a walk that opens one component at a time with `O_NOFOLLOW`.
fn open_no_links(
    dir: impl AsFd,
    path: impl AsRef<Path>,
    flags: OFlags,
    mode: Mode,
) -> Result<OwnedFd, Errno> {
    let path = path.as_ref();
    match rfs::openat2(
        &dir,
        path,
        flags | OFlags::NOFOLLOW,
        mode,
        ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    ) {
        Err(Errno::NOSYS) => walk_no_links(dir.as_fd(), path, flags, mode),
        other => other,
    }
}

/// The fallback of [`open_no_links`].
fn walk_no_links(
    dir: BorrowedFd<'_>,
    path: &Path,
    flags: OFlags,
    mode: Mode,
) -> Result<OwnedFd, Errno> {
    let mut parts: Vec<Component<'_>> = path.components().collect();
    let last = parts.pop().ok_or(Errno::NOENT)?;
    let mut held: Option<OwnedFd> = None;
    for part in parts {
        let at = held.as_ref().map_or(dir, AsFd::as_fd);
        let next = rfs::openat(
            at,
            part.as_os_str(),
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        match FileType::from_raw_mode(rfs::fstat(&next)?.st_mode) {
            FileType::Directory => held = Some(next),
            FileType::Symlink => return Err(Errno::LOOP),
            _ => return Err(Errno::NOTDIR),
        }
    }
    let at = held.as_ref().map_or(dir, AsFd::as_fd);
    rfs::openat(at, last.as_os_str(), flags | OFlags::NOFOLLOW, mode)
}

#[cfg(test)]
mod tests {
    use std::{fs, os::unix::fs::symlink};

    use super::*;
    use crate::exporters::{
        json::{Consumers, JsonSink},
        points::tests::sample_snapshot,
        Measurement, Sink as _,
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

    /// `<dir>/real/out.jsonl` holding "precious", and `<dir>/via` a link to
    /// `real`.
    fn linked_folder() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("real")).unwrap();
        let target = dir.path().join("real").join("out.jsonl");
        fs::write(&target, "precious\n").unwrap();
        symlink(dir.path().join("real"), dir.path().join("via")).unwrap();
        (dir, target)
    }

    #[test]
    fn a_link_to_a_folder_in_the_path_is_refused_and_nothing_truncated() {
        let (dir, target) = linked_folder();
        let err = FileOutput::create(&dir.path().join("via").join("out.jsonl")).unwrap_err();
        assert!(matches!(err, OutputError::Refused { .. }), "{err}");
        assert_eq!(fs::read_to_string(&target).unwrap(), "precious\n");

        // Nor through a link of scaph's own whose target passes through one.
        symlink(
            dir.path().join("via").join("out.jsonl"),
            dir.path().join("own"),
        )
        .unwrap();
        let err = FileOutput::create(&dir.path().join("own")).unwrap_err();
        assert!(matches!(err, OutputError::Refused { .. }), "{err}");
        assert_eq!(fs::read_to_string(&target).unwrap(), "precious\n");
    }

    #[test]
    fn the_walk_without_openat2_follows_no_link_either() {
        let (dir, target) = linked_folder();
        let flags = OFlags::WRONLY | OFlags::CLOEXEC;
        let walk = |p: &Path| walk_no_links(CWD, p, flags, Mode::empty());
        assert_eq!(
            walk(&dir.path().join("via").join("out.jsonl")).unwrap_err(),
            Errno::LOOP
        );
        symlink(&target, dir.path().join("last")).unwrap();
        assert_eq!(walk(&dir.path().join("last")).unwrap_err(), Errno::LOOP);
        assert!(walk(&target).is_ok());
        assert_eq!(fs::read_to_string(&target).unwrap(), "precious\n");
    }

    #[test]
    fn a_fifo_with_a_reader_is_refused_too() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        rfs::mknodat(CWD, &fifo, FileType::Fifo, Mode::from_raw_mode(0o600), 0).unwrap();
        let _reader = rfs::open(&fifo, OFlags::RDONLY | OFlags::NONBLOCK, Mode::empty()).unwrap();
        let err = FileOutput::create(&fifo).unwrap_err();
        assert!(matches!(err, OutputError::Refused { .. }), "{err}");
    }

    #[test]
    fn a_hard_linked_file_is_refused_and_not_truncated() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        fs::write(&file, "precious\n").unwrap();
        fs::hard_link(&file, dir.path().join("out.jsonl")).unwrap();
        let err = FileOutput::create(&dir.path().join("out.jsonl")).unwrap_err();
        assert!(matches!(err, OutputError::Refused { .. }), "{err}");
        assert_eq!(fs::read_to_string(&file).unwrap(), "precious\n");
    }

    #[tokio::test]
    async fn a_full_disk_drops_lines_and_measuring_goes_on() {
        let out = FileOutput::create(Path::new("/dev/full")).unwrap();
        let consumers = Consumers {
            max: 3,
            regex: None,
            cmdline_max_len: 0,
        };
        let mut exporter = JsonSink::new(out, consumers);
        let measurement = Measurement {
            snapshot: std::sync::Arc::new(sample_snapshot(crate::sensors::EnergyOrigin::Measured)),
            families: Vec::new(),
        };
        for _ in 0..3 {
            exporter
                .send(&measurement)
                .await
                .expect("a failed write is not an error");
        }
        assert_eq!(exporter.output().failures(), 3);
    }
}
