//! The row-level commit path iceberg-rust 0.10 does not offer: new data files plus
//! position-delete files (or a full replacement) become a new snapshot with the next
//! sequence number, for any number of tables, and all metadata pointers move in one
//! catalog transaction together with the replication progress.

use std::collections::HashMap;

use iceberg::spec::{
    DataContentType, DataFile, MAIN_BRANCH, ManifestFile, ManifestListWriter,
    ManifestWriterBuilder, Operation, Snapshot, SnapshotReference, SnapshotRetention, Summary,
    TableMetadata, TableMetadataBuilder,
};
use uuid::Uuid;

use crate::catalog::{CatalogChanges, PointerSwap, Progress};
use crate::error::IcebergContext;
use crate::{Lake, LakeError, LakeTable, Result};

/// Changes to one table within a [`Commit`].
#[derive(Debug, Clone)]
pub struct TableChange {
    /// The table as it was read (or created with [`Lake::new_table`]). The commit fails
    /// with [`LakeError::Conflict`] if the catalog moved on since.
    pub table: LakeTable,
    /// New data files (content `Data`).
    pub data_files: Vec<DataFile>,
    /// New position-delete files. They apply to data files of earlier or equal sequence
    /// numbers: rows already in the table and rows of `data_files` of this same commit
    /// (a big transaction written in several parts deletes rows of its own earlier parts).
    pub delete_files: Vec<DataFile>,
    /// Drop every file of the previous snapshot: the table's contents become exactly
    /// `data_files` (used by a re-sync).
    pub replace: bool,
    /// Extra snapshot summary properties (walden records `walden.lsn`).
    pub summary: HashMap<String, String>,
}

impl TableChange {
    pub fn new(table: LakeTable) -> Self {
        Self {
            table,
            data_files: Vec::new(),
            delete_files: Vec::new(),
            replace: false,
            summary: HashMap::new(),
        }
    }
}

/// One atomic unit: every table change and the progress become visible together.
#[derive(Debug, Clone, Default)]
pub struct Commit {
    pub tables: Vec<TableChange>,
    pub progress: Option<Progress>,
}

/// What a successful commit produced.
#[derive(Debug, Clone)]
pub struct CommitOutcome {
    /// The tables as they are now, in the order of [`Commit::tables`].
    pub tables: Vec<LakeTable>,
}

impl Lake {
    /// Writes manifests, manifest lists and metadata files for every table, then swaps all
    /// metadata pointers and writes the progress in one catalog transaction.
    pub async fn commit(&self, commit: Commit) -> Result<CommitOutcome> {
        self.commit_with(commit, CatalogChanges::default()).await
    }

    /// [`Lake::commit`] plus view and table entries created or removed in the same catalog
    /// transaction (a model switching between view and table is never both or neither).
    pub async fn commit_with(
        &self,
        commit: Commit,
        changes: CatalogChanges,
    ) -> Result<CommitOutcome> {
        let now_ms = chrono::Utc::now().timestamp_millis();
        let mut swaps = Vec::with_capacity(commit.tables.len());
        let mut prepared = Vec::with_capacity(commit.tables.len());
        for change in &commit.tables {
            let (location, metadata) = self.prepare(change, now_ms).await?;
            swaps.push(PointerSwap {
                table: change.table.name().clone(),
                expected: change.table.metadata_location().map(str::to_string),
                new_location: location.clone(),
            });
            prepared.push((change.table.name().clone(), metadata, location));
        }
        let store = self.store.clone();
        let progress = commit.progress.clone();
        tokio::task::spawn_blocking(move || store.commit(&swaps, progress.as_ref(), &changes))
            .await
            .map_err(|e| LakeError::Invalid(format!("catalog commit task failed: {e}")))??;
        let tables = prepared
            .into_iter()
            .map(|(name, metadata, location)| {
                LakeTable::new(name, std::sync::Arc::new(metadata), Some(location))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(CommitOutcome { tables })
    }

    async fn prepare(&self, change: &TableChange, now_ms: i64) -> Result<(String, TableMetadata)> {
        let table = &change.table;
        let name = table.name();
        let base = table.metadata();
        let meta_dir = format!("{}/metadata", base.location());
        let io = &self.file_io;
        let ctx = |what: &str| format!("committing {name}: {what}");

        for f in &change.data_files {
            if f.content_type() != DataContentType::Data {
                return Err(LakeError::Invalid(ctx("a data file has delete content")));
            }
        }
        for f in &change.delete_files {
            if f.content_type() != DataContentType::PositionDeletes {
                return Err(LakeError::Invalid(ctx(
                    "only position deletes are written (pyiceberg cannot read equality deletes)",
                )));
            }
        }

        let snapshot_id = new_snapshot_id(base);
        let sequence_number = base.next_sequence_number();
        let commit_uuid = Uuid::new_v4();

        let mut manifests: Vec<ManifestFile> = Vec::new();
        for (files, deletes) in [(&change.data_files, false), (&change.delete_files, true)] {
            if files.is_empty() {
                continue;
            }
            let path = format!("{meta_dir}/{commit_uuid}-m{}.avro", u8::from(deletes));
            manifests.push(
                write_manifest(
                    io,
                    table,
                    &path,
                    ManifestContent {
                        snapshot_id,
                        sequence_number,
                        deletes,
                        kept: &[],
                        added: files,
                    },
                )
                .await?,
            );
        }

        let parent = base.current_snapshot();
        let mut totals = Totals::default();
        if let Some(parent) = parent.filter(|_| !change.replace) {
            let list = crate::scan::read_manifest_list(io, parent, name).await?;
            manifests.extend(list.consume_entries());
            totals = Totals::from_summary(&parent.summary().additional_properties);
        }

        let added_records: u64 = change.data_files.iter().map(|f| f.record_count()).sum();
        let added_size: u64 = change
            .data_files
            .iter()
            .map(|f| f.file_size_in_bytes())
            .sum();
        let added_deletes: u64 = change.delete_files.iter().map(|f| f.record_count()).sum();
        totals.records = (totals.records + added_records).saturating_sub(added_deletes);
        totals.data_files += change.data_files.len() as u64;
        totals.delete_files += change.delete_files.len() as u64;
        totals.position_deletes += added_deletes;
        totals.files_size += added_size;

        let operation = if change.replace || !change.delete_files.is_empty() {
            Operation::Overwrite
        } else {
            Operation::Append
        };
        let mut props = change.summary.clone();
        props.insert(
            "added-data-files".into(),
            change.data_files.len().to_string(),
        );
        props.insert("added-records".into(), added_records.to_string());
        props.insert("added-files-size".into(), added_size.to_string());
        props.insert(
            "added-delete-files".into(),
            change.delete_files.len().to_string(),
        );
        props.insert("added-position-deletes".into(), added_deletes.to_string());
        totals.write(&mut props);

        write_snapshot(
            io,
            table,
            snapshot_id,
            sequence_number,
            manifests,
            Summary {
                operation,
                additional_properties: props,
            },
            now_ms,
        )
        .await
    }
}

/// A snapshot id the table has not used.
pub(crate) fn new_snapshot_id(base: &TableMetadata) -> i64 {
    loop {
        let id = rand::random::<i64>() & i64::MAX;
        if id != 0 && base.snapshot_by_id(id).is_none() {
            return id;
        }
    }
}

/// A file carried into a new manifest as `EXISTING`, with what its first commit gave it.
pub(crate) struct KeptFile {
    pub file: DataFile,
    pub snapshot_id: i64,
    pub sequence_number: i64,
    pub file_sequence_number: i64,
}

/// What one manifest of a new snapshot lists.
pub(crate) struct ManifestContent<'a> {
    pub snapshot_id: i64,
    pub sequence_number: i64,
    /// A delete manifest (position deletes) rather than a data manifest.
    pub deletes: bool,
    /// Files carried over, keeping their sequence numbers.
    pub kept: &'a [&'a KeptFile],
    /// Files added by this snapshot (they get `sequence_number`).
    pub added: &'a [DataFile],
}

/// Writes one manifest of a new snapshot of `table` at `path`.
pub(crate) async fn write_manifest(
    io: &iceberg::io::FileIO,
    table: &LakeTable,
    path: &str,
    content: ManifestContent<'_>,
) -> Result<ManifestFile> {
    let base = table.metadata();
    let ctx = |what: &str| format!("committing {}: {what}", table.name());
    let output = io.new_output(path).ctx(|| ctx("creating a manifest"))?;
    let builder = ManifestWriterBuilder::new(
        output,
        Some(content.snapshot_id),
        base.current_schema().clone(),
        base.default_partition_spec().as_ref().clone(),
    );
    let mut writer = if content.deletes {
        builder.build_v2_deletes()
    } else {
        builder.build_v2_data()
    };
    for k in content.kept {
        writer
            .add_existing_file(
                k.file.clone(),
                k.snapshot_id,
                k.sequence_number,
                Some(k.file_sequence_number),
            )
            .ctx(|| ctx("adding a kept file to a manifest"))?;
    }
    for f in content.added {
        writer
            .add_file(f.clone(), content.sequence_number)
            .ctx(|| ctx("adding a file to a manifest"))?;
    }
    writer
        .write_manifest_file()
        .await
        .ctx(|| ctx("writing a manifest"))
}

/// Writes the manifest list of a new snapshot of `table` (the next after its current one)
/// over `manifests`, then the table's next metadata file with that snapshot current on the
/// main branch. Returns the metadata file's location and the metadata; nothing is visible
/// until the catalog pointer moves to it.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn write_snapshot(
    io: &iceberg::io::FileIO,
    table: &LakeTable,
    snapshot_id: i64,
    sequence_number: i64,
    manifests: Vec<ManifestFile>,
    summary: Summary,
    now_ms: i64,
) -> Result<(String, TableMetadata)> {
    let name = table.name();
    let base = table.metadata();
    let ctx = |what: &str| format!("committing {name}: {what}");
    let parent = base.current_snapshot();
    let list_path = format!(
        "{}/metadata/snap-{snapshot_id}-1-{}.avro",
        base.location(),
        Uuid::new_v4()
    );
    let list_out = io
        .new_output(&list_path)
        .ctx(|| ctx("creating the manifest list"))?
        .writer()
        .await
        .ctx(|| ctx("opening the manifest list"))?;
    let mut list_writer = ManifestListWriter::v2(
        list_out,
        snapshot_id,
        parent.map(|p| p.snapshot_id()),
        sequence_number,
    );
    list_writer
        .add_manifests(manifests.into_iter())
        .ctx(|| ctx("adding manifests to the manifest list"))?;
    list_writer
        .close()
        .await
        .ctx(|| ctx("writing the manifest list"))?;
    let snapshot = Snapshot::builder()
        .with_snapshot_id(snapshot_id)
        .with_parent_snapshot_id(parent.map(|p| p.snapshot_id()))
        .with_sequence_number(sequence_number)
        .with_timestamp_ms(now_ms)
        .with_manifest_list(list_path)
        .with_summary(summary)
        .with_schema_id(base.current_schema().schema_id())
        .build();
    let metadata = TableMetadataBuilder::new_from_metadata(
        base.clone(),
        table.metadata_location().map(str::to_string),
    )
    .add_snapshot(snapshot)
    .and_then(|b| {
        b.set_ref(
            MAIN_BRANCH,
            SnapshotReference::new(snapshot_id, SnapshotRetention::branch(None, None, None)),
        )
    })
    .and_then(|b| b.build())
    .ctx(|| ctx("building the new metadata"))?
    .metadata;
    let location = write_metadata(io, table, &metadata).await?;
    Ok((location, metadata))
}

/// Writes `metadata` as `table`'s next metadata file; returns its location.
pub(crate) async fn write_metadata(
    io: &iceberg::io::FileIO,
    table: &LakeTable,
    metadata: &TableMetadata,
) -> Result<String> {
    let name = table.name();
    let location = next_metadata_location(table);
    let json = serde_json::to_vec(metadata)
        .map_err(|e| LakeError::Invalid(format!("{name}: serializing metadata: {e}")))?;
    io.new_output(&location)
        .ctx(|| format!("{name}: creating the metadata file"))?
        .write(json.into())
        .await
        .ctx(|| format!("{name}: writing the metadata file"))?;
    Ok(location)
}

/// Where the table's next metadata file goes: `<location>/metadata/<version+1>-<uuid>.metadata.json`.
pub(crate) fn next_metadata_location(table: &LakeTable) -> String {
    let version = table
        .metadata_location()
        .and_then(metadata_version)
        .map_or(0, |v| v + 1);
    format!(
        "{}/metadata/{version:05}-{}.metadata.json",
        table.metadata().location(),
        Uuid::new_v4()
    )
}

/// The version number at the start of a metadata file name (`00012-<uuid>.metadata.json`).
fn metadata_version(location: &str) -> Option<u64> {
    let file = location.rsplit('/').next()?;
    file.split('-').next()?.parse().ok()
}

#[derive(Default)]
struct Totals {
    records: u64,
    data_files: u64,
    delete_files: u64,
    position_deletes: u64,
    files_size: u64,
}

impl Totals {
    fn from_summary(p: &HashMap<String, String>) -> Self {
        let get = |k: &str| p.get(k).and_then(|v| v.parse().ok()).unwrap_or(0);
        Self {
            records: get("total-records"),
            data_files: get("total-data-files"),
            delete_files: get("total-delete-files"),
            position_deletes: get("total-position-deletes"),
            files_size: get("total-files-size"),
        }
    }

    fn write(&self, p: &mut HashMap<String, String>) {
        p.insert("total-records".into(), self.records.to_string());
        p.insert("total-data-files".into(), self.data_files.to_string());
        p.insert("total-delete-files".into(), self.delete_files.to_string());
        p.insert(
            "total-position-deletes".into(),
            self.position_deletes.to_string(),
        );
        p.insert("total-files-size".into(), self.files_size.to_string());
        p.insert("total-equality-deletes".into(), "0".into());
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn metadata_version_parses_the_prefix() {
        assert_eq!(
            super::metadata_version("/w/t/metadata/00012-abc-def.metadata.json"),
            Some(12)
        );
        assert_eq!(super::metadata_version("/w/t/metadata/x.json"), None);
    }
}
