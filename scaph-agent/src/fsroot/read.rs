//! Reading small `/proc` and `/sys` files: bounded, into a reused buffer,
//! and without the `fstat` + `lseek` that `Read::read_to_end` does first
//! (useless there: these files report size 0).
use std::{
    fs::File,
    io::{self, Read},
    path::Path,
};

/// How much of a file to read.
#[derive(Clone, Copy, Debug)]
pub struct Extent {
    /// Most bytes read (a fake root could point at an endless file).
    pub limit: usize,
    /// The file is one line that the kernel hands out whole in one `read`:
    /// stop when a short read ends with a newline, saving the `read` that
    /// would return 0 (a quarter of the system calls per process).
    pub single_line: bool,
}

/// Why a file could not be read.
#[derive(Debug)]
pub enum ReadFailure {
    /// The process is gone (`ENOENT`, `ESRCH`): normal, not worth a log line.
    Gone,
    Other(io::Error),
}

impl From<io::Error> for ReadFailure {
    fn from(error: io::Error) -> Self {
        if is_gone(&error) {
            Self::Gone
        } else {
            Self::Other(error)
        }
    }
}

/// Reads the file at `path` into `buf` (cleared first), see [`Extent`].
pub fn read_small_file(path: &Path, buf: &mut Vec<u8>, extent: Extent) -> Result<(), ReadFailure> {
    let mut file = File::open(path)?;
    Ok(read_to_end_into(&mut file, buf, extent)?)
}

/// Reads `file` to its end into `buf` (cleared first), see [`Extent`].
pub fn read_to_end_into(file: &mut File, buf: &mut Vec<u8>, extent: Extent) -> io::Result<()> {
    buf.clear();
    let mut chunk = [0u8; 4096];
    while buf.len() < extent.limit {
        let want = chunk.len().min(extent.limit - buf.len());
        match file.read(&mut chunk[..want]) {
            Ok(0) => break,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if extent.single_line && n < want && chunk[n - 1] == b'\n' {
                    break;
                }
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// A one-value file: a sysfs attribute (`queue/rotational`, `online`) or
/// `/proc/PID/statm`. The kernel's are a few bytes; a fake root's are cut.
pub const ATTRIBUTE: Extent = Extent {
    limit: 4096,
    single_line: true,
};

/// The value of a one-value file (see [`ATTRIBUTE`]), trimmed; `None`
/// when it cannot be read.
#[must_use]
pub fn read_attribute(path: &Path) -> Option<String> {
    let mut buf = Vec::new();
    read_small_file(path, &mut buf, ATTRIBUTE).ok()?;
    Some(String::from_utf8_lossy(&buf).trim().to_owned())
}

/// Whether an I/O error means the process went away (`ENOENT`, `ESRCH`).
#[must_use]
pub fn is_gone(error: &io::Error) -> bool {
    error.kind() == io::ErrorKind::NotFound || error.raw_os_error() == Some(libc::ESRCH)
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    #[test]
    fn read_limit_is_respected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        fs::write(&path, vec![b'x'; 10_000]).unwrap();
        let mut buf = Vec::new();
        let extent = |limit, single_line| Extent { limit, single_line };
        read_small_file(&path, &mut buf, extent(5000, false)).unwrap();
        assert_eq!(buf.len(), 5000);
        read_small_file(&path, &mut buf, extent(1 << 20, false)).unwrap();
        assert_eq!(buf.len(), 10_000);
        fs::write(&path, b"one line\n").unwrap();
        read_small_file(&path, &mut buf, extent(64, true)).unwrap();
        assert_eq!(buf, b"one line\n");
        assert!(matches!(
            read_small_file(&dir.path().join("none"), &mut buf, extent(10, false)),
            Err(ReadFailure::Gone)
        ));
        fs::write(&path, b" 1\n").unwrap();
        assert_eq!(read_attribute(&path).as_deref(), Some("1"));
        fs::write(&path, vec![b'1'; 1 << 20]).unwrap();
        assert_eq!(
            read_attribute(&path).map(|v| v.len()),
            Some(ATTRIBUTE.limit)
        );
        assert_eq!(read_attribute(&dir.path().join("none")), None);
    }
}
