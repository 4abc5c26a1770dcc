//! Decoding of PostgreSQL's `pgoutput` logical replication messages
//! (protocol version 1), as `pg_logical_slot_peek_binary_changes` returns
//! them: one message per row.
//!
//! The bytes come from the database server, so nothing here trusts them:
//! every read is bounds-checked, every count is checked against the bytes
//! left before anything is allocated for it, and a malformed message is a
//! [`DecodeError`], never a panic. Messages this adapter does not use
//! (type, origin, logical message, truncate) decode to [`Message::Other`].

/// A decoded message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// `B`: a transaction starts.
    Begin {
        /// The LSN of the transaction's commit record.
        final_lsn: u64,
        /// Commit time, microseconds since 2000-01-01 00:00:00 UTC.
        commit_time_us: i64,
    },
    /// `C`: the transaction ends.
    Commit {
        /// The LSN just past the commit record: where a consumer that has
        /// applied this transaction resumes.
        end_lsn: u64,
    },
    /// `R`: a table's layout (sent before its first change in a session).
    Relation {
        /// The table's oid.
        oid: u32,
        /// Its schema.
        namespace: String,
        /// Its name.
        name: String,
        /// Column names, in the order tuples carry them.
        columns: Vec<String>,
    },
    /// `I`: a row inserted.
    Insert {
        /// The table's oid.
        oid: u32,
        /// The new row.
        new: Tuple,
    },
    /// `U`: a row updated.
    Update {
        /// The table's oid.
        oid: u32,
        /// The old row (key columns or, with `REPLICA IDENTITY FULL`, every
        /// column), when the server sent it.
        old: Option<Tuple>,
        /// The new row.
        new: Tuple,
    },
    /// `D`: a row deleted.
    Delete {
        /// The table's oid.
        oid: u32,
        /// The old row (key columns or, with `REPLICA IDENTITY FULL`, every
        /// column).
        old: Tuple,
    },
    /// Any other message (type, origin, logical message, truncate).
    Other(u8),
}

/// One column of a tuple.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Datum {
    /// SQL NULL.
    Null,
    /// A TOASTed value that did not change (an update's new tuple).
    Unchanged,
    /// The value in its text output form.
    Text(String),
}

/// A row: one datum per column.
pub type Tuple = Vec<Datum>;

/// Why a message did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The message ended before a field it announced.
    #[error("pgoutput message {kind:?} is truncated at byte {at}")]
    Truncated {
        /// The message type byte.
        kind: char,
        /// Where the read ran out.
        at: usize,
    },
    /// An empty message.
    #[error("empty pgoutput message")]
    Empty,
    /// A field holds a value the protocol does not allow.
    #[error("pgoutput message {kind:?}: {what}")]
    Invalid {
        /// The message type byte.
        kind: char,
        /// What was wrong.
        what: String,
    },
}

/// Decodes one message.
pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
    let (&kind, rest) = bytes.split_first().ok_or(DecodeError::Empty)?;
    let mut r = Reader {
        kind: kind as char,
        buf: rest,
        at: 1,
    };
    let m = match kind {
        b'B' => Message::Begin {
            final_lsn: r.u64()?,
            commit_time_us: r.i64()?,
        },
        b'C' => {
            let _flags = r.u8()?;
            let _commit_lsn = r.u64()?;
            Message::Commit { end_lsn: r.u64()? }
        }
        b'R' => {
            let oid = r.u32()?;
            let namespace = r.cstr()?;
            let name = r.cstr()?;
            let _identity = r.u8()?;
            let n = r.count()?;
            let mut columns = Vec::with_capacity(r.bounded(n, 7)?);
            for _ in 0..n {
                let _flags = r.u8()?;
                columns.push(r.cstr()?);
                let _type_oid = r.u32()?;
                let _typmod = r.u32()?;
            }
            Message::Relation {
                oid,
                namespace,
                name,
                columns,
            }
        }
        b'I' => {
            let oid = r.u32()?;
            r.expect(b'N')?;
            Message::Insert {
                oid,
                new: r.tuple()?,
            }
        }
        b'U' => {
            let oid = r.u32()?;
            let mut old = None;
            let mut tag = r.u8()?;
            if tag == b'K' || tag == b'O' {
                old = Some(r.tuple()?);
                tag = r.u8()?;
            }
            if tag != b'N' {
                return Err(r.invalid(format!("expected 'N', found {:?}", tag as char)));
            }
            Message::Update {
                oid,
                old,
                new: r.tuple()?,
            }
        }
        b'D' => {
            let oid = r.u32()?;
            let tag = r.u8()?;
            if tag != b'K' && tag != b'O' {
                return Err(r.invalid(format!("expected 'K' or 'O', found {:?}", tag as char)));
            }
            Message::Delete {
                oid,
                old: r.tuple()?,
            }
        }
        other => Message::Other(other),
    };
    Ok(m)
}

/// A cursor over a message's body.
struct Reader<'a> {
    kind: char,
    buf: &'a [u8],
    /// Offset in the whole message, for errors.
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated {
                kind: self.kind,
                at: self.at + self.buf.len(),
            });
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        self.at += n;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    /// An Int16 count (never negative on the wire).
    fn count(&mut self) -> Result<usize, DecodeError> {
        let n = i16::from_be_bytes(self.array()?);
        usize::try_from(n).map_err(|_| self.invalid(format!("negative count {n}")))
    }

    /// `n` items of at least `min_bytes` each must fit in what is left:
    /// a count from the server never sizes an allocation on its own.
    fn bounded(&self, n: usize, min_bytes: usize) -> Result<usize, DecodeError> {
        if n.saturating_mul(min_bytes) > self.buf.len() {
            return Err(DecodeError::Truncated {
                kind: self.kind,
                at: self.at + self.buf.len(),
            });
        }
        Ok(n)
    }

    fn expect(&mut self, tag: u8) -> Result<(), DecodeError> {
        let got = self.u8()?;
        if got != tag {
            return Err(self.invalid(format!(
                "expected {:?}, found {:?}",
                tag as char, got as char
            )));
        }
        Ok(())
    }

    fn cstr(&mut self) -> Result<String, DecodeError> {
        let end = self
            .buf
            .iter()
            .position(|&b| b == 0)
            .ok_or(DecodeError::Truncated {
                kind: self.kind,
                at: self.at + self.buf.len(),
            })?;
        let s = self.utf8(end)?;
        self.take(1)?;
        Ok(s)
    }

    fn utf8(&mut self, n: usize) -> Result<String, DecodeError> {
        let at = self.at;
        let bytes = self.take(n)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError::Invalid {
            kind: self.kind,
            what: format!("text at byte {at} is not UTF-8"),
        })
    }

    fn tuple(&mut self) -> Result<Tuple, DecodeError> {
        let n = self.count()?;
        let mut t = Vec::with_capacity(self.bounded(n, 1)?);
        for _ in 0..n {
            t.push(match self.u8()? {
                b'n' => Datum::Null,
                b'u' => Datum::Unchanged,
                b't' => {
                    let len = self.u32()?;
                    let len = usize::try_from(len)
                        .map_err(|_| self.invalid(format!("datum length {len}")))?;
                    Datum::Text(self.utf8(len)?)
                }
                other => {
                    return Err(self.invalid(format!("datum kind {:?}", other as char)));
                }
            });
        }
        Ok(t)
    }

    fn invalid(&self, what: String) -> DecodeError {
        DecodeError::Invalid {
            kind: self.kind,
            what,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tuple_bytes(cols: &[Option<&str>]) -> Vec<u8> {
        let mut b = (cols.len() as i16).to_be_bytes().to_vec();
        for c in cols {
            match c {
                None => b.push(b'n'),
                Some(s) => {
                    b.push(b't');
                    b.extend_from_slice(&(s.len() as u32).to_be_bytes());
                    b.extend_from_slice(s.as_bytes());
                }
            }
        }
        b
    }

    #[test]
    fn decodes_begin_commit_relation_and_changes() {
        let mut b = vec![b'B'];
        b.extend_from_slice(&7u64.to_be_bytes());
        b.extend_from_slice(&42i64.to_be_bytes());
        b.extend_from_slice(&9u32.to_be_bytes());
        assert_eq!(
            decode(&b).unwrap(),
            Message::Begin {
                final_lsn: 7,
                commit_time_us: 42
            }
        );

        let mut c = vec![b'C', 0];
        c.extend_from_slice(&7u64.to_be_bytes());
        c.extend_from_slice(&8u64.to_be_bytes());
        c.extend_from_slice(&42i64.to_be_bytes());
        assert_eq!(decode(&c).unwrap(), Message::Commit { end_lsn: 8 });

        let mut r = vec![b'R'];
        r.extend_from_slice(&16384u32.to_be_bytes());
        r.extend_from_slice(b"public\0orders\0f");
        r.extend_from_slice(&2i16.to_be_bytes());
        for name in ["id", "v"] {
            r.push(1);
            r.extend_from_slice(name.as_bytes());
            r.push(0);
            r.extend_from_slice(&25u32.to_be_bytes());
            r.extend_from_slice(&(-1i32).to_be_bytes());
        }
        assert_eq!(
            decode(&r).unwrap(),
            Message::Relation {
                oid: 16384,
                namespace: "public".into(),
                name: "orders".into(),
                columns: vec!["id".into(), "v".into()],
            }
        );

        let mut u = vec![b'U'];
        u.extend_from_slice(&16384u32.to_be_bytes());
        u.push(b'O');
        u.extend(tuple_bytes(&[Some("1"), Some("a")]));
        u.push(b'N');
        u.extend(tuple_bytes(&[Some("1"), None]));
        assert_eq!(
            decode(&u).unwrap(),
            Message::Update {
                oid: 16384,
                old: Some(vec![Datum::Text("1".into()), Datum::Text("a".into())]),
                new: vec![Datum::Text("1".into()), Datum::Null],
            }
        );
    }

    #[test]
    fn malformed_messages_are_errors_not_panics() {
        // Every prefix of a valid insert is truncated, never a panic.
        let mut i = vec![b'I'];
        i.extend_from_slice(&1u32.to_be_bytes());
        i.push(b'N');
        i.extend(tuple_bytes(&[Some("key"), Some("value")]));
        assert!(decode(&i).is_ok());
        for n in 0..i.len() {
            assert!(decode(&i[..n]).is_err(), "prefix {n} decoded");
        }
        // A count the bytes cannot hold does not allocate.
        let mut huge = vec![b'I', 0, 0, 0, 1, b'N'];
        huge.extend_from_slice(&i16::MAX.to_be_bytes());
        assert!(matches!(decode(&huge), Err(DecodeError::Truncated { .. })));
        let mut neg = vec![b'I', 0, 0, 0, 1, b'N'];
        neg.extend_from_slice(&(-1i16).to_be_bytes());
        assert!(matches!(decode(&neg), Err(DecodeError::Invalid { .. })));
        // A datum longer than the message.
        let mut long = vec![b'I', 0, 0, 0, 1, b'N', 0, 1, b't'];
        long.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(decode(&long).is_err());
    }
}
