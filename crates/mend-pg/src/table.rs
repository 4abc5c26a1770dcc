//! A table as mend sees it: which columns make the key, which one is the
//! version, and how a row (in its text form) becomes an ingest entry.
//!
//! The encoding is the contract between the adapters of two replicas: both
//! must turn the same row into the same key, version and value digest, or
//! every row would differ. So it uses only what PostgreSQL itself prints
//! (each type's text output, with the session's `TimeZone = UTC` and
//! `DateStyle = ISO`, which the adapter sets) and the column order of the
//! table:
//! - **key**: the primary key's columns in key order; a one-column key is its
//!   text as is (readable in reports), several are joined by a NUL byte
//!   (PostgreSQL text never contains NUL, so the join is unambiguous);
//! - **value digest**: BLAKE3 ([`mend_core::digest::value_hash`]) of every
//!   column in table order, each as `0x00` for NULL or `0x01`, its text and
//!   a NUL byte;
//! - **version**: from the version column: an integer column `v` is
//!   `(ms = v, logical = 0)`; a `timestamp`/`timestamptz` column is its
//!   milliseconds since the Unix epoch and `logical = 2 × the microseconds
//!   within the millisecond`. A delete's tombstone carries the deleted row's
//!   version with `logical + 1`, so it orders after the row it deletes and
//!   two replicas that delete the same row agree on it. The origin is the
//!   configured `origin` (the same on every replica of the table) and `seq`
//!   is 0.

use mend_core::digest::{Digest, value_hash};
use mend_core::limits::KEY_BYTES_MAX;
use mend_core::{NodeId, Version};

use crate::error::PgError;

/// What the version column holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionKind {
    /// `smallint`, `integer` or `bigint`: a counter the writers increase.
    Integer,
    /// `timestamp` or `timestamptz`: a modification time such as `updated_at`.
    Timestamp,
}

/// A table's layout, read from the catalog and checked.
#[derive(Debug, Clone)]
pub struct TableSpec {
    /// Schema name.
    pub schema: String,
    /// Table name.
    pub name: String,
    /// The table's oid.
    pub oid: u32,
    /// Published columns (not dropped, not generated), in table order.
    pub columns: Vec<String>,
    /// Each column's SQL type (`format_type`), for casts in repairs.
    pub types: Vec<String>,
    /// Positions in `columns` of the primary key's columns, in key order.
    pub key: Vec<usize>,
    /// Position in `columns` of the version column; `None` for a
    /// versionless table (every row at [`TableSpec::VERSIONLESS`]).
    pub version: Option<usize>,
    /// What the version column holds (unused when versionless).
    pub version_kind: VersionKind,
    /// The origin every version carries.
    pub origin: NodeId,
}

/// A row turned into what mend keeps of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowEntry {
    /// The key bytes.
    pub key: Vec<u8>,
    /// The row's version.
    pub version: Version,
    /// The value digest; `None` for a tombstone.
    pub digest: Option<Digest>,
}

impl TableSpec {
    /// `"schema"."name"`, quoted for SQL.
    pub fn qualified(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }

    /// The key of a row given as its columns' text (table order).
    pub fn key(&self, row: &[Option<&str>]) -> Result<Vec<u8>, PgError> {
        let mut key = Vec::new();
        for (n, &i) in self.key.iter().enumerate() {
            let part = self
                .column(row, i)?
                .ok_or_else(|| PgError::Row(format!("key column {:?} is NULL", self.columns[i])))?;
            if n > 0 {
                key.push(0);
            }
            key.extend_from_slice(part.as_bytes());
        }
        if key.is_empty() || key.len() > KEY_BYTES_MAX {
            return Err(PgError::Row(format!(
                "a key of {} bytes is outside 1..={KEY_BYTES_MAX} (key columns {:?})",
                key.len(),
                self.key_names()
            )));
        }
        Ok(key)
    }

    /// The names of the key columns.
    pub fn key_names(&self) -> Vec<&str> {
        self.key.iter().map(|&i| self.columns[i].as_str()).collect()
    }

    /// The entry of a live row.
    pub fn live(&self, row: &[Option<&str>]) -> Result<RowEntry, PgError> {
        Ok(RowEntry {
            key: self.key(row)?,
            version: self.version(row)?,
            digest: Some(value_hash(&self.encode(row)?)),
        })
    }

    /// The tombstone of a deleted row (given as it was before the delete).
    pub fn tombstone(&self, old: &[Option<&str>]) -> Result<RowEntry, PgError> {
        let mut version = self.version(old)?;
        if self.version.is_some() {
            version.logical = version.logical.saturating_add(1);
        }
        Ok(RowEntry {
            key: self.key(old)?,
            version,
            digest: None,
        })
    }

    /// The canonical bytes of a row whose digest is its value digest.
    pub fn encode(&self, row: &[Option<&str>]) -> Result<Vec<u8>, PgError> {
        if row.len() != self.columns.len() {
            return Err(PgError::Row(format!(
                "a row of {} columns, the table has {}",
                row.len(),
                self.columns.len()
            )));
        }
        let mut out = Vec::with_capacity(row.iter().map(|c| c.map_or(1, |s| s.len() + 2)).sum());
        for c in row {
            match c {
                None => out.push(0),
                Some(s) => {
                    out.push(1);
                    out.extend_from_slice(s.as_bytes());
                    out.push(0);
                }
            }
        }
        Ok(out)
    }

    /// The row whose canonical bytes ([`TableSpec::encode`]) are `bytes`:
    /// one column per value, table order (a row's text holds no NUL byte).
    pub fn decode(&self, bytes: &[u8]) -> Result<Vec<Option<String>>, PgError> {
        let bad = |why: &str| PgError::Row(format!("a row payload that does not decode: {why}"));
        let mut row = Vec::with_capacity(self.columns.len());
        let mut rest = bytes;
        while let Some((&tag, tail)) = rest.split_first() {
            if row.len() == self.columns.len() {
                return Err(bad("more columns than the table has"));
            }
            match tag {
                0 => {
                    row.push(None);
                    rest = tail;
                }
                1 => {
                    let end = tail
                        .iter()
                        .position(|&b| b == 0)
                        .ok_or_else(|| bad("an unterminated value"))?;
                    let text =
                        std::str::from_utf8(&tail[..end]).map_err(|_| bad("a value not UTF-8"))?;
                    row.push(Some(text.to_string()));
                    rest = &tail[end + 1..];
                }
                _ => return Err(bad("an unknown column tag")),
            }
        }
        if row.len() != self.columns.len() {
            return Err(bad("fewer columns than the table has"));
        }
        Ok(row)
    }

    /// The one version of every row of a versionless table: equal rows
    /// of two replicas have equal entries, and the range orders changes by
    /// its feed.
    pub const VERSIONLESS: (u64, u32, u64) = (0, 0, 0);

    /// True for a table without a version column.
    pub fn versionless(&self) -> bool {
        self.version.is_none()
    }

    /// The version of a row.
    pub fn version(&self, row: &[Option<&str>]) -> Result<Version, PgError> {
        let Some(index) = self.version else {
            let (ms, logical, seq) = Self::VERSIONLESS;
            return Ok(Version {
                ms,
                logical,
                origin: self.origin.clone(),
                seq,
            });
        };
        let name = &self.columns[index];
        let text = self
            .column(row, index)?
            .ok_or_else(|| PgError::Row(format!("version column {name:?} is NULL")))?;
        let (ms, logical) = match self.version_kind {
            VersionKind::Integer => {
                let v: u64 = text.parse().map_err(|_| {
                    PgError::Row(format!(
                        "version column {name:?} holds {text:?}: versions must be >= 0"
                    ))
                })?;
                (v, 0)
            }
            VersionKind::Timestamp => {
                let us = parse_timestamp_us(text).ok_or_else(|| {
                    PgError::Row(format!(
                        "version column {name:?} holds {text:?}, not a timestamp after 1970 \
                         in ISO format"
                    ))
                })?;
                // Whole microseconds within the millisecond, doubled: the
                // odd values are the tombstones of these versions.
                (us / 1000, 2 * (us % 1000) as u32)
            }
        };
        Ok(Version {
            ms,
            logical,
            origin: self.origin.clone(),
            seq: 0,
        })
    }

    /// The version column's value (as SQL text) of the row a tombstone of
    /// this table deleted: the inverse of [`TableSpec::tombstone`]'s version.
    pub fn deleted_version_text(&self, tombstone: &Version) -> Result<String, PgError> {
        let bad = || {
            PgError::Row(format!(
                "{tombstone:?} is not a tombstone version of this table"
            ))
        };
        if self.version.is_none() {
            return Err(PgError::Row(
                "a versionless table has no version to check a repair against".into(),
            ));
        }
        let logical = tombstone.logical.checked_sub(1).ok_or_else(bad)?;
        match self.version_kind {
            VersionKind::Integer if logical == 0 => Ok(tombstone.ms.to_string()),
            VersionKind::Integer => Err(bad()),
            VersionKind::Timestamp => {
                if logical % 2 != 0 || logical >= 2000 {
                    return Err(bad());
                }
                let us = i128::from(tombstone.ms) * 1000 + i128::from(logical / 2);
                let t = time::OffsetDateTime::from_unix_timestamp_nanos(us * 1000)
                    .map_err(|_| bad())?;
                Ok(format!(
                    "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:06}+00",
                    t.year(),
                    u8::from(t.month()),
                    t.day(),
                    t.hour(),
                    t.minute(),
                    t.second(),
                    t.microsecond()
                ))
            }
        }
    }

    fn column<'r>(&self, row: &[Option<&'r str>], i: usize) -> Result<Option<&'r str>, PgError> {
        row.get(i).copied().ok_or_else(|| {
            PgError::Row(format!(
                "a row of {} columns has no column {i} ({:?})",
                row.len(),
                self.columns.get(i)
            ))
        })
    }
}

/// Quotes an SQL identifier.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Microseconds since the Unix epoch of a `timestamp` or `timestamptz` in
/// PostgreSQL's ISO output at `TimeZone = UTC`: `YYYY-MM-DD HH:MM:SS[.f]`
/// with an optional `+00` suffix. `None` for anything else (BC dates,
/// `infinity`, other offsets, times before 1970).
pub fn parse_timestamp_us(s: &str) -> Option<u64> {
    let s = s.strip_suffix("+00").unwrap_or(s);
    let (date, time) = s.split_once(' ')?;
    let mut d = date.splitn(3, '-');
    let year: i32 = digits(d.next()?, 4)?.try_into().ok()?;
    let month = time::Month::try_from(u8::try_from(digits(d.next()?, 2)?).ok()?).ok()?;
    let day = u8::try_from(digits(d.next()?, 2)?).ok()?;
    let date = time::Date::from_calendar_date(year, month, day).ok()?;
    let (hms, frac) = match time.split_once('.') {
        Some((hms, frac)) => (hms, frac),
        None => (time, ""),
    };
    let mut t = hms.splitn(3, ':');
    let h = u8::try_from(digits(t.next()?, 2)?).ok()?;
    let m = u8::try_from(digits(t.next()?, 2)?).ok()?;
    let sec = u8::try_from(digits(t.next()?, 2)?).ok()?;
    if frac.len() > 6 || (!frac.is_empty() && !frac.bytes().all(|b| b.is_ascii_digit())) {
        return None;
    }
    let micro: u32 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<6}").parse().ok()?
    };
    let dt = time::PrimitiveDateTime::new(date, time::Time::from_hms_micro(h, m, sec, micro).ok()?)
        .assume_utc();
    let us = dt.unix_timestamp_nanos() / 1000;
    u64::try_from(us).ok()
}

/// A field of exactly `n` ASCII digits.
fn digits(s: &str, n: usize) -> Option<u32> {
    if s.len() != n || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(kind: VersionKind) -> TableSpec {
        TableSpec {
            schema: "public".into(),
            name: "orders".into(),
            oid: 1,
            columns: vec!["id".into(), "region".into(), "v".into(), "note".into()],
            types: vec![
                "integer".into(),
                "text".into(),
                "timestamptz".into(),
                "text".into(),
            ],
            key: vec![1, 0],
            version: Some(2),
            version_kind: kind,
            origin: NodeId::new("pg").unwrap(),
        }
    }

    #[test]
    fn a_row_decodes_from_its_canonical_bytes_and_nothing_else_does() {
        let s = spec(VersionKind::Timestamp);
        let row = [Some("7"), Some(""), None, Some("x y")];
        let bytes = s.encode(&row).unwrap();
        let back = s.decode(&bytes).unwrap();
        assert_eq!(back, row.map(|c| c.map(str::to_string)));
        // Every strict prefix, a byte more, and foreign tags are refused.
        for n in 0..bytes.len() {
            assert!(s.decode(&bytes[..n]).is_err(), "prefix {n}");
        }
        let mut more = bytes.clone();
        more.push(0);
        assert!(s.decode(&more).is_err());
        assert!(s.decode(&[2, 0, 0, 0]).is_err());
        assert!(s.decode(&[1, 0xff, 0, 0, 0, 0]).is_err(), "not UTF-8");
    }

    #[test]
    fn a_versionless_table_gives_every_row_and_delete_one_version() {
        let mut s = spec(VersionKind::Timestamp);
        s.version = None;
        let a = [Some("7"), Some("eu"), Some("2026-12-05 05:13:02+00"), None];
        let b = [
            Some("8"),
            Some("us"),
            Some("1999-01-01 00:00:00+00"),
            Some("n"),
        ];
        let (ea, eb) = (s.live(&a).unwrap(), s.live(&b).unwrap());
        assert_eq!(ea.version, eb.version);
        assert_eq!(s.tombstone(&a).unwrap().version, ea.version);
        assert!(s.deleted_version_text(&ea.version).is_err());
    }

    #[test]
    fn timestamps_parse_to_microseconds() {
        assert_eq!(parse_timestamp_us("1970-01-01 00:00:00+00"), Some(0));
        assert_eq!(
            parse_timestamp_us("2026-12-05 05:13:02.123456+00"),
            Some(1_796_447_582_123_456)
        );
        assert_eq!(
            parse_timestamp_us("2026-12-05 05:13:02.5"),
            Some(1_796_447_582_500_000)
        );
        for bad in [
            "infinity",
            "1969-12-31 23:59:59+00",
            "2026-12-05 05:13:02+01",
            "2026-13-05 05:13:02",
            "2026-12-05T05:13:02",
            "0044-03-15 12:00:00 BC",
            "2026-12-05 05:13:02.1234567",
        ] {
            assert_eq!(parse_timestamp_us(bad), None, "{bad}");
        }
    }

    #[test]
    fn rows_encode_keys_versions_and_digests() {
        let s = spec(VersionKind::Timestamp);
        let row = [
            Some("7"),
            Some("eu"),
            Some("2026-12-05 05:13:02.123456+00"),
            None,
        ];
        let e = s.live(&row).unwrap();
        assert_eq!(e.key, b"eu\x007");
        assert_eq!(e.version.ms, 1_796_447_582_123);
        assert_eq!(e.version.logical, 912);
        // NULL and the empty string differ; so does any column.
        let empty = [row[0], row[1], row[2], Some("")];
        assert_ne!(s.live(&empty).unwrap().digest, e.digest);
        let t = s.tombstone(&row).unwrap();
        assert_eq!(t.digest, None);
        assert_eq!(t.version.logical, 913);
        assert_eq!(
            s.deleted_version_text(&t.version).unwrap(),
            "2026-12-05 05:13:02.123456+00",
            "a tombstone names the version it deleted"
        );
        assert!(
            s.deleted_version_text(&e.version).is_err(),
            "a live version is not a tombstone"
        );
        assert_eq!(
            t.version.order(&e.version),
            std::cmp::Ordering::Greater,
            "a tombstone orders after the row it deletes"
        );

        let s = spec(VersionKind::Integer);
        let row = [Some("7"), Some("eu"), Some("41"), Some("x")];
        assert_eq!(s.live(&row).unwrap().version.ms, 41);
        let neg = [Some("7"), Some("eu"), Some("-1"), Some("x")];
        assert!(matches!(s.live(&neg), Err(PgError::Row(_))));
        let null_key = [None, Some("eu"), Some("1"), None];
        assert!(matches!(s.live(&null_key), Err(PgError::Row(_))));
        assert!(matches!(s.live(&row[..3]), Err(PgError::Row(_))));
    }
}
