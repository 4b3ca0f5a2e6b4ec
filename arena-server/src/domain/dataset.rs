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
}

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
            Format::Standard => serde_json::json!({ "prompt": prompt, "chosen": chosen, "rejected": rejected }),
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
    pub versions: Vec<i32>,
    pub licenses: Vec<String>,
    pub judge_models: Vec<String>,
    pub judge_templates: Vec<String>,
    pub chain_seq: i64,
    pub chain_head: String,
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
         preference format, JSON Lines, one pair per line with its provenance.\n",
        match format {
            Format::Standard => "standard (`prompt`, `chosen`, `rejected` as text)",
            Format::Conversational => "conversational (message lists)",
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
        "| Space | pairs | versions | judge model sha256 | judge template sha256 | chain length | chain head |"
    );
    let _ = writeln!(out, "| --- | --- | --- | --- | --- | --- | --- |");
    for p in parts {
        let list = |v: &[String]| if v.is_empty() { "none (checks only)".to_owned() } else { v.join(", ") };
        let versions: Vec<String> = p.versions.iter().map(|v| v.to_string()).collect();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | `{}` |",
            p.space,
            p.pairs,
            versions.join(", "),
            list(&p.judge_models),
            list(&p.judge_templates),
            p.chain_seq,
            p.chain_head
        );
    }
    let _ = writeln!(
        out,
        "\nA pair is kept when the chosen answer's rank key (passing every hard check, then the weighted score) \
         beats the rejected one's by more than the Space's `pairs.min_margin`. Each line names its match and that \
         match's record hash; `arena verify-log SPACE` on the platform recomputes each Space's hash chain up to the \
         head above.\n"
    );
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
