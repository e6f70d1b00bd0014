//! Exporters turn the latest `Snapshot` into something a person or a system
//! reads. None of them measures anything or owns a measurement timer.
pub mod stdout;

use crate::snapshot::Snapshot;

/// An exporter that is handed each new snapshot (push style).
pub trait Exporter {
    fn export(&mut self, snapshot: &Snapshot) -> Result<(), ExportError>;
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("writing output: {0}")]
    Io(#[from] std::io::Error),
}
