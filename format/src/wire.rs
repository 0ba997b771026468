//! The wire protocol between collectors and the lake.
//!
//! A batch travels as the body of `POST /v1/ingest/{table}`: an Arrow IPC *stream*
//! (schema message, one or more record batches, end marker) whose buffers are
//! zstd-compressed. Headers: `Authorization: Bearer <node token>` and
//! `Lake-Batch: <node>/<epoch>/<seq>`. The batch id makes delivery idempotent: a
//! collector that re-sends after a lost acknowledgement gets a 200 and the lake stores
//! the rows once. A sender must never give one id to two different batches: a
//! collector's spool draws a random 64-bit `epoch` each time it is opened (so a cloned
//! or restored spool gets its own) and `seq` grows by one per batch; `lake ingest` and
//! `lake-collector replay-rejected` draw a random epoch per run. The lake takes a batch
//! as a duplicate only when that exact id was stored (it remembers stored seq ranges
//! per `(node, epoch)`).

use std::fmt;
use std::io::Cursor;
use std::str::FromStr;
use std::sync::Arc;

use arrow_array::{new_null_array, RecordBatch, RecordBatchOptions};
use arrow_ipc::reader::StreamReader;
use arrow_ipc::writer::{IpcWriteOptions, StreamWriter};
use arrow_ipc::CompressionType;
use arrow_schema::{ArrowError, Schema, SchemaRef};

use crate::catalog::Table;

/// Header carrying the batch id.
pub const BATCH_HEADER: &str = "lake-batch";
/// Content type of an ingest body.
pub const CONTENT_TYPE: &str = "application/vnd.apache.arrow.stream";
/// Version of this envelope; bumped on any incompatible change.
pub const CODEC_VERSION: u32 = 1;
/// Longest node name accepted.
pub const MAX_NODE_LEN: usize = 64;

/// Errors of the wire protocol.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The batch id header is malformed.
    #[error("invalid batch id {id:?}: {reason}")]
    BatchId {
        /// The id as received.
        id: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The node name cannot be used.
    #[error("invalid node name {name:?}: {reason}")]
    NodeName {
        /// The name as received.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The body is not a readable Arrow IPC stream.
    #[error("body is not an Arrow IPC stream: {0}")]
    Decode(#[source] ArrowError),
    /// A record batch carries data for another number of arrays than its stream's schema
    /// declares (a batch spliced from another stream, a buggy writer).
    #[error("body is not a consistent Arrow IPC stream: its schema declares {declared} arrays for the columns {columns:?}, but a record batch carries {carried}: the batch was not written with this schema")]
    Layout {
        /// Arrays (field nodes, nested ones included) the schema declares.
        declared: usize,
        /// Arrays the batch carries.
        carried: usize,
        /// The schema's columns.
        columns: Vec<String>,
    },
    /// A record batch's data does not fit the column its schema message declares (a
    /// batch spliced from another stream, a buggy writer).
    #[error("body is not a consistent Arrow IPC stream: the data of column {column:?} does not fit its type {declared} in the stream's schema: {source}")]
    Column {
        /// The column whose data fails to decode.
        column: String,
        /// Its type in the stream's schema message.
        declared: String,
        /// Arrow's complaint.
        #[source]
        source: ArrowError,
    },
    /// Encoding failed (a bug or an impossible batch).
    #[error("cannot encode Arrow IPC stream: {0}")]
    Encode(#[source] ArrowError),
    /// The batch's schema does not match the table.
    #[error("{0}")]
    Schema(#[from] SchemaMismatch),
    /// The compressed buffers would decompress to more than the receiver accepts.
    #[error("the batch decompresses to {decoded} bytes or more; at most {limit} are accepted (send smaller batches)")]
    Inflated {
        /// Decompressed bytes the stream declares (at least).
        decoded: usize,
        /// The limit.
        limit: usize,
    },
}

/// How a batch's schema differs from its table's. The message names the column.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaMismatch {
    /// A column the table does not have.
    #[error("column {column:?} is not in table {table}")]
    UnknownColumn {
        /// Table.
        table: Table,
        /// Column.
        column: String,
    },
    /// A required column is absent.
    #[error("column {column:?} of table {table} is required but missing")]
    MissingColumn {
        /// Table.
        table: Table,
        /// Column.
        column: &'static str,
    },
    /// A column with the wrong type.
    #[error("column {column:?} of table {table} must be {expected}, found {found}")]
    WrongType {
        /// Table.
        table: Table,
        /// Column.
        column: &'static str,
        /// Type the catalog declares.
        expected: String,
        /// Type the batch carries.
        found: String,
    },
    /// Nulls in a column that does not allow them.
    #[error("column {column:?} of table {table} must not contain nulls")]
    NullInRequired {
        /// Table.
        table: Table,
        /// Column.
        column: &'static str,
    },
}

/// Checks a node name: it becomes part of batch ids, paths and labels, so it is limited
/// to `[A-Za-z0-9._-]`, 1 to 64 characters, and may not start with a dot.
pub fn validate_node_name(name: &str) -> Result<(), WireError> {
    let err = |reason| WireError::NodeName { name: name.to_string(), reason };
    if name.is_empty() || name.len() > MAX_NODE_LEN {
        return Err(err("must be 1 to 64 characters"));
    }
    if name.starts_with('.') {
        return Err(err("must not start with a dot"));
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')) {
        return Err(err("only letters, digits, '.', '_' and '-' are allowed"));
    }
    Ok(())
}

/// Identity of one shipped batch: `<node>/<epoch>/<seq>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BatchId {
    /// Node that produced the batch.
    pub node: String,
    /// Spool generation of that node (set when its spool was created).
    pub epoch: u64,
    /// Position of the batch within the epoch, from 1.
    pub seq: u64,
}

impl fmt::Display for BatchId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.node, self.epoch, self.seq)
    }
}

impl FromStr for BatchId {
    type Err = WireError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| WireError::BatchId { id: s.to_string(), reason };
        let mut parts = s.rsplitn(3, '/');
        let (Some(seq), Some(epoch), Some(node)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(err("expected <node>/<epoch>/<seq>"));
        };
        validate_node_name(node)?;
        let epoch = epoch.parse().map_err(|_| err("epoch is not an unsigned integer"))?;
        let seq = seq.parse().map_err(|_| err("seq is not an unsigned integer"))?;
        Ok(BatchId { node: node.to_string(), epoch, seq })
    }
}

/// Encodes batches as a zstd-compressed Arrow IPC stream. All batches must share `schema`.
pub fn encode(schema: &Schema, batches: &[RecordBatch]) -> Result<Vec<u8>, WireError> {
    let options =
        IpcWriteOptions::default().try_with_compression(Some(CompressionType::ZSTD)).map_err(WireError::Encode)?;
    let mut out = Vec::new();
    let mut writer = StreamWriter::try_new_with_options(&mut out, schema, options).map_err(WireError::Encode)?;
    for b in batches {
        writer.write(b).map_err(WireError::Encode)?;
    }
    writer.finish().map_err(WireError::Encode)?;
    drop(writer);
    Ok(out)
}

/// Checks the framing of an IPC stream before any decoding: every message's metadata
/// must be a valid flatbuffer and its declared sizes must fit in the bytes received.
/// Without this, four bytes of garbage read as a length make the reader allocate and
/// fill gigabytes before failing.
///
/// Compressed buffers start with their decompressed length, which the reader allocates
/// up front: their sum must stay within `max_decoded`, so a small body declaring (or
/// truly holding, zstd compresses zeros a thousandfold) gigabytes is refused before any
/// allocation instead of exhausting memory.
/// Returns the number of field nodes (arrays) of each record batch message, and the
/// decompressed bytes the compressed buffers declare.
fn check_framing(mut buf: &[u8], max_decoded: usize) -> Result<(Vec<usize>, usize), WireError> {
    let bad = |m: String| WireError::Decode(ArrowError::ParseError(m));
    let word = |b: &[u8], at: usize| i32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
    let mut decoded = 0usize;
    let mut nodes = Vec::new();
    // (field nodes, buffers) a record batch of the stream's schema carries.
    let mut needed: Option<(usize, usize)> = None;
    while !buf.is_empty() {
        if buf.len() < 4 {
            return Err(bad(format!("truncated message header ({} bytes)", buf.len())));
        }
        let (len, header) = match word(buf, 0) {
            -1 if buf.len() >= 8 => (word(buf, 4), 8),
            -1 => return Err(bad("truncated message header".into())),
            n => (n, 4),
        };
        if len == 0 {
            return Ok((nodes, decoded)); // end-of-stream marker
        }
        let len = usize::try_from(len).map_err(|_| bad(format!("negative message length {len}")))?;
        let meta = buf
            .get(header..header + len)
            .ok_or_else(|| bad(format!("message of {len} bytes but only {} left", buf.len() - header)))?;
        let message = arrow_ipc::root_as_message(meta).map_err(|e| bad(format!("invalid message: {e}")))?;
        let body = usize::try_from(message.bodyLength()).map_err(|_| bad("negative body length".into()))?;
        let end = (header + len)
            .checked_add(body)
            .filter(|end| *end <= buf.len())
            .ok_or_else(|| bad(format!("body of {body} bytes but only {} left", buf.len() - header - len)))?;
        if let Some(schema) = message.header_as_schema() {
            let (mut n, mut b) = (0, 0);
            for f in schema.fields().iter().flatten() {
                check_field_type(f).map_err(|e| bad(format!("column {:?}: {e}", f.name().unwrap_or(""))))?;
                let (fn_, fb) = ipc_arrays(f);
                (n, b) = (n + fn_, b + fb);
            }
            needed = Some((n, b));
        }
        if let Some(b) = message.header_as_record_batch() {
            let (have_nodes, have_buffers) = (b.nodes().map_or(0, |n| n.len()), b.buffers().map_or(0, |b| b.len()));
            // The reader takes buffers in order, a few per array, and panics when it runs
            // out (also when decoding a projection). Too few nodes is a `Layout` error, below.
            if let Some((n, bufs)) = needed {
                if have_nodes >= n && have_buffers < bufs {
                    return Err(bad(format!(
                        "record batch has {have_nodes} field nodes and {have_buffers} buffers; its schema needs {n} and {bufs}"
                    )));
                }
            }
            nodes.push(have_nodes);
        }
        let batch =
            message.header_as_record_batch().or_else(|| message.header_as_dictionary_batch().and_then(|d| d.data()));
        if let Some(batch) = batch {
            let data = &buf[header + len..end];
            let compressed = batch.compression().is_some();
            for b in batch.buffers().iter().flatten() {
                // Every buffer must lie inside the body: the reader slices it unchecked
                // and panics on a negative or oversized offset or length.
                let outside =
                    || bad(format!("buffer at {} of {} bytes lies outside its message body", b.offset(), b.length()));
                let at = usize::try_from(b.offset()).map_err(|_| outside())?;
                let length = usize::try_from(b.length()).map_err(|_| outside())?;
                at.checked_add(length).filter(|end| *end <= data.len()).ok_or_else(outside)?;
                if length == 0 || !compressed {
                    continue;
                }
                let prefix = data.get(at..at.checked_add(8).ok_or_else(outside)?).ok_or_else(outside)?;
                let n = i64::from_le_bytes(prefix.try_into().expect("8 bytes"));
                // -1: stored uncompressed (a slice of the body, no allocation).
                if n == -1 {
                    continue;
                }
                let n = usize::try_from(n).map_err(|_| bad(format!("negative decompressed length {n}")))?;
                decoded = decoded.saturating_add(n);
                if decoded > max_decoded {
                    return Err(WireError::Inflated { decoded, limit: max_decoded });
                }
            }
        }
        buf = &buf[end..];
    }
    Ok((nodes, decoded))
}

/// (field nodes, buffers) one column of this (already checked) type takes in a record
/// batch: a node per array; a validity buffer each (none for Null), plus offsets and/or
/// values as the type has them.
fn ipc_arrays(f: arrow_ipc::Field<'_>) -> (usize, usize) {
    use arrow_ipc::Type;
    let own = match f.type_type() {
        Type::Null => 0,
        Type::Struct_ => 1,
        Type::Utf8 | Type::LargeUtf8 | Type::Binary | Type::LargeBinary => 3,
        // Validity and values; lists and maps: validity and offsets.
        _ => 2,
    };
    f.children().into_iter().flatten().map(ipc_arrays).fold((1, own), |(n, b), (cn, cb)| (n + cn, b + cb))
}

/// Refuses a schema field arrow-ipc's converter would panic on (it `panic!`s on unknown
/// types, widths and units, and on nested types without their children): only the types
/// of the catalog and of custom tables, and their plain relatives, are accepted, without
/// dictionary encoding.
fn check_field_type(f: arrow_ipc::Field<'_>) -> Result<(), String> {
    use arrow_ipc::{FloatingPoint, Precision, TimeUnit, Type};
    if f.dictionary().is_some() {
        return Err("dictionary encoding is not supported".into());
    }
    let children = f.children().map(|c| c.iter().collect::<Vec<_>>());
    let t = f.type_type();
    let ok = match t {
        Type::Null | Type::Bool | Type::Utf8 | Type::LargeUtf8 | Type::Binary | Type::LargeBinary => true,
        Type::Int => f.type_as_int().is_some_and(|i| matches!(i.bitWidth(), 8 | 16 | 32 | 64)),
        Type::FloatingPoint => f
            .type_as_floating_point()
            .as_ref()
            .map(FloatingPoint::precision)
            .is_some_and(|p| matches!(p, Precision::HALF | Precision::SINGLE | Precision::DOUBLE)),
        Type::Timestamp => f.type_as_timestamp().is_some_and(|ts| {
            matches!(ts.unit(), TimeUnit::SECOND | TimeUnit::MILLISECOND | TimeUnit::MICROSECOND | TimeUnit::NANOSECOND)
        }),
        Type::List | Type::LargeList => children.as_ref().is_some_and(|c| c.len() == 1),
        // One child: the entries, a struct of key and value.
        Type::Map => children.as_ref().is_some_and(|c| {
            c.len() == 1 && c[0].type_type() == Type::Struct_ && c[0].children().is_some_and(|kv| kv.len() == 2)
        }),
        Type::Struct_ => children.is_some(),
        _ => false,
    };
    if !ok {
        return Err(format!("type {t:?} (or its parameters) is not supported"));
    }
    for c in children.into_iter().flatten() {
        check_field_type(c)?;
    }
    Ok(())
}

/// Field nodes (arrays) a column of this type takes in a record batch message.
fn node_count(t: &arrow_schema::DataType) -> usize {
    use arrow_schema::DataType as D;
    1 + match t {
        D::List(f) | D::LargeList(f) | D::FixedSizeList(f, _) | D::Map(f, _) | D::ListView(f) | D::LargeListView(f) => {
            node_count(f.data_type())
        }
        D::Struct(fs) => fs.iter().map(|f| node_count(f.data_type())).sum(),
        D::Union(fs, _) => fs.iter().map(|(_, f)| node_count(f.data_type())).sum(),
        // The dictionary's values travel in their own messages.
        D::Dictionary(..) => 0,
        D::RunEndEncoded(r, v) => node_count(r.data_type()) + node_count(v.data_type()),
        _ => 0,
    }
}

/// The bytes a body's compressed buffers declare they decompress to (0 for an
/// uncompressed stream), read from the message headers without decompressing anything:
/// what [`decode_bounded`] will allocate for them. The body's framing is checked as
/// [`decode_bounded`] checks it, with the same errors ([`WireError::Inflated`] past
/// `max_decoded`).
pub fn decoded_size(body: &[u8], max_decoded: usize) -> Result<usize, WireError> {
    check_framing(body, max_decoded).map(|(_, decoded)| decoded)
}

/// Decodes an Arrow IPC stream into its schema and batches.
pub fn decode(body: &[u8]) -> Result<(SchemaRef, Vec<RecordBatch>), WireError> {
    decode_bounded(body, usize::MAX)
}

/// [`decode`] for bodies from the network: the compressed buffers may decompress to
/// `max_decoded` bytes at most ([`WireError::Inflated`] otherwise, before allocating).
pub fn decode_bounded(body: &[u8], max_decoded: usize) -> Result<(SchemaRef, Vec<RecordBatch>), WireError> {
    let (nodes, _) = check_framing(body, max_decoded)?;
    // arrow-ipc trusts a batch's node lengths against its buffer sizes and panics on some
    // that disagree (a validity bitmap shorter than its array, …) before validating: a
    // panic while reading is this batch's decode error, not the ingest task's end.
    contained(|| read_checked(body, &nodes))
}

fn read_checked(body: &[u8], nodes: &[usize]) -> Result<(SchemaRef, Vec<RecordBatch>), WireError> {
    let reader = StreamReader::try_new(Cursor::new(body), None).map_err(WireError::Decode)?;
    let schema = reader.schema();
    match reader.collect::<Result<Vec<_>, _>>() {
        Ok(batches) => Ok((schema, batches)),
        Err(source) => {
            let declared: usize = schema.fields().iter().map(|f| node_count(f.data_type())).sum();
            if let Some(&carried) = nodes.iter().find(|n| **n != declared) {
                let columns = schema.fields().iter().map(|f| f.name().clone()).collect();
                return Err(WireError::Layout { declared, carried, columns });
            }
            Err(match culprit(body, &schema) {
                Some(i) => {
                    let f = schema.field(i);
                    WireError::Column { column: f.name().clone(), declared: f.data_type().to_string(), source }
                }
                None => WireError::Decode(source),
            })
        }
    }
}

/// `read`'s result, or a decode error carrying the message of a panic inside it.
fn contained<T>(read: impl FnOnce() -> Result<T, WireError>) -> Result<T, WireError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(read)).unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        Err(WireError::Decode(ArrowError::ParseError(format!("malformed record batch: {message}"))))
    })
}

/// The first column whose data alone fails to decode, when the stream decodes without
/// any column (so the fault is in a column, not in the messages). Error path only.
fn culprit(body: &[u8], schema: &Schema) -> Option<usize> {
    let decodes = |projection: Vec<usize>| {
        StreamReader::try_new(Cursor::new(body), Some(projection)).is_ok_and(|r| r.into_iter().all(|b| b.is_ok()))
    };
    if !decodes(Vec::new()) {
        return None;
    }
    (0..schema.fields().len()).find(|&i| !decodes(vec![i]))
}

/// Checks a batch against its table and returns it in the catalog's exact schema: columns
/// in catalog order, missing nullable columns filled with nulls (an older sender), field
/// metadata from the catalog. Unknown columns, wrong types and nulls in required columns
/// are errors that name the column.
pub fn conform(table: Table, schema: &SchemaRef, batch: &RecordBatch) -> Result<RecordBatch, WireError> {
    if let Some(f) = batch.schema().fields().iter().find(|f| !table.columns().any(|c| c.name == f.name())) {
        return Err(SchemaMismatch::UnknownColumn { table, column: f.name().clone() }.into());
    }
    let mut columns = Vec::with_capacity(schema.fields().len());
    for c in table.columns() {
        let expected = c.ty.data_type();
        match batch.column_by_name(c.name) {
            None if c.nullable => columns.push(new_null_array(&expected, batch.num_rows())),
            None => return Err(SchemaMismatch::MissingColumn { table, column: c.name }.into()),
            Some(a) => {
                if !types_match(a.data_type(), &expected) {
                    return Err(SchemaMismatch::WrongType {
                        table,
                        column: c.name,
                        expected: expected.to_string(),
                        found: a.data_type().to_string(),
                    }
                    .into());
                }
                if !c.nullable && a.null_count() > 0 {
                    return Err(SchemaMismatch::NullInRequired { table, column: c.name }.into());
                }
                columns.push(Arc::clone(a));
            }
        }
    }
    let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    RecordBatch::try_new_with_options(Arc::clone(schema), columns, &options).map_err(WireError::Decode)
}

/// Types are equal up to the names and nullability of nested fields (map entries, list
/// items), which differ between Arrow builders without changing meaning.
fn types_match(found: &arrow_schema::DataType, expected: &arrow_schema::DataType) -> bool {
    use arrow_schema::DataType as D;
    match (found, expected) {
        (D::Map(a, sa), D::Map(b, sb)) => sa == sb && types_match(a.data_type(), b.data_type()),
        (D::List(a), D::List(b)) => types_match(a.data_type(), b.data_type()),
        (D::Struct(a), D::Struct(b)) => {
            a.len() == b.len() && a.iter().zip(b.iter()).all(|(x, y)| types_match(x.data_type(), y.data_type()))
        }
        _ => found == expected,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::builder::{MapBuilder, StringBuilder};
    use arrow_array::{ArrayRef, Float64Array, Int64Array, StringArray, TimestampMicrosecondArray};

    fn metrics_batch(n: usize) -> RecordBatch {
        let schema = Table::Metrics.schema();
        let ts: ArrayRef = Arc::new(
            TimestampMicrosecondArray::from_iter_values((0..n as i64).map(|i| 1_795_374_070_000_000 + i))
                .with_timezone("UTC"),
        );
        let host: ArrayRef = Arc::new(StringArray::from_iter_values((0..n).map(|_| "salem-storage")));
        let name: ArrayRef = Arc::new(StringArray::from_iter_values((0..n).map(|i| format!("m{i}"))));
        let value: ArrayRef = Arc::new(Float64Array::from_iter_values((0..n).map(|i| i as f64 / 3.0)));
        let mut labels = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
        for i in 0..n {
            labels.keys().append_value("cpu");
            labels.values().append_value(i.to_string());
            labels.append(true).unwrap();
        }
        RecordBatch::try_new(schema, vec![ts, host, name, value, Arc::new(labels.finish())]).unwrap()
    }

    #[test]
    fn ipc_round_trip_keeps_rows_and_schema() {
        let b = metrics_batch(1000);
        let bytes = encode(&b.schema(), std::slice::from_ref(&b)).unwrap();
        let (schema, batches) = decode(&bytes).unwrap();
        assert_eq!(schema, b.schema());
        assert_eq!(batches, vec![b.clone()]);
        let conformed = conform(Table::Metrics, &Table::Metrics.schema(), &batches[0]).unwrap();
        assert_eq!(conformed, b);
    }

    #[test]
    fn a_length_prefix_larger_than_the_body_is_refused_before_allocating() {
        for body in [&b"this is not arrow"[..], &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 1, 2, 3]] {
            let err = decode(body).unwrap_err().to_string();
            assert!(err.contains("only"), "{err}");
        }
    }

    #[test]
    fn garbage_is_a_decode_error_not_a_panic() {
        for body in [&b""[..], b"hello", &[0xff; 64], &[0xff, 0xff, 0xff, 0xff, 8, 0, 0, 0, 1, 2]] {
            assert!(matches!(decode(body), Err(WireError::Decode(_))));
        }
        let good = encode(&metrics_batch(10).schema(), &[metrics_batch(10)]).unwrap();
        for cut in [1, 8, good.len() / 2, good.len() - 9] {
            assert!(decode(&good[..cut]).is_err(), "truncated at {cut} decoded");
        }
    }

    #[test]
    fn a_buffer_outside_its_body_is_a_decode_error_not_a_panic() {
        // Found by the wire fuzz target (its first byte picks the table): a buffer whose
        // length is negative made arrow-ipc's reader panic slicing the body.
        let crash = include_bytes!("../../fixtures/fuzz-regressions/wire/buffer-length-negative");
        let err = decode(&crash[1..]).unwrap_err().to_string();
        assert!(err.contains("lies outside its message body"), "{err}");
        // The same for an uncompressed stream whose buffer reaches past the body.
        let batch = metrics_batch(3);
        let mut body = Vec::new();
        let mut w = StreamWriter::try_new(&mut body, &batch.schema()).unwrap();
        w.write(&batch).unwrap();
        w.finish().unwrap();
        drop(w);
        let good = decode(&body).unwrap();
        assert_eq!(good.1[0].num_rows(), 3);
    }

    #[test]
    fn a_batch_with_fewer_buffers_than_its_schema_needs_is_an_error_not_a_panic() {
        // Found by the wire fuzz target: a string column's batch carrying an integer's two
        // buffers instead of three made the reader panic when it ran out.
        let text =
            RecordBatch::try_from_iter(vec![("a", Arc::new(StringArray::from(vec!["x", "y"])) as ArrayRef)]).unwrap();
        let ints = RecordBatch::try_from_iter(vec![("a", Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef)]).unwrap();
        let split = |body: &[u8]| {
            let len = i32::from_le_bytes(body[4..8].try_into().unwrap()) as usize;
            (body[..8 + len].to_vec(), body[8 + len..].to_vec())
        };
        let (schema, _) = split(&encode(&text.schema(), std::slice::from_ref(&text)).unwrap());
        let (_, batch) = split(&encode(&ints.schema(), std::slice::from_ref(&ints)).unwrap());
        let err = decode(&[schema, batch].concat()).unwrap_err().to_string();
        assert!(err.contains("1 field nodes and 2 buffers; its schema needs 1 and 3"), "{err}");
    }

    #[test]
    fn a_batch_that_inflates_past_the_limit_is_refused_before_allocating() {
        // 12345 zeros: 98760 bytes decompressed, a few dozen compressed.
        let n = 12_345;
        let zeros = RecordBatch::try_from_iter(vec![("value", Arc::new(Float64Array::from(vec![0.0; n])) as ArrayRef)])
            .unwrap();
        let body = encode(&zeros.schema(), std::slice::from_ref(&zeros)).unwrap();
        assert!(body.len() < 2000, "{}", body.len());
        assert_eq!(decode_bounded(&body, 1 << 20).unwrap().1[0].num_rows(), n);
        // What decoding will allocate is known from the headers alone: the 8 × n values.
        assert_eq!(decoded_size(&body, 1 << 20).unwrap(), 8 * n);
        assert!(matches!(decoded_size(&body, 50_000), Err(WireError::Inflated { .. })));
        let err = decode_bounded(&body, 50_000).unwrap_err();
        assert!(matches!(err, WireError::Inflated { limit: 50_000, .. }), "{err}");
        // A forged decompressed length (2^62) is refused, not allocated.
        let real = ((8 * n) as i64).to_le_bytes();
        let at = body.windows(8).position(|w| w == real).expect("the length prefix is in the body");
        let mut forged = body.clone();
        forged[at..at + 8].copy_from_slice(&(1i64 << 62).to_le_bytes());
        assert!(matches!(decode_bounded(&forged, 1 << 30), Err(WireError::Inflated { .. })));
        forged[at..at + 8].copy_from_slice(&(-7i64).to_le_bytes());
        assert!(matches!(decode_bounded(&forged, 1 << 30), Err(WireError::Decode(_))));
    }

    #[test]
    fn a_batch_spliced_under_another_schema_names_the_column() {
        let good = encode(&metrics_batch(3).schema(), &[metrics_batch(3)]).unwrap();
        let b = metrics_batch(3);
        let other = RecordBatch::try_from_iter(vec![
            ("ts", b.column(0).clone()),
            ("host", b.column(1).clone()),
            ("name", b.column(2).clone()),
            ("value", Arc::new(StringArray::from(vec!["a", "b", "c"])) as ArrayRef),
            ("labels", b.column(4).clone()),
        ])
        .unwrap();
        let other = encode(&other.schema(), &[other]).unwrap();
        let split = |body: &[u8]| {
            let len = i32::from_le_bytes(body[4..8].try_into().unwrap()) as usize;
            (body[..8 + len].to_vec(), body[8 + len..].to_vec())
        };
        let (schema, _) = split(&good);
        let (_, rest) = split(&other);
        let err = decode(&[schema, rest].concat()).unwrap_err();
        assert!(matches!(&err, WireError::Column { column, .. } if column == "value"), "{err}");
        assert!(err.to_string().contains("column \"value\"") && err.to_string().contains("Float64"), "{err}");
        // A batch with fewer columns than the schema: the layout itself differs.
        let short =
            RecordBatch::try_from_iter(vec![("ts", b.column(0).clone()), ("host", b.column(1).clone())]).unwrap();
        let (_, rest) = split(&encode(&short.schema(), &[short]).unwrap());
        let err = decode(&[split(&good).0, rest].concat()).unwrap_err();
        assert!(matches!(err, WireError::Layout { declared: 8, carried: 2, .. }), "{err}");
    }

    #[test]
    fn conform_names_the_offending_column() {
        let b = metrics_batch(3);
        let err = conform(Table::Logs, &Table::Logs.schema(), &b).unwrap_err().to_string();
        assert!(err.contains("\"name\""), "{err}");

        let ts = b.column(0).clone();
        let host = b.column(1).clone();
        let bad = RecordBatch::try_from_iter(vec![
            ("ts", ts),
            ("host", host),
            ("name", b.column(2).clone()),
            ("value", Arc::new(Int64Array::from(vec![1, 2, 3])) as ArrayRef),
        ])
        .unwrap();
        let err = conform(Table::Metrics, &Table::Metrics.schema(), &bad).unwrap_err().to_string();
        assert!(err.contains("\"value\"") && err.contains("Float64") && err.contains("Int64"), "{err}");

        // a missing nullable column is filled with nulls
        let short = RecordBatch::try_from_iter(vec![
            ("ts", b.column(0).clone()),
            ("host", b.column(1).clone()),
            ("name", b.column(2).clone()),
            ("value", b.column(3).clone()),
        ])
        .unwrap();
        let out = conform(Table::Metrics, &Table::Metrics.schema(), &short).unwrap();
        assert_eq!(out.column(4).null_count(), 3);
    }

    #[test]
    fn batch_ids_parse_and_reject() {
        let id: BatchId = "salem-storage/1795374070/42".parse().unwrap();
        assert_eq!(id, BatchId { node: "salem-storage".into(), epoch: 1_795_374_070, seq: 42 });
        assert_eq!(id.to_string(), "salem-storage/1795374070/42");
        for bad in ["", "a/b", "../x/1/2", "a/1/x", "a/-1/2", "/1/2", "a b/1/2", ".hidden/1/2"] {
            assert!(bad.parse::<BatchId>().is_err(), "{bad:?} accepted");
        }
    }

    proptest::proptest! {
        #[test]
        fn batch_id_round_trips(node in "[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}", epoch: u64, seq: u64) {
            let id = BatchId { node, epoch, seq };
            proptest::prop_assert_eq!(id.to_string().parse::<BatchId>().unwrap(), id);
        }
    }
}
