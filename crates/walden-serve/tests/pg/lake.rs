//! A small lake written directly with the walden-lake API.
//!
//! `public.orders` (20 rows): id bigint, customer text, amount numeric(10,2),
//! placed_at timestamptz, day date, paid boolean, email text (masked for bob).
//! `public.customers` (4 rows): id int, name text, region text (bob sees `eu` only).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Date32Array, Decimal128Array, Int32Array, Int64Array, RecordBatch,
    StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::compute::cast;
use walden_lake::{
    Column, ColumnType, Commit, DataFileWriter, Lake, TableChange, TableName, TableSchema,
    WriterOptions,
};

pub fn column(name: &str, ty: ColumnType, nullable: bool) -> Column {
    Column {
        name: name.into(),
        ty,
        nullable,
        doc: None,
    }
}

/// `placed_at` of order `i`: 2024-01-01 00:00:00 UTC plus `i` hours.
pub fn placed_at_micros(i: i64) -> i64 {
    1_704_067_200_000_000 + i * 3_600_000_000
}

pub async fn write(
    lake: &Lake,
    name: TableName,
    schema: TableSchema,
    arrays: Vec<ArrayRef>,
) -> TableChange {
    let table = lake
        .new_table(&name, &schema, HashMap::new())
        .expect("new table");
    let target = table.arrow_schema().clone();
    let arrays: Vec<ArrayRef> = arrays
        .iter()
        .zip(target.fields())
        .map(|(a, f)| cast(a, f.data_type()).expect("cast to the table's type"))
        .collect();
    let batch = RecordBatch::try_new(target, arrays).expect("batch");
    let mut writer = DataFileWriter::new(lake.file_io(), &table, WriterOptions::default());
    writer.write(&batch).await.expect("write");
    let mut change = TableChange::new(table);
    change.data_files = writer.close().await.expect("close");
    change
}

pub async fn build(warehouse: &Path) -> Lake {
    let lake = Lake::open(warehouse).expect("lake");
    let n = 20i64;
    let orders = write(
        &lake,
        TableName::new("public", "orders"),
        TableSchema {
            columns: vec![
                column("id", ColumnType::Int64, false),
                column("customer", ColumnType::String, true),
                column(
                    "amount",
                    ColumnType::Decimal {
                        precision: 10,
                        scale: 2,
                    },
                    true,
                ),
                column("placed_at", ColumnType::TimestampTz, true),
                column("day", ColumnType::Date, true),
                column("paid", ColumnType::Boolean, true),
                column("email", ColumnType::String, true),
            ],
            primary_key: vec!["id".into()],
        },
        vec![
            Arc::new(Int64Array::from_iter_values(1..=n)),
            Arc::new(StringArray::from_iter_values(
                (1..=n).map(|i| format!("customer-{}", (i - 1) % 4 + 1)),
            )),
            Arc::new(
                Decimal128Array::from_iter_values((1..=n).map(|i| (i * 1000 + 25) as i128))
                    .with_precision_and_scale(10, 2)
                    .expect("decimal"),
            ),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values((1..=n).map(placed_at_micros))
                    .with_timezone("UTC"),
            ),
            // 2024-01-01 is day 19723.
            Arc::new(Date32Array::from_iter_values(
                (1..=n).map(|i| 19723 + i as i32),
            )),
            Arc::new(BooleanArray::from_iter((1..=n).map(|i| Some(i % 2 == 0)))),
            Arc::new(StringArray::from_iter_values(
                (1..=n).map(|i| format!("user{i}@example.com")),
            )),
        ],
    )
    .await;
    let customers = write(
        &lake,
        TableName::new("public", "customers"),
        TableSchema {
            columns: vec![
                column("id", ColumnType::Int32, false),
                column("name", ColumnType::String, true),
                column("region", ColumnType::String, true),
            ],
            primary_key: vec!["id".into()],
        },
        vec![
            Arc::new(Int32Array::from(vec![1, 2, 3, 4])),
            Arc::new(StringArray::from(vec![
                "Ada", "Brendan", "Chiara", "Dmitri",
            ])),
            Arc::new(StringArray::from(vec!["eu", "us", "eu", "apac"])),
        ],
    )
    .await;
    lake.commit(Commit {
        tables: vec![orders, customers],
        progress: None,
    })
    .await
    .expect("commit");
    lake
}
