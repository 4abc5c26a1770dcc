//! What the adapter checks and sets up in the database before it reads a
//! row: the server writes logical WAL, the table exists with a primary key,
//! a usable version column and `REPLICA IDENTITY FULL`; the replication
//! slot is this adapter's alone (an advisory lock held for the session) and
//! uses `pgoutput`; the publication exists.

use mend_core::NodeId;
use tokio_postgres::Client;
use tokio_postgres::types::PgLsn;

use crate::error::PgError;
use crate::table::{TableSpec, VersionKind, quote_ident};

/// Session settings that make every type's text output the same on every
/// replica (see `table`'s encoding contract).
pub const SESSION_SETTINGS: &str = "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, MDY'; \
     SET IntervalStyle = 'postgres'; SET extra_float_digits = 1; SET bytea_output = 'hex'";

/// Checks `wal_level`.
pub async fn check_wal_level(db: &Client) -> Result<(), PgError> {
    let row = db
        .query_one("SHOW wal_level", &[])
        .await
        .map_err(PgError::sql("reading wal_level"))?;
    let found: String = row.get(0);
    if found != "logical" {
        return Err(PgError::WalLevel { found });
    }
    Ok(())
}

/// Reads and checks the layout of `schema.table`.
pub async fn table_spec(
    db: &Client,
    schema: &str,
    table: &str,
    version_column: &str,
    origin: NodeId,
) -> Result<TableSpec, PgError> {
    let qualified = format!("{}.{}", quote_ident(schema), quote_ident(table));
    let (oid, identity) = relation(db, schema, table, &qualified).await?;
    let (names, types) = columns(db, oid).await?;
    let key_names = primary_key(db, oid).await?;
    if key_names.is_empty() {
        return Err(PgError::NoPrimaryKey { table: qualified });
    }
    let position = |name: &str| names.iter().position(|n| n == name);
    let key = key_names
        .iter()
        .map(|k| {
            position(k).ok_or_else(|| {
                PgError::Layout(format!("primary key column {k:?} is generated or missing"))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let (version, version_kind) = version_column_of(&names, &types, version_column, &qualified)?;
    check_replica_identity(&identity, qualified)?;
    Ok(TableSpec {
        schema: schema.to_string(),
        name: table.to_string(),
        oid,
        types,
        columns: names,
        key,
        version,
        version_kind,
        origin,
    })
}

/// The table's oid and replica identity (`relreplident`).
async fn relation(
    db: &Client,
    schema: &str,
    table: &str,
    qualified: &str,
) -> Result<(u32, String), PgError> {
    let rel = db
        .query_opt(
            "SELECT c.oid::int8, c.relreplident::text FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')",
            &[&schema, &table],
        )
        .await
        .map_err(PgError::sql("looking up the table"))?
        .ok_or_else(|| PgError::UnknownTable {
            table: qualified.to_string(),
        })?;
    let oid = u32::try_from(rel.get::<_, i64>(0))
        .map_err(|_| PgError::Layout(format!("table {qualified} has an oid out of range")))?;
    Ok((oid, rel.get(1)))
}

/// The names and types of the table's stored (not generated, not dropped)
/// columns, in column order.
async fn columns(db: &Client, oid: u32) -> Result<(Vec<String>, Vec<String>), PgError> {
    let rows = db
        .query(
            "SELECT attname::text, format_type(atttypid, atttypmod) FROM pg_attribute \
             WHERE attrelid = $1::int8::oid AND attnum > 0 AND NOT attisdropped \
             AND attgenerated = '' ORDER BY attnum",
            &[&i64::from(oid)],
        )
        .await
        .map_err(PgError::sql("reading the table's columns"))?;
    Ok((
        rows.iter().map(|r| r.get(0)).collect(),
        rows.iter().map(|r| r.get(1)).collect(),
    ))
}

/// The names of the table's primary-key columns, in key order (empty
/// without a primary key).
async fn primary_key(db: &Client, oid: u32) -> Result<Vec<String>, PgError> {
    Ok(db
        .query(
            "SELECT a.attname::text FROM pg_index i \
             CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord) \
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
             WHERE i.indrelid = $1::int8::oid AND i.indisprimary ORDER BY k.ord",
            &[&i64::from(oid)],
        )
        .await
        .map_err(PgError::sql("reading the table's primary key"))?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// The version column's index and kind; none for a versionless table
/// (`version_column` empty).
fn version_column_of(
    names: &[String],
    types: &[String],
    version_column: &str,
    qualified: &str,
) -> Result<(Option<usize>, VersionKind), PgError> {
    if version_column.is_empty() {
        // Versionless: no column orders the rows.
        return Ok((None, VersionKind::Integer));
    }
    let version = names
        .iter()
        .position(|n| n == version_column)
        .ok_or_else(|| PgError::MissingVersionColumn {
            table: qualified.to_string(),
            column: version_column.to_string(),
            columns: names.join(", "),
        })?;
    let type_name = &types[version];
    let kind = match type_name.as_str() {
        "smallint" | "integer" | "bigint" => VersionKind::Integer,
        t if t.starts_with("timestamp") => VersionKind::Timestamp,
        _ => {
            return Err(PgError::VersionColumnType {
                column: version_column.to_string(),
                found: type_name.clone(),
            });
        }
    };
    Ok((Some(version), kind))
}

/// Refuses a table whose replica identity is not `FULL` (`f`): the
/// change feed needs every column of a deleted or updated row.
fn check_replica_identity(identity: &str, qualified: String) -> Result<(), PgError> {
    if identity == "f" {
        return Ok(());
    }
    let found = match identity {
        "d" => "default",
        "n" => "nothing",
        "i" => "index",
        other => other,
    };
    Err(PgError::ReplicaIdentity {
        table: qualified,
        found: found.to_string(),
    })
}

/// The slot as found or created.
#[derive(Debug, Clone, Copy)]
pub struct Slot {
    /// Created by this call (so no earlier stream position can be honoured).
    pub created: bool,
    /// Its confirmed position: where a consumer resumes.
    pub confirmed: u64,
}

/// Takes the adapter's advisory lock on `slot` for this session, then
/// finds the slot or creates it with `pgoutput`.
pub async fn claim_slot(db: &Client, slot: &str) -> Result<Slot, PgError> {
    let key = format!("mend-pg slot {slot}");
    let locked: bool = db
        .query_one(
            "SELECT pg_try_advisory_lock(hashtextextended($1, 0))",
            &[&key],
        )
        .await
        .map_err(PgError::sql("taking the slot's advisory lock"))?
        .get(0);
    if !locked {
        let holder = db
            .query_opt(
                "SELECT l.pid FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted \
                 AND ((l.classid::int8 << 32) | l.objid::int8) = hashtextextended($1, 0) LIMIT 1",
                &[&key],
            )
            .await
            .ok()
            .flatten()
            .map(|r| {
                format!(
                    "another mend-pg adapter, backend pid {}",
                    r.get::<_, i32>(0)
                )
            })
            .unwrap_or_else(|| "another mend-pg adapter".into());
        return Err(PgError::SlotInUse {
            slot: slot.to_string(),
            by: holder,
        });
    }
    let found = db
        .query_opt(
            "SELECT plugin::text, active, active_pid, confirmed_flush_lsn FROM pg_replication_slots \
             WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(PgError::sql("looking up the replication slot"))?;
    if let Some(row) = found {
        let plugin: Option<String> = row.get(0);
        let active: bool = row.get(1);
        let pid: Option<i32> = row.get(2);
        let confirmed: Option<PgLsn> = row.get(3);
        if active {
            return Err(PgError::SlotInUse {
                slot: slot.to_string(),
                by: format!("active, backend pid {}", pid.unwrap_or(0)),
            });
        }
        match plugin.as_deref() {
            Some("pgoutput") => {}
            other => {
                return Err(PgError::SlotPlugin {
                    slot: slot.to_string(),
                    plugin: other.unwrap_or("(physical)").to_string(),
                });
            }
        }
        return Ok(Slot {
            created: false,
            confirmed: confirmed.map_or(0, u64::from),
        });
    }
    let row = db
        .query_one(
            "SELECT lsn FROM pg_create_logical_replication_slot($1, 'pgoutput')",
            &[&slot],
        )
        .await
        .map_err(PgError::sql(format!("creating replication slot {slot:?}")))?;
    let lsn: PgLsn = row.get(0);
    Ok(Slot {
        created: true,
        confirmed: u64::from(lsn),
    })
}

/// Creates the publication of the table's inserts, updates and deletes if
/// it does not exist.
pub async fn ensure_publication(db: &Client, name: &str, spec: &TableSpec) -> Result<(), PgError> {
    let exists = db
        .query_opt("SELECT 1 FROM pg_publication WHERE pubname = $1", &[&name])
        .await
        .map_err(PgError::sql("looking up the publication"))?
        .is_some();
    if !exists {
        db.batch_execute(&format!(
            "CREATE PUBLICATION {} FOR TABLE {} WITH (publish = 'insert, update, delete')",
            quote_ident(name),
            spec.qualified()
        ))
        .await
        .map_err(PgError::sql(format!("creating publication {name:?}")))?;
    }
    Ok(())
}
