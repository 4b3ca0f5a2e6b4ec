//! Preference pairs written as the files a buyer's tools load: TRL's
//! standard or conversational preference format as JSON Lines (gzip
//! optional) or Apache Parquet. Writers take one row at a time and hold at
//! most one batch in memory, and every file is hashed (sha256) and counted
//! as its bytes are written, so a caller never reads a file back to
//! describe it.
//!
//! This crate carries the heavy `arrow`/`parquet` dependencies so that the
//! server, which only calls [`open`], does not rebuild them.

use arrow_array::builder::{
    BooleanBuilder, Float64Builder, Int32Builder, ListBuilder, StringBuilder, StructBuilder,
    TimestampMicrosecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Fields, Schema, TimeUnit};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::sync::Arc;

/// TRL's two preference formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// `prompt`, `chosen`, `rejected` as text.
    Standard,
    /// Message lists: the prompt as [system?, user], each answer as
    /// [assistant].
    Conversational,
}

/// The file kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Jsonl { gzip: bool },
    Parquet,
}

impl Kind {
    /// The file name an export of this kind is written as.
    pub fn file_name(self) -> &'static str {
        match self {
            Kind::Jsonl { gzip: false } => "pairs.jsonl",
            Kind::Jsonl { gzip: true } => "pairs.jsonl.gz",
            Kind::Parquet => "pairs.parquet",
        }
    }

    /// The dataset loader that reads it (`datasets.load_dataset(BUILDER, …)`).
    pub fn builder(self) -> &'static str {
        match self {
            Kind::Jsonl { .. } => "json",
            Kind::Parquet => "parquet",
        }
    }
}

/// One pair with its provenance: every column of every format.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    pub id: String,
    pub match_id: String,
    pub space: String,
    pub space_version: i32,
    /// The chosen agent's system prompt ("" when it had none).
    pub system: String,
    /// TRL's fields, written by the shape (so skipped as provenance).
    #[serde(skip)]
    pub prompt: String,
    #[serde(skip)]
    pub chosen: String,
    #[serde(skip)]
    pub rejected: String,
    pub margin: f64,
    /// Whether the judge's two orders agreed (or a hard check decided).
    pub consistent: bool,
    /// "whole" (two whole answers to the match's prompt) or "decision"
    /// (two answers to one seat's view at one turn of a game).
    pub kind: String,
    /// A decision pair's step in its game.
    pub step: Option<i32>,
    /// The matches each answer was given in (a decision pair's two answers
    /// can come from two games that reached the same view).
    pub chosen_match_id: String,
    pub rejected_match_id: String,
    pub license: Option<String>,
    /// ISO 639-1 code from a cheap detector, "und" when unsure.
    pub language: String,
    pub chosen_agent: String,
    pub chosen_version: i32,
    pub chosen_rating: f64,
    pub rejected_agent: String,
    pub rejected_version: i32,
    pub rejected_rating: f64,
    /// The judge's probability that the chosen answer is better, with it
    /// shown first and second.
    pub judge_p_chosen_first: Option<f64>,
    pub judge_p_chosen_second: Option<f64>,
    pub judge_model_sha256: Option<String>,
    pub judge_template_sha256: Option<String>,
    /// The trained judge's artifact, when the combined judge decided.
    pub judge_trained_sha256: Option<String>,
    /// Each answer's verifier and guard results, as JSON text (written
    /// into JSON Lines as JSON, into Parquet as text).
    #[serde(serialize_with = "raw_json")]
    pub chosen_verifiers: Option<String>,
    #[serde(serialize_with = "raw_json")]
    pub rejected_verifiers: Option<String>,
    /// The match's record hash (its link in the Space's hash chain).
    pub record_hash: Option<String>,
    /// Who labelled the pair: "verifier", "judge" or "human".
    pub label_source: String,
    /// A human pair's tier ("human_raw" or "human_verified"), its counted
    /// votes for each side and tied, the voters' mean reliability, and
    /// whether the AI judge agreed with people (null: it called a tie).
    pub human_tier: Option<String>,
    pub votes_chosen: Option<i32>,
    pub votes_rejected: Option<i32>,
    pub votes_tied: Option<i32>,
    pub voter_reliability: Option<f64>,
    pub judge_agrees: Option<bool>,
    /// Microseconds since the Unix epoch, UTC.
    #[serde(skip)]
    pub created_at_micros: i64,
    /// The same instant as RFC 3339.
    pub created_at: String,
}

/// Writes JSON text as JSON (not as a string); text that is not JSON is
/// written as null.
fn raw_json<S: serde::Serializer>(text: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match text.as_deref().map(|t| serde_json::value::RawValue::from_string(t.to_owned())) {
        Some(Ok(raw)) => raw.serialize(s),
        _ => s.serialize_none(),
    }
}

#[derive(Serialize)]
struct Message<'a> {
    role: &'static str,
    content: &'a str,
}

/// A row's JSON line (without the newline) in `shape`: TRL's fields first,
/// then the provenance.
pub fn json_line(row: &Row, shape: Shape) -> serde_json::Result<Vec<u8>> {
    #[derive(Serialize)]
    struct Line<'a, P: Serialize, A: Serialize> {
        prompt: P,
        chosen: A,
        rejected: A,
        #[serde(flatten)]
        row: &'a Row,
    }
    match shape {
        Shape::Standard => {
            serde_json::to_vec(&Line { prompt: &row.prompt, chosen: &row.chosen, rejected: &row.rejected, row })
        }
        Shape::Conversational => {
            let mut prompt = Vec::with_capacity(2);
            if !row.system.is_empty() {
                prompt.push(Message { role: "system", content: &row.system });
            }
            prompt.push(Message { role: "user", content: &row.prompt });
            let chosen = [Message { role: "assistant", content: &row.chosen }];
            let rejected = [Message { role: "assistant", content: &row.rejected }];
            serde_json::to_vec(&Line { prompt, chosen, rejected, row })
        }
    }
}

/// What a finished file is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Written {
    pub name: String,
    pub rows: u64,
    pub bytes: u64,
    pub sha256: String,
}

/// A file being written, a row at a time.
pub trait PairSink: Send {
    fn write(&mut self, row: &Row) -> io::Result<()>;
    /// Flushes, syncs and describes the file.
    fn finish(self: Box<Self>) -> io::Result<Written>;
}

/// Creates `dir/kind.file_name()` (refusing to overwrite) for rows in `shape`.
pub fn open(dir: &Path, kind: Kind, shape: Shape) -> io::Result<Box<dyn PairSink>> {
    let name = kind.file_name();
    let file = std::fs::OpenOptions::new().write(true).create_new(true).open(dir.join(name))?;
    let out = Hashing { inner: BufWriter::with_capacity(1 << 16, file), hash: Sha256::new(), bytes: 0 };
    Ok(match kind {
        Kind::Jsonl { gzip: false } => Box::new(Jsonl { out, shape, rows: 0, name }),
        Kind::Jsonl { gzip: true } => Box::new(JsonlGz {
            out: flate2::write::GzEncoder::new(out, flate2::Compression::new(6)),
            shape,
            rows: 0,
            name,
        }),
        Kind::Parquet => Box::new(Parquet::new(out, shape)?),
    })
}

/// Counts and hashes what passes through to the file.
struct Hashing {
    inner: BufWriter<std::fs::File>,
    hash: Sha256,
    bytes: u64,
}

impl Write for Hashing {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl Hashing {
    fn finish(self, name: &str, rows: u64) -> io::Result<Written> {
        let file = self.inner.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        Ok(Written { name: name.to_owned(), rows, bytes: self.bytes, sha256: hex::encode(self.hash.finalize()) })
    }
}

struct Jsonl {
    out: Hashing,
    shape: Shape,
    rows: u64,
    name: &'static str,
}

impl PairSink for Jsonl {
    fn write(&mut self, row: &Row) -> io::Result<()> {
        let mut line = json_line(row, self.shape)?;
        line.push(b'\n');
        self.out.write_all(&line)?;
        self.rows += 1;
        Ok(())
    }
    fn finish(mut self: Box<Self>) -> io::Result<Written> {
        self.out.flush()?;
        self.out.finish(self.name, self.rows)
    }
}

struct JsonlGz {
    out: flate2::write::GzEncoder<Hashing>,
    shape: Shape,
    rows: u64,
    name: &'static str,
}

impl PairSink for JsonlGz {
    fn write(&mut self, row: &Row) -> io::Result<()> {
        let mut line = json_line(row, self.shape)?;
        line.push(b'\n');
        self.out.write_all(&line)?;
        self.rows += 1;
        Ok(())
    }
    fn finish(self: Box<Self>) -> io::Result<Written> {
        let (rows, name) = (self.rows, self.name);
        let mut out = self.out.finish()?;
        out.flush()?;
        out.finish(name, rows)
    }
}

/// Rows per Arrow batch handed to the Parquet writer.
const BATCH_ROWS: usize = 4096;
/// Rows and bytes per Parquet row group: the writer holds one row group
/// in memory, so these bound its memory whatever the file's size.
const GROUP_ROWS: usize = 65_536;
const GROUP_BYTES: usize = 32 << 20;

fn message_fields() -> Fields {
    Fields::from(vec![Field::new("role", DataType::Utf8, false), Field::new("content", DataType::Utf8, false)])
}

/// The Parquet schema for `shape`: TRL's columns, then the provenance.
pub fn schema(shape: Shape) -> Schema {
    let text = |name: &str| Field::new(name, DataType::Utf8, false);
    let messages = |name: &str| {
        Field::new(name, DataType::List(Arc::new(Field::new("item", DataType::Struct(message_fields()), true))), false)
    };
    let mut fields = match shape {
        Shape::Standard => vec![text("prompt"), text("chosen"), text("rejected")],
        Shape::Conversational => vec![messages("prompt"), messages("chosen"), messages("rejected")],
    };
    let opt = |name: &str, t: DataType| Field::new(name, t, true);
    fields.extend([
        text("id"),
        text("match_id"),
        text("space"),
        Field::new("space_version", DataType::Int32, false),
        text("system"),
        Field::new("margin", DataType::Float64, false),
        Field::new("consistent", DataType::Boolean, false),
        text("kind"),
        opt("step", DataType::Int32),
        text("chosen_match_id"),
        text("rejected_match_id"),
        opt("license", DataType::Utf8),
        text("language"),
        text("chosen_agent"),
        Field::new("chosen_version", DataType::Int32, false),
        Field::new("chosen_rating", DataType::Float64, false),
        text("rejected_agent"),
        Field::new("rejected_version", DataType::Int32, false),
        Field::new("rejected_rating", DataType::Float64, false),
        opt("judge_p_chosen_first", DataType::Float64),
        opt("judge_p_chosen_second", DataType::Float64),
        opt("judge_model_sha256", DataType::Utf8),
        opt("judge_template_sha256", DataType::Utf8),
        opt("judge_trained_sha256", DataType::Utf8),
        opt("chosen_verifiers", DataType::Utf8),
        opt("rejected_verifiers", DataType::Utf8),
        opt("record_hash", DataType::Utf8),
        text("label_source"),
        opt("human_tier", DataType::Utf8),
        opt("votes_chosen", DataType::Int32),
        opt("votes_rejected", DataType::Int32),
        opt("votes_tied", DataType::Int32),
        opt("voter_reliability", DataType::Float64),
        opt("judge_agrees", DataType::Boolean),
        Field::new("created_at", DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), false),
    ]);
    Schema::new(fields)
}

/// Column builders for one batch.
struct Columns {
    prompt: Texts,
    chosen: Texts,
    rejected: Texts,
    id: StringBuilder,
    match_id: StringBuilder,
    space: StringBuilder,
    space_version: Int32Builder,
    system: StringBuilder,
    margin: Float64Builder,
    consistent: BooleanBuilder,
    kind: StringBuilder,
    step: Int32Builder,
    chosen_match_id: StringBuilder,
    rejected_match_id: StringBuilder,
    license: StringBuilder,
    language: StringBuilder,
    chosen_agent: StringBuilder,
    chosen_version: Int32Builder,
    chosen_rating: Float64Builder,
    rejected_agent: StringBuilder,
    rejected_version: Int32Builder,
    rejected_rating: Float64Builder,
    p_first: Float64Builder,
    p_second: Float64Builder,
    judge_model: StringBuilder,
    judge_template: StringBuilder,
    judge_trained: StringBuilder,
    chosen_verifiers: StringBuilder,
    rejected_verifiers: StringBuilder,
    record_hash: StringBuilder,
    label_source: StringBuilder,
    human_tier: StringBuilder,
    votes_chosen: Int32Builder,
    votes_rejected: Int32Builder,
    votes_tied: Int32Builder,
    voter_reliability: Float64Builder,
    judge_agrees: BooleanBuilder,
    created_at: TimestampMicrosecondBuilder,
}

/// A text column, or a column of message lists.
enum Texts {
    Plain(StringBuilder),
    Messages(ListBuilder<StructBuilder>),
}

impl Texts {
    fn new(shape: Shape) -> Texts {
        match shape {
            Shape::Standard => Texts::Plain(StringBuilder::new()),
            Shape::Conversational => Texts::Messages(ListBuilder::new(StructBuilder::from_fields(message_fields(), 0))),
        }
    }

    fn push(&mut self, messages: &[(&'static str, &str)]) {
        match self {
            // The standard shape has one message per cell: its content.
            Texts::Plain(b) => b.append_value(messages.last().map(|m| m.1).unwrap_or_default()),
            Texts::Messages(list) => {
                let s = list.values();
                for (role, content) in messages {
                    if let Some(r) = s.field_builder::<StringBuilder>(0) {
                        r.append_value(role);
                    }
                    if let Some(c) = s.field_builder::<StringBuilder>(1) {
                        c.append_value(content);
                    }
                    s.append(true);
                }
                list.append(true);
            }
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Texts::Plain(b) => Arc::new(b.finish()),
            Texts::Messages(b) => Arc::new(b.finish()),
        }
    }
}

impl Columns {
    fn new(shape: Shape) -> Columns {
        Columns {
            prompt: Texts::new(shape),
            chosen: Texts::new(shape),
            rejected: Texts::new(shape),
            id: StringBuilder::new(),
            match_id: StringBuilder::new(),
            space: StringBuilder::new(),
            space_version: Int32Builder::new(),
            system: StringBuilder::new(),
            margin: Float64Builder::new(),
            consistent: BooleanBuilder::new(),
            kind: StringBuilder::new(),
            step: Int32Builder::new(),
            chosen_match_id: StringBuilder::new(),
            rejected_match_id: StringBuilder::new(),
            license: StringBuilder::new(),
            language: StringBuilder::new(),
            chosen_agent: StringBuilder::new(),
            chosen_version: Int32Builder::new(),
            chosen_rating: Float64Builder::new(),
            rejected_agent: StringBuilder::new(),
            rejected_version: Int32Builder::new(),
            rejected_rating: Float64Builder::new(),
            p_first: Float64Builder::new(),
            p_second: Float64Builder::new(),
            judge_model: StringBuilder::new(),
            judge_template: StringBuilder::new(),
            judge_trained: StringBuilder::new(),
            chosen_verifiers: StringBuilder::new(),
            rejected_verifiers: StringBuilder::new(),
            record_hash: StringBuilder::new(),
            label_source: StringBuilder::new(),
            human_tier: StringBuilder::new(),
            votes_chosen: Int32Builder::new(),
            votes_rejected: Int32Builder::new(),
            votes_tied: Int32Builder::new(),
            voter_reliability: Float64Builder::new(),
            judge_agrees: BooleanBuilder::new(),
            created_at: TimestampMicrosecondBuilder::new().with_timezone("UTC"),
        }
    }

    fn push(&mut self, row: &Row) {
        if row.system.is_empty() {
            self.prompt.push(&[("user", &row.prompt)]);
        } else {
            self.prompt.push(&[("system", &row.system), ("user", &row.prompt)]);
        }
        self.chosen.push(&[("assistant", &row.chosen)]);
        self.rejected.push(&[("assistant", &row.rejected)]);
        self.id.append_value(&row.id);
        self.match_id.append_value(&row.match_id);
        self.space.append_value(&row.space);
        self.space_version.append_value(row.space_version);
        self.system.append_value(&row.system);
        self.margin.append_value(row.margin);
        self.consistent.append_value(row.consistent);
        self.kind.append_value(&row.kind);
        self.step.append_option(row.step);
        self.chosen_match_id.append_value(&row.chosen_match_id);
        self.rejected_match_id.append_value(&row.rejected_match_id);
        self.license.append_option(row.license.as_deref());
        self.language.append_value(&row.language);
        self.chosen_agent.append_value(&row.chosen_agent);
        self.chosen_version.append_value(row.chosen_version);
        self.chosen_rating.append_value(row.chosen_rating);
        self.rejected_agent.append_value(&row.rejected_agent);
        self.rejected_version.append_value(row.rejected_version);
        self.rejected_rating.append_value(row.rejected_rating);
        self.p_first.append_option(row.judge_p_chosen_first);
        self.p_second.append_option(row.judge_p_chosen_second);
        self.judge_model.append_option(row.judge_model_sha256.as_deref());
        self.judge_template.append_option(row.judge_template_sha256.as_deref());
        self.judge_trained.append_option(row.judge_trained_sha256.as_deref());
        self.chosen_verifiers.append_option(row.chosen_verifiers.as_deref());
        self.rejected_verifiers.append_option(row.rejected_verifiers.as_deref());
        self.record_hash.append_option(row.record_hash.as_deref());
        self.label_source.append_value(&row.label_source);
        self.human_tier.append_option(row.human_tier.as_deref());
        self.votes_chosen.append_option(row.votes_chosen);
        self.votes_rejected.append_option(row.votes_rejected);
        self.votes_tied.append_option(row.votes_tied);
        self.voter_reliability.append_option(row.voter_reliability);
        self.judge_agrees.append_option(row.judge_agrees);
        self.created_at.append_value(row.created_at_micros);
    }

    fn finish(&mut self, schema: &Arc<Schema>) -> Result<RecordBatch, arrow_schema::ArrowError> {
        let columns: Vec<ArrayRef> = vec![
            self.prompt.finish(),
            self.chosen.finish(),
            self.rejected.finish(),
            Arc::new(self.id.finish()),
            Arc::new(self.match_id.finish()),
            Arc::new(self.space.finish()),
            Arc::new(self.space_version.finish()),
            Arc::new(self.system.finish()),
            Arc::new(self.margin.finish()),
            Arc::new(self.consistent.finish()),
            Arc::new(self.kind.finish()),
            Arc::new(self.step.finish()),
            Arc::new(self.chosen_match_id.finish()),
            Arc::new(self.rejected_match_id.finish()),
            Arc::new(self.license.finish()),
            Arc::new(self.language.finish()),
            Arc::new(self.chosen_agent.finish()),
            Arc::new(self.chosen_version.finish()),
            Arc::new(self.chosen_rating.finish()),
            Arc::new(self.rejected_agent.finish()),
            Arc::new(self.rejected_version.finish()),
            Arc::new(self.rejected_rating.finish()),
            Arc::new(self.p_first.finish()),
            Arc::new(self.p_second.finish()),
            Arc::new(self.judge_model.finish()),
            Arc::new(self.judge_template.finish()),
            Arc::new(self.judge_trained.finish()),
            Arc::new(self.chosen_verifiers.finish()),
            Arc::new(self.rejected_verifiers.finish()),
            Arc::new(self.record_hash.finish()),
            Arc::new(self.label_source.finish()),
            Arc::new(self.human_tier.finish()),
            Arc::new(self.votes_chosen.finish()),
            Arc::new(self.votes_rejected.finish()),
            Arc::new(self.votes_tied.finish()),
            Arc::new(self.voter_reliability.finish()),
            Arc::new(self.judge_agrees.finish()),
            Arc::new(self.created_at.finish()),
        ];
        RecordBatch::try_new(schema.clone(), columns)
    }
}

struct Parquet {
    writer: parquet::arrow::ArrowWriter<Hashing>,
    schema: Arc<Schema>,
    columns: Columns,
    pending: usize,
    rows: u64,
}

fn io_err(e: impl std::error::Error + Send + Sync + 'static) -> io::Error {
    io::Error::other(e)
}

impl Parquet {
    fn new(out: Hashing, shape: Shape) -> io::Result<Parquet> {
        use parquet::file::properties::WriterProperties;
        let schema = Arc::new(schema(shape));
        let props = WriterProperties::builder()
            .set_compression(parquet::basic::Compression::SNAPPY)
            .set_max_row_group_row_count(Some(GROUP_ROWS))
            .set_max_row_group_bytes(Some(GROUP_BYTES))
            .set_created_by("arena dataset-files".to_owned())
            .build();
        let writer = parquet::arrow::ArrowWriter::try_new(out, schema.clone(), Some(props)).map_err(io_err)?;
        Ok(Parquet { writer, schema, columns: Columns::new(shape), pending: 0, rows: 0 })
    }

    fn flush_batch(&mut self) -> io::Result<()> {
        if self.pending == 0 {
            return Ok(());
        }
        let batch = self.columns.finish(&self.schema).map_err(io_err)?;
        self.writer.write(&batch).map_err(io_err)?;
        self.pending = 0;
        Ok(())
    }
}

impl PairSink for Parquet {
    fn write(&mut self, row: &Row) -> io::Result<()> {
        self.columns.push(row);
        self.pending += 1;
        self.rows += 1;
        if self.pending >= BATCH_ROWS {
            self.flush_batch()?;
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> io::Result<Written> {
        self.flush_batch()?;
        let rows = self.rows;
        let mut out = self.writer.into_inner().map_err(io_err)?;
        out.flush()?;
        out.finish(Kind::Parquet.file_name(), rows)
    }
}

/// Reads a Parquet file written by [`open`] back into rows (for tests and
/// for checking a download).
pub fn read_parquet(path: &Path) -> io::Result<Vec<Row>> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Float64Type, Int32Type, TimestampMicrosecondType};
    use arrow_array::{Array, ListArray, StringArray, StructArray};
    let file = std::fs::File::open(path)?;
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(io_err)?
        .build()
        .map_err(io_err)?;
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.map_err(io_err)?;
        let col =
            |name: &str| batch.column_by_name(name).cloned().ok_or_else(|| io::Error::other(format!("no {name}")));
        let text_at = |a: &ArrayRef, i: usize| -> String {
            if let Some(s) = a.as_any().downcast_ref::<StringArray>() {
                return s.value(i).to_owned();
            }
            // A message list: its last message's content.
            let list = a.as_any().downcast_ref::<ListArray>();
            list.map(|l| l.value(i))
                .and_then(|v| v.as_any().downcast_ref::<StructArray>().map(|s| s.column(1).clone()))
                .and_then(|c| c.as_any().downcast_ref::<StringArray>().map(|s| s.value(s.len() - 1).to_owned()))
                .unwrap_or_default()
        };
        let opt_text = |a: &ArrayRef, i: usize| -> Option<String> {
            let s = a.as_string::<i32>();
            (!s.is_null(i)).then(|| s.value(i).to_owned())
        };
        let opt_f64 = |a: &ArrayRef, i: usize| -> Option<f64> {
            let s = a.as_primitive::<Float64Type>();
            (!s.is_null(i)).then(|| s.value(i))
        };
        let (prompt, chosen, rejected) = (col("prompt")?, col("chosen")?, col("rejected")?);
        let names = [
            "id",
            "match_id",
            "space",
            "system",
            "license",
            "language",
            "chosen_agent",
            "rejected_agent",
            "judge_model_sha256",
            "judge_template_sha256",
            "judge_trained_sha256",
            "chosen_verifiers",
            "rejected_verifiers",
            "record_hash",
            "kind",
            "chosen_match_id",
            "rejected_match_id",
            "label_source",
            "human_tier",
        ];
        let t: Vec<ArrayRef> = names.iter().map(|n| col(n)).collect::<io::Result<_>>()?;
        let i32s: Vec<ArrayRef> = ["space_version", "chosen_version", "rejected_version"]
            .iter()
            .map(|n| col(n))
            .collect::<io::Result<_>>()?;
        let f64s: Vec<ArrayRef> =
            ["margin", "chosen_rating", "rejected_rating", "judge_p_chosen_first", "judge_p_chosen_second"]
                .iter()
                .map(|n| col(n))
                .collect::<io::Result<_>>()?;
        let votes: Vec<ArrayRef> =
            ["votes_chosen", "votes_rejected", "votes_tied"].iter().map(|n| col(n)).collect::<io::Result<_>>()?;
        let reliability = col("voter_reliability")?;
        let judge_agrees = col("judge_agrees")?;
        let opt_i32 = |a: &ArrayRef, i: usize| -> Option<i32> {
            let s = a.as_primitive::<Int32Type>();
            (!s.is_null(i)).then(|| s.value(i))
        };
        let consistent = col("consistent")?;
        let step = col("step")?;
        let created = col("created_at")?;
        for i in 0..batch.num_rows() {
            let micros = created.as_primitive::<TimestampMicrosecondType>().value(i);
            rows.push(Row {
                id: text_at(&t[0], i),
                match_id: text_at(&t[1], i),
                space: text_at(&t[2], i),
                space_version: i32s[0].as_primitive::<Int32Type>().value(i),
                system: text_at(&t[3], i),
                prompt: text_at(&prompt, i),
                chosen: text_at(&chosen, i),
                rejected: text_at(&rejected, i),
                margin: f64s[0].as_primitive::<Float64Type>().value(i),
                consistent: consistent.as_boolean().value(i),
                kind: text_at(&t[14], i),
                step: {
                    let s = step.as_primitive::<Int32Type>();
                    (!s.is_null(i)).then(|| s.value(i))
                },
                chosen_match_id: text_at(&t[15], i),
                rejected_match_id: text_at(&t[16], i),
                license: opt_text(&t[4], i),
                language: text_at(&t[5], i),
                chosen_agent: text_at(&t[6], i),
                chosen_version: i32s[1].as_primitive::<Int32Type>().value(i),
                chosen_rating: f64s[1].as_primitive::<Float64Type>().value(i),
                rejected_agent: text_at(&t[7], i),
                rejected_version: i32s[2].as_primitive::<Int32Type>().value(i),
                rejected_rating: f64s[2].as_primitive::<Float64Type>().value(i),
                judge_p_chosen_first: opt_f64(&f64s[3], i),
                judge_p_chosen_second: opt_f64(&f64s[4], i),
                judge_model_sha256: opt_text(&t[8], i),
                judge_template_sha256: opt_text(&t[9], i),
                judge_trained_sha256: opt_text(&t[10], i),
                chosen_verifiers: opt_text(&t[11], i),
                rejected_verifiers: opt_text(&t[12], i),
                record_hash: opt_text(&t[13], i),
                label_source: text_at(&t[17], i),
                human_tier: opt_text(&t[18], i),
                votes_chosen: opt_i32(&votes[0], i),
                votes_rejected: opt_i32(&votes[1], i),
                votes_tied: opt_i32(&votes[2], i),
                voter_reliability: opt_f64(&reliability, i),
                judge_agrees: {
                    let b = judge_agrees.as_boolean();
                    (!b.is_null(i)).then(|| b.value(i))
                },
                created_at_micros: micros,
                created_at: String::new(),
            });
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn row_for_probe(i: usize) -> Row {
        row(i)
    }

    fn row(i: usize) -> Row {
        Row {
            id: format!("id-{i}"),
            match_id: format!("m-{i}"),
            space: "s".into(),
            space_version: 1 + (i % 3) as i32,
            system: if i.is_multiple_of(2) { String::new() } else { format!("Be brief {i}.") },
            prompt: format!("What is {i} + {i}? ünïcode \"quoted\"\n"),
            chosen: format!("{}", 2 * i),
            rejected: "I do not know.".into(),
            margin: i as f64 / 7.0,
            consistent: i.is_multiple_of(3),
            kind: if i.is_multiple_of(2) { "whole".into() } else { "decision".into() },
            step: (!i.is_multiple_of(2)).then_some(i as i32),
            chosen_match_id: format!("m-{i}"),
            rejected_match_id: format!("m-{}", i / 2),
            license: (!i.is_multiple_of(4)).then(|| "CC-BY-4.0".into()),
            language: "en".into(),
            chosen_agent: "a".into(),
            chosen_version: 2,
            chosen_rating: 1010.5,
            rejected_agent: "b".into(),
            rejected_version: 1,
            rejected_rating: 990.25,
            judge_p_chosen_first: i.is_multiple_of(2).then_some(0.75),
            judge_p_chosen_second: i.is_multiple_of(2).then_some(0.6),
            judge_model_sha256: Some("ab".repeat(32)),
            judge_template_sha256: None,
            judge_trained_sha256: i.is_multiple_of(5).then(|| "cd".repeat(32)),
            chosen_verifiers: Some(r#"[{"name":"exact","passed":true}]"#.to_owned()),
            rejected_verifiers: None,
            record_hash: Some(format!("{i:064x}")),
            label_source: ["verifier", "judge", "human"][i % 3].into(),
            human_tier: (i % 3 == 2).then(|| "human_verified".into()),
            votes_chosen: (i % 3 == 2).then_some(3),
            votes_rejected: (i % 3 == 2).then_some(i as i32 % 2),
            votes_tied: (i % 3 == 2).then_some(0),
            voter_reliability: (i % 3 == 2).then_some(0.75),
            judge_agrees: (i % 3 == 2).then_some(i.is_multiple_of(2)),
            created_at_micros: 1_764_633_600_000_000 + i as i64,
            created_at: String::new(),
        }
    }

    fn temp_dir(tag: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("dataset-files-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn parquet_reads_back_to_the_same_rows_in_both_shapes() {
        for shape in [Shape::Standard, Shape::Conversational] {
            let dir = temp_dir(&format!("{shape:?}"));
            // More than one batch, so batch boundaries are crossed.
            let rows: Vec<Row> = (0..BATCH_ROWS + 37).map(row).collect();
            let mut sink = open(&dir, Kind::Parquet, shape).unwrap();
            for r in &rows {
                sink.write(r).unwrap();
            }
            let written = sink.finish().unwrap();
            let path = dir.join("pairs.parquet");
            let bytes = std::fs::read(&path).unwrap();
            assert_eq!(written.bytes, bytes.len() as u64);
            assert_eq!(written.sha256, hex::encode(Sha256::digest(&bytes)));
            assert_eq!(written.rows, rows.len() as u64);
            assert_eq!(read_parquet(&path).unwrap(), rows, "{shape:?}");
        }
    }

    #[test]
    fn jsonl_lines_are_trls_shapes_and_gzip_decodes_to_the_same_lines() {
        use std::io::Read;
        let rows: Vec<Row> = (0..50).map(row).collect();
        for shape in [Shape::Standard, Shape::Conversational] {
            let dir = temp_dir(&format!("jsonl-{shape:?}"));
            for gzip in [false, true] {
                let mut sink = open(&dir, Kind::Jsonl { gzip }, shape).unwrap();
                for r in &rows {
                    sink.write(r).unwrap();
                }
                let w = sink.finish().unwrap();
                assert_eq!(w.rows, 50);
                let raw = std::fs::read(dir.join(w.name)).unwrap();
                assert_eq!(w.sha256, hex::encode(Sha256::digest(&raw)));
                let text = if gzip {
                    let mut s = String::new();
                    flate2::read::GzDecoder::new(&raw[..]).read_to_string(&mut s).unwrap();
                    s
                } else {
                    String::from_utf8(raw).unwrap()
                };
                let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
                assert_eq!(lines.len(), 50);
                for (line, r) in lines.iter().zip(&rows) {
                    assert_eq!(line["id"], r.id.as_str());
                    assert_eq!(line["margin"], r.margin);
                    let verifiers: serde_json::Value =
                        serde_json::from_str(r.chosen_verifiers.as_deref().unwrap_or("null")).unwrap();
                    assert_eq!(line["chosen_verifiers"], verifiers);
                    match shape {
                        Shape::Standard => {
                            assert_eq!(line["prompt"], r.prompt.as_str());
                            assert_eq!(line["chosen"], r.chosen.as_str());
                        }
                        Shape::Conversational => {
                            let prompt = line["prompt"].as_array().unwrap();
                            assert_eq!(prompt.len(), if r.system.is_empty() { 1 } else { 2 });
                            assert_eq!(prompt.last().unwrap()["content"], r.prompt.as_str());
                            assert_eq!(line["rejected"][0]["role"], "assistant");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn an_existing_file_is_not_overwritten() {
        let dir = temp_dir("exists");
        std::fs::write(dir.join("pairs.jsonl"), "keep").unwrap();
        assert!(open(&dir, Kind::Jsonl { gzip: false }, Shape::Standard).is_err());
        assert_eq!(std::fs::read_to_string(dir.join("pairs.jsonl")).unwrap(), "keep");
    }
}

#[cfg(test)]
mod speed {
    #[test]
    #[ignore = "a timing probe, run by hand"]
    fn jsonl_write_speed() {
        let dir = std::env::temp_dir().join(format!("dsf-speed-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let rows: Vec<super::Row> = (0..100_000).map(super::tests::row_for_probe).collect();
        for kind in [super::Kind::Jsonl { gzip: false }, super::Kind::Parquet] {
            let t = std::time::Instant::now();
            let mut sink = super::open(&dir, kind, super::Shape::Standard).unwrap();
            for r in &rows {
                sink.write(r).unwrap();
            }
            let w = sink.finish().unwrap();
            eprintln!("{kind:?}: {} bytes in {:?}", w.bytes, t.elapsed());
        }
    }
}
