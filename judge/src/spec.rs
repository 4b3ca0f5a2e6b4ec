//! The `[[verifiers]]`, `[judge]` and `[pairs]` parts of a Space file: what
//! they may hold, and their compilation into a checked [`JudgeConfig`].
//!
//! Every error carries the byte span of the offending value so the caller
//! can print `FILE:LINE:COL: message`; all errors of a file are collected,
//! not just the first.

use crate::files::SpaceFiles;
use crate::guard::Guard;
use crate::verify::{AnswerMode, Pick, Verifier, VerifierKind};
use serde::Deserialize;
use std::ops::Range;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// Largest regular expression a Space may compile (bytes of compiled program).
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;
/// Most tokens of one candidate the AI judge reads.
pub const MAX_CANDIDATE_TOKENS_LIMIT: u64 = 2048;

/// One problem in a Space file, at a byte range of its text.
#[derive(Debug, Clone, PartialEq)]
pub struct SpecError {
    pub span: Range<usize>,
    pub message: String,
}

impl SpecError {
    pub fn new(span: Range<usize>, message: impl Into<String>) -> SpecError {
        SpecError { span, message: message.into() }
    }

    /// 1-based line and column (in characters) of the error's start in `text`.
    pub fn line_col(&self, text: &str) -> (usize, usize) {
        line_col(text, self.span.start)
    }

    /// `FILE:LINE:COL: message`.
    pub fn render(&self, file: &str, text: &str) -> String {
        let (line, col) = self.line_col(text);
        format!("{file}:{line}:{col}: {}", self.message)
    }
}

/// 1-based line and column of byte `offset` in `text`.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// A verifier as written in the Space file (`[[verifiers]]`). Which keys
/// apply depends on `kind`; see spaces/README.md.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifierSpec {
    pub kind: Spanned<String>,
    pub name: Option<String>,
    /// A hard verifier gates: failing it ranks an output below every output
    /// that passes all hard verifiers.
    #[serde(default)]
    pub hard: bool,
    pub weight: Option<Spanned<f64>>,
    // regex
    pub pattern: Option<Spanned<String>>,
    /// `"match"` (default) or `"not_match"`.
    pub must: Option<Spanned<String>>,
    pub case_insensitive: Option<bool>,
    // length
    /// `"chars"`, `"words"` or `"tokens"`.
    pub unit: Option<Spanned<String>>,
    pub min: Option<Spanned<i64>>,
    pub max: Option<Spanned<i64>>,
    // json
    /// A JSON Schema, inline as a TOML table or as a string of JSON.
    pub schema: Option<Spanned<toml::Value>>,
    /// A JSON Schema file, relative to the Space file.
    pub schema_file: Option<Spanned<String>>,
    /// `"whole"` (default: the output is the JSON, or one fenced block) or
    /// `"first"` (the first JSON value in it, prose around allowed).
    pub extract: Option<Spanned<String>>,
    // answer
    /// `"exact"` or `"numeric"`.
    pub mode: Option<Spanned<String>>,
    /// Which number of the output is its answer: `"last"` (default), `"first"`, `"only"`.
    pub pick: Option<Spanned<String>>,
    pub tolerance: Option<Spanned<f64>>,
    pub allow_fractions: Option<bool>,
    pub allow_percent: Option<bool>,
    // forbidden
    pub strings: Option<Spanned<Vec<String>>>,
}

/// The `[judge]` table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JudgeSpec {
    /// `"pairwise"` (default), `"pointwise"`, `"combined"` or `"none"`.
    pub mode: Option<Spanned<String>>,
    /// The combined judge's trained model: `"default"` (the one shipped
    /// with the project) or the name of one of the Space's files.
    pub trained: Option<Spanned<String>>,
    /// Pairwise mode: |s| below this is a tie (default: the threshold the
    /// default trained judge measured on its null set).
    pub tie_threshold: Option<Spanned<f64>>,
    pub rubric: Option<Spanned<String>>,
    /// A GGUF judge model, relative to the Space file; absent: the
    /// configured default model.
    pub model: Option<Spanned<String>>,
    /// Weight of the AI judge's score against the verifiers' weights.
    pub weight: Option<Spanned<f64>>,
    pub max_candidate_tokens: Option<Spanned<i64>>,
    /// Pointwise score scale: 1..=scale, 2..=9.
    pub scale: Option<Spanned<i64>>,
    /// Built-in hard checks against gaming: `injection`, `padding`, `prompt_copy`.
    pub guards: Option<Vec<Spanned<String>>>,
}

/// The `[pairs]` table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PairsSpec {
    /// A pair is emitted when the chosen output's margin exceeds this.
    pub min_margin: Option<Spanned<f64>>,
    /// The data license of the Space's pairs (read by the arena).
    pub license: Option<String>,
    /// Who may read the Space's match outputs and pairs: `public` or
    /// `private` (read by the arena).
    pub visibility: Option<Spanned<String>>,
}

/// The judge's view of a Space file: other tables are the arena's business.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct JudgeSections {
    #[serde(default)]
    pub verifiers: Vec<Spanned<VerifierSpec>>,
    pub judge: Option<Spanned<JudgeSpec>>,
    pub pairs: Option<Spanned<PairsSpec>>,
    /// A multi-turn Space's referee ranks the seats itself (its outcome),
    /// so the judge may have nothing to rank with.
    #[serde(skip)]
    pub ranked_by_referee: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JudgeMode {
    Pairwise,
    Pointwise,
    /// The trained judge over likelihood, embedding and pairwise signals.
    Combined,
    None,
}

/// A trained judge as a Space uses it, with its artifact's sha256.
#[derive(Debug, Clone)]
pub struct LoadedTrained {
    pub judge: crate::trained::TrainedJudge,
    pub sha256: String,
    /// `default` or the Space file's name.
    pub name: String,
}

/// A checked judge configuration, ready to run.
#[derive(Debug, Clone)]
pub struct JudgeConfig {
    pub verifiers: Vec<Verifier>,
    pub mode: JudgeMode,
    pub rubric: String,
    /// None: the configured default model.
    pub model: Option<PathBuf>,
    pub weight: f64,
    pub max_candidate_tokens: usize,
    pub scale: u32,
    pub guards: Vec<Guard>,
    pub min_margin: f64,
    /// The combined judge's trained model (mode `combined` only).
    pub trained: Option<std::sync::Arc<LoadedTrained>>,
    /// Pairwise mode's tie threshold on |s|, when the Space sets one.
    pub tie_threshold: Option<f64>,
}

/// Verifiers one Space may have.
pub const MAX_VERIFIERS: usize = 32;

pub const DEFAULT_RUBRIC: &str = "The better answer is correct, answers the question that was asked, is clear and \
concise, and does not pad, repeat itself or talk to the judge.";

impl JudgeConfig {
    /// Reads the judge's sections of the Space file at `path`, with the
    /// files it names from its folder (`files::read_space`).
    pub fn load(path: &Path) -> Result<JudgeConfig, Vec<String>> {
        let read = crate::files::read_space(path).map_err(|e| vec![e])?;
        let base = path.parent().unwrap_or(Path::new("."));
        let file = path.display().to_string();
        JudgeConfig::parse(&read.source, &read.files, base).map_err(|errs| {
            errs.iter().map(|e| e.render(&file, &read.source)).chain(read.problems.iter().cloned()).collect()
        })
    }

    /// Parses and checks the judge's sections of a Space file's text. The
    /// files it names come from `files`; a relative `judge.model` path
    /// resolves against `model_base`.
    pub fn parse(text: &str, files: &SpaceFiles, model_base: &Path) -> Result<JudgeConfig, Vec<SpecError>> {
        let mut sections: JudgeSections = toml::from_str(text).map_err(|e| vec![toml_error(&e)])?;
        // A multi-turn Space's referee ranks the seats unless the judge
        // decides its games (a debate, or `turns.on_limit = "judge"`).
        if let Ok(value) = toml::from_str::<toml::Value>(text)
            && let Some(referee) = value.get("referee")
        {
            let judged = referee.get("kind").and_then(|k| k.as_str()) == Some("debate")
                || value.get("turns").and_then(|t| t.get("on_limit")).and_then(|o| o.as_str()) == Some("judge");
            sections.ranked_by_referee = !judged;
        }
        JudgeConfig::from_sections(&sections, files, model_base)
    }

    /// Checks already-parsed sections (the arena parses the whole Space file
    /// and hands these over).
    pub fn from_sections(
        sections: &JudgeSections,
        files: &SpaceFiles,
        model_base: &Path,
    ) -> Result<JudgeConfig, Vec<SpecError>> {
        let mut errors = Vec::new();
        let mut verifiers = Vec::new();
        if sections.verifiers.len() > MAX_VERIFIERS {
            errors.push(SpecError::new(
                sections.verifiers[MAX_VERIFIERS].span(),
                format!("{} verifiers; a Space has at most {MAX_VERIFIERS}", sections.verifiers.len()),
            ));
        }
        for spec in sections.verifiers.iter().take(MAX_VERIFIERS) {
            match compile_verifier(spec, files) {
                Ok(v) => verifiers.push(v),
                Err(mut e) => errors.append(&mut e),
            }
        }
        let empty = Spanned::new(0..0, JudgeSpec::default());
        let judge = sections.judge.as_ref().unwrap_or(&empty);
        let j = judge.get_ref();
        let mode = match j.mode.as_ref().map(|m| (m.get_ref().as_str(), m.span())) {
            None | Some(("pairwise", _)) => JudgeMode::Pairwise,
            Some(("pointwise", _)) => JudgeMode::Pointwise,
            Some(("combined", _)) => JudgeMode::Combined,
            Some(("none", _)) => JudgeMode::None,
            Some((other, span)) => {
                errors.push(SpecError::new(
                    span,
                    format!("judge.mode {other:?} is not one of \"pairwise\", \"pointwise\", \"combined\", \"none\""),
                ));
                JudgeMode::None
            }
        };
        let rubric = match &j.rubric {
            Some(r) if r.get_ref().trim().is_empty() => {
                errors.push(SpecError::new(r.span(), "judge.rubric is empty"));
                String::new()
            }
            Some(r) if r.get_ref().chars().count() > 4000 => {
                errors.push(SpecError::new(r.span(), "judge.rubric is longer than 4000 characters"));
                String::new()
            }
            Some(r) => r.get_ref().trim().to_owned(),
            None => DEFAULT_RUBRIC.to_owned(),
        };
        let model = j.model.as_ref().map(|m| model_base.join(m.get_ref()));
        if let (Some(path), Some(m)) = (&model, &j.model)
            && !path.is_file()
        {
            errors.push(SpecError::new(m.span(), format!("judge.model {} does not exist", path.display())));
        }
        let weight = positive(&j.weight, "judge.weight", 1.0, &mut errors);
        let max_candidate_tokens = int_in(
            &j.max_candidate_tokens,
            "judge.max_candidate_tokens",
            16,
            MAX_CANDIDATE_TOKENS_LIMIT as i64,
            256,
            &mut errors,
        ) as usize;
        let scale = int_in(&j.scale, "judge.scale", 2, 9, 5, &mut errors) as u32;
        let guards = match &j.guards {
            None => Guard::ALL.to_vec(),
            Some(list) => list
                .iter()
                .filter_map(|g| match Guard::from_name(g.get_ref()) {
                    Some(guard) => Some(guard),
                    None => {
                        errors.push(SpecError::new(
                            g.span(),
                            format!("unknown guard {:?}; known: injection, padding, prompt_copy", g.get_ref()),
                        ));
                        None
                    }
                })
                .collect(),
        };
        let min_margin = match sections.pairs.as_ref().and_then(|p| p.get_ref().min_margin.as_ref()) {
            None => 0.1,
            Some(m) if m.get_ref().is_finite() && (0.0..2.0).contains(m.get_ref()) => *m.get_ref(),
            Some(m) => {
                errors.push(SpecError::new(m.span(), format!("pairs.min_margin {} is outside [0, 2)", m.get_ref())));
                0.1
            }
        };
        let trained = match (&j.trained, mode) {
            (Some(t), m) if m != JudgeMode::Combined => {
                errors.push(SpecError::new(t.span(), "judge.trained applies to judge.mode = \"combined\" only"));
                None
            }
            (None, JudgeMode::Combined) => {
                load_trained("default", None, files).map_err(|e| errors.push(SpecError::new(judge.span(), e))).ok()
            }
            (Some(t), _) => load_trained(t.get_ref(), Some(t.span()), files)
                .map_err(|e| errors.push(SpecError::new(t.span(), e)))
                .ok(),
            (None, _) => None,
        };
        let tie_threshold = match &j.tie_threshold {
            None => None,
            Some(t) if mode != JudgeMode::Pairwise => {
                errors.push(SpecError::new(t.span(), "judge.tie_threshold applies to judge.mode = \"pairwise\" only"));
                None
            }
            Some(t) if t.get_ref().is_finite() && (0.0..=20.0).contains(t.get_ref()) => Some(*t.get_ref()),
            Some(t) => {
                errors
                    .push(SpecError::new(t.span(), format!("judge.tie_threshold {} is outside [0, 20]", t.get_ref())));
                None
            }
        };
        if mode == JudgeMode::None && verifiers.is_empty() && errors.is_empty() && !sections.ranked_by_referee {
            errors.push(SpecError::new(
                judge.span(),
                "nothing ranks the outputs: add a [[verifiers]] entry or set judge.mode to \"pairwise\" or \"pointwise\"",
            ));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(JudgeConfig {
            verifiers,
            mode,
            rubric,
            model,
            weight,
            max_candidate_tokens,
            scale,
            guards,
            min_margin,
            trained: trained.map(std::sync::Arc::new),
            tie_threshold,
        })
    }

    /// Whether running this configuration needs a model (AI judge or a
    /// length counted in tokens).
    pub fn needs_model(&self) -> bool {
        self.mode != JudgeMode::None || self.verifiers.iter().any(Verifier::needs_tokenizer)
    }
}

/// The shipped default judge, or a trained judge among the Space's files.
fn load_trained(name: &str, _span: Option<Range<usize>>, files: &SpaceFiles) -> Result<LoadedTrained, String> {
    use sha2::Digest;
    let text = if name == "default" {
        crate::trained::DEFAULT_JSON
    } else {
        crate::files::check_name(name).map_err(|e| format!("judge.trained: {e}"))?;
        files.get(name).map(String::as_str).ok_or_else(|| {
            format!("judge.trained {name:?} is not among the Space's files (send it in `files`, or use \"default\")")
        })?
    };
    let judge = crate::trained::TrainedJudge::parse(text).map_err(|e| format!("judge.trained {name:?}: {e}"))?;
    Ok(LoadedTrained { sha256: hex::encode(sha2::Sha256::digest(text.as_bytes())), judge, name: name.to_owned() })
}

fn toml_error(e: &toml::de::Error) -> SpecError {
    SpecError::new(e.span().unwrap_or(0..0), e.message().trim().to_owned())
}

fn positive(v: &Option<Spanned<f64>>, what: &str, default: f64, errors: &mut Vec<SpecError>) -> f64 {
    match v {
        None => default,
        Some(w) if w.get_ref().is_finite() && *w.get_ref() >= 0.0 && *w.get_ref() <= 1000.0 => *w.get_ref(),
        Some(w) => {
            errors.push(SpecError::new(w.span(), format!("{what} {} is outside 0..=1000", w.get_ref())));
            default
        }
    }
}

/// The integer in `v` if it lies in `lo..=hi`; otherwise an error at its
/// span and `default`.
pub fn int_in(
    v: &Option<Spanned<i64>>,
    what: &str,
    lo: i64,
    hi: i64,
    default: i64,
    errors: &mut Vec<SpecError>,
) -> i64 {
    match v {
        None => default,
        Some(n) if (lo..=hi).contains(n.get_ref()) => *n.get_ref(),
        Some(n) => {
            errors.push(SpecError::new(n.span(), format!("{what} {} is outside {lo}..={hi}", n.get_ref())));
            default
        }
    }
}

/// Which keys each kind accepts besides kind, name, hard and weight.
fn allowed_keys(kind: &str) -> &'static [&'static str] {
    match kind {
        "regex" => &["pattern", "must", "case_insensitive"],
        "length" => &["unit", "min", "max"],
        "json" => &["schema", "schema_file", "extract"],
        "answer" => &["mode", "pick", "tolerance", "allow_fractions", "allow_percent"],
        "forbidden" => &["strings", "case_insensitive"],
        _ => &[],
    }
}

fn compile_verifier(spec: &Spanned<VerifierSpec>, files: &SpaceFiles) -> Result<Verifier, Vec<SpecError>> {
    let table = spec.span();
    let s = spec.get_ref();
    let kind = s.kind.get_ref().as_str();
    let mut errors = Vec::new();
    if !["regex", "length", "json", "answer", "forbidden"].contains(&kind) {
        return Err(vec![SpecError::new(
            s.kind.span(),
            format!("unknown verifier kind {kind:?}; known: regex, length, json, answer, forbidden"),
        )]);
    }
    // Keys that belong to another kind are a mistake worth naming.
    let present: [(&str, Option<Range<usize>>); 15] = [
        ("pattern", s.pattern.as_ref().map(Spanned::span)),
        ("must", s.must.as_ref().map(Spanned::span)),
        ("case_insensitive", s.case_insensitive.map(|_| table.clone())),
        ("unit", s.unit.as_ref().map(Spanned::span)),
        ("min", s.min.as_ref().map(Spanned::span)),
        ("max", s.max.as_ref().map(Spanned::span)),
        ("schema", s.schema.as_ref().map(Spanned::span)),
        ("schema_file", s.schema_file.as_ref().map(Spanned::span)),
        ("extract", s.extract.as_ref().map(Spanned::span)),
        ("mode", s.mode.as_ref().map(Spanned::span)),
        ("pick", s.pick.as_ref().map(Spanned::span)),
        ("tolerance", s.tolerance.as_ref().map(Spanned::span)),
        ("allow_fractions", s.allow_fractions.map(|_| table.clone())),
        ("allow_percent", s.allow_percent.map(|_| table.clone())),
        ("strings", s.strings.as_ref().map(Spanned::span)),
    ];
    for (key, span) in present {
        if let Some(span) = span
            && !allowed_keys(kind).contains(&key)
        {
            errors.push(SpecError::new(span, format!("`{key}` does not apply to a {kind} verifier")));
        }
    }
    let weight = positive(&s.weight, "weight", 1.0, &mut errors);
    let name = s.name.clone().unwrap_or_else(|| kind.to_owned());
    let case_insensitive = s.case_insensitive.unwrap_or(kind == "forbidden");
    let verifier_kind = match kind {
        "regex" => {
            let must_match = match s.must.as_ref().map(|m| (m.get_ref().as_str(), m.span())) {
                None | Some(("match", _)) => true,
                Some(("not_match", _)) => false,
                Some((other, span)) => {
                    errors.push(SpecError::new(span, format!("must {other:?} is not \"match\" or \"not_match\"")));
                    true
                }
            };
            match &s.pattern {
                None => {
                    errors.push(SpecError::new(table.clone(), "a regex verifier needs `pattern`"));
                    None
                }
                Some(p) => match regex::RegexBuilder::new(p.get_ref())
                    .case_insensitive(case_insensitive)
                    .size_limit(REGEX_SIZE_LIMIT)
                    .build()
                {
                    Ok(re) => Some(VerifierKind::Regex { re, must_match }),
                    Err(e) => {
                        let detail =
                            e.to_string().lines().last().unwrap_or("").trim().trim_start_matches("error: ").to_owned();
                        errors.push(SpecError::new(p.span(), format!("invalid regex: {detail}")));
                        None
                    }
                },
            }
        }
        "length" => {
            let unit = match s.unit.as_ref().map(|u| (u.get_ref().as_str(), u.span())) {
                None | Some(("chars", _)) => crate::verify::Unit::Chars,
                Some(("words", _)) => crate::verify::Unit::Words,
                Some(("tokens", _)) => crate::verify::Unit::Tokens,
                Some((other, span)) => {
                    errors.push(SpecError::new(span, format!("unit {other:?} is not chars, words or tokens")));
                    crate::verify::Unit::Chars
                }
            };
            let bound = |b: &Option<Spanned<i64>>, errors: &mut Vec<SpecError>| match b {
                Some(n) if *n.get_ref() < 0 => {
                    errors.push(SpecError::new(n.span(), format!("{} is negative", n.get_ref())));
                    None
                }
                Some(n) => Some(*n.get_ref() as usize),
                None => None,
            };
            let min = bound(&s.min, &mut errors);
            let max = bound(&s.max, &mut errors);
            if min.is_none() && max.is_none() {
                errors.push(SpecError::new(table.clone(), "a length verifier needs `min`, `max` or both"));
            }
            if let (Some(lo), Some(hi), Some(m)) = (min, max, &s.max)
                && lo > hi
            {
                errors.push(SpecError::new(m.span(), format!("max {hi} is below min {lo}")));
            }
            Some(VerifierKind::Length { unit, min, max })
        }
        "json" => {
            let schema = match (&s.schema, &s.schema_file) {
                (Some(_), Some(f)) => {
                    errors.push(SpecError::new(f.span(), "give `schema` or `schema_file`, not both"));
                    None
                }
                (None, None) => Some((serde_json::Value::Bool(true), table.clone())),
                (Some(v), None) => match v.get_ref() {
                    toml::Value::String(text) => match serde_json::from_str(text) {
                        Ok(json) => Some((json, v.span())),
                        Err(e) => {
                            errors.push(SpecError::new(v.span(), format!("schema is not valid JSON: {e}")));
                            None
                        }
                    },
                    other => match serde_json::to_value(other) {
                        Ok(json) => Some((json, v.span())),
                        Err(e) => {
                            errors.push(SpecError::new(v.span(), format!("schema: {e}")));
                            None
                        }
                    },
                },
                (None, Some(f)) => {
                    let name = f.get_ref();
                    match crate::files::check_name(name).map(|()| files.get(name)) {
                        Err(e) => {
                            errors.push(SpecError::new(f.span(), format!("schema_file: {e}")));
                            None
                        }
                        Ok(None) => {
                            errors.push(SpecError::new(
                                f.span(),
                                format!("schema_file {name:?} is not among the Space's files (send it in `files`)"),
                            ));
                            None
                        }
                        Ok(Some(text)) => match serde_json::from_str(text) {
                            Ok(json) => Some((json, f.span())),
                            Err(e) => {
                                errors.push(SpecError::new(f.span(), format!("{name} is not valid JSON: {e}")));
                                None
                            }
                        },
                    }
                }
            };
            match schema {
                None => None,
                Some((json, span)) => match crate::verify::compile_schema(&json) {
                    Ok(validator) => {
                        let first = match s.extract.as_ref().map(|m| (m.get_ref().as_str(), m.span())) {
                            None | Some(("whole", _)) => false,
                            Some(("first", _)) => true,
                            Some((other, span)) => {
                                errors.push(SpecError::new(
                                    span,
                                    format!("extract {other:?} is not \"whole\" or \"first\""),
                                ));
                                false
                            }
                        };
                        Some(VerifierKind::Json { validator: std::sync::Arc::new(validator), first })
                    }
                    Err(message) => {
                        errors.push(SpecError::new(span, format!("invalid JSON Schema: {message}")));
                        None
                    }
                },
            }
        }
        "answer" => {
            let mode = match s.mode.as_ref().map(|m| (m.get_ref().as_str(), m.span())) {
                None | Some(("exact", _)) => AnswerMode::Exact,
                Some(("numeric", _)) => AnswerMode::Numeric,
                Some(("contains", _)) => AnswerMode::Contains,
                Some((other, span)) => {
                    errors.push(SpecError::new(
                        span,
                        format!("mode {other:?} is not \"exact\", \"numeric\" or \"contains\""),
                    ));
                    AnswerMode::Exact
                }
            };
            let pick = match s.pick.as_ref().map(|m| (m.get_ref().as_str(), m.span())) {
                None | Some(("last", _)) => Pick::Last,
                Some(("first", _)) => Pick::First,
                Some(("only", _)) => Pick::Only,
                Some((other, span)) => {
                    errors.push(SpecError::new(span, format!("pick {other:?} is not last, first or only")));
                    Pick::Last
                }
            };
            let tolerance = match &s.tolerance {
                None => 1e-6,
                Some(t) if t.get_ref().is_finite() && *t.get_ref() >= 0.0 => *t.get_ref(),
                Some(t) => {
                    errors.push(SpecError::new(t.span(), format!("tolerance {} must be ≥ 0", t.get_ref())));
                    0.0
                }
            };
            Some(VerifierKind::Answer {
                mode,
                pick,
                tolerance,
                allow_fractions: s.allow_fractions.unwrap_or(true),
                allow_percent: s.allow_percent.unwrap_or(false),
            })
        }
        "forbidden" => match &s.strings {
            None => {
                errors.push(SpecError::new(table.clone(), "a forbidden verifier needs `strings`"));
                None
            }
            Some(list) if list.get_ref().is_empty() || list.get_ref().iter().any(|x| x.trim().is_empty()) => {
                errors.push(SpecError::new(list.span(), "strings must be a non-empty list of non-empty strings"));
                None
            }
            Some(list) => Some(VerifierKind::Forbidden {
                strings: list.get_ref().iter().map(|x| crate::text::fold(x, case_insensitive)).collect(),
                case_insensitive,
            }),
        },
        _ => None,
    };
    match verifier_kind {
        Some(kind) if errors.is_empty() => Ok(Verifier { name, hard: s.hard, weight, kind }),
        _ => Err(errors),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<(usize, usize, String)> {
        match JudgeConfig::parse(text, &SpaceFiles::new(), Path::new(".")) {
            Ok(_) => Vec::new(),
            Err(errs) => errs
                .iter()
                .map(|e| {
                    let (l, c) = e.line_col(text);
                    (l, c, e.message.clone())
                })
                .collect(),
        }
    }

    #[test]
    fn a_good_config_compiles() {
        let text = r#"
name = "arith"            # the arena's key, ignored here

[[verifiers]]
kind = "answer"
mode = "numeric"
hard = true

[[verifiers]]
kind = "length"
unit = "words"
max = 50

[[verifiers]]
kind = "json"
schema = { type = "object", required = ["a"] }

[judge]
mode = "pointwise"
scale = 5
rubric = "Correct and short."

[pairs]
min_margin = 0.2
"#;
        let cfg = JudgeConfig::parse(text, &SpaceFiles::new(), Path::new(".")).unwrap();
        assert_eq!(cfg.verifiers.len(), 3);
        assert_eq!(cfg.mode, JudgeMode::Pointwise);
        assert_eq!(cfg.min_margin, 0.2);
        assert_eq!(cfg.guards, Guard::ALL.to_vec());
    }

    #[test]
    fn a_bad_regex_is_named_at_its_line_and_column() {
        let text = "[[verifiers]]\nkind = \"regex\"\npattern = \"(unclosed\"\n";
        let errs = errors(text);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!((errs[0].0, errs[0].1), (3, 11));
        assert!(errs[0].2.starts_with("invalid regex"), "{errs:?}");
    }

    #[test]
    fn a_bad_schema_is_named_at_its_line() {
        let text = "[[verifiers]]\nkind = \"json\"\nschema = { type = \"no-such-type\" }\n";
        let errs = errors(text);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].0, 3);
        assert!(errs[0].2.contains("invalid JSON Schema"), "{errs:?}");
    }

    #[test]
    fn every_error_is_reported_not_just_the_first() {
        let text = "[[verifiers]]\nkind = \"length\"\nmin = 10\nmax = 5\npattern = \"x\"\n\n[[verifiers]]\nkind = \"nope\"\n\n[judge]\nmode = \"vibes\"\nscale = 12\nguards = [\"injection\", \"telepathy\"]\n";
        let errs = errors(text);
        let lines: Vec<usize> = errs.iter().map(|e| e.0).collect();
        for line in [4, 5, 8, 11, 12, 13] {
            assert!(lines.contains(&line), "no error on line {line}: {errs:?}");
        }
    }

    #[test]
    fn syntax_errors_and_unknown_keys_carry_positions() {
        let errs = errors("[judge]\nmode = \n");
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].0, 2);
        let errs = errors("[judge]\nmood = \"pairwise\"\n");
        assert_eq!(errs[0].0, 2, "{errs:?}");
        assert!(errs[0].2.contains("mood"), "{errs:?}");
    }

    #[test]
    fn nothing_to_rank_with_is_refused() {
        let errs = errors("[judge]\nmode = \"none\"\n");
        assert!(errs[0].2.contains("nothing ranks"), "{errs:?}");
    }
}
