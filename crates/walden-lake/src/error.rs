use std::path::PathBuf;

/// Errors of the lake. Each names what was being done and where; the source chain says why.
#[derive(Debug, thiserror::Error)]
pub enum LakeError {
    #[error("cannot use the warehouse at {path}: {message}")]
    Warehouse { path: PathBuf, message: String },

    #[error("catalog database {path}: {context}")]
    Catalog {
        path: PathBuf,
        context: String,
        #[source]
        source: rusqlite::Error,
    },

    #[error(
        "commit conflict on table {table}: another writer changed it since it was read \
         (is a second walden writing to this lake?)"
    )]
    Conflict { table: String },

    #[error("table {table} does not exist in the lake")]
    NoSuchTable { table: String },

    #[error("{context}")]
    Iceberg {
        context: String,
        #[source]
        source: Box<iceberg::Error>,
    },

    #[error("{context}")]
    Parquet {
        context: String,
        #[source]
        source: parquet::errors::ParquetError,
    },

    #[error("{context}")]
    Arrow {
        context: String,
        #[source]
        source: arrow::error::ArrowError,
    },

    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = LakeError> = std::result::Result<T, E>;

pub(crate) trait IcebergContext<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IcebergContext<T> for std::result::Result<T, iceberg::Error> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| LakeError::Iceberg {
            context: context(),
            source: Box::new(source),
        })
    }
}
