//! Preference-pair files for training: JSON Lines in TRL's standard
//! preference format, one `{"prompt", "chosen", "rejected"}` object per line
//! with an optional `"system"` (and an optional `"id"`; the arena's export
//! adds provenance fields, which are kept out of training but allowed).
//!
//! A bad file is refused with the line that is wrong: a missing field, a
//! value that is not a string, invalid UTF-8, a line longer than the limit
//! (found without reading the rest of it into memory), an empty file.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

/// One preference: for `prompt` (after `system`), `chosen` beat `rejected`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreferencePair {
    pub prompt: String,
    pub chosen: String,
    pub rejected: String,
    pub system: Option<String>,
    /// The pair's id when the file gives one (the arena's export does).
    pub id: Option<String>,
    /// 1-based line in the file.
    pub line: usize,
}

impl PreferencePair {
    /// sha256 over the fields training reads, length-prefixed: the identity
    /// a training manifest records.
    pub fn sha256(&self) -> String {
        let mut h = Sha256::new();
        for field in [self.system.as_deref().unwrap_or(""), &self.prompt, &self.chosen, &self.rejected] {
            h.update((field.len() as u64).to_le_bytes());
            h.update(field.as_bytes());
        }
        h.update([u8::from(self.system.is_some())]);
        hex::encode(h.finalize())
    }
}

/// One line of a pairs file as the arena writes it — what [`parse`] reads
/// back. Fields in the order `serde_json` sorts an object's keys, so a line
/// is the same bytes whichever way it was built.
#[derive(Debug, Clone, Serialize)]
pub struct PairRow<'a> {
    pub chosen: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a str>,
    /// The judge's margin, where the writer keeps it (training ignores it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub margin: Option<f64>,
    pub prompt: &'a str,
    pub rejected: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system: Option<&'a str>,
}

impl<'a> PairRow<'a> {
    /// `chosen` beat `rejected` at `prompt`.
    pub fn new(prompt: &'a str, chosen: &'a str, rejected: &'a str) -> PairRow<'a> {
        PairRow { chosen, id: None, margin: None, prompt, rejected, system: None }
    }

    pub fn id(mut self, id: &'a str) -> PairRow<'a> {
        self.id = Some(id);
        self
    }

    /// The system prompt, when there is one (an empty one is left out).
    pub fn system(mut self, system: &'a str) -> PairRow<'a> {
        self.system = Some(system).filter(|s| !s.is_empty());
        self
    }

    pub fn margin(mut self, margin: f64) -> PairRow<'a> {
        self.margin = Some(margin);
        self
    }

    /// The JSON line (without its newline).
    pub fn line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// What a pairs file may be.
#[derive(Debug, Clone, Copy)]
pub struct PairsLimits {
    pub max_line_bytes: usize,
    pub max_pairs: usize,
}

impl Default for PairsLimits {
    fn default() -> PairsLimits {
        PairsLimits { max_line_bytes: 1 << 20, max_pairs: 1_000_000 }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PairsError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: no preference pairs (the file is empty or has only blank lines)")]
    Empty { path: PathBuf },
    #[error("{path}:{line}: {message}")]
    Line { path: PathBuf, line: usize, message: String },
}

#[derive(Deserialize)]
struct Raw {
    prompt: serde_json::Value,
    chosen: serde_json::Value,
    rejected: serde_json::Value,
    #[serde(default)]
    system: Option<serde_json::Value>,
    #[serde(default)]
    id: Option<serde_json::Value>,
}

fn string_field(value: serde_json::Value, name: &str) -> Result<String, String> {
    match value {
        serde_json::Value::String(s) => Ok(s),
        serde_json::Value::Array(_) => Err(format!(
            "`{name}` is a list of messages (TRL's conversational format); give it as text (the standard format)"
        )),
        other => Err(format!("`{name}` must be a string, not {}", kind(&other))),
    }
}

fn kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "a list",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Reads one line of at most `max` bytes into `buf`; for a longer line,
/// skips to its end and returns its length as an error.
fn read_line_bounded<R: BufRead>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Result<usize, usize>> {
    buf.clear();
    let mut total = 0usize;
    loop {
        let available = reader.fill_buf()?;
        if available.is_empty() {
            return Ok(if total > max { Err(total) } else { Ok(total) });
        }
        let (chunk, done) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (&available[..=i], true),
            None => (available, false),
        };
        let n = chunk.len();
        if total + n <= max + 1 {
            buf.extend_from_slice(chunk);
        }
        total += n;
        reader.consume(n);
        if done {
            return Ok(if total > max + 1 { Err(total) } else { Ok(total) });
        }
    }
}

/// Reads and checks a pairs file.
pub fn load(path: &Path, limits: &PairsLimits) -> Result<Vec<PreferencePair>, PairsError> {
    let file = std::fs::File::open(path).map_err(|source| PairsError::Io { path: path.to_owned(), source })?;
    parse(BufReader::with_capacity(1 << 16, file), path, limits)
}

/// Parses pairs from any reader; `path` names it in errors.
pub fn parse<R: Read>(reader: R, path: &Path, limits: &PairsLimits) -> Result<Vec<PreferencePair>, PairsError> {
    let mut reader = BufReader::new(reader);
    let mut pairs = Vec::new();
    let mut buf = Vec::new();
    let line_err = |line: usize, message: String| PairsError::Line { path: path.to_owned(), line, message };
    for line in 1.. {
        let read = read_line_bounded(&mut reader, &mut buf, limits.max_line_bytes)
            .map_err(|source| PairsError::Io { path: path.to_owned(), source })?;
        match read {
            Ok(0) => break,
            Ok(_) => {}
            Err(len) => {
                return Err(line_err(
                    line,
                    format!("the line is {len} bytes; at most {} are allowed", limits.max_line_bytes),
                ));
            }
        }
        let text = std::str::from_utf8(&buf)
            .map_err(|e| line_err(line, format!("not valid UTF-8 (at byte {} of the line)", e.valid_up_to())))?;
        let text = text.trim_end_matches(['\n', '\r']);
        if text.trim().is_empty() {
            continue;
        }
        let raw: Raw = serde_json::from_str(text).map_err(|e| line_err(line, format!("{e}")))?;
        let field = |value, name| string_field(value, name).map_err(|m| line_err(line, m));
        let pair = PreferencePair {
            prompt: field(raw.prompt, "prompt")?,
            chosen: field(raw.chosen, "chosen")?,
            rejected: field(raw.rejected, "rejected")?,
            system: raw.system.filter(|v| !v.is_null()).map(|v| field(v, "system")).transpose()?,
            id: raw.id.map(|v| match v {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            }),
            line,
        };
        if pair.chosen == pair.rejected {
            return Err(line_err(line, "`chosen` and `rejected` are the same text: the pair teaches nothing".into()));
        }
        if pairs.len() == limits.max_pairs {
            return Err(line_err(line, format!("more than {} pairs", limits.max_pairs)));
        }
        pairs.push(pair);
    }
    if pairs.is_empty() {
        return Err(PairsError::Empty { path: path.to_owned() });
    }
    Ok(pairs)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parse_str(text: &[u8]) -> Result<Vec<PreferencePair>, PairsError> {
        parse(text, Path::new("pairs.jsonl"), &PairsLimits::default())
    }

    #[test]
    fn a_written_row_reads_back_and_is_the_bytes_a_json_object_makes() {
        let rows = [
            PairRow::new("What is 2 + 3?", "5", "6").id("p1").system("Be brief.").margin(0.5),
            PairRow::new("Hi \"there\"\n", "Hello.", "Go away.").system(""),
        ];
        let text: String = rows.iter().map(|r| r.line() + "\n").collect();
        let back = parse_str(text.as_bytes()).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(
            (back[0].prompt.as_str(), back[0].chosen.as_str(), back[0].rejected.as_str()),
            ("What is 2 + 3?", "5", "6")
        );
        assert_eq!((back[0].system.as_deref(), back[0].id.as_deref()), (Some("Be brief."), Some("p1")));
        assert_eq!((back[1].system.as_deref(), back[1].id.as_deref()), (None, None), "an empty system is left out");
        assert_eq!(back[1].prompt, "Hi \"there\"\n");
        let object = serde_json::json!({"id": "p1", "prompt": "What is 2 + 3?", "chosen": "5", "rejected": "6",
                                        "system": "Be brief.", "margin": 0.5});
        assert_eq!(rows[0].line(), object.to_string());
    }

    fn message(result: Result<Vec<PreferencePair>, PairsError>) -> String {
        result.unwrap_err().to_string()
    }

    #[test]
    fn reads_the_standard_format_with_system_and_provenance() {
        let text = b"{\"prompt\": \"2+2?\", \"chosen\": \"4\", \"rejected\": \"5\"}\n\n\
{\"prompt\": \"Hi\", \"chosen\": \"Hello!\", \"rejected\": \"...\", \"system\": \"Be kind.\", \"id\": \"p1\", \"margin\": 1.2}\r\n";
        let pairs = parse_str(text).unwrap();
        assert_eq!(pairs.len(), 2);
        assert_eq!(pairs[0].system, None);
        assert_eq!(pairs[1].system.as_deref(), Some("Be kind."));
        assert_eq!(pairs[1].id.as_deref(), Some("p1"));
        assert_eq!(pairs[1].line, 3);
        assert_eq!(pairs[1].rejected, "...");
        // The hash covers every field training reads.
        let mut other = pairs[0].clone();
        other.chosen.push(' ');
        assert_ne!(pairs[0].sha256(), other.sha256());
        let mut with_empty_system = pairs[0].clone();
        with_empty_system.system = Some(String::new());
        assert_ne!(pairs[0].sha256(), with_empty_system.sha256());
    }

    #[test]
    fn each_bad_line_is_named() {
        let good = "{\"prompt\": \"p\", \"chosen\": \"a\", \"rejected\": \"b\"}\n";
        let missing = format!("{good}{{\"prompt\": \"p\", \"chosen\": \"a\"}}\n");
        assert!(message(parse_str(missing.as_bytes())).starts_with("pairs.jsonl:2: missing field `rejected`"));
        let not_string = format!("{good}{good}{{\"prompt\": 3, \"chosen\": \"a\", \"rejected\": \"b\"}}\n");
        assert_eq!(message(parse_str(not_string.as_bytes())), "pairs.jsonl:3: `prompt` must be a string, not a number");
        let conversational =
            "{\"prompt\": [{\"role\": \"user\", \"content\": \"p\"}], \"chosen\": \"a\", \"rejected\": \"b\"}";
        assert!(message(parse_str(conversational.as_bytes())).contains("conversational"));
        assert!(message(parse_str(b"{not json}\n")).starts_with("pairs.jsonl:1: key must be a string"));
        let same = "{\"prompt\": \"p\", \"chosen\": \"a\", \"rejected\": \"a\"}";
        assert!(message(parse_str(same.as_bytes())).contains("same text"));
        let mut utf8 = good.as_bytes().to_vec();
        utf8.extend_from_slice(b"{\"prompt\": \"\xff\xfe\", \"chosen\": \"a\", \"rejected\": \"b\"}\n");
        assert_eq!(message(parse_str(&utf8)), "pairs.jsonl:2: not valid UTF-8 (at byte 12 of the line)");
    }

    #[test]
    fn an_empty_file_is_refused() {
        assert_eq!(
            message(parse_str(b"")),
            "pairs.jsonl: no preference pairs (the file is empty or has only blank lines)"
        );
        assert!(matches!(parse_str(b"\n \n\r\n"), Err(PairsError::Empty { .. })));
    }

    #[test]
    fn a_100_mb_line_is_refused_without_holding_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("huge.jsonl");
        {
            use std::io::Write;
            let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
            writeln!(f, "{{\"prompt\": \"p\", \"chosen\": \"a\", \"rejected\": \"b\"}}").unwrap();
            write!(f, "{{\"prompt\": \"").unwrap();
            let block = vec![b'x'; 1 << 20];
            for _ in 0..100 {
                f.write_all(&block).unwrap();
            }
            writeln!(f, "\", \"chosen\": \"a\", \"rejected\": \"b\"}}").unwrap();
        }
        let err = load(&path, &PairsLimits::default()).unwrap_err().to_string();
        assert!(err.contains("huge.jsonl:2: the line is 10485") && err.contains("at most 1048576"), "{err}");
        // A line exactly at the limit is fine.
        let line = format!("{{\"prompt\": \"{}\", \"chosen\": \"a\", \"rejected\": \"b\"}}", "y".repeat(100));
        let limits = PairsLimits { max_line_bytes: line.len(), max_pairs: 10 };
        assert_eq!(parse(format!("{line}\n").as_bytes(), Path::new("x"), &limits).unwrap().len(), 1);
        let limits = PairsLimits { max_line_bytes: line.len() - 1, max_pairs: 10 };
        assert!(parse(format!("{line}\n").as_bytes(), Path::new("x"), &limits).is_err());
    }
}
