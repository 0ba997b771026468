//! One committed Parquet file of a table being written: the parquet crate's
//! `ArrowWriter`, except for `metrics`, whose row groups follow the metric names and whose
//! `value` encoding is chosen per row group (issue 23 §1).
//!
//! In: batches already in the table's sort order (the flush, compaction and `lake-gen`
//! sort them). Out: the file, with the table's [`WriterProperties`]
//! (`crate::ingest::writer::parquet_properties` or its compacted variant).
//!
//! # `metrics`
//! A metric's values are either a few distinct numbers (a percentage with two decimals, a
//! load average, a count) or many (bytes, rates, counters). The first compress best as a
//! dictionary, the second as BYTE_STREAM_SPLIT; a Parquet column chunk has one dictionary
//! or none, and the parquet crate only falls back from a dictionary once it outgrows its
//! page. So each row group holds one metric name where it can (a group ends where the
//! name changes once it has [`MIN_GROUP_ROWS`] rows, and at the table's row group size),
//! and its `value` chunk is encoded both ways, the smaller kept. On a generated day
//! (999,905 samples, compacted): 1.579 B/sample with BYTE_STREAM_SPLIT alone, 1.168 with
//! the choice per group (each name alone would be 1.125; `lake-metrics-whatif`). The
//! cost: `value` is encoded twice.

use std::io::Write;
use std::sync::Arc;

use arrow_array::{Array, RecordBatch, StringArray};
use arrow_schema::SchemaRef;
use arrow_select::concat::concat_batches;
use parquet::arrow::arrow_writer::{compute_leaves, ArrowColumnChunk, ArrowRowGroupWriterFactory};
use parquet::arrow::ArrowWriter;
use parquet::errors::{ParquetError, Result};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::ColumnPath;

use lake_format::custom::TableRef;
use lake_format::Table;

/// Rows a `metrics` row group has at least before it may end at a change of name: fewer
/// would cost more in per-group metadata (footer statistics, the labels' dictionaries)
/// than a dictionary for one name saves. A day of one series every 10 s is 8,640 rows.
pub const MIN_GROUP_ROWS: usize = 8192;

/// A table's Parquet file being written.
pub struct TableFile<W: Write + Send> {
    inner: Inner<W>,
}

enum Inner<W: Write + Send> {
    Plain(ArrowWriter<W>),
    Metrics(Box<MetricsFile<W>>),
}

impl<W: Write + Send> std::fmt::Debug for TableFile<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableFile").field("metrics", &matches!(self.inner, Inner::Metrics(_))).finish()
    }
}

impl<W: Write + Send> TableFile<W> {
    /// A file of `table` with `schema` and `props` written to `w`.
    pub fn try_new(table: &TableRef, w: W, schema: SchemaRef, props: WriterProperties) -> Result<Self> {
        let inner = match table {
            TableRef::Builtin(Table::Metrics) => Inner::Metrics(Box::new(MetricsFile::try_new(w, schema, props)?)),
            _ => Inner::Plain(ArrowWriter::try_new(w, schema, Some(props))?),
        };
        Ok(TableFile { inner })
    }

    /// A file written by the parquet crate's `ArrowWriter` alone, whatever the table (how
    /// `metrics` was written before its row groups followed the names: the what-if tool).
    pub fn plain(w: W, schema: SchemaRef, props: WriterProperties) -> Result<Self> {
        Ok(TableFile { inner: Inner::Plain(ArrowWriter::try_new(w, schema, Some(props))?) })
    }

    /// Appends rows (in the table's sort order).
    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        match &mut self.inner {
            Inner::Plain(w) => w.write(batch),
            Inner::Metrics(w) => w.write(batch),
        }
    }

    /// Writes what is buffered and the footer; returns the writer (to fsync a file).
    pub fn into_inner(self) -> Result<W> {
        match self.inner {
            Inner::Plain(w) => w.into_inner(),
            Inner::Metrics(w) => w.into_inner(),
        }
    }
}

struct MetricsFile<W: Write + Send> {
    file: SerializedFileWriter<W>,
    /// Column writers with the file's properties (`value` BYTE_STREAM_SPLIT).
    columns: ArrowRowGroupWriterFactory,
    /// The same with a dictionary for `value`.
    dictionary: ArrowRowGroupWriterFactory,
    schema: SchemaRef,
    max_rows: usize,
    pending: Vec<RecordBatch>,
    pending_rows: usize,
    /// Name of the last pending row.
    last_name: Option<String>,
    groups: usize,
}

impl<W: Write + Send> MetricsFile<W> {
    fn try_new(w: W, schema: SchemaRef, props: WriterProperties) -> Result<Self> {
        let max_rows = props.max_row_group_row_count().unwrap_or(Table::Metrics.row_group_rows()).max(1);
        let value = ColumnPath::from("value");
        let dict_props = props.clone().into_builder().set_column_dictionary_enabled(value, true).build();
        // ArrowWriter adds the Arrow schema to the file's metadata; its row groups are
        // then written here, chunk by chunk.
        let (file, columns) = ArrowWriter::try_new(w, Arc::clone(&schema), Some(props))?.into_serialized_writer()?;
        // Only its column writers are used: the file it would write goes nowhere.
        let (_, dictionary) =
            ArrowWriter::try_new(std::io::sink(), Arc::clone(&schema), Some(dict_props))?.into_serialized_writer()?;
        Ok(MetricsFile {
            file,
            columns,
            dictionary,
            schema,
            max_rows,
            pending: Vec::new(),
            pending_rows: 0,
            last_name: None,
            groups: 0,
        })
    }

    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let names = batch
            .column_by_name("name")
            .and_then(|c| c.as_any().downcast_ref::<StringArray>())
            .ok_or_else(|| ParquetError::General("metrics batch without a text name column".into()))?
            .clone();
        let mut start = 0;
        while start < batch.num_rows() {
            // The run of rows with one name, cut to what the group may still take.
            let name = names.value(start);
            if self.pending_rows >= MIN_GROUP_ROWS && self.last_name.as_deref() != Some(name) {
                self.flush_group()?;
            }
            let mut end = start + 1;
            while end < batch.num_rows() && names.value(end) == name {
                end += 1;
            }
            let end = end.min(start + self.max_rows - self.pending_rows);
            self.pending.push(batch.slice(start, end - start));
            self.pending_rows += end - start;
            self.last_name = Some(name.to_string());
            if self.pending_rows >= self.max_rows {
                self.flush_group()?;
            }
            start = end;
        }
        Ok(())
    }

    /// Writes the pending rows as one row group, `value` in the smaller of its encodings.
    fn flush_group(&mut self) -> Result<()> {
        if self.pending_rows == 0 {
            return Ok(());
        }
        let batch = concat_batches(&self.schema, &self.pending)?;
        self.pending.clear();
        self.pending_rows = 0;
        let mut writers = self.columns.create_column_writers(self.groups)?;
        let mut alternatives = self.dictionary.create_column_writers(self.groups)?;
        let mut leaf = 0;
        let mut value_leaf = None;
        for (field, column) in self.schema.fields().iter().zip(batch.columns()) {
            for l in compute_leaves(field, column)? {
                writers[leaf].write(&l)?;
                if field.name() == "value" {
                    alternatives[leaf].write(&l)?;
                    value_leaf = Some(leaf);
                }
                leaf += 1;
            }
        }
        let mut chunks: Vec<ArrowColumnChunk> = writers.into_iter().map(|w| w.close()).collect::<Result<_>>()?;
        if let Some(i) = value_leaf {
            let other = alternatives.swap_remove(i).close()?;
            if other.close().metadata.compressed_size() < chunks[i].close().metadata.compressed_size() {
                chunks[i] = other;
            }
        }
        let mut group = self.file.next_row_group()?;
        for c in chunks {
            c.append_to_row_group(&mut group)?;
        }
        group.close()?;
        self.groups += 1;
        Ok(())
    }

    fn into_inner(mut self) -> Result<W> {
        self.flush_group()?;
        self.file.into_inner()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lake_format::rows::MetricsBuilder;
    use parquet::basic::Encoding;
    use parquet::file::reader::{FileReader, SerializedFileReader};

    /// Row groups follow the names once they are large enough, and each `value` chunk
    /// has the encoding that made it smaller: a dictionary for a metric of few distinct
    /// values, BYTE_STREAM_SPLIT for one of many.
    #[test]
    fn metrics_row_groups_follow_names_and_pick_the_smaller_value_encoding() {
        let mut b = MetricsBuilder::new();
        let n = MIN_GROUP_ROWS as i64 + 100;
        let mut x = 7u64;
        for t in 0..n {
            // Sorted by name: "a_percent" (two decimals, 50 distinct values in random
            // order), then "b_bytes" (all distinct).
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            b.push(t, "h", "a_percent", ((x >> 33) % 50) as f64 / 100.0 + 10.0, &[]);
        }
        for t in 0..n {
            b.push(t, "h", "b_bytes", (t as f64).powf(1.7) * 1234.567, &[]);
        }
        let batch = b.finish();
        let table = TableRef::Builtin(Table::Metrics);
        let props = crate::ingest::writer::compacted_parquet_properties(&table, &batch.schema());
        let mut w = TableFile::try_new(&table, Vec::new(), batch.schema(), props).unwrap();
        // In pieces, as batches come.
        w.write(&batch.slice(0, 1000)).unwrap();
        w.write(&batch.slice(1000, batch.num_rows() - 1000)).unwrap();
        let bytes = bytes::Bytes::from(w.into_inner().unwrap());
        let reader = SerializedFileReader::new(bytes.clone()).unwrap();
        let groups = reader.metadata().row_groups();
        assert_eq!(groups.len(), 2, "one group per name");
        let value_enc = |g: usize| -> Vec<Encoding> {
            groups[g].columns().iter().find(|c| c.column_path().string() == "value").unwrap().encodings().collect()
        };
        assert!(value_enc(0).contains(&Encoding::RLE_DICTIONARY), "{:?}", value_enc(0));
        assert!(value_enc(1).contains(&Encoding::BYTE_STREAM_SPLIT), "{:?}", value_enc(1));
        // Read back whole: the same rows, the same Arrow schema.
        let back: Vec<RecordBatch> = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
            .unwrap()
            .build()
            .unwrap()
            .map(|b| b.unwrap())
            .collect();
        assert_eq!(concat_batches(&batch.schema(), &back).unwrap(), batch);
    }
}
