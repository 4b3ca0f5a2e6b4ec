//! Rule verifiers: regex, length, JSON (+ JSON Schema), answer against the
//! prompt's reference, forbidden strings. Each gives pass/fail, a score in
//! [0, 1] and a reason a person can read.

use crate::text::{canonical, fold};
use serde::Serialize;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Chars,
    Words,
    Tokens,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerMode {
    /// Equal after normalising whitespace, case and trailing punctuation.
    Exact,
    /// The picked number equals the reference number within tolerance.
    Numeric,
    /// The output contains the reference, both normalised as for `Exact`
    /// (a fact that must be carried over, e.g. an e-mail address).
    Contains,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    Last,
    First,
    /// The output must hold exactly one distinct number.
    Only,
}

#[derive(Debug, Clone)]
pub enum VerifierKind {
    Regex {
        re: regex::Regex,
        must_match: bool,
    },
    Length {
        unit: Unit,
        min: Option<usize>,
        max: Option<usize>,
    },
    Json {
        validator: Arc<jsonschema::Validator>,
        /// Take the first JSON value in the output (prose around allowed)
        /// instead of requiring the whole output to be JSON.
        first: bool,
    },
    Answer {
        mode: AnswerMode,
        pick: Pick,
        tolerance: f64,
        allow_fractions: bool,
        allow_percent: bool,
    },
    /// Folded forms of the strings.
    Forbidden {
        strings: Vec<String>,
        case_insensitive: bool,
    },
}

#[derive(Debug, Clone)]
pub struct Verifier {
    pub name: String,
    pub hard: bool,
    pub weight: f64,
    pub kind: VerifierKind,
}

/// One verifier's finding on one output.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct VerifierResult {
    pub name: String,
    pub kind: &'static str,
    pub hard: bool,
    pub passed: bool,
    /// In [0, 1]; None when the verifier did not apply (no reference answer).
    pub score: Option<f64>,
    pub reason: String,
}

/// What a verifier needs to know besides the output.
pub struct Context<'a> {
    pub prompt: &'a str,
    pub reference: Option<&'a str>,
    /// Counts tokens for `unit = "tokens"`.
    pub count_tokens: Option<&'a dyn Fn(&str) -> usize>,
}

/// A retriever that refuses every remote or file reference: a Space's schema
/// must be self-contained.
struct NoRemote;

impl jsonschema::Retrieve for NoRemote {
    fn retrieve(
        &self,
        uri: &jsonschema::Uri<String>,
    ) -> Result<serde_json::Value, Box<dyn std::error::Error + Send + Sync>> {
        Err(format!("remote references are off; {uri} was not fetched").into())
    }
}

/// Compiles a schema with remote references off.
pub fn compile_schema(schema: &serde_json::Value) -> Result<jsonschema::Validator, String> {
    // `pattern` and `patternProperties` run on the linear-time `regex`
    // engine with bounded sizes, never a backtracking one: an agent's
    // output cannot make a designer's pattern take exponential time.
    let patterns = jsonschema::PatternOptions::regex().size_limit(1 << 20).dfa_size_limit(1 << 20);
    jsonschema::options()
        .with_retriever(NoRemote)
        .with_pattern_options(patterns)
        .build(schema)
        .map_err(|e| e.to_string())
}

impl Verifier {
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            VerifierKind::Regex { .. } => "regex",
            VerifierKind::Length { .. } => "length",
            VerifierKind::Json { .. } => "json",
            VerifierKind::Answer { .. } => "answer",
            VerifierKind::Forbidden { .. } => "forbidden",
        }
    }

    pub fn needs_tokenizer(&self) -> bool {
        matches!(self.kind, VerifierKind::Length { unit: Unit::Tokens, .. })
    }

    /// Checks one output (already capped in length by the caller).
    pub fn check(&self, output: &str, ctx: &Context<'_>) -> VerifierResult {
        let (passed, score, reason) = match &self.kind {
            VerifierKind::Regex { re, must_match } => {
                // Must-match reads the canonical text (look-alikes do not
                // satisfy it); must-not-match the folded text (look-alikes do
                // not evade it).
                if *must_match {
                    let ok = re.is_match(&canonical(output));
                    (
                        ok,
                        None,
                        if ok { "matches the pattern" } else { "does not match the required pattern" }.to_owned(),
                    )
                } else {
                    match re.find(&fold(output, false)) {
                        Some(m) => (false, None, format!("matches a forbidden pattern at {:?}", clip(m.as_str(), 40))),
                        None => (true, None, "does not match the forbidden pattern".to_owned()),
                    }
                }
            }
            VerifierKind::Length { unit, min, max } => {
                let text = canonical(output);
                let (n, what) = match unit {
                    Unit::Chars => (text.chars().count(), "characters"),
                    Unit::Words => (text.split_whitespace().count(), "words"),
                    Unit::Tokens => match ctx.count_tokens {
                        Some(count) => (count(&text), "tokens"),
                        None => (text.split_whitespace().count(), "words (no tokenizer loaded)"),
                    },
                };
                let low = min.is_some_and(|m| n < m);
                let high = max.is_some_and(|m| n > m);
                let bounds = match (min, max) {
                    (Some(a), Some(b)) => format!("{a}..={b}"),
                    (Some(a), None) => format!("at least {a}"),
                    (None, Some(b)) => format!("at most {b}"),
                    (None, None) => "any".to_owned(),
                };
                (!low && !high, None, format!("{n} {what}; allowed {bounds}"))
            }
            VerifierKind::Json { validator, first } => {
                match if *first { first_json(&canonical(output)) } else { extract_json(&canonical(output)) } {
                    Err(e) => (false, None, format!("not JSON: {e}")),
                    Ok(value) => {
                        let errors: Vec<String> = validator
                            .iter_errors(&value)
                            .take(3)
                            .map(|e| {
                                let at = e.instance_path().to_string();
                                format!("{} {}", if at.is_empty() { "(root)".to_owned() } else { at }, e)
                            })
                            .collect();
                        if errors.is_empty() {
                            (true, None, "valid JSON that fits the schema".to_owned())
                        } else {
                            (false, None, format!("JSON does not fit the schema: {}", errors.join("; ")))
                        }
                    }
                }
            }
            VerifierKind::Answer { mode, pick, tolerance, allow_fractions, allow_percent } => match ctx.reference {
                None => {
                    return VerifierResult {
                        name: self.name.clone(),
                        kind: self.kind_name(),
                        hard: self.hard,
                        passed: true,
                        score: None,
                        reason: "skipped: the prompt has no reference answer".to_owned(),
                    };
                }
                Some(reference) => match mode {
                    AnswerMode::Exact => {
                        let got = normalize_answer(output);
                        let want = normalize_answer(reference);
                        let ok = got == want;
                        (
                            ok,
                            None,
                            if ok {
                                "equals the reference".to_owned()
                            } else {
                                format!("{:?} is not the reference", clip(&got, 60))
                            },
                        )
                    }
                    AnswerMode::Contains => {
                        let want = normalize_answer(reference);
                        let ok = !want.is_empty() && contains_whole(&fold(output, true), &want);
                        (
                            ok,
                            None,
                            if ok {
                                "contains the reference".to_owned()
                            } else {
                                format!("does not contain {:?}", clip(&want, 60))
                            },
                        )
                    }
                    AnswerMode::Numeric => {
                        let opts = NumberOptions { fractions: *allow_fractions, percent: *allow_percent };
                        match parse_number(reference.trim(), opts) {
                            None => (false, None, format!("the reference {:?} is not a number", clip(reference, 40))),
                            Some(want) => {
                                let found = numbers(&canonical(output), opts);
                                let picked = match pick {
                                    Pick::Last => found.last().copied().ok_or("no number in the output"),
                                    Pick::First => found.first().copied().ok_or("no number in the output"),
                                    Pick::Only => {
                                        let mut distinct = found.clone();
                                        distinct.dedup_by(|a, b| (*a - *b).abs() <= *tolerance);
                                        distinct.sort_by(f64::total_cmp);
                                        distinct.dedup_by(|a, b| (*a - *b).abs() <= *tolerance);
                                        match distinct.len() {
                                            0 => Err("no number in the output"),
                                            1 => Ok(distinct[0]),
                                            _ => Err("more than one distinct number in the output"),
                                        }
                                    }
                                };
                                match picked {
                                    Err(why) => (false, None, why.to_owned()),
                                    Ok(got) => {
                                        let ok = (got - want).abs() <= tolerance.max(want.abs() * 1e-12);
                                        (
                                            ok,
                                            None,
                                            format!(
                                                "answer {got} {} reference {want}",
                                                if ok { "equals" } else { "differs from" }
                                            ),
                                        )
                                    }
                                }
                            }
                        }
                    }
                },
            },
            VerifierKind::Forbidden { strings, case_insensitive } => {
                let text = fold(output, *case_insensitive);
                match strings.iter().find(|s| text.contains(s.as_str())) {
                    Some(s) => (false, None, format!("contains the forbidden string {:?}", clip(s, 40))),
                    None => (true, None, "contains no forbidden string".to_owned()),
                }
            }
        };
        VerifierResult {
            name: self.name.clone(),
            kind: self.kind_name(),
            hard: self.hard,
            passed,
            score: Some(score.unwrap_or(if passed { 1.0 } else { 0.0 })),
            reason,
        }
    }
}

fn clip(s: &str, n: usize) -> String {
    let mut out: String = s.chars().take(n).collect();
    if s.chars().count() > n {
        out.push('…');
    }
    out
}

/// The JSON value in an output: the whole text, or the body of one fenced
/// code block.
pub fn extract_json(text: &str) -> Result<serde_json::Value, String> {
    let t = text.trim();
    let body = if let Some(rest) = t.strip_prefix("```") {
        let rest = rest.trim_start_matches(|c: char| c.is_ascii_alphanumeric());
        rest.strip_suffix("```").unwrap_or(rest).trim()
    } else {
        t
    };
    serde_json::from_str(body).map_err(|e| e.to_string())
}

/// Whether `needle` occurs in `text` as a whole token: the characters
/// around it do not continue it (a letter or digit, or one of `.-_@+`
/// followed by a letter or digit), so `a@b.test` is not found in
/// `a@b.test.com` or `xa@b.test`, but is in `"a@b.test".`.
fn contains_whole(text: &str, needle: &str) -> bool {
    let joins = |c: char| c.is_alphanumeric();
    let glue = |c: char| matches!(c, '.' | '-' | '_' | '@' | '+');
    text.match_indices(needle).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let mut after = text[at + needle.len()..].chars();
        let (a1, a2) = (after.next(), after.next());
        let clean_before = !before.is_some_and(|c| joins(c) || glue(c) && needle.starts_with(joins));
        let clean_after = match (a1, a2) {
            (Some(c), _) if joins(c) => false,
            (Some(c), Some(d)) if glue(c) && joins(d) => false,
            _ => true,
        };
        clean_before && clean_after
    })
}

/// The first JSON object or array in an output: the body of its first
/// fenced code block if that parses, otherwise the value that starts at the
/// first `{` or `[` (it must parse there: an object buried after broken
/// JSON does not count); text before and after is ignored.
pub fn first_json(text: &str) -> Result<serde_json::Value, String> {
    if let Ok(value) = extract_json(text) {
        return Ok(value);
    }
    if let Some(start) = text.find("```") {
        let rest = text[start + 3..].trim_start_matches(|c: char| c.is_ascii_alphanumeric());
        if let Some(end) = rest.find("```")
            && let Ok(value) = serde_json::from_str(rest[..end].trim())
        {
            return Ok(value);
        }
    }
    let at = text.find(['{', '[']).ok_or("no JSON object or array in the output")?;
    match serde_json::Deserializer::from_str(&text[at..]).into_iter::<serde_json::Value>().next() {
        Some(Ok(value)) => Ok(value),
        Some(Err(e)) => Err(e.to_string()),
        None => Err("no JSON object or array in the output".to_owned()),
    }
}

/// Lowercase, whitespace collapsed, surrounding quotes and final punctuation
/// removed, thousands separators in numbers removed.
pub fn normalize_answer(text: &str) -> String {
    let t = fold(text, true);
    let t = t.split_whitespace().collect::<Vec<_>>().join(" ");
    let t =
        t.trim_matches(|c: char| matches!(c, '"' | '\'' | '`' | '*' | ' ')).trim_end_matches(['.', '!', '?', ';', ',']);
    strip_thousands(t)
}

fn strip_thousands(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    for (i, &c) in chars.iter().enumerate() {
        let digit_before = i > 0 && chars[i - 1].is_ascii_digit();
        let three_after = chars.len() >= i + 4
            && chars[i + 1..i + 4].iter().all(char::is_ascii_digit)
            && chars.get(i + 4).is_none_or(|c| !c.is_ascii_digit());
        if c == ',' && digit_before && three_after {
            continue;
        }
        out.push(c);
    }
    out
}

#[derive(Debug, Clone, Copy)]
pub struct NumberOptions {
    pub fractions: bool,
    pub percent: bool,
}

fn number_re() -> &'static regex::Regex {
    static RE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    RE.get_or_init(|| {
        regex::Regex::new(r"[-−]?(\d{1,3}(,\d{3})+|\d+)(\.\d+)?(\s*/\s*\d+)?\s*%?|[-−]?\.\d+")
            .unwrap_or_else(|_| unreachable!("a fixed pattern"))
    })
}

/// Parses one number: `1,234`, `-3.5`, `1/2` (with fractions), `50%` (with percent).
pub fn parse_number(text: &str, opts: NumberOptions) -> Option<f64> {
    let t = text.trim().replace('−', "-");
    let t = t.trim_end_matches(['.', '!']);
    let (t, percent) = match t.strip_suffix('%') {
        Some(rest) if opts.percent => (rest.trim(), true),
        Some(_) => return None,
        None => (t, false),
    };
    let value = if let Some((a, b)) = t.split_once('/') {
        if !opts.fractions {
            return None;
        }
        let (a, b) = (parse_plain(a.trim())?, parse_plain(b.trim())?);
        if b == 0.0 {
            return None;
        }
        a / b
    } else {
        parse_plain(t)?
    };
    Some(if percent { value / 100.0 } else { value })
}

fn parse_plain(t: &str) -> Option<f64> {
    let t = t.replace(',', "");
    if t.is_empty() || !t.chars().all(|c| c.is_ascii_digit() || c == '.' || c == '-') {
        return None;
    }
    t.parse::<f64>().ok().filter(|v| v.is_finite())
}

/// Every number in a text, in order.
pub fn numbers(text: &str, opts: NumberOptions) -> Vec<f64> {
    number_re()
        .find_iter(text)
        .filter_map(|m| {
            let s = m.as_str();
            parse_number(s, opts).or_else(|| {
                // "3/4" without fractions allowed is two numbers; "50%" without
                // percent is 50.
                let head = s.split('/').next().unwrap_or(s).trim_end_matches(['%', ' ']);
                parse_number(head, NumberOptions { fractions: false, percent: false })
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx<'a>(reference: Option<&'a str>) -> Context<'a> {
        Context { prompt: "", reference, count_tokens: None }
    }

    fn answer(mode: AnswerMode, pick: Pick) -> Verifier {
        Verifier {
            name: "answer".into(),
            hard: true,
            weight: 1.0,
            kind: VerifierKind::Answer { mode, pick, tolerance: 1e-6, allow_fractions: true, allow_percent: true },
        }
    }

    #[test]
    fn numeric_answers_normalise_separators_fractions_and_percent() {
        let v = answer(AnswerMode::Numeric, Pick::Last);
        assert!(v.check("The total is 1,234.", &ctx(Some("1234"))).passed);
        assert!(v.check("so x = 1/2", &ctx(Some("0.5"))).passed);
        assert!(v.check("It is 0.5", &ctx(Some("1/2"))).passed);
        assert!(v.check("50%", &ctx(Some("0.5"))).passed);
        assert!(v.check("12 + 30 = 42", &ctx(Some("42"))).passed);
        assert!(v.check("４２", &ctx(Some("42"))).passed, "full-width digits");
        assert!(!v.check("41", &ctx(Some("42"))).passed);
        assert!(!v.check("no idea", &ctx(Some("42"))).passed);
        let only = answer(AnswerMode::Numeric, Pick::Only);
        assert!(!only.check("41 or 42", &ctx(Some("42"))).passed, "hedging fails with pick = only");
        assert!(only.check("42, yes 42", &ctx(Some("42"))).passed);
        let skipped = v.check("42", &ctx(None));
        assert!(skipped.passed && skipped.score.is_none(), "no reference: skipped");
    }

    #[test]
    fn exact_answers_ignore_case_space_and_final_period() {
        let v = answer(AnswerMode::Exact, Pick::Last);
        assert!(v.check("  Paris. ", &ctx(Some("paris"))).passed);
        assert!(v.check("New   York", &ctx(Some("new york"))).passed);
        assert!(!v.check("Lyon", &ctx(Some("Paris"))).passed);
    }

    #[test]
    fn contains_finds_the_reference_anywhere_in_any_case() {
        let v = answer(AnswerMode::Contains, Pick::Last);
        assert!(v.check(r#"{"email": "Lena@Mail.test"}"#, &ctx(Some("lena@mail.test"))).passed);
        assert!(!v.check(r#"{"email": "lena@mail.tes"}"#, &ctx(Some("lena@mail.test"))).passed);
        // A longer token that merely starts or ends with the reference is not it.
        assert!(!v.check(r#"{"email": "lena@mail.test.com"}"#, &ctx(Some("lena@mail.test"))).passed);
        assert!(!v.check(r#"{"email": "xlena@mail.test"}"#, &ctx(Some("lena@mail.test"))).passed);
        assert!(v.check("Write to lena@mail.test.", &ctx(Some("lena@mail.test"))).passed);
        assert!(!v.check("anything", &ctx(Some(" "))).passed, "an empty reference is contained nowhere");
    }

    #[test]
    fn json_schema_reports_where_it_fails() {
        let schema =
            serde_json::json!({"type": "object", "required": ["name"], "properties": {"age": {"type": "integer"}}});
        let v = Verifier {
            name: "json".into(),
            hard: true,
            weight: 1.0,
            kind: VerifierKind::Json { validator: Arc::new(compile_schema(&schema).unwrap()), first: false },
        };
        assert!(v.check("{\"name\": \"Ada\", \"age\": 36}", &ctx(None)).passed);
        assert!(v.check("```json\n{\"name\": \"Ada\"}\n```", &ctx(None)).passed);
        let bad = v.check("{\"name\": \"Ada\", \"age\": \"old\"}", &ctx(None));
        assert!(!bad.passed && bad.reason.contains("/age"), "{}", bad.reason);
        assert!(v.check("name: Ada", &ctx(None)).reason.starts_with("not JSON"));
    }

    #[test]
    fn first_json_takes_the_first_value_and_ignores_the_prose_around_it() {
        assert_eq!(first_json("Here: {\"a\": 1}\nThat is all.").unwrap(), serde_json::json!({"a": 1}));
        assert_eq!(first_json("```json\n[1, 2]\n```\nexplained").unwrap(), serde_json::json!([1, 2]));
        assert!(first_json("{broken {\"b\": 2}").is_err(), "no digging for an object inside broken JSON");
        assert_eq!(first_json("{\"b\": 2} {\"c\": 3}").unwrap(), serde_json::json!({"b": 2}));
        assert!(first_json("no json here").is_err());
        assert!(extract_json("Here: {\"a\": 1}").is_err(), "whole-output extraction stays strict");
    }

    #[test]
    fn schema_patterns_run_on_the_linear_engine() {
        // Look-arounds need a backtracking engine: refused when the Space is checked.
        assert!(compile_schema(&serde_json::json!({"type": "string", "pattern": "(?=a)a"})).is_err());
        // A pattern that backtracks catastrophically elsewhere answers here.
        let nested = compile_schema(&serde_json::json!({"type": "string", "pattern": "^(a+)+$"})).unwrap();
        assert!(!nested.is_valid(&serde_json::json!(format!("{}!", "a".repeat(64)))));
        assert!(nested.is_valid(&serde_json::json!("aaaa")));
    }

    #[test]
    fn remote_schema_references_are_refused() {
        let schema = serde_json::json!({"$ref": "https://example.com/schema.json"});
        assert!(compile_schema(&schema).is_err());
    }

    #[test]
    fn forbidden_strings_see_through_look_alikes_and_zero_width() {
        let v = Verifier {
            name: "no secrets".into(),
            hard: true,
            weight: 1.0,
            kind: VerifierKind::Forbidden { strings: vec![fold("password", true)], case_insensitive: true },
        };
        assert!(!v.check("the PASSWORD is", &ctx(None)).passed);
        assert!(!v.check("the pass\u{200B}word is", &ctx(None)).passed);
        assert!(!v.check("the раssword is", &ctx(None)).passed, "Cyrillic р and а");
        assert!(v.check("the passphrase", &ctx(None)).passed);
    }

    #[test]
    fn numbers_finds_each_in_order() {
        let o = NumberOptions { fractions: true, percent: false };
        assert_eq!(numbers("3 apples and 1,200 pears, -4.5 and 3/4", o), vec![3.0, 1200.0, -4.5, 0.75]);
    }
}
