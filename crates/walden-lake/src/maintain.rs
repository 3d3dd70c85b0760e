//! Table maintenance: rewriting files (compaction) with the manifests merged, expiring old
//! snapshots, and removing files no snapshot references.
//!
//! Every operation here is a commit like any other (compare-and-set on the metadata
//! pointer), so it can never lose a concurrent writer's change: a writer that moved the
//! table first makes it fail with [`LakeError::Conflict`]. Files are deleted only after
//! the commit that stops referencing them, and only if no remaining snapshot references
//! them.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arrow::array::{Array, StringArray};
use iceberg::spec::{DataContentType, DataFile, ManifestFile, TableMetadata, TableMetadataBuilder};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use uuid::Uuid;

use crate::catalog::PointerSwap;
use crate::commit::{KeptFile, ManifestContent, new_snapshot_id, write_manifest};
use crate::error::IcebergContext;
use crate::{Lake, LakeError, LakeTable, Result};

/// What [`Lake::expire_snapshots`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExpireOutcome {
    pub snapshots_removed: usize,
    /// Files deleted: manifest lists, manifests, data and delete files only expired
    /// snapshots referenced, old metadata files, and orphans.
    pub files_deleted: usize,
}

/// A live entry of the current snapshot (data or delete file) with its snapshot id and
/// sequence numbers.
type Entry = KeptFile;

impl Lake {
    /// Replaces the data files `removed` of `table`'s current snapshot by `added` (their
    /// live rows, rewritten), in one new snapshot whose manifests are merged into one for
    /// data and one for deletes. Kept files keep their sequence numbers; the new files get
    /// the new one, so no existing delete applies to them. A delete file all of whose rows
    /// point at removed (or otherwise gone) data files is dropped.
    ///
    /// `table` must be the table as last committed: if anything committed since, this
    /// fails with [`LakeError::Conflict`] and changes nothing.
    ///
    /// With `merged_deletes`, every current delete file is dropped and these take their
    /// place (position deletes of the kept files, merged; see
    /// [`crate::PositionDeleteWriter`]): many small delete files become one without
    /// rewriting the data files they point at.
    pub async fn rewrite_files(
        &self,
        table: &LakeTable,
        removed: &[String],
        added: Vec<DataFile>,
        merged_deletes: Option<Vec<DataFile>>,
    ) -> Result<LakeTable> {
        let name = table.name();
        let base = table.metadata();
        let io = &self.file_io;
        let ctx = |what: &str| format!("rewriting files of {name}: {what}");
        let Some(parent) = base.current_snapshot() else {
            return Err(LakeError::Invalid(ctx("the table has no snapshot")));
        };
        let removed: HashSet<&str> = removed.iter().map(String::as_str).collect();
        let entries = live_entries(io, table).await?;
        let kept_data: HashSet<&str> = entries
            .iter()
            .filter(|e| e.file.content_type() == DataContentType::Data)
            .map(|e| e.file.file_path())
            .filter(|p| !removed.contains(p))
            .collect();
        let mut dropped_records = 0u64;
        let mut dropped_deletes = 0u64;
        let mut kept: Vec<&Entry> = Vec::with_capacity(entries.len());
        for e in &entries {
            match e.file.content_type() {
                DataContentType::Data => {
                    if removed.contains(e.file.file_path()) {
                        dropped_records += e.file.record_count();
                    } else {
                        kept.push(e);
                    }
                }
                _ if merged_deletes.is_some() => dropped_deletes += 1,
                _ => {
                    let targets = delete_targets(io, e.file.file_path(), name).await?;
                    if targets.iter().any(|t| kept_data.contains(t.as_str())) {
                        kept.push(e);
                    } else {
                        dropped_deletes += 1;
                    }
                }
            }
        }
        let gone: usize = entries
            .iter()
            .filter(|e| removed.contains(e.file.file_path()))
            .count();
        if gone != removed.len() {
            return Err(LakeError::Invalid(ctx(
                "a file to remove is not in the current snapshot",
            )));
        }

        let snapshot_id = new_snapshot_id(base);
        let sequence_number = base.next_sequence_number();
        let meta_dir = format!("{}/metadata", base.location());
        let commit_uuid = Uuid::new_v4();
        let mut manifests: Vec<ManifestFile> = Vec::new();
        for deletes in [false, true] {
            let mine: Vec<&Entry> = kept
                .iter()
                .copied()
                .filter(|e| (e.file.content_type() == DataContentType::Data) != deletes)
                .collect();
            let new_files: &[DataFile] = match (deletes, &merged_deletes) {
                (false, _) => &added,
                (true, Some(merged)) => merged,
                (true, None) => &[],
            };
            if mine.is_empty() && new_files.is_empty() {
                continue;
            }
            let path = format!("{meta_dir}/{commit_uuid}-r{}.avro", u8::from(deletes));
            manifests.push(
                write_manifest(
                    io,
                    table,
                    &path,
                    ManifestContent {
                        snapshot_id,
                        sequence_number,
                        deletes,
                        kept: &mine,
                        added: new_files,
                    },
                )
                .await?,
            );
        }

        let mut summary = parent.summary().additional_properties.clone();
        let added_records: u64 = added.iter().map(DataFile::record_count).sum();
        let added_size: u64 = added.iter().map(DataFile::file_size_in_bytes).sum();
        let get = |k: &str| -> u64 { summary.get(k).and_then(|v| v.parse().ok()).unwrap_or(0) };
        let data_files = kept_data.len() as u64 + added.len() as u64;
        let merged: &[DataFile] = merged_deletes.as_deref().unwrap_or(&[]);
        let delete_files = kept
            .iter()
            .filter(|e| e.file.content_type() != DataContentType::Data)
            .count() as u64
            + merged.len() as u64;
        let position_deletes: u64 = kept
            .iter()
            .filter(|e| e.file.content_type() != DataContentType::Data)
            .map(|e| e.file.record_count())
            .sum::<u64>()
            + merged.iter().map(DataFile::record_count).sum::<u64>();
        let files_size: u64 = kept
            .iter()
            .filter(|e| e.file.content_type() == DataContentType::Data)
            .map(|e| e.file.file_size_in_bytes())
            .sum::<u64>()
            + added_size;
        // Live rows do not change: the rewritten rows are exactly the removed files'
        // live rows.
        let records = get("total-records");
        for (k, v) in [
            ("total-data-files", data_files),
            ("total-delete-files", delete_files),
            ("total-position-deletes", position_deletes),
            ("total-files-size", files_size),
            ("total-records", records),
            ("added-data-files", added.len() as u64),
            ("added-records", added_records),
            ("added-files-size", added_size),
            ("deleted-data-files", removed.len() as u64),
            ("deleted-records", dropped_records),
            ("removed-delete-files", dropped_deletes),
        ] {
            summary.insert(k.to_string(), v.to_string());
        }
        summary.insert("walden.operation".into(), "compact".into());
        for k in ["added-delete-files", "added-position-deletes"] {
            summary.remove(k);
        }
        self.commit_snapshot(
            table,
            snapshot_id,
            sequence_number,
            manifests,
            iceberg::spec::Operation::Replace,
            summary,
        )
        .await
    }

    /// Removes snapshots of `table` older than `keep_since_ms` (Unix milliseconds), always
    /// keeping the current one, then deletes every file of the table's directories no
    /// remaining snapshot or metadata version references (what only expired snapshots
    /// used, files of writes that never committed, metadata files past
    /// `write.metadata.previous-versions-max`), if it is older than `keep_since_ms` too.
    pub async fn expire_snapshots(
        &self,
        table: &LakeTable,
        keep_since_ms: i64,
    ) -> Result<(LakeTable, ExpireOutcome)> {
        let name = table.name();
        let base = table.metadata();
        let current = base.current_snapshot().map(|s| s.snapshot_id());
        let expired: Vec<i64> = base
            .snapshots()
            .filter(|s| Some(s.snapshot_id()) != current && s.timestamp_ms() < keep_since_ms)
            .map(|s| s.snapshot_id())
            .collect();
        let mut outcome = ExpireOutcome {
            snapshots_removed: expired.len(),
            files_deleted: 0,
        };
        let table = if expired.is_empty() {
            table.clone()
        } else {
            let built = TableMetadataBuilder::new_from_metadata(
                base.clone(),
                table.metadata_location().map(str::to_string),
            )
            .remove_snapshots(&expired)
            .build()
            .ctx(|| format!("expiring snapshots of {name}"))?;
            self.swap_metadata(table, built.metadata).await?
        };

        // What the table still references.
        let io = &self.file_io;
        let mut referenced: HashSet<String> = HashSet::new();
        if let Some(location) = table.metadata_location() {
            referenced.insert(location.to_string());
        }
        for log in table.metadata().metadata_log() {
            referenced.insert(log.metadata_file.clone());
        }
        let mut seen_manifests: HashSet<String> = HashSet::new();
        for snapshot in table.metadata().snapshots() {
            referenced.insert(snapshot.manifest_list().to_string());
            let list = crate::scan::read_manifest_list(io, snapshot, name).await?;
            for manifest_file in list.entries() {
                if !seen_manifests.insert(manifest_file.manifest_path.clone()) {
                    continue;
                }
                referenced.insert(manifest_file.manifest_path.clone());
                let manifest = manifest_file
                    .load_manifest(io)
                    .await
                    .ctx(|| format!("{name}: reading manifest {}", manifest_file.manifest_path))?;
                for entry in manifest.entries() {
                    referenced.insert(entry.data_file().file_path().to_string());
                }
            }
        }
        let cutoff =
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(keep_since_ms.max(0) as u64);
        for dir in ["data", "metadata"] {
            let path = std::path::Path::new(table.location()).join(dir);
            let Ok(read) = std::fs::read_dir(&path) else {
                continue;
            };
            for entry in read.flatten() {
                let file = entry.path();
                let Some(text) = file.to_str() else { continue };
                if referenced.contains(text) {
                    continue;
                }
                let old = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t < cutoff);
                if old && entry.file_type().is_ok_and(|t| t.is_file()) {
                    match std::fs::remove_file(&file) {
                        Ok(()) => outcome.files_deleted += 1,
                        Err(e) => tracing::warn!(file = %file.display(), error = %e,
                            "could not delete an unreferenced lake file"),
                    }
                }
            }
        }
        Ok((table, outcome))
    }

    /// Writes a snapshot with `manifests` as the table's new current snapshot and moves
    /// the catalog pointer to it.
    async fn commit_snapshot(
        &self,
        table: &LakeTable,
        snapshot_id: i64,
        sequence_number: i64,
        manifests: Vec<ManifestFile>,
        operation: iceberg::spec::Operation,
        summary: HashMap<String, String>,
    ) -> Result<LakeTable> {
        let (location, metadata) = crate::commit::write_snapshot(
            &self.file_io,
            table,
            snapshot_id,
            sequence_number,
            manifests,
            iceberg::spec::Summary {
                operation,
                additional_properties: summary,
            },
            chrono::Utc::now().timestamp_millis(),
        )
        .await?;
        self.swap_pointer(table, location, metadata).await
    }

    /// Writes `metadata` as the table's next metadata file and moves the catalog pointer
    /// to it (compare-and-set).
    async fn swap_metadata(&self, table: &LakeTable, metadata: TableMetadata) -> Result<LakeTable> {
        let location = crate::commit::write_metadata(&self.file_io, table, &metadata).await?;
        self.swap_pointer(table, location, metadata).await
    }

    async fn swap_pointer(
        &self,
        table: &LakeTable,
        location: String,
        metadata: TableMetadata,
    ) -> Result<LakeTable> {
        let swap = PointerSwap {
            table: table.name().clone(),
            expected: table.metadata_location().map(str::to_string),
            new_location: location.clone(),
        };
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.commit(&[swap], None, &Default::default()))
            .await
            .map_err(|e| LakeError::Invalid(format!("catalog commit task failed: {e}")))??;
        LakeTable::new(table.name().clone(), Arc::new(metadata), Some(location))
    }
}

/// The live entries of the table's current snapshot.
async fn live_entries(io: &iceberg::io::FileIO, table: &LakeTable) -> Result<Vec<Entry>> {
    let name = table.name();
    let Some(snapshot) = table.metadata().current_snapshot() else {
        return Ok(Vec::new());
    };
    let list = crate::scan::read_manifest_list(io, snapshot, name).await?;
    let mut out = Vec::new();
    for manifest_file in list.entries() {
        let manifest = manifest_file
            .load_manifest(io)
            .await
            .ctx(|| format!("{name}: reading manifest {}", manifest_file.manifest_path))?;
        for entry in manifest.entries() {
            if !entry.is_alive() {
                continue;
            }
            let seq = entry.sequence_number().unwrap_or(0);
            out.push(Entry {
                file: entry.data_file().clone(),
                snapshot_id: entry.snapshot_id().unwrap_or(snapshot.snapshot_id()),
                sequence_number: seq,
                file_sequence_number: entry.file_sequence_number.unwrap_or(seq),
            });
        }
    }
    Ok(out)
}

/// The data file paths a position-delete file points at.
async fn delete_targets(
    io: &iceberg::io::FileIO,
    path: &str,
    name: &crate::TableName,
) -> Result<HashSet<String>> {
    let ctx = || format!("{name}: reading delete file {path}");
    let bytes = io.new_input(path).ctx(ctx)?.read().await.ctx(ctx)?;
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(|source| LakeError::Parquet {
            context: ctx(),
            source,
        })?;
    let mask = ProjectionMask::roots(builder.parquet_schema(), [0]);
    let reader = builder
        .with_projection(mask)
        .build()
        .map_err(|source| LakeError::Parquet {
            context: ctx(),
            source,
        })?;
    let mut targets = HashSet::new();
    for batch in reader {
        let batch = batch.map_err(|source| LakeError::Arrow {
            context: ctx(),
            source,
        })?;
        if let Some(paths) = batch.column(0).as_any().downcast_ref::<StringArray>() {
            for i in 0..paths.len() {
                if paths.is_valid(i) {
                    targets.insert(paths.value(i).to_string());
                }
            }
        }
    }
    Ok(targets)
}
