//! Fake sysfs trees for the sensor tests, built from data tables.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{fs, os::unix::fs::PermissionsExt, path::Path};

use tempfile::TempDir;

/// One entry of a fake tree, path relative to its root.
#[derive(Clone, Copy, Debug)]
pub enum Entry<'a> {
    File(&'a str, &'a str),
    Dir(&'a str),
    /// A file whose mode is 000 (root still reads it: see `can_read`).
    Unreadable(&'a str, &'a str),
}

/// Writes `entries` into a fresh temporary folder.
pub fn write_tree(entries: &[Entry<'_>]) -> TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    add(dir.path(), entries);
    dir
}

/// Writes `entries` under `root` (creating folders, overwriting files).
pub fn add(root: &Path, entries: &[Entry<'_>]) {
    for entry in entries {
        match *entry {
            Entry::File(path, content) => put(root, path, content),
            Entry::Dir(path) => fs::create_dir_all(root.join(path)).unwrap(),
            Entry::Unreadable(path, content) => {
                put(root, path, content);
                fs::set_permissions(root.join(path), fs::Permissions::from_mode(0o000)).unwrap();
            }
        }
    }
}

/// Overwrites one file in place (same inode, like sysfs or a truncating writer).
pub fn put(root: &Path, path: &str, content: &str) {
    let path = root.join(path);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    fs::write(path, content).unwrap();
}

/// Whether this process can open `path` for reading: false for a mode-000
/// file unless we run as root (or with `CAP_DAC_OVERRIDE`), as in some CI.
pub fn can_read(path: &Path) -> bool {
    fs::File::open(path).is_ok()
}
