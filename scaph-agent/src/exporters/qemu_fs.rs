//! The file operations of `scaph qemu`, made so that a guest cannot turn
//! them against the host.
//!
//! A VM's folder `<root>/<vm>` is shared with its guest, whose root user is
//! not the host's: anything in it may be a link planted to redirect a write
//! made as root. So the root is opened once, as a directory, and every
//! operation is relative to a directory descriptor, never following a link:
//!
//! - folders are created with `mkdirat`, then opened `O_DIRECTORY |
//!   O_NOFOLLOW` and checked with `fstat`: a link, a non-folder, or a folder
//!   not owned by scaph's user is refused and left alone;
//! - a file is written to a new temporary file (`O_CREAT | O_EXCL |
//!   O_NOFOLLOW`, random name) in that folder, then renamed over its final
//!   name, which replaces a link there instead of following it;
//! - cleaning up unlinks only the names scaph writes, inside folders opened
//!   the same way; a link is removed as a link, never followed.
//!
//! Reads are bounded and their contents never logged.
use std::{
    ffi::CStr,
    fs::File,
    io::{self, Read as _, Write as _},
    os::fd::{AsFd, OwnedFd},
    path::{Path, PathBuf},
};

use rustix::{
    fs::{self as rfs, AtFlags, FileType, Mode, OFlags, CWD},
    io::Errno,
};

/// Zone folder of the package, and the name written into it.
pub const ZONE: &str = "intel-rapl:0";
/// The domain folder a guest needs to see a socket (left empty).
pub const DOMAIN: &str = "intel-rapl:0:0";
/// The files scaph writes in [`ZONE`].
pub const FILES: [&str; 3] = ["energy_uj", "name", "max_energy_range_uj"];
/// Longest counter file read back (a u64 and a newline fit many times).
const MAX_READ: u64 = 64;
/// Entries looked at when listing a folder (the root, or a zone to clean).
const MAX_ENTRIES: usize = 4096;

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: refused: {why}")]
    Refused { path: PathBuf, why: String },
    #[error("{path}: not a counter value")]
    Garbage { path: PathBuf },
}

impl TreeError {
    fn io(path: PathBuf, errno: Errno) -> Self {
        Self::Io {
            path,
            source: errno.into(),
        }
    }
}

/// The root folder, open, and the user that must own what scaph writes to.
#[derive(Debug)]
pub struct TreeRoot {
    fd: OwnedFd,
    path: PathBuf,
    euid: u32,
}

impl TreeRoot {
    /// Creates `path` (mode 0755) if missing and opens it. Refuses a link, a
    /// non-folder, a folder not owned by scaph's effective user, or one that
    /// others may write to without the sticky bit (they could rename one
    /// VM's folder over another's, so that one guest reads another's
    /// counter).
    ///
    /// # Errors
    /// When the root cannot be created or opened, or is refused.
    pub fn open(path: &Path) -> Result<Self, TreeError> {
        let io = |e: io::Error| TreeError::Io {
            path: path.to_path_buf(),
            source: e,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        let euid = rustix::process::geteuid().as_raw();
        let fd = open_dir(CWD, path, path, true, euid)?;
        let mode = rfs::fstat(&fd)
            .map_err(|e| TreeError::io(path.to_path_buf(), e))?
            .st_mode;
        if mode & 0o022 != 0 && mode & 0o1000 == 0 {
            return Err(TreeError::Refused {
                path: path.to_path_buf(),
                why: format!(
                    "mode {:04o}: group or others may rename the VM folders in it; \
                     remove their write permission (chmod go-w) or set the sticky bit (chmod +t)",
                    mode & 0o7777
                ),
            });
        }
        Ok(Self {
            fd,
            path: path.to_path_buf(),
            euid,
        })
    }

    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes the tree of `vm`: the counter, and with `full` the folders and
    /// the files that never change.
    ///
    /// # Errors
    /// When a folder is refused or a write fails.
    pub fn write(&self, vm: &str, full: bool, energy_uj: u64) -> Result<(), TreeError> {
        let vm_path = self.path.join(vm);
        let vm_fd = open_dir(&self.fd, vm, &vm_path, full, self.euid)?;
        let zone_path = vm_path.join(ZONE);
        let zone = open_dir(&vm_fd, ZONE, &zone_path, full, self.euid)?;
        if full {
            open_dir(&vm_fd, DOMAIN, &vm_path.join(DOMAIN), true, self.euid)?;
            write_atomic(&zone, &zone_path, "name", "package-0\n")?;
            let range = format!("{}\n", super::qemu::MAX_ENERGY_RANGE_UJ);
            write_atomic(&zone, &zone_path, "max_energy_range_uj", &range)?;
        }
        write_atomic(&zone, &zone_path, "energy_uj", &format!("{energy_uj}\n"))
    }

    /// The counter in `<vm>/intel-rapl:0/energy_uj`, `None` if there is none.
    ///
    /// # Errors
    /// When a folder or the file is refused, unreadable or not a number.
    pub fn read_counter(&self, vm: &str) -> Result<Option<u64>, TreeError> {
        let vm_path = self.path.join(vm);
        let zone_path = vm_path.join(ZONE);
        let path = zone_path.join("energy_uj");
        let found = |r: Result<OwnedFd, TreeError>| match r {
            Err(TreeError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                Ok(None)
            }
            other => other.map(Some),
        };
        let Some(vm_fd) = found(open_dir(&self.fd, vm, &vm_path, false, self.euid))? else {
            return Ok(None);
        };
        let Some(zone) = found(open_dir(&vm_fd, ZONE, &zone_path, false, self.euid))? else {
            return Ok(None);
        };
        // O_NONBLOCK: a FIFO planted there must not block the exporter.
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let fd = match rfs::openat(&zone, "energy_uj", flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(None),
            Err(e) => return Err(TreeError::io(path, e)),
        };
        let stat = rfs::fstat(&fd).map_err(|e| TreeError::io(path.clone(), e))?;
        if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
            return Err(TreeError::Refused {
                path,
                why: "not a regular file".into(),
            });
        }
        let mut text = String::new();
        File::from(fd)
            .take(MAX_READ)
            .read_to_string(&mut text)
            .map_err(|_| TreeError::Garbage { path: path.clone() })?;
        text.trim()
            .parse()
            .map(Some)
            .map_err(|_| TreeError::Garbage { path })
    }

    /// Removes what scaph writes in `<vm>` (the files, stray temporary files,
    /// the two folders), then `<vm>` itself if that leaves it empty. A
    /// refused folder is left as it is. Returns what was left in place.
    pub fn remove(&self, vm: &str) -> Vec<TreeError> {
        let mut left = Vec::new();
        let vm_path = self.path.join(vm);
        let vm_fd = match open_dir(&self.fd, vm, &vm_path, false, self.euid) {
            Ok(fd) => fd,
            Err(TreeError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                return left
            }
            Err(e) => return vec![e],
        };
        let zone_path = vm_path.join(ZONE);
        match open_dir(&vm_fd, ZONE, &zone_path, false, self.euid) {
            Ok(zone) => {
                for name in ours_in(&zone) {
                    if let Err(e) = rfs::unlinkat(&zone, name.as_str(), AtFlags::empty()) {
                        if e != Errno::NOENT {
                            left.push(TreeError::io(zone_path.join(&name), e));
                        }
                    }
                }
            }
            Err(TreeError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {}
            Err(e) => left.push(e),
        }
        // rmdir does not follow a link: a link there is ENOTDIR and stays.
        for (dir, name, path) in [
            (vm_fd.as_fd(), ZONE, zone_path),
            (vm_fd.as_fd(), DOMAIN, vm_path.join(DOMAIN)),
            (self.fd.as_fd(), vm, vm_path.clone()),
        ] {
            if let Err(e) = rfs::unlinkat(dir, name, AtFlags::REMOVEDIR) {
                if e != Errno::NOENT {
                    left.push(TreeError::io(path, e));
                }
            }
        }
        left
    }

    /// The names under the root that hold a counter file, at most `max`.
    #[must_use]
    pub fn trees(&self, max: usize) -> Vec<String> {
        let Ok(dir) = rfs::Dir::read_from(&self.fd) else {
            return Vec::new();
        };
        dir.take(MAX_ENTRIES)
            .filter_map(Result::ok)
            .filter_map(|e| name_of(e.file_name()))
            .filter(|name| name != "." && name != "..")
            .filter(|name| {
                matches!(
                    self.read_counter(name),
                    Ok(Some(_)) | Err(TreeError::Garbage { .. })
                )
            })
            .take(max)
            .collect()
    }
}

/// Creates (with `create`) and opens the folder `name` in `parent`, refusing
/// a link, a non-folder, or a folder another user owns.
fn open_dir(
    parent: impl AsFd,
    name: impl rustix::path::Arg + Copy,
    path: &Path,
    create: bool,
    euid: u32,
) -> Result<OwnedFd, TreeError> {
    if create {
        match rfs::mkdirat(&parent, name, Mode::from_raw_mode(0o755)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(TreeError::io(path.to_path_buf(), e)),
        }
    }
    let refused = |why: String| TreeError::Refused {
        path: path.to_path_buf(),
        why,
    };
    let fd = match rfs::openat(&parent, name, DIR_FLAGS, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::LOOP) => return Err(refused("a symbolic link".into())),
        // O_DIRECTORY | O_NOFOLLOW on a link is ENOTDIR.
        Err(Errno::NOTDIR) => return Err(refused("a symbolic link or not a folder".into())),
        Err(e) => return Err(TreeError::io(path.to_path_buf(), e)),
    };
    let stat = rfs::fstat(&fd).map_err(|e| TreeError::io(path.to_path_buf(), e))?;
    if stat.st_uid != euid {
        return Err(refused(format!(
            "owned by uid {}, not by scaph's uid {euid}",
            stat.st_uid
        )));
    }
    Ok(fd)
}

/// Replaces `file` in `dir` with `contents` in one step: a reader sees the
/// old file or the new one, never a partial write.
///
/// No fsync: a killed or restarted `scaph qemu` finds the renamed file in the
/// page cache whatever the file system, which is what "never backwards"
/// needs. Only a host crash could lose the last writes, and then the VMs (and
/// their guests' baselines) restart too. The trees usually live on tmpfs.
fn write_atomic(
    dir: &OwnedFd,
    dir_path: &Path,
    file: &str,
    contents: &str,
) -> Result<(), TreeError> {
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut last = Errno::EXIST;
    // A name taken (planted, however unlikely to guess) is tried again.
    for _ in 0..4 {
        let tmp = format!(".{file}.{:016x}", random_u64());
        let fd = match rfs::openat(dir, tmp.as_str(), flags, Mode::from_raw_mode(0o644)) {
            Ok(fd) => fd,
            Err(e) => {
                last = e;
                if e == Errno::EXIST {
                    continue;
                }
                break;
            }
        };
        let written = File::from(fd)
            .write_all(contents.as_bytes())
            .map_err(|e| TreeError::Io {
                path: dir_path.join(&tmp),
                source: e,
            })
            .and_then(|()| {
                rfs::renameat(dir, tmp.as_str(), dir, file)
                    .map_err(|e| TreeError::io(dir_path.join(file), e))
            });
        if written.is_err() {
            let _ = rfs::unlinkat(dir, tmp.as_str(), AtFlags::empty());
        }
        return written;
    }
    Err(TreeError::io(dir_path.join(format!(".{file}.*")), last))
}

/// Whether `name` is one of the files scaph writes in a zone, or one of
/// their temporary files (`.energy_uj.<16 hex digits>`, or `.energy_uj.tmp`
/// from earlier versions).
#[must_use]
pub fn is_ours(name: &str) -> bool {
    FILES.iter().any(|file| {
        name == *file
            || name
                .strip_prefix('.')
                .and_then(|rest| rest.strip_prefix(file))
                .and_then(|rest| rest.strip_prefix('.'))
                .is_some_and(|tail| {
                    tail == "tmp"
                        || (tail.len() == 16 && tail.bytes().all(|b| b.is_ascii_hexdigit()))
                })
    })
}

/// The entries of a zone folder that scaph wrote (bounded listing).
fn ours_in(zone: &OwnedFd) -> Vec<String> {
    let Ok(dir) = rfs::Dir::read_from(zone) else {
        return Vec::new();
    };
    dir.take(MAX_ENTRIES)
        .filter_map(Result::ok)
        .filter_map(|e| name_of(e.file_name()))
        .filter(|name| is_ours(name))
        .collect()
}

fn name_of(name: &CStr) -> Option<String> {
    name.to_str().ok().map(str::to_owned)
}

/// An unpredictable number for temporary names (the kernel's random source;
/// the process's hash keys if that fails).
fn random_u64() -> u64 {
    let mut buf = [0u8; 8];
    match rustix::rand::getrandom(&mut buf, rustix::rand::GetRandomFlags::empty()) {
        Ok(8) => u64::from_ne_bytes(buf),
        _ => {
            use std::hash::{BuildHasher as _, Hasher as _};
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u128(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos()),
            );
            h.finish()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{fs, os::unix::fs::symlink};

    use super::*;

    /// A root under a temporary folder, and a folder outside it with a file
    /// whose contents must survive everything.
    fn setup() -> (tempfile::TempDir, TreeRoot, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("energy_uj"), "precious\n").unwrap();
        let root = TreeRoot::open(&dir.path().join("root")).unwrap();
        (dir, root, outside)
    }

    fn untouched(outside: &Path) {
        let names: Vec<_> = fs::read_dir(outside)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names,
            ["energy_uj"],
            "nothing created or removed outside the root"
        );
        assert_eq!(
            fs::read_to_string(outside.join("energy_uj")).unwrap(),
            "precious\n"
        );
    }

    #[test]
    fn writes_the_tree() {
        let (_dir, root, _) = setup();
        root.write("vm1", true, 42).unwrap();
        let zone = root.path().join("vm1").join(ZONE);
        assert_eq!(fs::read_to_string(zone.join("energy_uj")).unwrap(), "42\n");
        assert_eq!(
            fs::read_to_string(zone.join("name")).unwrap(),
            "package-0\n"
        );
        assert!(root.path().join("vm1").join(DOMAIN).is_dir());
        assert_eq!(
            fs::read_dir(&zone).unwrap().count(),
            3,
            "no temporary file left"
        );
        assert_eq!(root.read_counter("vm1").unwrap(), Some(42));
        assert_eq!(root.trees(10), ["vm1"]);
        assert!(root.remove("vm1").is_empty());
        assert!(!root.path().join("vm1").exists());
    }

    #[test]
    fn a_link_at_the_vm_folder_is_refused_and_left_alone() {
        let (_dir, root, outside) = setup();
        symlink(&outside, root.path().join("vm1")).unwrap();
        let err = root.write("vm1", true, 1).unwrap_err();
        assert!(matches!(err, TreeError::Refused { .. }), "{err}");
        assert!(matches!(
            root.read_counter("vm1"),
            Err(TreeError::Refused { .. })
        ));
        assert!(root.trees(10).is_empty());
        assert_eq!(root.remove("vm1").len(), 1, "refusal reported");
        assert!(root.path().join("vm1").is_symlink(), "the link stays");
        untouched(&outside);
    }

    #[test]
    fn a_link_at_the_zone_folder_is_refused() {
        let (_dir, root, outside) = setup();
        fs::create_dir(root.path().join("vm1")).unwrap();
        symlink(&outside, root.path().join("vm1").join(ZONE)).unwrap();
        assert!(matches!(
            root.write("vm1", true, 1),
            Err(TreeError::Refused { .. })
        ));
        root.remove("vm1");
        untouched(&outside);
    }

    #[test]
    fn links_at_file_places_are_replaced_not_followed() {
        let (_dir, root, outside) = setup();
        let zone = root.path().join("vm1").join(ZONE);
        fs::create_dir_all(&zone).unwrap();
        for name in ["energy_uj", "name", ".energy_uj.tmp"] {
            symlink(outside.join("energy_uj"), zone.join(name)).unwrap();
        }
        // Read back: a link is not followed.
        assert!(root.read_counter("vm1").is_err());
        root.write("vm1", true, 7).unwrap();
        assert_eq!(fs::read_to_string(zone.join("energy_uj")).unwrap(), "7\n");
        assert!(!zone.join("energy_uj").is_symlink());
        untouched(&outside);
        // Cleaning up removes links as links.
        fs::remove_file(zone.join("max_energy_range_uj")).unwrap();
        symlink(outside.join("energy_uj"), zone.join("max_energy_range_uj")).unwrap();
        symlink(&outside, root.path().join("vm1").join(DOMAIN).join("x")).unwrap();
        root.remove("vm1");
        assert!(!zone.exists());
        untouched(&outside);
    }

    #[test]
    fn a_fifo_or_garbage_counter_is_not_trusted() {
        let (_dir, root, _) = setup();
        let zone = root.path().join("vm1").join(ZONE);
        fs::create_dir_all(&zone).unwrap();
        rustix::fs::mknodat(
            CWD,
            zone.join("energy_uj"),
            FileType::Fifo,
            Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        assert!(
            matches!(root.read_counter("vm1"), Err(TreeError::Refused { .. })),
            "does not block"
        );
        fs::remove_file(zone.join("energy_uj")).unwrap();
        fs::write(zone.join("energy_uj"), "x".repeat(1 << 20)).unwrap();
        let err = root.read_counter("vm1").unwrap_err();
        assert!(matches!(err, TreeError::Garbage { .. }));
        assert!(
            !err.to_string().contains("xxx"),
            "contents are never shown: {err}"
        );
    }

    #[test]
    fn a_root_that_is_a_link_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("real")).unwrap();
        symlink(dir.path().join("real"), dir.path().join("root")).unwrap();
        let err = TreeRoot::open(&dir.path().join("root")).unwrap_err();
        assert!(matches!(err, TreeError::Refused { .. }), "{err}");
    }

    #[test]
    fn a_root_others_may_rename_in_is_refused_unless_sticky() {
        use std::os::unix::fs::PermissionsExt as _;
        let cases = [
            (0o755, true),
            (0o700, true),
            (0o1777, true),
            (0o1775, true),
            (0o775, false),
            (0o757, false),
            (0o777, false),
        ];
        for (mode, accepted) in cases {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("root");
            fs::create_dir(&path).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
            let opened = TreeRoot::open(&path);
            assert_eq!(opened.is_ok(), accepted, "{mode:04o}: {opened:?}");
            if let Err(err) = opened {
                assert!(matches!(err, TreeError::Refused { .. }), "{err}");
                assert!(err.to_string().contains("chmod go-w"), "{err}");
            }
        }
    }

    #[test]
    fn only_scaphs_names_are_cleaned() {
        let cases = [
            ("energy_uj", true),
            ("name", true),
            ("max_energy_range_uj", true),
            (".energy_uj.tmp", true),
            (".name.0123456789abcdef", true),
            (".name.0123456789abcde", false),
            (".energy_uj.0123456789abcdeg", false),
            ("energy_uj.bak", false),
            (".other.tmp", false),
            ("guest-notes", false),
        ];
        for (name, ours) in cases {
            assert_eq!(is_ours(name), ours, "{name}");
        }
    }
}
