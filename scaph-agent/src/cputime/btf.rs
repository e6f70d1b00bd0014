//! Finds the `task_struct` field offsets the BTF kernel program needs, in the
//! running kernel's BTF (`/sys/kernel/btf/vmlinux`).
//!
//! aya-ebpf has no CO-RE field relocations, so the loader resolves the offsets
//! here and hands them to the program as a read-only global.
use std::path::{Path, PathBuf};

use btfparse::{Offset, Readable, TypeInformation};
use scaph_common::TaskOffsets;

pub const VMLINUX_BTF: &str = crate::fsroot::kernel::VMLINUX_BTF;

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing BTF of {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: no field {field} in struct task_struct")]
    MissingField { path: PathBuf, field: &'static str },
}

/// The whole BTF blob in memory: one read instead of one syscall per type.
struct Blob(Vec<u8>);

impl Readable for Blob {
    fn read(&self, offset: u64, buffer: &mut [u8]) -> btfparse::Result<()> {
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let src = start
            .checked_add(buffer.len())
            .and_then(|end| self.0.get(start..end))
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::UnexpectedEof))?;
        buffer.copy_from_slice(src);
        Ok(())
    }
}

/// Reads the offsets from a BTF file (normally [`VMLINUX_BTF`]).
pub fn task_offsets(path: &Path) -> Result<TaskOffsets, BtfError> {
    let blob = std::fs::read(path).map_err(|source| BtfError::Read {
        path: path.into(),
        source,
    })?;
    let parse_err = |message: String| BtfError::Parse {
        path: path.into(),
        message,
    };
    let types = TypeInformation::new(&Blob(blob)).map_err(|e| parse_err(format!("{e:?}")))?;
    let task = types
        .id_of("task_struct")
        .ok_or_else(|| parse_err("no struct task_struct".into()))?;
    let field = |field: &'static str| -> Result<u32, BtfError> {
        match types.offset_of(task, field) {
            Ok((_, Offset::ByteOffset(bytes))) => Ok(bytes),
            _ => Err(BtfError::MissingField {
                path: path.into(),
                field,
            }),
        }
    };
    Ok(TaskOffsets {
        sum_exec_runtime: field("se.sum_exec_runtime")?,
        pid: field("pid")?,
        tgid: field("tgid")?,
        group_leader: field("group_leader")?,
        start_boottime: field("start_boottime")?,
        comm: field("comm")?,
        prev_sum_exec_runtime: field("se.prev_sum_exec_runtime")?,
        policy: field("policy")?,
        start_time: field("start_time")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_is_a_read_error_naming_the_path() {
        let err = task_offsets(Path::new("/nonexistent/vmlinux")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/vmlinux"), "{err}");
    }

    #[test]
    fn garbage_is_a_parse_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("vmlinux");
        std::fs::write(&file, b"not BTF at all").unwrap();
        assert!(matches!(task_offsets(&file), Err(BtfError::Parse { .. })));
    }

    /// On a kernel with BTF (this project's development and CI machines) the
    /// offsets are found, distinct, and inside a plausible task_struct.
    #[test]
    fn running_kernel_offsets_are_plausible() {
        let path = Path::new(VMLINUX_BTF);
        if !path.exists() {
            eprintln!("skipped: {VMLINUX_BTF} absent (kernel without BTF)");
            return;
        }
        let off = task_offsets(path).unwrap();
        let all = [
            off.sum_exec_runtime,
            off.pid,
            off.tgid,
            off.group_leader,
            off.start_boottime,
            off.comm,
            off.prev_sum_exec_runtime,
            off.policy,
            off.start_time,
        ];
        assert!(all.iter().all(|&o| o > 0 && o < 16_384), "{off:?}");
        assert_eq!(
            off.tgid,
            off.pid + 4,
            "pid and tgid are adjacent i32 fields: {off:?}"
        );
    }
}
