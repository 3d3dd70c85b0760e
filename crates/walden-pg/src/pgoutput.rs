//! Decoder for pgoutput's logical replication messages, protocol version 1
//! (PostgreSQL docs, "Logical Replication Message Formats").
//!
//! The replication transport (`pgwire-replication`) hands over each message's bytes;
//! this turns them into [`LogicalMessage`]s. Tuple values stay as slices of the message
//! buffer (`Bytes`, reference counted): nothing is copied until a value is parsed into its
//! Arrow column.

use bytes::Bytes;

use crate::{PgError, Result};

/// One pgoutput message.
#[derive(Debug, Clone, PartialEq)]
pub enum LogicalMessage {
    /// A transaction starts. `final_lsn` is the LSN of its commit record.
    Begin {
        final_lsn: u64,
        commit_time_micros: i64,
        xid: u32,
    },
    /// A transaction ends. `end_lsn` is what a consumer acknowledges once it has it.
    Commit {
        flags: u8,
        commit_lsn: u64,
        end_lsn: u64,
        commit_time_micros: i64,
    },
    /// The transaction came from another node (replication origin).
    Origin {
        commit_lsn: u64,
        name: String,
    },
    /// A table's definition, sent before its first change in a session and again after
    /// any change to it.
    Relation(Relation),
    /// A non-builtin type used by a relation's column.
    Type {
        oid: u32,
        namespace: String,
        name: String,
    },
    Insert {
        relation: u32,
        new: Tuple,
    },
    Update {
        relation: u32,
        /// The old key (`K`, when a replica-identity column changed) or the whole old row
        /// (`O`, REPLICA IDENTITY FULL); absent otherwise.
        old: Option<OldTuple>,
        new: Tuple,
    },
    Delete {
        relation: u32,
        old: OldTuple,
    },
    Truncate {
        cascade: bool,
        restart_identity: bool,
        relations: Vec<u32>,
    },
    /// `pg_logical_emit_message()`.
    Message {
        transactional: bool,
        lsn: u64,
        prefix: String,
        content: Bytes,
    },
}

/// A table's definition as the stream describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub oid: u32,
    pub namespace: String,
    pub name: String,
    /// `d` default, `n` nothing, `f` full, `i` index.
    pub replica_identity: u8,
    pub columns: Vec<RelationColumn>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationColumn {
    /// Part of the replica identity (the key sent in old tuples).
    pub key: bool,
    pub name: String,
    pub type_oid: u32,
    pub type_modifier: i32,
}

/// The old row of an update or delete.
#[derive(Debug, Clone, PartialEq)]
pub enum OldTuple {
    /// Only the replica-identity columns are meaningful; the rest are NULL.
    Key(Tuple),
    /// Every column (REPLICA IDENTITY FULL).
    Full(Tuple),
}

impl OldTuple {
    pub fn tuple(&self) -> &Tuple {
        match self {
            OldTuple::Key(t) | OldTuple::Full(t) => t,
        }
    }
}

/// A row's values in relation column order.
pub type Tuple = Vec<Value>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Null,
    /// An unchanged TOASTed value: not sent; the previous version has it.
    Unchanged,
    Text(Bytes),
    Binary(Bytes),
}

struct Reader<'a> {
    data: &'a Bytes,
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn err(&self, message: impl Into<String>) -> PgError {
        PgError::Decode {
            context: format!("pgoutput {} message", self.what),
            message: message.into(),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let data: &'a [u8] = self.data;
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= data.len())
            .ok_or_else(|| self.err(format!("truncated at byte {}", self.pos)))?;
        let s = &data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn i16(&mut self) -> Result<i16> {
        Ok(i16::from_be_bytes(
            self.take(2)?.try_into().unwrap_or_default(),
        ))
    }

    fn i32(&mut self) -> Result<i32> {
        Ok(i32::from_be_bytes(
            self.take(4)?.try_into().unwrap_or_default(),
        ))
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_be_bytes(
            self.take(4)?.try_into().unwrap_or_default(),
        ))
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_be_bytes(
            self.take(8)?.try_into().unwrap_or_default(),
        ))
    }

    fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_be_bytes(
            self.take(8)?.try_into().unwrap_or_default(),
        ))
    }

    fn string(&mut self) -> Result<String> {
        let rest = &self.data[self.pos..];
        let len = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| self.err("unterminated string"))?;
        let s = std::str::from_utf8(&rest[..len])
            .map_err(|_| self.err("string is not UTF-8"))?
            .to_string();
        self.pos += len + 1;
        Ok(s)
    }

    fn bytes(&mut self, n: usize) -> Result<Bytes> {
        let start = self.pos;
        self.take(n)?;
        Ok(self.data.slice(start..start + n))
    }

    fn tuple(&mut self) -> Result<Tuple> {
        let n = self.i16()?;
        if n < 0 {
            return Err(self.err(format!("negative column count {n}")));
        }
        let mut values = Vec::with_capacity(n as usize);
        for _ in 0..n {
            values.push(match self.u8()? {
                b'n' => Value::Null,
                b'u' => Value::Unchanged,
                kind @ (b't' | b'b') => {
                    let len = self.i32()?;
                    let len =
                        usize::try_from(len).map_err(|_| self.err("negative value length"))?;
                    let v = self.bytes(len)?;
                    if kind == b't' {
                        Value::Text(v)
                    } else {
                        Value::Binary(v)
                    }
                }
                other => return Err(self.err(format!("unknown tuple value kind {other:#x}"))),
            });
        }
        Ok(values)
    }

    fn done(&self) -> Result<()> {
        if self.pos == self.data.len() {
            Ok(())
        } else {
            Err(self.err(format!(
                "{} unexpected trailing bytes",
                self.data.len() - self.pos
            )))
        }
    }
}

/// Decodes one pgoutput message.
pub fn decode(data: &Bytes) -> Result<LogicalMessage> {
    let tag = *data.first().ok_or_else(|| PgError::Decode {
        context: "pgoutput".into(),
        message: "empty message".into(),
    })?;
    let what = match tag {
        b'B' => "Begin",
        b'C' => "Commit",
        b'O' => "Origin",
        b'R' => "Relation",
        b'Y' => "Type",
        b'I' => "Insert",
        b'U' => "Update",
        b'D' => "Delete",
        b'T' => "Truncate",
        b'M' => "Message",
        other => {
            return Err(PgError::Decode {
                context: "pgoutput".into(),
                message: format!(
                    "unknown message type {:?}: is the slot using pgoutput protocol version 1?",
                    other as char
                ),
            });
        }
    };
    let mut r = Reader { data, pos: 1, what };
    let message = match tag {
        b'B' => LogicalMessage::Begin {
            final_lsn: r.u64()?,
            commit_time_micros: r.i64()?,
            xid: r.u32()?,
        },
        b'C' => LogicalMessage::Commit {
            flags: r.u8()?,
            commit_lsn: r.u64()?,
            end_lsn: r.u64()?,
            commit_time_micros: r.i64()?,
        },
        b'O' => LogicalMessage::Origin {
            commit_lsn: r.u64()?,
            name: r.string()?,
        },
        b'R' => {
            let oid = r.u32()?;
            let namespace = r.string()?;
            let name = r.string()?;
            let replica_identity = r.u8()?;
            let n = r.i16()?;
            let mut columns = Vec::with_capacity(n.max(0) as usize);
            for _ in 0..n {
                columns.push(RelationColumn {
                    key: r.u8()? & 1 != 0,
                    name: r.string()?,
                    type_oid: r.u32()?,
                    type_modifier: r.i32()?,
                });
            }
            LogicalMessage::Relation(Relation {
                oid,
                // An empty namespace means pg_catalog.
                namespace: if namespace.is_empty() {
                    "pg_catalog".into()
                } else {
                    namespace
                },
                name,
                replica_identity,
                columns,
            })
        }
        b'Y' => LogicalMessage::Type {
            oid: r.u32()?,
            namespace: r.string()?,
            name: r.string()?,
        },
        b'I' => {
            let relation = r.u32()?;
            match r.u8()? {
                b'N' => {}
                other => return Err(r.err(format!("expected 'N', got {:?}", other as char))),
            }
            LogicalMessage::Insert {
                relation,
                new: r.tuple()?,
            }
        }
        b'U' => {
            let relation = r.u32()?;
            let mut old = None;
            let mut kind = r.u8()?;
            if kind == b'K' || kind == b'O' {
                let t = r.tuple()?;
                old = Some(if kind == b'K' {
                    OldTuple::Key(t)
                } else {
                    OldTuple::Full(t)
                });
                kind = r.u8()?;
            }
            if kind != b'N' {
                return Err(r.err(format!("expected 'N', got {:?}", kind as char)));
            }
            LogicalMessage::Update {
                relation,
                old,
                new: r.tuple()?,
            }
        }
        b'D' => {
            let relation = r.u32()?;
            let kind = r.u8()?;
            let t = r.tuple()?;
            let old = match kind {
                b'K' => OldTuple::Key(t),
                b'O' => OldTuple::Full(t),
                other => {
                    return Err(r.err(format!("expected 'K' or 'O', got {:?}", other as char)));
                }
            };
            LogicalMessage::Delete { relation, old }
        }
        b'T' => {
            let n = r.u32()?;
            let options = r.u8()?;
            let mut relations = Vec::with_capacity(n.min(1 << 16) as usize);
            for _ in 0..n {
                relations.push(r.u32()?);
            }
            LogicalMessage::Truncate {
                cascade: options & 1 != 0,
                restart_identity: options & 2 != 0,
                relations,
            }
        }
        _ => {
            let flags = r.u8()?;
            let lsn = r.u64()?;
            let prefix = r.string()?;
            let len = r.u32()? as usize;
            LogicalMessage::Message {
                transactional: flags & 1 != 0,
                lsn,
                prefix,
                content: r.bytes(len)?,
            }
        }
    };
    r.done()?;
    Ok(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tuple_bytes(values: &[Option<&str>]) -> Vec<u8> {
        let mut v = (values.len() as i16).to_be_bytes().to_vec();
        for x in values {
            match x {
                None => v.push(b'n'),
                Some("\u{0}u") => v.push(b'u'),
                Some(s) => {
                    v.push(b't');
                    v.extend((s.len() as i32).to_be_bytes());
                    v.extend(s.as_bytes());
                }
            }
        }
        v
    }

    #[test]
    fn relation_and_changes() {
        let mut m = vec![b'R'];
        m.extend(16384u32.to_be_bytes());
        m.extend(b"public\0items\0");
        m.push(b'd');
        m.extend(2i16.to_be_bytes());
        m.push(1);
        m.extend(b"id\0");
        m.extend(23u32.to_be_bytes());
        m.extend((-1i32).to_be_bytes());
        m.push(0);
        m.extend(b"body\0");
        m.extend(25u32.to_be_bytes());
        m.extend((-1i32).to_be_bytes());
        let LogicalMessage::Relation(rel) = decode(&Bytes::from(m)).unwrap() else {
            panic!("not a relation")
        };
        assert_eq!(rel.name, "items");
        assert!(rel.columns[0].key && !rel.columns[1].key);
        assert_eq!(rel.columns[1].type_oid, 25);

        let mut u = vec![b'U'];
        u.extend(16384u32.to_be_bytes());
        u.push(b'K');
        u.extend(tuple_bytes(&[Some("1"), None]));
        u.push(b'N');
        u.extend(tuple_bytes(&[Some("2"), Some("\u{0}u")]));
        let LogicalMessage::Update { old, new, .. } = decode(&Bytes::from(u)).unwrap() else {
            panic!("not an update")
        };
        assert_eq!(
            old,
            Some(OldTuple::Key(vec![
                Value::Text(Bytes::from_static(b"1")),
                Value::Null
            ]))
        );
        assert_eq!(new[1], Value::Unchanged);

        let mut t = vec![b'T'];
        t.extend(2u32.to_be_bytes());
        t.push(1);
        t.extend(1u32.to_be_bytes());
        t.extend(2u32.to_be_bytes());
        assert_eq!(
            decode(&Bytes::from(t)).unwrap(),
            LogicalMessage::Truncate {
                cascade: true,
                restart_identity: false,
                relations: vec![1, 2]
            }
        );
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        for bad in [
            &b""[..],
            b"I",
            b"I\0\0\0\x01N\0\x01t\xff\xff\xff\xff",
            b"U\0\0\0\x01X",
            b"R\0\0\0\x01public",
            b"Z",
            b"B\0\0\0\0\0\0\0\x01\0\0\0\0\0\0\0\x02\0\0\0\x03extra",
        ] {
            assert!(decode(&Bytes::copy_from_slice(bad)).is_err(), "{bad:?}");
        }
    }
}
