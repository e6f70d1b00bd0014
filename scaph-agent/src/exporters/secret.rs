//! Passwords and tokens for what scaph sends, from a file or the
//! environment, so that none has to be on the command line (where `ps` and
//! /proc/PID/cmdline show it to every user).
use std::{
    io::{self, Read as _},
    path::{Path, PathBuf},
};

/// Longest secret file read.
pub const MAX_SECRET_BYTES: u64 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: longer than {MAX_SECRET_BYTES} bytes")]
    TooLong { path: PathBuf },
    #[error("{what}: empty")]
    Empty { what: String },
    #[error("{what}: has characters an HTTP header cannot carry")]
    NotHeaderSafe { what: String },
}

/// The secret in `path`: its first line, without the line ending. Never
/// shown in an error.
///
/// # Errors
/// When the file cannot be read, is too long, or holds nothing usable.
pub fn from_file(path: &Path) -> Result<String, SecretError> {
    let read = |source| SecretError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .map_err(read)?
        .take(MAX_SECRET_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read)?;
    if bytes.len() as u64 > MAX_SECRET_BYTES {
        return Err(SecretError::TooLong {
            path: path.to_path_buf(),
        });
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| read(io::Error::new(io::ErrorKind::InvalidData, "not UTF-8")))?;
    let secret = text.lines().next().unwrap_or_default().to_owned();
    check(secret, &path.display().to_string())
}

/// The secret in environment variable `name`, if set.
///
/// # Errors
/// When it is set but empty or not usable in a header.
pub fn from_env(name: &str) -> Result<Option<String>, SecretError> {
    match std::env::var(name) {
        Ok(value) => check(value, &format!("${name}")).map(Some),
        Err(_) => Ok(None),
    }
}

/// Refuses an empty secret, or one an HTTP header cannot carry.
///
/// # Errors
/// As above; `what` names where it came from.
pub fn check(secret: String, what: &str) -> Result<String, SecretError> {
    if secret.is_empty() {
        return Err(SecretError::Empty {
            what: what.to_owned(),
        });
    }
    if secret.bytes().any(|b| b.is_ascii_control()) {
        return Err(SecretError::NotHeaderSafe {
            what: what.to_owned(),
        });
    }
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_line_of_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        let cases: [(&[u8], Option<&str>); 6] = [
            (b"s3cret\n", Some("s3cret")),
            (b"s3cret", Some("s3cret")),
            (b"s3cret\r\nsecond line\n", Some("s3cret")),
            (b"\n", None),
            (b"tab\there\n", None),
            (b"\xff\xfe\n", None),
        ];
        for (contents, expected) in cases {
            std::fs::write(&path, contents).unwrap();
            let got = from_file(&path);
            assert_eq!(got.as_deref().ok(), expected, "{contents:?}");
            if let Err(e) = got {
                assert!(
                    !e.to_string().contains("tab"),
                    "the contents are never shown: {e}"
                );
            }
        }
        std::fs::write(&path, "x".repeat(5000)).unwrap();
        assert!(matches!(from_file(&path), Err(SecretError::TooLong { .. })));
        assert!(matches!(
            from_file(&dir.path().join("missing")),
            Err(SecretError::Read { .. })
        ));
    }
}
