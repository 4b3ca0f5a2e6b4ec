//! Space files: the whole TOML format (the arena's keys here, the judge's
//! `[[verifiers]]` / `[judge]` / `[pairs]` checked by the `judge` crate).
//! The prompt file and schemas a Space names are read from the folder the
//! caller passes (the store unpacks a version's stored files there).
//!
//! Parsing collects every error with its span, so a designer sees all of
//! them at once as `FILE:LINE:COL: message`.

use super::dataset::{DataPrice, MAX_PRICE_PER_PAIR};
pub use super::prompts::{MAX_PROMPT_CHARS, MAX_PROMPTS, MAX_PROMPTS_BYTES, MAX_TIER, PromptItem};
use super::prompts::{PromptsFile, load_prompts};
use judge::files::SpaceFiles;
use judge::spec::{JudgeSpec, PairsSpec, SpecError, VerifierSpec, int_in};
use judge::{JudgeConfig, spec::JudgeSections};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SpaceFile {
    name: Spanned<String>,
    description: Option<String>,
    agents_per_match: Option<Spanned<i64>>,
    max_new_tokens: Option<Spanned<i64>>,
    entry_fee: Option<Spanned<i64>>,
    prompts: Option<Spanned<PromptsFile>>,
    payout: Option<Spanned<PayoutFile>>,
    matchmaking: Option<Spanned<MatchmakingFile>>,
    #[serde(default)]
    verifiers: Vec<Spanned<VerifierSpec>>,
    judge: Option<Spanned<JudgeSpec>>,
    pairs: Option<Spanned<PairsSpec>>,
    training: Option<Spanned<TrainingFile>>,
    data: Option<Spanned<DataFile>>,
    votes: Option<Spanned<VotesFile>>,
    turns: Option<Spanned<super::turns::TurnsFile>>,
    referee: Option<Spanned<super::turns::RefereeFile>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DataFile {
    price_per_pair: Option<Spanned<i64>>,
    designer_share: Option<Spanned<f64>>,
    players_share: Option<Spanned<f64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VotesFile {
    open: Option<bool>,
    criterion: Option<Spanned<String>>,
    designer_votes: Option<bool>,
    price_per_pair: Option<Spanned<i64>>,
}

/// Whether people vote on the Space's matches, on what, and what human
/// pairs cost (`[votes]`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Votes {
    pub open: bool,
    /// The question a battle card asks ("Which answer explains better?").
    pub criterion: String,
    /// Whether the Space's designer may vote on its matches.
    pub designer_votes: bool,
    /// Credits per human pair; None: the Space's data price.
    pub price_per_pair: Option<i64>,
}

/// The longest voting criterion.
pub const MAX_CRITERION_CHARS: usize = 200;
/// The criterion a Space that opens voting without one shows.
pub const DEFAULT_CRITERION: &str = "Which answer is better?";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrainingFile {
    holdout: Option<Spanned<f64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PayoutFile {
    shares: Spanned<Vec<f64>>,
    house_cut: Option<Spanned<f64>>,
    sponsor_pool: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MatchmakingFile {
    rating_window: Option<Spanned<f64>>,
    max_concurrent_matches: Option<Spanned<i64>>,
}

/// How the pot is paid out.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Payout {
    /// Share of the pot (after the house cut) by rank; sums to 1.
    pub shares: Vec<f64>,
    /// Share of the pot kept by the house, in [0, 0.5].
    pub house_cut: f64,
    /// Credits the Space adds to each match's pot.
    pub sponsor_pool: i64,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Matchmaking {
    /// Largest rating gap (in rating points) between agents of one match.
    pub rating_window: f64,
    pub max_concurrent_matches: u32,
}

/// What the Space keeps for training.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Training {
    /// Share of the prompts held out of matches, for promotion gates:
    /// a trained version plays its parent on these, never on prompts it
    /// may have trained on.
    pub holdout: f64,
}

/// The default share of held-out prompts.
pub const DEFAULT_HOLDOUT: f64 = 0.1;

/// Who may read a Space's match outputs, verdicts and pairs (`[pairs]
/// visibility`). Ranks, ratings and payouts are public either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Visibility {
    /// Anyone, signed in or not.
    #[default]
    Public,
    /// The match's players, the Space's designer, buyers and admins.
    Private,
}

impl Visibility {
    pub fn parse(text: &str) -> Option<Visibility> {
        match text {
            "public" => Some(Visibility::Public),
            "private" => Some(Visibility::Private),
            _ => None,
        }
    }
}

/// A checked Space.
#[derive(Debug, Clone)]
pub struct Space {
    pub name: String,
    pub description: String,
    pub agents_per_match: u32,
    pub max_new_tokens: u32,
    pub entry_fee: i64,
    pub prompts: Vec<PromptItem>,
    pub payout: Payout,
    pub matchmaking: Matchmaking,
    pub judge: JudgeConfig,
    pub license: Option<String>,
    pub visibility: Visibility,
    /// What buyers pay for the Space's pairs and who is paid (`[data]`).
    pub data: DataPrice,
    /// Battles and votes (`[votes]`).
    pub votes: Votes,
    pub training: Training,
    /// Indices of the prompts held out for promotion gates (see
    /// [`held_out`]); matches never use them.
    pub held_out: Vec<usize>,
    /// Indices of the prompts matches draw from: all the others.
    pub match_prompts: Vec<usize>,
    /// The file's text, kept so a version can be stored and hashed as written.
    pub source: String,
    /// A multi-turn Space's referee (`[turns]` and `[referee]`): matches
    /// are played turn by turn and the referee's outcome ranks the seats.
    /// `None` for a one-answer Space.
    pub game: Option<referee::Referee>,
}

fn is_slug(name: &str) -> bool {
    (2..=40).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

impl Space {
    /// Checks a Space file's text. The files it names (prompt file,
    /// schemas) are looked up in `files`, never read from a path; a
    /// relative `judge.model` resolves against `model_base`.
    pub fn parse(text: &str, files: &SpaceFiles, model_base: &Path) -> Result<Space, Vec<SpecError>> {
        let file: SpaceFile = toml::from_str(text)
            .map_err(|e| vec![SpecError::new(e.span().unwrap_or(0..0), e.message().trim().to_owned())])?;
        let mut errors = Vec::new();
        if !is_slug(file.name.get_ref()) {
            errors.push(SpecError::new(
                file.name.span(),
                format!("name {:?} must be 2-40 characters of a-z, 0-9 and inner -", file.name.get_ref()),
            ));
        }
        let agents_per_match = int_in(&file.agents_per_match, "agents_per_match", 2, 8, 2, &mut errors) as u32;
        let max_new_tokens = int_in(&file.max_new_tokens, "max_new_tokens", 1, 2048, 128, &mut errors) as u32;
        let entry_fee = int_in(&file.entry_fee, "entry_fee", 0, 1_000_000, 0, &mut errors);

        let prompts = match &file.prompts {
            None => {
                errors.push(SpecError::new(0..0, "missing [prompts]: give `inline`, `file` or `template`"));
                Vec::new()
            }
            Some(p) => load_prompts(p, files, &mut errors),
        };

        let payout = match &file.payout {
            None => Payout { shares: vec![1.0], house_cut: 0.0, sponsor_pool: 0 },
            Some(p) => {
                let s = p.get_ref();
                let shares = s.shares.get_ref().clone();
                let sum: f64 = shares.iter().sum();
                if shares.is_empty() || shares.len() > agents_per_match as usize {
                    errors.push(SpecError::new(
                        s.shares.span(),
                        format!(
                            "payout.shares has {} entries; give 1..={agents_per_match} (one per paid rank)",
                            shares.len()
                        ),
                    ));
                } else if shares.iter().any(|x| !x.is_finite() || *x < 0.0) {
                    errors.push(SpecError::new(s.shares.span(), "payout.shares must be non-negative numbers"));
                } else if (sum - 1.0).abs() > 1e-9 {
                    errors.push(SpecError::new(
                        s.shares.span(),
                        format!("payout.shares sum to {}, not 1", (sum * 1e6).round() / 1e6),
                    ));
                } else if shares.windows(2).any(|w| w[0] < w[1]) {
                    errors.push(SpecError::new(s.shares.span(), "payout.shares must not increase with rank"));
                }
                let house_cut = match &s.house_cut {
                    None => 0.0,
                    Some(h) if h.get_ref().is_finite() && (0.0..=0.5).contains(h.get_ref()) => *h.get_ref(),
                    Some(h) => {
                        errors.push(SpecError::new(
                            h.span(),
                            format!("payout.house_cut {} is outside 0..=0.5", h.get_ref()),
                        ));
                        0.0
                    }
                };
                let sponsor_pool = int_in(&s.sponsor_pool, "payout.sponsor_pool", 0, 1_000_000, 0, &mut errors);
                Payout { shares, house_cut, sponsor_pool }
            }
        };

        let matchmaking = match &file.matchmaking {
            None => Matchmaking { rating_window: 400.0, max_concurrent_matches: 4 },
            Some(m) => {
                let m = m.get_ref();
                let rating_window = match &m.rating_window {
                    None => 400.0,
                    Some(w) if w.get_ref().is_finite() && *w.get_ref() > 0.0 => *w.get_ref(),
                    Some(w) => {
                        errors.push(SpecError::new(
                            w.span(),
                            format!("matchmaking.rating_window {} must be > 0", w.get_ref()),
                        ));
                        400.0
                    }
                };
                let max_concurrent_matches =
                    int_in(&m.max_concurrent_matches, "matchmaking.max_concurrent_matches", 1, 1000, 4, &mut errors)
                        as u32;
                Matchmaking { rating_window, max_concurrent_matches }
            }
        };

        let mut data = DataPrice::default();
        if let Some(d) = &file.data {
            let d = d.get_ref();
            if let Some(p) = &d.price_per_pair {
                if (0..=MAX_PRICE_PER_PAIR).contains(p.get_ref()) {
                    data.per_pair = *p.get_ref();
                } else {
                    errors.push(SpecError::new(
                        p.span(),
                        format!("data.price_per_pair {} is outside 0..={MAX_PRICE_PER_PAIR}", p.get_ref()),
                    ));
                }
            }
            for (name, field, slot) in [
                ("designer_share", &d.designer_share, &mut data.designer_share),
                ("players_share", &d.players_share, &mut data.players_share),
            ] {
                if let Some(v) = field {
                    if v.get_ref().is_finite() && (0.0..=1.0).contains(v.get_ref()) {
                        *slot = *v.get_ref();
                    } else {
                        errors.push(SpecError::new(v.span(), format!("data.{name} {} is outside 0..=1", v.get_ref())));
                    }
                }
            }
            if data.designer_share + data.players_share > 1.0 + 1e-9 {
                let span = d.players_share.as_ref().or(d.designer_share.as_ref()).map(|v| v.span()).unwrap_or(0..0);
                errors.push(SpecError::new(
                    span,
                    format!(
                        "data.designer_share + data.players_share is {}, more than 1 (the house keeps the rest)",
                        data.designer_share + data.players_share
                    ),
                ));
            }
        }

        let mut votes = Votes::default();
        if let Some(v) = &file.votes {
            let v = v.get_ref();
            votes.open = v.open.unwrap_or(true);
            votes.designer_votes = v.designer_votes.unwrap_or(false);
            votes.criterion = DEFAULT_CRITERION.to_owned();
            if let Some(c) = &v.criterion {
                let text = c.get_ref().trim();
                if text.is_empty() || text.chars().count() > MAX_CRITERION_CHARS || text.chars().any(char::is_control) {
                    errors.push(SpecError::new(
                        c.span(),
                        format!("votes.criterion is one line of 1 to {MAX_CRITERION_CHARS} characters"),
                    ));
                } else {
                    votes.criterion = text.to_owned();
                }
            }
            if let Some(p) = &v.price_per_pair {
                if (0..=MAX_PRICE_PER_PAIR).contains(p.get_ref()) {
                    votes.price_per_pair = Some(*p.get_ref());
                } else {
                    errors.push(SpecError::new(
                        p.span(),
                        format!("votes.price_per_pair {} is outside 0..={MAX_PRICE_PER_PAIR}", p.get_ref()),
                    ));
                }
            }
        }

        let training = match &file.training {
            None => Training { holdout: DEFAULT_HOLDOUT },
            Some(t) => match &t.get_ref().holdout {
                None => Training { holdout: DEFAULT_HOLDOUT },
                Some(h) if h.get_ref().is_finite() && (0.0..=0.5).contains(h.get_ref()) => {
                    Training { holdout: *h.get_ref() }
                }
                Some(h) => {
                    errors
                        .push(SpecError::new(h.span(), format!("training.holdout {} is outside 0..=0.5", h.get_ref())));
                    Training { holdout: DEFAULT_HOLDOUT }
                }
            },
        };
        let held = held_out(&prompts, training.holdout);
        let match_prompts: Vec<usize> = (0..prompts.len()).filter(|i| !held.contains(i)).collect();

        let game = super::turns::check(
            file.turns.as_ref(),
            file.referee.as_ref(),
            agents_per_match,
            max_new_tokens,
            files,
            &prompts,
            &mut errors,
        );
        let sections = JudgeSections {
            verifiers: file.verifiers,
            judge: file.judge,
            pairs: file.pairs,
            ranked_by_referee: game.as_ref().is_some_and(|g| g.turns.on_limit == referee::OnLimit::Rules),
        };
        let license = sections.pairs.as_ref().and_then(|p| p.get_ref().license.clone());
        let visibility = match sections.pairs.as_ref().and_then(|p| p.get_ref().visibility.as_ref()) {
            None => Visibility::Public,
            Some(v) => Visibility::parse(v.get_ref()).unwrap_or_else(|| {
                errors.push(SpecError::new(
                    v.span(),
                    format!("pairs.visibility {:?} is not one of \"public\", \"private\"", v.get_ref()),
                ));
                Visibility::Public
            }),
        };
        let judge = match JudgeConfig::from_sections(&sections, files, model_base) {
            Ok(j) => Some(j),
            Err(mut e) => {
                errors.append(&mut e);
                None
            }
        };
        if votes.open && (visibility != Visibility::Public || data.per_pair > 0) {
            errors.push(SpecError::new(
                file.votes.as_ref().map(|v| v.span()).unwrap_or(0..0),
                "votes are open only in a public Space whose pairs are free (data.price_per_pair = 0): a battle shows \
                 its answers to anyone signed in (price the human pairs with votes.price_per_pair)",
            ));
        }
        match judge {
            Some(judge) if errors.is_empty() => Ok(Space {
                name: file.name.into_inner(),
                description: file.description.unwrap_or_default(),
                agents_per_match,
                max_new_tokens,
                entry_fee,
                prompts,
                payout,
                matchmaking,
                judge,
                license,
                visibility,
                data,
                votes,
                training,
                held_out: held,
                match_prompts,
                source: text.to_owned(),
                game,
            }),
            _ => {
                errors.sort_by_key(|e| e.span.start);
                Err(errors)
            }
        }
    }
}

/// The prompts held out of matches: `round(n × share)` of them, those
/// whose text hashes lowest, so the choice is stable when prompts are added
/// or reordered and anyone can recompute it. Sorted by index.
pub fn held_out(prompts: &[PromptItem], share: f64) -> Vec<usize> {
    use sha2::{Digest, Sha256};
    let k = (prompts.len() as f64 * share).round() as usize;
    // At least one prompt stays for matches.
    let k = k.min(prompts.len().saturating_sub(1));
    let mut keyed: Vec<([u8; 32], usize)> =
        prompts.iter().enumerate().map(|(i, p)| (Sha256::digest(p.prompt.as_bytes()).into(), i)).collect();
    keyed.sort();
    let mut picked: Vec<usize> = keyed[..k].iter().map(|(_, i)| *i).collect();
    picked.sort_unstable();
    picked
}

/// One error of a draft, placed.
pub struct Problem {
    pub line: usize,
    pub column: usize,
    pub message: String,
    /// The line's text.
    pub text: String,
}

/// A draft checked: its problems, or what its rules mean in words.
pub struct Checked {
    pub problems: Vec<Problem>,
    pub rules: Option<RulesInWords>,
    pub name: String,
}

/// Parses a draft against `files`; every error with its line and column.
pub fn check_draft(source: &str, files: &BTreeMap<String, String>) -> Checked {
    let placed = |start: usize, message: String| {
        let start = start.min(source.len());
        let before = &source[..start];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        let text = source.lines().nth(line - 1).unwrap_or_default().to_owned();
        Problem { line, column, message, text }
    };
    if source.len() > judge::files::MAX_SOURCE_BYTES {
        return Checked {
            problems: vec![placed(0, format!("the Space file exceeds {} bytes", judge::files::MAX_SOURCE_BYTES))],
            rules: None,
            name: String::new(),
        };
    }
    match Space::parse(source, files, Path::new(".")) {
        Ok(space) => Checked { problems: Vec::new(), rules: Some(space.rules_in_words()), name: space.name },
        Err(errors) => Checked {
            problems: errors.into_iter().map(|e| placed(e.span.start, e.message)).collect(),
            rules: None,
            name: String::new(),
        },
    }
}

/// The files a version added, removed or changed against the one before:
/// part of the terms players agree to, as the Space file is.
pub fn file_changes(before: &BTreeMap<String, String>, now: &BTreeMap<String, String>) -> Vec<String> {
    let mut out = Vec::new();
    for (name, text) in now {
        match before.get(name) {
            None => out.push(format!("file {name} added")),
            Some(old) if old != text => out.push(format!("file {name} changed")),
            _ => {}
        }
    }
    out.extend(before.keys().filter(|n| !now.contains_key(*n)).map(|n| format!("file {n} removed")));
    out
}

/// What changed between two versions that players pay or win by: the
/// fee, the payout, the match size, the hard checks. Empty: nothing.
pub fn money_changes(a: &Space, b: &Space) -> Vec<String> {
    let mut out = Vec::new();
    if a.entry_fee != b.entry_fee {
        out.push(format!("entry fee {} → {}", a.entry_fee, b.entry_fee));
    }
    if a.payout != b.payout {
        out.push("payout".to_owned());
    }
    if a.agents_per_match != b.agents_per_match {
        out.push(format!("agents per match {} → {}", a.agents_per_match, b.agents_per_match));
    }
    let hard = |s: &Space| -> Vec<String> {
        s.judge.verifiers.iter().filter(|v| v.hard).map(|v| format!("{} ({})", v.name, v.kind_name())).collect()
    };
    if hard(a) != hard(b) {
        out.push("hard checks".to_owned());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "arith"
agents_per_match = 4
entry_fee = 10

[prompts]
template = "What is {a} + {b}?"
variables = { a = ["1", "2"], b = ["3", "4", "5"] }

[payout]
shares = [0.6, 0.3, 0.1]
house_cut = 0.05

[[verifiers]]
kind = "length"
max = 10
"#;

    fn errors(text: &str) -> Vec<(usize, String)> {
        match Space::parse(text, &SpaceFiles::new(), Path::new(".")) {
            Ok(_) => Vec::new(),
            Err(errs) => errs.iter().map(|e| (e.line_col(text).0, e.message.clone())).collect(),
        }
    }

    #[test]
    fn a_template_expands_every_combination() {
        let space = Space::parse(GOOD, &SpaceFiles::new(), Path::new(".")).unwrap();
        assert_eq!(space.prompts.len(), 6);
        assert_eq!(space.prompts[0].prompt, "What is 1 + 3?");
        assert_eq!(space.prompts[5].prompt, "What is 2 + 5?");
        assert_eq!(space.payout.shares, vec![0.6, 0.3, 0.1]);
    }

    #[test]
    fn shares_must_sum_to_one_and_fit_the_match() {
        let bad = GOOD.replace("[0.6, 0.3, 0.1]", "[0.6, 0.3]");
        let errs = errors(&bad);
        assert!(errs.iter().any(|(l, m)| *l == 11 && m.contains("sum to 0.9")), "{errs:?}");
        let bad = GOOD.replace("[0.6, 0.3, 0.1]", "[0.2, 0.2, 0.2, 0.2, 0.2]");
        assert!(errors(&bad).iter().any(|(_, m)| m.contains("give 1..=4")));
    }

    #[test]
    fn every_error_is_named_with_its_line() {
        let bad = GOOD
            .replace("name = \"arith\"", "name = \"Arith Space\"")
            .replace("agents_per_match = 4", "agents_per_match = 9")
            .replace("max = 10", "max = 10\npattern = \"(\"")
            .replace("{a} + {b}", "{a} + {c}");
        let errs = errors(&bad);
        let lines: Vec<usize> = errs.iter().map(|e| e.0).collect();
        for line in [2, 3, 7, 17] {
            assert!(lines.contains(&line), "no error on line {line}: {errs:?}");
        }
    }

    #[test]
    fn votes_open_in_public_free_spaces_with_a_criterion() {
        let open = format!("{GOOD}\n[votes]\ncriterion = \"Which sum is right?\"\nprice_per_pair = 3\n");
        let space = Space::parse(&open, &SpaceFiles::new(), Path::new(".")).unwrap();
        assert_eq!(
            space.votes,
            Votes {
                open: true,
                criterion: "Which sum is right?".into(),
                designer_votes: false,
                price_per_pair: Some(3)
            }
        );
        let default = Space::parse(&format!("{GOOD}\n[votes]\n"), &SpaceFiles::new(), Path::new(".")).unwrap();
        assert_eq!(default.votes.criterion, DEFAULT_CRITERION);
        assert!(!Space::parse(GOOD, &SpaceFiles::new(), Path::new(".")).unwrap().votes.open, "closed by default");
        // Sold or private answers are not shown to voters.
        let sold = format!("{GOOD}\n[data]\nprice_per_pair = 2\n\n[votes]\n");
        assert!(errors(&sold).iter().any(|(_, m)| m.contains("votes are open only in a public Space")));
        let long = format!("{GOOD}\n[votes]\ncriterion = \"{}\"\n", "x".repeat(201));
        assert!(errors(&long).iter().any(|(_, m)| m.contains("votes.criterion")));
        let closed = format!("{GOOD}\n[data]\nprice_per_pair = 2\n\n[votes]\nopen = false\n");
        assert!(!Space::parse(&closed, &SpaceFiles::new(), Path::new(".")).unwrap().votes.open);
    }

    #[test]
    fn a_missing_prompt_file_is_an_error() {
        let bad = GOOD.replace(
            "template = \"What is {a} + {b}?\"\nvariables = { a = [\"1\", \"2\"], b = [\"3\", \"4\", \"5\"] }",
            "file = \"no-such-file.jsonl\"",
        );
        let errs = errors(&bad);
        assert!(errs.iter().any(|(l, m)| *l == 7 && m.contains("no-such-file.jsonl")), "{errs:?}");
    }

    #[test]
    fn a_space_reads_no_path_only_its_files() {
        let with_file = |name: &str| {
            GOOD.replace(
                "template = \"What is {a} + {b}?\"\nvariables = { a = [\"1\", \"2\"], b = [\"3\", \"4\", \"5\"] }",
                &format!("file = {name:?}"),
            )
        };
        for name in ["/etc/shadow", "../../etc/passwd", "/dev/zero"] {
            let errs = errors(&with_file(name));
            assert!(errs.iter().any(|(l, m)| *l == 7 && m.contains("must be a relative path")), "{name}: {errs:?}");
        }
        // A name the files do not hold is an error that reveals nothing of the disk.
        let errs = errors(&with_file("prompts/p.jsonl"));
        assert!(errs.iter().any(|(_, m)| m.contains("is not among the Space's files")), "{errs:?}");
        let files = SpaceFiles::from([("prompts/p.jsonl".to_owned(), "{\"prompt\": \"hi\"}\n".to_owned())]);
        let space = Space::parse(&with_file("prompts/p.jsonl"), &files, Path::new(".")).unwrap();
        assert_eq!(space.prompts[0].prompt, "hi");
    }

    #[test]
    fn prompts_carry_difficulty_tiers_from_a_file_or_a_template() {
        let vars = "variables = { a = [\"1\", \"2\"], b = [\"3\", \"4\", \"5\"] }";
        let tiered = GOOD.replace(vars, &format!("{vars}\ntiers = {{ b = [0, 2, 1] }}"));
        let space = Space::parse(&tiered, &SpaceFiles::new(), Path::new(".")).unwrap();
        let tiers: Vec<u32> = space.prompts.iter().map(|p| p.tier).collect();
        // b varies fastest: 3, 4, 5 for a = 1, then for a = 2.
        assert_eq!(tiers, vec![0, 2, 1, 0, 2, 1]);
        assert!(Space::parse(GOOD, &SpaceFiles::new(), Path::new(".")).unwrap().prompts.iter().all(|p| p.tier == 0));
        // Bad tiers name the line and what is wrong.
        for (bad, needle) in [
            ("tiers = { b = [0, 1] }", "2 tiers for the variable's 3 values"),
            ("tiers = { c = [0] }", "not a variable of the template"),
            ("tiers = { b = [0, 1, 99] }", "above the highest"),
        ] {
            let errs = errors(&GOOD.replace(vars, &format!("{vars}\n{bad}")));
            // Line 9: the `tiers` line itself.
            assert!(errs.iter().any(|(l, m)| *l == 9 && m.contains(needle)), "{bad}: {errs:?}");
        }
        let file = GOOD.replace(&format!("template = \"What is {{a}} + {{b}}?\"\n{vars}"), "file = \"p.jsonl\"");
        let files = SpaceFiles::from([(
            "p.jsonl".to_owned(),
            "{\"prompt\": \"easy\"}\n{\"prompt\": \"hard\", \"tier\": 3}\n".to_owned(),
        )]);
        let space = Space::parse(&file, &files, Path::new(".")).unwrap();
        assert_eq!(space.prompts.iter().map(|p| p.tier).collect::<Vec<_>>(), vec![0, 3]);
        let files = SpaceFiles::from([("p.jsonl".to_owned(), "{\"prompt\": \"x\", \"tier\": 16}\n".to_owned())]);
        let errs = match Space::parse(&file, &files, Path::new(".")) {
            Ok(_) => Vec::new(),
            Err(errs) => errs.iter().map(|e| e.message.clone()).collect(),
        };
        assert!(errs.iter().any(|m| m.contains("p.jsonl:1: tier 16")), "{errs:?}");
    }

    #[test]
    fn a_template_is_bounded_before_it_is_built() {
        let many: Vec<String> = (0..1000).map(|i| i.to_string()).collect();
        let huge = GOOD.replace(
            "variables = { a = [\"1\", \"2\"], b = [\"3\", \"4\", \"5\"] }",
            &format!("variables = {{ a = {many:?}, b = {many:?} }}"),
        );
        let errs = errors(&huge);
        assert!(errs.iter().any(|(_, m)| m.contains("more than 100000 prompts")), "{errs:?}");
        // Twenty variables of 10 values overflow a 64-bit product.
        let names: Vec<String> = (0..20).map(|i| format!("v{i}")).collect();
        let template: String = names.iter().map(|n| format!("{{{n}}}")).collect();
        let vars: Vec<String> = names.iter().map(|n| format!("{n} = {:?}", &many[..10])).collect();
        let overflow = GOOD
            .replace("What is {a} + {b}?", &template)
            .replace("{ a = [\"1\", \"2\"], b = [\"3\", \"4\", \"5\"] }", &format!("{{ {} }}", vars.join(", ")));
        assert!(errors(&overflow).iter().any(|(_, m)| m.contains("more than 100000 prompts")));
        // A long value makes a prompt over the limit: refused at the first.
        let long = GOOD.replace("a = [\"1\", \"2\"]", &format!("a = [\"1\", {:?}]", "x".repeat(9000)));
        let errs = errors(&long);
        assert!(errs.iter().any(|(_, m)| m.contains("prompt 4 of the template is 9013 characters")), "{errs:?}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let errs = errors(&format!("{GOOD}\ncolour = \"blue\"\n"));
        assert!(errs[0].1.contains("colour"), "{errs:?}");
    }
}

/// A Space's rules told in words, for players deciding whether to enter
/// (and designers checking what their file means).
#[derive(Debug, Clone, serde::Serialize)]
pub struct RulesInWords {
    pub prompts: String,
    pub meeting: String,
    pub money: String,
    pub checks: Vec<String>,
    pub judge: String,
    pub data: String,
}

fn share_list(shares: &[f64]) -> String {
    let places = ["1st", "2nd", "3rd", "4th", "5th", "6th", "7th", "8th"];
    shares
        .iter()
        .zip(places)
        .map(|(s, p)| format!("{p} {}%", (s * 1000.0).round() / 10.0))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Space {
    /// The Space's referee when it decides the games itself (two seats,
    /// the rules' outcome at the limit): such a Space trains and gates by
    /// play, its DPO pairs its parent's own decisions from self-play.
    pub fn self_play_game(&self) -> Option<&referee::Referee> {
        self.game.as_ref().filter(|g| g.seats == 2 && g.turns.on_limit == referee::OnLimit::Rules)
    }
}

impl Space {
    pub fn rules_in_words(&self) -> RulesInWords {
        use judge::spec::JudgeMode;
        let references = self.prompts.iter().filter(|p| p.reference.is_some()).count();
        let prompts = format!(
            "{} prompts ({} with a reference answer); {} held out to test trained versions, matches draw from the \
             other {}",
            self.prompts.len(),
            references,
            self.held_out.len(),
            self.match_prompts.len()
        );
        let meeting = format!(
            "{} agents of different owners meet in each match and answer the same prompt in at most {} tokens; \
             agents are paired within {:.0} rating points, at most {} matches at once",
            self.agents_per_match,
            self.max_new_tokens,
            self.matchmaking.rating_window,
            self.matchmaking.max_concurrent_matches
        );
        let pot = self.entry_fee * self.agents_per_match as i64 + self.payout.sponsor_pool;
        let money = if pot == 0 {
            "Free to enter; nothing is paid out.".to_owned()
        } else {
            format!(
                "Entry costs {} credits per match; the pot of {pot} credits ({} sponsored) goes {:.0}% to the house and the \
                 rest by rank: {}. Ties share their places' shares.",
                self.entry_fee,
                self.payout.sponsor_pool,
                self.payout.house_cut * 100.0,
                share_list(&self.payout.shares)
            )
        };
        let mut checks: Vec<String> = self
            .judge
            .verifiers
            .iter()
            .map(|v| {
                format!(
                    "{} ({}, {})",
                    v.name,
                    v.kind_name(),
                    if v.hard { "hard: failing it ranks below every passing answer" } else { "soft: lowers the score" }
                )
            })
            .collect();
        if !self.judge.guards.is_empty() {
            checks.push(format!(
                "built-in guards against gaming the judge: {} (hard)",
                self.judge
                    .guards
                    .iter()
                    .map(|g| match g {
                        judge::guard::Guard::Injection => "injection".to_owned(),
                        judge::guard::Guard::Padding => "padding".to_owned(),
                        judge::guard::Guard::PromptCopy => "prompt copy".to_owned(),
                        #[allow(unreachable_patterns)]
                        other => format!("{other:?}"),
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let judge = match self.judge.mode {
            JudgeMode::None => "No AI judge: the verifiers alone rank the answers.".to_owned(),
            JudgeMode::Pairwise => format!(
                "An AI judge compares every two answers in both orders (weight {}), by this rubric: {}",
                self.judge.weight, self.judge.rubric
            ),
            JudgeMode::Pointwise => format!(
                "An AI judge scores each answer from 1 to {} (weight {}), by this rubric: {}",
                self.judge.scale, self.judge.weight, self.judge.rubric
            ),
            JudgeMode::Combined => format!(
                "A trained judge ({}, sha256 {}) compares every two answers (weight {}) from what the judge model \
                 reads in them (how likely the answer is after the question, how much it raises the question's \
                 likelihood, its similarity to the question, whether it repeats or copies), with length held \
                 out, and the AI judge's reading of both orders by this rubric: {}",
                self.judge.trained.as_ref().map_or("default", |t| t.name.as_str()),
                self.judge.trained.as_ref().map_or("", |t| &t.sha256[..12]),
                self.judge.weight,
                self.judge.rubric
            ),
        };
        let data = format!(
            "Preference pairs are kept when the winner leads by more than {}; licence: {}; outputs and pairs are {}.",
            self.judge.min_margin,
            self.license.as_deref().unwrap_or("not stated"),
            match self.visibility {
                Visibility::Public => "public",
                Visibility::Private => "shown only to each match's players, the designer and buyers",
            }
        );
        let data = if self.data.per_pair == 0 {
            format!("{data} Buyers get the pairs free.")
        } else {
            format!(
                "{data} Buyers pay {} credits a pair: {:.0}% to the designer, {:.0}% to the owners of the two agents in \
                 each pair, the rest to the house.",
                self.data.per_pair,
                self.data.designer_share * 100.0,
                self.data.players_share * 100.0
            )
        };
        RulesInWords { prompts, meeting, money, checks, judge, data }
    }
}
