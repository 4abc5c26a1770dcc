//! Version-checked repairs in SQL: a newer row written into the replica
//! that is behind, never over a newer one, and the equivalent delete.
//!
//! Every statement carries its version check in the `WHERE` clause, so the
//! check and the write are one statement under the row's lock: a row
//! written concurrently with a newer version survives the repair (the
//! statement then changes nothing and reports it).

use tokio_postgres::GenericClient;
use tokio_postgres::types::ToSql;

use crate::error::PgError;
use crate::table::{TableSpec, quote_ident};

/// A row as text, one value per column (table order).
pub type TextRow = Vec<Option<String>>;

/// What a repair statement did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The row was written (or deleted).
    Applied,
    /// The replica held a version at least as new: nothing changed.
    Kept,
}

/// The version column's position; a versionless table has none to check
/// a repair against.
fn version_index(spec: &TableSpec) -> Result<usize, PgError> {
    spec.version.ok_or_else(|| {
        PgError::Row(format!(
            "table {} is versionless: no version column to check a repair against",
            spec.qualified()
        ))
    })
}

/// `CAST($n AS type)` for column `i`, parameter `n`.
fn cast(spec: &TableSpec, i: usize, n: usize) -> String {
    format!("CAST(${n}::text AS {})", spec.types[i])
}

/// The key's column values from a mend key.
fn key_parts<'k>(spec: &TableSpec, key: &'k [u8]) -> Result<Vec<&'k str>, PgError> {
    let text = std::str::from_utf8(key)
        .map_err(|_| PgError::Row("a key that is not UTF-8 is not a key of this table".into()))?;
    let parts: Vec<&str> = if spec.key.len() == 1 {
        vec![text]
    } else {
        text.split('\0').collect()
    };
    if parts.len() != spec.key.len() {
        return Err(PgError::Row(format!(
            "key {text:?} has {} parts, the primary key {}",
            parts.len(),
            spec.key.len()
        )));
    }
    Ok(parts)
}

/// `pk1 = CAST($first AS t1) AND ...`.
fn key_predicate(spec: &TableSpec, first: usize) -> String {
    spec.key
        .iter()
        .enumerate()
        .map(|(n, &i)| {
            format!(
                "{} = {}",
                quote_ident(&spec.columns[i]),
                cast(spec, i, first + n)
            )
        })
        .collect::<Vec<_>>()
        .join(" AND ")
}

/// Reads the row of `key` (every column as text), `None` if absent.
pub async fn read_row(
    db: &impl GenericClient,
    spec: &TableSpec,
    key: &[u8],
) -> Result<Option<TextRow>, PgError> {
    read_row_sql(db, spec, key, "").await
}

/// [`read_row`], locking the row for the rest of the transaction.
pub async fn read_row_for_update(
    db: &impl GenericClient,
    spec: &TableSpec,
    key: &[u8],
) -> Result<Option<TextRow>, PgError> {
    read_row_sql(db, spec, key, " FOR UPDATE").await
}

async fn read_row_sql(
    db: &impl GenericClient,
    spec: &TableSpec,
    key: &[u8],
    lock: &str,
) -> Result<Option<TextRow>, PgError> {
    let cols: Vec<String> = spec
        .columns
        .iter()
        .map(|c| format!("{}::text", quote_ident(c)))
        .collect();
    let sql = format!(
        "SELECT {} FROM {} WHERE {}{lock}",
        cols.join(", "),
        spec.qualified(),
        key_predicate(spec, 1)
    );
    let parts = key_parts(spec, key)?;
    let params: Vec<&(dyn ToSql + Sync)> = parts.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
    let row = db
        .query_opt(&sql, &params)
        .await
        .map_err(PgError::sql("reading a row to repair"))?;
    Ok(row.map(|r| {
        (0..r.len())
            .map(|i| r.get::<_, Option<String>>(i))
            .collect()
    }))
}

/// Inserts `row`, or updates the held row only if its version is older:
/// `INSERT ... ON CONFLICT (key) DO UPDATE SET ... WHERE held.version <
/// excluded.version`.
pub async fn upsert_if_newer(
    db: &impl GenericClient,
    spec: &TableSpec,
    row: &TextRow,
) -> Result<Outcome, PgError> {
    upsert(db, spec, row, true).await
}

/// Inserts `row` or overwrites the held row, whatever its version (undo).
pub async fn overwrite(
    db: &impl GenericClient,
    spec: &TableSpec,
    row: &TextRow,
) -> Result<Outcome, PgError> {
    upsert(db, spec, row, false).await
}

async fn upsert(
    db: &impl GenericClient,
    spec: &TableSpec,
    row: &TextRow,
    if_newer: bool,
) -> Result<Outcome, PgError> {
    if row.len() != spec.columns.len() {
        return Err(PgError::Row(format!(
            "a repair row of {} columns, the table has {}",
            row.len(),
            spec.columns.len()
        )));
    }
    let names: Vec<String> = spec.columns.iter().map(|c| quote_ident(c)).collect();
    let values: Vec<String> = (0..row.len()).map(|i| cast(spec, i, i + 1)).collect();
    let keys: Vec<&str> = spec.key.iter().map(|&i| names[i].as_str()).collect();
    let sets: Vec<String> = names
        .iter()
        .enumerate()
        .filter(|(i, _)| !spec.key.contains(i))
        .map(|(_, n)| format!("{n} = EXCLUDED.{n}"))
        .collect();
    let version = &names[version_index(spec)?];
    let check = if if_newer {
        format!(" WHERE held.{version} < EXCLUDED.{version}")
    } else {
        String::new()
    };
    // A table of key columns only has nothing to update on conflict.
    let action = if sets.is_empty() {
        "DO NOTHING".to_string()
    } else {
        format!("DO UPDATE SET {}{check}", sets.join(", "))
    };
    let sql = format!(
        "INSERT INTO {table} AS held ({cols}) VALUES ({vals}) ON CONFLICT ({keys}) {action}",
        table = spec.qualified(),
        cols = names.join(", "),
        vals = values.join(", "),
        keys = keys.join(", "),
    );
    let params: Vec<&(dyn ToSql + Sync)> = row.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
    let n = db
        .execute(&sql, &params)
        .await
        .map_err(PgError::sql("repairing a row"))?;
    Ok(if n == 1 {
        Outcome::Applied
    } else {
        Outcome::Kept
    })
}

/// Deletes the row of `key` only if its version is at most `deleted`
/// (the version of the row the other replica deleted, as text).
pub async fn delete_if_not_newer(
    db: &impl GenericClient,
    spec: &TableSpec,
    key: &[u8],
    deleted: &str,
) -> Result<Outcome, PgError> {
    let parts = key_parts(spec, key)?;
    let sql = format!(
        "DELETE FROM {} WHERE {} AND {} <= {}",
        spec.qualified(),
        key_predicate(spec, 1),
        quote_ident(&spec.columns[version_index(spec)?]),
        cast(spec, version_index(spec)?, parts.len() + 1)
    );
    let mut params: Vec<&(dyn ToSql + Sync)> =
        parts.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
    params.push(&deleted);
    let n = db
        .execute(&sql, &params)
        .await
        .map_err(PgError::sql("repairing a delete"))?;
    Ok(if n == 1 {
        Outcome::Applied
    } else {
        Outcome::Kept
    })
}

/// Repairs one key a diff found divergent, from the replica that is ahead
/// into the one that is behind: the ahead replica's row (written only over
/// an older one), or, when the ahead side deleted it (`tombstone`: the
/// version of its tombstone, from the diff), a delete of the behind
/// replica's row only if that row is not newer than the one deleted. A row
/// the ahead replica no longer holds (deleted since the diff) is left for
/// the next diff.
pub async fn repair_key(
    ahead: &impl GenericClient,
    behind: &impl GenericClient,
    spec: &TableSpec,
    key: &[u8],
    tombstone: Option<&mend_core::Version>,
) -> Result<Outcome, PgError> {
    match tombstone {
        Some(t) => delete_if_not_newer(behind, spec, key, &spec.deleted_version_text(t)?).await,
        None => match read_row(ahead, spec, key).await? {
            Some(row) => upsert_if_newer(behind, spec, &row).await,
            None => Ok(Outcome::Kept),
        },
    }
}

/// Deletes the row of `key`, whatever its version (undo of a repair that
/// inserted it).
pub async fn delete_row(
    db: &impl GenericClient,
    spec: &TableSpec,
    key: &[u8],
) -> Result<Outcome, PgError> {
    let parts = key_parts(spec, key)?;
    let sql = format!(
        "DELETE FROM {} WHERE {}",
        spec.qualified(),
        key_predicate(spec, 1)
    );
    let params: Vec<&(dyn ToSql + Sync)> = parts.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
    let n = db
        .execute(&sql, &params)
        .await
        .map_err(PgError::sql("undoing a repaired row"))?;
    Ok(if n == 1 {
        Outcome::Applied
    } else {
        Outcome::Kept
    })
}
