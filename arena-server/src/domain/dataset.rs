//! Preference data as buyers select it: which pairs a filter keeps, how a
//! pair is written (TRL's standard or conversational preference format),
//! and the PII scrub applied at export. The store runs the same filter in
//! SQL (`store::pairs`); `PairFilter::keeps` is its definition, which the
//! tests hold the SQL to.

use super::DomainError;
use serde::{Deserialize, Serialize};

/// Spaces one filter may name.
pub const MAX_SPACES: usize = 32;

/// What a buyer selects. Every bound is inclusive; an absent one does not
/// filter.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PairFilter {
    /// Space slugs; empty: every Space the buyer may export.
    pub spaces: Vec<String>,
    /// Only pairs of this Space version (with one Space named).
    pub space_version: Option<i32>,
    pub from: Option<chrono::DateTime<chrono::Utc>>,
    pub to: Option<chrono::DateTime<chrono::Utc>>,
    pub min_margin: Option<f64>,
    /// Only pairs whose judge orders agreed (a hard check's decision counts
    /// as agreed).
    pub agreed_only: bool,
    /// Both agents' ratings (rating points at match time) within these.
    pub min_rating: Option<f64>,
    pub max_rating: Option<f64>,
    /// Both answers' lengths in characters within these.
    pub min_chars: Option<i32>,
    pub max_chars: Option<i32>,
    /// ISO 639-1 codes from the detector (`language`); empty: any.
    pub languages: Vec<String>,
    /// Leave out pairs that repeat an earlier pair exactly or nearly
    /// (`near_duplicate`): the earliest of each group is kept.
    pub dedupe: bool,
    /// Whether the chosen answer passed every hard check.
    pub chosen_passed: Option<bool>,
    /// Whether the rejected answer passed every hard check.
    pub rejected_passed: Option<bool>,
    /// Only pairs of this kind (whole answers, or decisions in games).
    pub kind: Option<PairKind>,
    /// Only pairs labelled by this source: a verifier (a hard check, a
    /// referee or scores alone), the AI judge, or people's votes.
    pub label_source: Option<LabelSource>,
    /// Only human pairs of the verified tier (≥ 3 decisive votes,
    /// posterior ≥ 0.8).
    pub human_verified: bool,
    /// Only pairs where the judge and people agreed (true) or disagreed
    /// (false): a human pair's judge agreement (pairs nobody voted on have
    /// none and are left out when this is set).
    pub judge_agrees: Option<bool>,
    /// Keep judge pairs that people overruled (left out by default).
    pub include_overruled: bool,
    /// Leave out human pairs of Spaces that price them (`[votes]
    /// price_per_pair`): set by the free reads, never by a buyer.
    #[serde(skip)]
    pub free_reads: bool,
}

/// Where a pair's label comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LabelSource {
    Verifier,
    Judge,
    Human,
}

impl LabelSource {
    pub const ALL: [LabelSource; 3] = [LabelSource::Verifier, LabelSource::Judge, LabelSource::Human];

    pub fn as_str(self) -> &'static str {
        match self {
            LabelSource::Verifier => "verifier",
            LabelSource::Judge => "judge",
            LabelSource::Human => "human",
        }
    }

    pub fn parse(text: &str) -> Result<LabelSource, DomainError> {
        LabelSource::ALL.into_iter().find(|l| l.as_str() == text).ok_or_else(|| {
            DomainError::new("label_source", format!("label_source {text:?} is not one of verifier, judge, human"))
        })
    }
}

/// What a pair compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PairKind {
    /// Two whole answers to the match's prompt (in a game: two seats' whole
    /// parts).
    Whole,
    /// Two answers to one seat's view at one turn of a game: a legal answer
    /// over an illegal attempt, or the answer whose game ended better.
    Decision,
}

impl PairKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PairKind::Whole => "whole",
            PairKind::Decision => "decision",
        }
    }

    pub fn parse(text: &str) -> Result<PairKind, DomainError> {
        match text {
            "whole" => Ok(PairKind::Whole),
            "decision" => Ok(PairKind::Decision),
            other => Err(DomainError::new("kind", format!("kind {other:?} is not one of whole, decision"))),
        }
    }
}

/// Languages one filter may name.
pub const MAX_LANGUAGES: usize = 16;

impl PairFilter {
    /// Checks the bounds; the error names the field.
    pub fn check(&self) -> Result<(), DomainError> {
        if self.spaces.len() > MAX_SPACES {
            return Err(DomainError::new("spaces", format!("name at most {MAX_SPACES} Spaces")));
        }
        if self.space_version.is_some() && self.spaces.len() != 1 {
            return Err(DomainError::new("space_version", "a Space version goes with exactly one Space"));
        }
        if let (Some(a), Some(b)) = (self.from, self.to)
            && a > b
        {
            return Err(DomainError::new("from", "from is after to"));
        }
        if self.min_margin.is_some_and(|m| !(m.is_finite() && (0.0..=2.0).contains(&m))) {
            return Err(DomainError::new("min_margin", "min_margin is a number in [0, 2]"));
        }
        for (field, v) in [("min_rating", self.min_rating), ("max_rating", self.max_rating)] {
            if v.is_some_and(|r| !r.is_finite()) {
                return Err(DomainError::new(field, format!("{field} is a number of rating points")));
            }
        }
        if let (Some(a), Some(b)) = (self.min_rating, self.max_rating)
            && a > b
        {
            return Err(DomainError::new("min_rating", "min_rating is above max_rating"));
        }
        for (field, v) in [("min_chars", self.min_chars), ("max_chars", self.max_chars)] {
            if v.is_some_and(|c| c < 0) {
                return Err(DomainError::new(field, format!("{field} is a count of characters, 0 or more")));
            }
        }
        if let (Some(a), Some(b)) = (self.min_chars, self.max_chars)
            && a > b
        {
            return Err(DomainError::new("min_chars", "min_chars is above max_chars"));
        }
        if self.languages.len() > MAX_LANGUAGES {
            return Err(DomainError::new("languages", format!("name at most {MAX_LANGUAGES} languages")));
        }
        if let Some(bad) = self.languages.iter().find(|l| !LANGUAGES.contains(&l.as_str())) {
            return Err(DomainError::new(
                "languages",
                format!("language {bad:?} is not one the detector names ({})", LANGUAGES.join(", ")),
            ));
        }
        Ok(())
    }

    /// Whether the filter keeps `pair`: the definition the SQL follows.
    pub fn keeps(&self, pair: &PairFacts) -> bool {
        let within = |v: f64, lo: Option<f64>, hi: Option<f64>| lo.is_none_or(|l| v >= l) && hi.is_none_or(|h| v <= h);
        let chars = |n: i32| self.min_chars.is_none_or(|l| n >= l) && self.max_chars.is_none_or(|h| n <= h);
        (self.spaces.is_empty() || self.spaces.contains(&pair.space))
            && self.space_version.is_none_or(|v| v == pair.space_version)
            && self.from.is_none_or(|f| pair.created_at >= f)
            && self.to.is_none_or(|t| pair.created_at <= t)
            && self.min_margin.is_none_or(|m| pair.margin >= m)
            && (!self.agreed_only || pair.consistent)
            && within(pair.chosen_rating, self.min_rating, self.max_rating)
            && within(pair.rejected_rating, self.min_rating, self.max_rating)
            && chars(pair.chosen_chars)
            && chars(pair.rejected_chars)
            && (self.languages.is_empty() || self.languages.contains(&pair.language))
            && (!self.dedupe || !pair.duplicate)
            && self.chosen_passed.is_none_or(|p| p == pair.chosen_passed)
            && self.rejected_passed.is_none_or(|p| p == pair.rejected_passed)
            && self.kind.is_none_or(|k| k == pair.kind)
            && self.label_source.is_none_or(|l| l == pair.label_source)
            && (!self.human_verified || pair.human_verified)
            && self.judge_agrees.is_none_or(|a| pair.judge_agrees == Some(a))
            && (self.include_overruled || !pair.overruled)
            && !pair.withdrawn
            && !(self.free_reads && pair.priced_human)
    }
}

/// Why settlement did not keep a pair a verdict proposed (`pair_drops`):
/// every pair sold is a real preference — one conditioning on both sides,
/// two different answers, a chosen answer with text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DropReason {
    /// A referee game's whole-game pair: the seats answered different
    /// views, so neither part is an answer to the other's prompt (the
    /// game's decision pairs, which compare answers to one view, are kept).
    DifferentViews,
    /// The chosen answer is empty.
    EmptyChosen,
    /// Both answers are the same text.
    IdenticalAnswers,
}

impl DropReason {
    pub const ALL: [DropReason; 3] =
        [DropReason::DifferentViews, DropReason::EmptyChosen, DropReason::IdenticalAnswers];

    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::DifferentViews => "different_views",
            DropReason::EmptyChosen => "empty_chosen",
            DropReason::IdenticalAnswers => "identical_answers",
        }
    }

    pub fn parse(text: &str) -> Option<DropReason> {
        DropReason::ALL.into_iter().find(|r| r.as_str() == text)
    }

    /// The reason in words, for the studio and the dataset card.
    pub fn describe(self) -> &'static str {
        match self {
            DropReason::DifferentViews => "whole-game pairs of seats that answered different views",
            DropReason::EmptyChosen => "the chosen answer was empty",
            DropReason::IdenticalAnswers => "the two answers were the same text",
        }
    }
}

/// What a filter looks at in one pair.
#[derive(Debug, Clone, PartialEq)]
pub struct PairFacts {
    pub space: String,
    pub space_version: i32,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub margin: f64,
    pub consistent: bool,
    pub chosen_rating: f64,
    pub rejected_rating: f64,
    pub chosen_chars: i32,
    pub rejected_chars: i32,
    pub language: String,
    pub duplicate: bool,
    pub chosen_passed: bool,
    pub rejected_passed: bool,
    pub kind: PairKind,
    pub label_source: LabelSource,
    pub human_verified: bool,
    pub judge_agrees: Option<bool>,
    pub overruled: bool,
    pub withdrawn: bool,
    /// A human pair of a Space that prices human pairs.
    pub priced_human: bool,
}

/// How a pair is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// TRL's standard preference format: `prompt`, `chosen`, `rejected` as text.
    #[default]
    Standard,
    /// TRL's conversational format: message lists (the system prompt first
    /// where the chosen agent had one).
    Conversational,
}

impl Format {
    pub fn parse(text: &str) -> Result<Format, DomainError> {
        match text {
            "standard" => Ok(Format::Standard),
            "conversational" => Ok(Format::Conversational),
            other => Err(DomainError::new(
                "format",
                format!("format {other:?} is not one of \"standard\", \"conversational\""),
            )),
        }
    }

    /// The pair's TRL fields in this format.
    pub fn fields(self, system: Option<&str>, prompt: &str, chosen: &str, rejected: &str) -> serde_json::Value {
        match self {
            Format::Standard => {
                serde_json::to_value(agent_runtime::train::pairs::PairRow::new(prompt, chosen, rejected))
                    .unwrap_or_default()
            }
            Format::Conversational => {
                let mut prompt_messages = Vec::new();
                if let Some(system) = system.filter(|s| !s.is_empty()) {
                    prompt_messages.push(serde_json::json!({"role": "system", "content": system}));
                }
                prompt_messages.push(serde_json::json!({"role": "user", "content": prompt}));
                serde_json::json!({
                    "prompt": prompt_messages,
                    "chosen": [{"role": "assistant", "content": chosen}],
                    "rejected": [{"role": "assistant", "content": rejected}],
                })
            }
        }
    }
}

/// Replaces e-mail addresses, URLs and phone numbers with `[email]`,
/// `[url]` and `[phone]`. A cheap scrub for export, not a guarantee: it
/// finds the common written forms.
pub fn scrub_pii(text: &str) -> String {
    use std::sync::LazyLock;
    static PATTERNS: LazyLock<Vec<(regex::Regex, &'static str)>> = LazyLock::new(|| {
        [
            (r"(?i)\b[a-z0-9._%+-]+@[a-z0-9.-]+\.[a-z]{2,}\b", "[email]"),
            (r"(?i)\b(?:https?://|www\.)[^\s<>()]+", "[url]"),
        ]
        .into_iter()
        .filter_map(|(p, r)| regex::Regex::new(p).ok().map(|re| (re, r)))
        .collect()
    });
    // Digit groups joined by spaces, dots or dashes, with an optional
    // country code and area code in brackets: a phone number when it has 7
    // to 15 digits and is not a date.
    static PHONE: LazyLock<Option<regex::Regex>> = LazyLock::new(|| {
        regex::Regex::new(r"(?:\+\d{1,3}[\s.-]?)?(?:\(\d{2,4}\)[\s.-]?)?\d{2,4}(?:[\s.-]\d{2,4}){1,4}\b").ok()
    });
    static DATE: LazyLock<Option<regex::Regex>> =
        LazyLock::new(|| regex::Regex::new(r"^\d{4}[-./]\d{1,2}[-./]\d{1,2}$").ok());
    let mut out = text.to_owned();
    for (re, with) in PATTERNS.iter() {
        out = re.replace_all(&out, *with).into_owned();
    }
    if let Some(phone) = PHONE.as_ref() {
        out = phone
            .replace_all(&out, |c: &regex::Captures<'_>| {
                let found = &c[0];
                let digits = found.bytes().filter(u8::is_ascii_digit).count();
                let date = DATE.as_ref().is_some_and(|d| d.is_match(found));
                if (7..=15).contains(&digits) && !date { "[phone]".to_owned() } else { found.to_owned() }
            })
            .into_owned();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scrub_finds_common_forms_and_leaves_the_rest() {
        let text = "Mail ada.l@example.co.uk or call +44 20 7946 0958 or (555) 123-4567; see https://x.example/a?b=1 \
                    and www.example.org. 2 + 3 = 5, the year 2024, version 1.2.3, on 2024-12-02, 12 34.";
        let s = scrub_pii(text);
        assert!(!s.contains("ada.l@") && !s.contains("7946") && !s.contains("123-4567"), "{s}");
        assert!(!s.contains("https://") && !s.contains("www."), "{s}");
        assert!(s.contains("2 + 3 = 5") && s.contains("2024-12-02") && s.contains("12 34"), "numbers survive: {s}");
        assert_eq!(s.matches("[email]").count(), 1, "{s}");
        assert_eq!(s.matches("[url]").count(), 2, "{s}");
        assert_eq!(s.matches("[phone]").count(), 2, "{s}");
        assert_eq!(scrub_pii("no personal data here"), "no personal data here");
    }

    #[test]
    fn drop_reasons_mirror_their_check_constraint() {
        let sql = include_str!("../../../migrations/20261207000001_paid_data_and_real_pairs.sql");
        let names: Vec<&str> = DropReason::ALL.iter().map(|r| r.as_str()).collect();
        assert!(sql.contains(&format!("reason in ('{}')", names.join("', '"))), "pair_drops.reason CHECK");
        for r in DropReason::ALL {
            assert_eq!(DropReason::parse(r.as_str()), Some(r));
        }
    }

    #[test]
    fn formats_are_trls() {
        let standard = Format::Standard.fields(Some("Be brief."), "Hi?", "Hello.", "Go away.");
        assert_eq!(standard, serde_json::json!({"prompt": "Hi?", "chosen": "Hello.", "rejected": "Go away."}));
        let chat = Format::Conversational.fields(Some("Be brief."), "Hi?", "Hello.", "Go away.");
        assert_eq!(chat["prompt"][0]["role"], "system");
        assert_eq!(chat["prompt"][1], serde_json::json!({"role": "user", "content": "Hi?"}));
        assert_eq!(chat["chosen"][0], serde_json::json!({"role": "assistant", "content": "Hello."}));
        assert_eq!(Format::Conversational.fields(None, "Hi?", "a", "b")["prompt"].as_array().map(Vec::len), Some(1));
        assert!(Format::parse("parquet").is_err());
    }

    #[test]
    fn size_categories_follow_the_hubs_bounds() {
        let cases = [(0, "n<1K"), (999, "n<1K"), (1_000, "1K<n<10K"), (99_999, "10K<n<100K"), (1_000_000, "1M<n<10M")];
        for (n, want) in cases {
            assert_eq!(size_category(n), want, "{n}");
        }
    }

    #[test]
    fn bad_filters_name_their_field() {
        let bad = |f: PairFilter, field: &str| assert_eq!(f.check().unwrap_err().field, field);
        bad(PairFilter { space_version: Some(2), ..Default::default() }, "space_version");
        bad(PairFilter { min_margin: Some(3.0), ..Default::default() }, "min_margin");
        bad(PairFilter { min_rating: Some(1200.0), max_rating: Some(900.0), ..Default::default() }, "min_rating");
        bad(PairFilter { min_chars: Some(-1), ..Default::default() }, "min_chars");
        bad(PairFilter { spaces: vec!["s".into(); 33], ..Default::default() }, "spaces");
        assert!(PairFilter::default().check().is_ok());
    }
}

/// What a card says of one Space's share of a dataset.
#[derive(Debug, Clone)]
pub struct CardPart {
    pub space: String,
    pub pairs: i64,
    /// Of them, decision pairs from games (one turn's view, two moves).
    pub decision_pairs: i64,
    pub versions: Vec<i32>,
    pub licenses: Vec<String>,
    pub judge_models: Vec<String>,
    pub judge_templates: Vec<String>,
    /// Trained judges' artifacts (sha256) that decided some of the pairs.
    pub judge_trained: Vec<String>,
    pub chain_seq: i64,
    pub chain_head: String,
    /// Pairs the Space's verdicts proposed that were not kept, by reason
    /// (`DropReason` names).
    pub dropped: Vec<(String, i64)>,
    /// Pairs by label source, and of the human pairs those where the AI
    /// judge agreed with people, of those where it was decisive.
    pub verifier_pairs: i64,
    pub judge_pairs: i64,
    pub human_pairs: i64,
    pub judge_agreed: i64,
    pub judge_decided: i64,
}

/// Hugging Face's size category for `n` rows.
pub fn size_category(n: i64) -> &'static str {
    match n {
        ..1_000 => "n<1K",
        1_000..10_000 => "1K<n<10K",
        10_000..100_000 => "10K<n<100K",
        100_000..1_000_000 => "100K<n<1M",
        1_000_000..10_000_000 => "1M<n<10M",
        _ => "10M<n<100M",
    }
}

/// A dataset card (`README.md` in Hugging Face's format: a YAML header,
/// then how the data was made) for the pairs `filter` selects, written as
/// `file` in `format`.
pub fn dataset_card(filter: &PairFilter, format: Format, file: &str, parts: &[CardPart]) -> String {
    use std::fmt::Write;
    let total: i64 = parts.iter().map(|p| p.pairs).sum();
    let mut licenses: Vec<&str> = parts.iter().flat_map(|p| p.licenses.iter().map(String::as_str)).collect();
    licenses.sort_unstable();
    licenses.dedup();
    // One licence goes in the header as is; several (or none) are "other",
    // named below.
    let header_license = match licenses.as_slice() {
        [one] => one.to_lowercase(),
        _ => "other".to_owned(),
    };
    let yaml_str = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned());
    let mut out = String::new();
    let _ = writeln!(out, "---");
    let _ = writeln!(out, "license: {}", yaml_str(&header_license));
    let _ = writeln!(out, "task_categories:\n- text-generation\ntags:\n- dpo\n- preference\n- rlhf\n- arena");
    let _ = writeln!(out, "size_categories:\n- {}", yaml_str(size_category(total)));
    let _ = writeln!(
        out,
        "configs:\n- config_name: default\n  data_files:\n  - split: train\n    path: {}",
        yaml_str(file)
    );
    let _ = writeln!(out, "---\n");
    let _ = writeln!(out, "# Arena preference pairs\n");
    let _ = writeln!(
        out,
        "{total} preference pairs from matches in which agents (a small open model with a LoRA adapter and a \
         system prompt) answered the same prompt and were ranked by the Space's checks and judge. Format: TRL's {} \
         preference format, {}, one pair per row with its provenance.\n",
        match format {
            Format::Standard => "standard (`prompt`, `chosen`, `rejected` as text)",
            Format::Conversational => "conversational (message lists)",
        },
        if file.ends_with(".parquet") {
            "Apache Parquet"
        } else if file.ends_with(".gz") {
            "JSON Lines, gzip-compressed"
        } else {
            "JSON Lines"
        }
    );
    let _ = writeln!(out, "## Licence\n");
    if licenses.is_empty() {
        let _ = writeln!(out, "The Spaces state no licence: ask their designers before use.\n");
    } else {
        let _ = writeln!(out, "{}\n", licenses.join(", "));
    }
    let _ = writeln!(out, "## How the data was made\n");
    let _ = writeln!(
        out,
        "| Space | pairs | of them game decisions | versions | judge model sha256 | judge template sha256 | trained judge sha256 | chain length | chain head |"
    );
    let _ = writeln!(out, "| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for p in parts {
        let list = |v: &[String]| if v.is_empty() { "none (checks only)".to_owned() } else { v.join(", ") };
        let versions: Vec<String> = p.versions.iter().map(|v| v.to_string()).collect();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | `{}` |",
            p.space,
            p.pairs,
            p.decision_pairs,
            versions.join(", "),
            list(&p.judge_models),
            list(&p.judge_templates),
            if p.judge_trained.is_empty() { "none".to_owned() } else { p.judge_trained.join(", ") },
            p.chain_seq,
            p.chain_head
        );
    }
    let _ = writeln!(
        out,
        "\nA pair is kept when the chosen answer's rank key (passing every hard check, then the weighted score) \
         beats the rejected one's by more than the Space's `pairs.min_margin`. A decision pair (`kind` \"decision\") \
         is one seat's view at one turn of a game and two answers to it: a legal move over an illegal attempt it \
         replaced, or the move whose game ended better over another game's move at the same view \
         (`chosen_match_id`, `rejected_match_id`). Each line names its match and that match's record hash; `arena verify-log SPACE` on the platform recomputes each Space's hash chain up to the \
         head above.\n"
    );
    let _ = writeln!(out, "## Who labelled the pairs\n");
    let _ = writeln!(
        out,
        "`label_source` says who decided each pair: `verifier` (a hard check, a referee, or scores with no AI \
         judge), `judge` (the Space's AI judge) or `human` (counted votes of people in anonymous battles; \
         `human_tier` is `human_verified` with 3 or more decisive votes and a posterior of at least 0.8, else \
         `human_raw`; `votes_chosen`, `votes_rejected`, `votes_tied`, `voter_reliability` and `judge_agrees` \
         are its provenance). Judge pairs people overruled are left out unless the filter keeps them.\n"
    );
    let _ = writeln!(out, "| Space | verifier | judge | human | judge–human agreement on the human pairs |");
    let _ = writeln!(out, "| --- | --- | --- | --- | --- |");
    for p in parts {
        let agreement = if p.judge_decided == 0 {
            "none decided by the judge".to_owned()
        } else {
            format!(
                "{:.1}% ({} of {})",
                100.0 * p.judge_agreed as f64 / p.judge_decided as f64,
                p.judge_agreed,
                p.judge_decided
            )
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {agreement} |",
            p.space, p.verifier_pairs, p.judge_pairs, p.human_pairs
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "## Data quality\n");
    let _ = writeln!(
        out,
        "Every pair is a real preference: both answers to one prompt (or one view of a game), different texts, a \
         chosen answer that is not empty. Pairs a Space's verdicts proposed and settlement dropped:\n"
    );
    let _ = writeln!(out, "| Space | reason | pairs dropped |");
    let _ = writeln!(out, "| --- | --- | --- |");
    for p in parts {
        if p.dropped.is_empty() {
            let _ = writeln!(out, "| {} | none | 0 |", p.space);
        }
        for (reason, n) in &p.dropped {
            let why: &str = match DropReason::parse(reason) {
                Some(r) => r.describe(),
                None => reason,
            };
            let _ = writeln!(out, "| {} | {why} | {n} |", p.space);
        }
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "## Filters applied\n");
    let _ = writeln!(out, "```json\n{}\n```\n", serde_json::to_string_pretty(filter).unwrap_or_default());
    let _ = writeln!(
        out,
        "## Known limitations\n\n- The answers come from small models; many pairs contrast two weak answers.\n- \
         Where an AI judge decided, it is a small model too: see each line's `judge` readings and `consistent`.\n- \
         The PII scrub, when applied, finds common e-mail, URL and phone forms only.\n- Pairs from one match share \
         a prompt; split by `match_id` to keep a match out of both train and test."
    );
    out
}

/// The codes `language` returns ("und": undetermined).
pub const LANGUAGES: &[&str] =
    &["en", "de", "fr", "es", "it", "pt", "nl", "ru", "el", "ar", "he", "hi", "zh", "ja", "ko", "th", "und"];

/// A cheap language detector: the dominant script decides outright for
/// scripts one language mostly owns (Cyrillic is reported as "ru", Han
/// without kana as "zh"); Latin text is scored by common function words
/// of seven languages, and needs two hits and a clear lead. Short or mixed
/// text is "und".
pub fn language(text: &str) -> &'static str {
    let mut scripts = [0usize; 10];
    let mut letters = 0usize;
    for c in text.chars().filter(|c| c.is_alphabetic()) {
        letters += 1;
        let slot = match c as u32 {
            0x0400..=0x04FF => 1,
            0x0370..=0x03FF => 2,
            0x0600..=0x06FF => 3,
            0x0590..=0x05FF => 4,
            0x0900..=0x097F => 5,
            0x3040..=0x30FF => 6,
            0x4E00..=0x9FFF => 7,
            0xAC00..=0xD7AF | 0x1100..=0x11FF => 8,
            0x0E00..=0x0E7F => 9,
            _ => 0,
        };
        scripts[slot] += 1;
    }
    if letters < 8 {
        return "und";
    }
    let (top, count) = scripts.iter().enumerate().max_by_key(|(_, n)| **n).unwrap_or((0, &0));
    if *count * 2 < letters {
        return "und";
    }
    match top {
        1 => return "ru",
        2 => return "el",
        3 => return "ar",
        4 => return "he",
        5 => return "hi",
        // Japanese mixes kana with Han: any real share of kana decides.
        6 => return "ja",
        7 if scripts[6] * 10 >= letters => return "ja",
        7 => return "zh",
        8 => return "ko",
        9 => return "th",
        _ => {}
    }
    const WORDS: &[(&str, &[&str])] = &[
        ("en", &["the", "is", "and", "of", "to", "what", "a", "in", "it", "you", "that", "are", "this", "with", "for"]),
        ("de", &["der", "die", "das", "und", "ist", "nicht", "ein", "eine", "zu", "ich", "mit", "was", "wie", "auf"]),
        ("fr", &["le", "la", "les", "est", "et", "un", "une", "des", "que", "pas", "je", "vous", "pour", "dans"]),
        ("es", &["el", "la", "los", "es", "y", "que", "un", "una", "por", "con", "para", "cómo", "qué", "del"]),
        ("it", &["il", "la", "che", "è", "e", "di", "un", "una", "per", "non", "sono", "come", "gli", "della"]),
        ("pt", &["o", "a", "que", "é", "e", "do", "da", "um", "uma", "não", "para", "com", "os", "como"]),
        ("nl", &["de", "het", "een", "en", "is", "van", "niet", "dat", "ik", "wat", "op", "met", "zijn", "voor"]),
    ];
    let words: Vec<String> =
        text.split(|c: char| !c.is_alphabetic()).filter(|w| !w.is_empty()).map(str::to_lowercase).collect();
    let mut scores: Vec<(usize, &'static str)> =
        WORDS.iter().map(|(code, list)| (words.iter().filter(|w| list.contains(&w.as_str())).count(), *code)).collect();
    scores.sort_by_key(|s| std::cmp::Reverse(s.0));
    let (best, code) = scores[0];
    let second = scores[1].0;
    if best >= 2 && best * 2 >= second * 3 { code } else { "und" }
}

/// MinHash values in a pair's signature.
pub const MINHASHES: usize = 32;
/// Signature rows per LSH band: 8 bands of 4.
const BAND_ROWS: usize = 4;
/// The estimated Jaccard similarity of two pairs' word-pair sets at which
/// they are near duplicates.
pub const NEAR_SIMILARITY: f64 = 0.7;

/// What a near-duplicate check compares: a pair's MinHash signature over
/// its features (lower-cased word pairs of the prompt and of each answer,
/// punctuation and spacing dropped, each field's kept apart so that
/// swapping chosen and rejected is another pair). Repeats up to case,
/// spacing and punctuation have equal signatures; a small edit of a long
/// text keeps most values.
pub fn minhash(prompt: &str, chosen: &str, rejected: &str) -> [u32; MINHASHES] {
    let mut features: Vec<u64> = Vec::new();
    for (tag, text) in [(1u64, prompt), (2, chosen), (3, rejected)] {
        let lower = text.to_lowercase();
        let words: Vec<&str> = lower.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).collect();
        if words.len() < 2 {
            features.push(fnv(words.concat().bytes(), tag));
        }
        features.extend(words.windows(2).map(|w| fnv(w[0].bytes().chain([b' ']).chain(w[1].bytes()), tag)));
    }
    std::array::from_fn(|i| {
        let seed = mix(0x9e37_79b9_7f4a_7c15 ^ i as u64);
        features.iter().map(|f| (mix(f ^ seed) >> 32) as u32).min().unwrap_or(u32::MAX)
    })
}

/// splitmix64's finaliser: every input bit reaches every output bit.
fn mix(mut h: u64) -> u64 {
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

fn fnv(bytes: impl Iterator<Item = u8>, seed: u64) -> u64 {
    bytes.fold(0xcbf2_9ce4_8422_2325 ^ seed, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

/// The estimated Jaccard similarity of two signatures' feature sets.
pub fn similarity(a: &[u32], b: &[u32]) -> f64 {
    let same = a.iter().zip(b).filter(|(x, y)| x == y).count();
    same as f64 / a.len().max(1) as f64
}

/// Whether two signatures are near duplicates.
pub fn near_duplicate(a: &[u32], b: &[u32]) -> bool {
    a.len() == b.len() && similarity(a, b) >= NEAR_SIMILARITY
}

/// A signature's locality-sensitive bands: pairs at similarity 0.7 share
/// at least one band with probability 0.9 (0.985 at 0.8), so an index on
/// the bands finds near duplicates without comparing every pair.
pub fn bands(sig: &[u32; MINHASHES]) -> [i32; MINHASHES / BAND_ROWS] {
    std::array::from_fn(|b| {
        let rows = &sig[b * BAND_ROWS..(b + 1) * BAND_ROWS];
        fnv(rows.iter().flat_map(|v| v.to_le_bytes()), b as u64) as i32
    })
}

/// What a Space charges for its pairs and how the money is shared
/// (`[data]` in the Space file).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct DataPrice {
    /// Credits per exported pair; 0 makes the data free.
    pub per_pair: i64,
    /// Share of the price to the Space's designer.
    pub designer_share: f64,
    /// Share to the owners of the two agents whose answers make each pair,
    /// half each. The rest goes to the house.
    pub players_share: f64,
}

impl Default for DataPrice {
    fn default() -> DataPrice {
        DataPrice { per_pair: 0, designer_share: 0.2, players_share: 0.6 }
    }
}

/// Credits per pair a Space may charge.
pub const MAX_PRICE_PER_PAIR: i64 = 1_000_000;

/// One Space's part of a sale: its price, how many pairs, who designed it,
/// and how many answers each owner has in those pairs (two per pair).
#[derive(Debug, Clone)]
pub struct SpaceSale<K> {
    pub price: DataPrice,
    pub pairs: i64,
    pub designer: K,
    pub answers: Vec<(K, i64)>,
}

/// What a sale moves: the buyer pays `total`; `credits` go to designers
/// and owners; the house keeps `house` (its cut and every rounding
/// remainder), so `credits + house == total` always.
#[derive(Debug, Clone, PartialEq)]
pub struct SaleSplit<K: Ord> {
    pub total: i64,
    pub credits: std::collections::BTreeMap<K, i64>,
    pub house: i64,
}

/// Splits a sale. Shares are read in parts per million and every amount
/// is rounded down.
pub fn split_sale<K: Ord + Clone>(parts: &[SpaceSale<K>]) -> SaleSplit<K> {
    let ppm = |share: f64| (share.clamp(0.0, 1.0) * 1e6).round() as i128;
    let mut credits = std::collections::BTreeMap::new();
    let mut total: i128 = 0;
    let mut paid: i128 = 0;
    for part in parts {
        let gross = part.price.per_pair.max(0) as i128 * part.pairs.max(0) as i128;
        total += gross;
        let designer = gross * ppm(part.price.designer_share) / 1_000_000;
        let players = gross * ppm(part.price.players_share) / 1_000_000;
        let (designer, players) = if designer + players > gross { (0, 0) } else { (designer, players) };
        let answers: i128 = part.answers.iter().map(|(_, n)| (*n).max(0) as i128).sum();
        let mut add = |k: &K, amount: i128| {
            if amount > 0 {
                *credits.entry(k.clone()).or_insert(0i64) += amount as i64;
                paid += amount;
            }
        };
        add(&part.designer, designer);
        if answers > 0 {
            for (owner, n) in &part.answers {
                add(owner, players * (*n).max(0) as i128 / answers);
            }
        }
    }
    SaleSplit { total: total as i64, credits, house: (total - paid) as i64 }
}

#[cfg(test)]
mod facts_tests {
    use super::*;

    const ANSWER: &str = "Photosynthesis is the process by which green plants, algae and some bacteria turn light \
        energy into chemical energy. Chlorophyll in the chloroplasts absorbs mostly red and blue light, and the \
        plant uses that energy to split water, releasing oxygen, and to fix carbon dioxide from the air into \
        sugars through the Calvin cycle. Those sugars feed the plant and, through food chains, nearly every other \
        living thing on Earth, which is why the process matters so much for life.";

    #[test]
    fn the_detector_names_common_languages_and_admits_doubt() {
        assert_eq!(language("What is the capital of France? It is Paris, and that is a fact."), "en");
        assert_eq!(language("Was ist die Hauptstadt von Frankreich? Das ist Paris und nicht Berlin."), "de");
        assert_eq!(language("Quelle est la capitale de la France ? C'est Paris, je pense, pas Lyon."), "fr");
        assert_eq!(language("¿Cuál es la capital de Francia? Es París, y no Madrid, por supuesto."), "es");
        assert_eq!(language("Какая столица Франции? Это Париж."), "ru");
        assert_eq!(language("フランスの首都はどこですか？パリです。"), "ja");
        assert_eq!(language("法国的首都是哪里？是巴黎。这个问题很简单。"), "zh");
        assert_eq!(language("42"), "und");
        assert_eq!(language("17 + 25 = 42; 3 * 4 = 12"), "und");
        assert!(LANGUAGES.contains(&language(ANSWER)));
    }

    #[test]
    fn near_duplicates_are_near_and_different_pairs_are_far() {
        let sig = |p: &str, c: &str, r: &str| minhash(p, c, r);
        let base = sig("Explain photosynthesis.", ANSWER, "I don't know.");
        // Case, spacing and punctuation do not matter at all.
        let loud = sig("EXPLAIN   photosynthesis!", &ANSWER.to_uppercase().replace(',', ""), "i don't know");
        assert_eq!(similarity(&base, &loud), 1.0);
        // A one-word edit of a long answer is near, and shares a band.
        let edited = sig("Explain photosynthesis.", &ANSWER.replace("mostly", "chiefly"), "I don't know.");
        assert!(near_duplicate(&base, &edited), "{}", similarity(&base, &edited));
        assert!(bands(&base).iter().zip(bands(&edited)).any(|(a, b)| *a == b));
        // Another answer, another prompt and answers, or the answers swapped is far.
        let far = [
            sig("Explain photosynthesis.", "Plants make food from sunlight.", "I don't know."),
            sig("Explain respiration.", "Cells burn sugar with oxygen to make energy.", "No idea at all, sorry."),
            sig("Explain photosynthesis.", "I don't know.", ANSWER),
        ];
        for other in far {
            assert!(!near_duplicate(&base, &other), "{}", similarity(&base, &other));
        }
        let (a, b) = (sig("What is 17 + 25?", "42", "41"), sig("What is 17 + 26?", "43", "41"));
        assert!(!near_duplicate(&a, &b), "{}", similarity(&a, &b));
        assert!(near_duplicate(&a, &sig("what is 17+25", "42", "41")));
    }

    #[test]
    fn a_sale_conserves_every_credit_and_pays_by_share() {
        let price = DataPrice { per_pair: 7, designer_share: 0.2, players_share: 0.6 };
        let sale = SpaceSale { price, pairs: 3, designer: "dana", answers: vec![("ada", 4), ("bob", 1), ("cy", 1)] };
        let split = split_sale(std::slice::from_ref(&sale));
        assert_eq!(split.total, 21);
        assert_eq!(split.credits["dana"], 4); // floor(21 × 0.2)
        assert_eq!(split.credits["ada"], 8); // floor(12 × 4 / 6)
        assert_eq!(split.credits["bob"], 2);
        assert_eq!(split.credits.values().sum::<i64>() + split.house, 21);
        // Random sales: conserved, never negative.
        let mut seed = 12345u64;
        let mut next = |m: u64| {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 33) % m
        };
        for _ in 0..500 {
            let parts: Vec<SpaceSale<u64>> = (0..1 + next(4))
                .map(|_| {
                    let d = next(101) as f64 / 100.0;
                    let p = next(101) as f64 / 100.0 * (1.0 - d);
                    SpaceSale {
                        price: DataPrice { per_pair: next(1000) as i64, designer_share: d, players_share: p },
                        pairs: next(10_000) as i64,
                        designer: next(5),
                        answers: (0..next(6)).map(|_| (next(8), next(500) as i64)).collect(),
                    }
                })
                .collect();
            let s = split_sale(&parts);
            let want: i64 = parts.iter().map(|p| p.price.per_pair * p.pairs).sum();
            assert_eq!(s.total, want);
            assert!(s.house >= 0 && s.credits.values().all(|c| *c > 0));
            assert_eq!(s.credits.values().sum::<i64>() + s.house, s.total);
        }
        let free =
            split_sale(&[SpaceSale { price: DataPrice::default(), pairs: 9, designer: 1, answers: vec![(2, 18)] }]);
        assert_eq!((free.total, free.house, free.credits.len()), (0, 0, 0));
    }
}
