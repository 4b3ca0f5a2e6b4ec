//! The judge: rule verifiers and the AI judge turn a match's outputs into a
//! ranking, scores, a confidence and preference pairs.
//!
//! * [`files`]: the files a Space names, by name (read from disk only by
//!   the command line, safely).
//! * [`spec`]: the `[[verifiers]]`, `[judge]` and `[pairs]` tables of a Space
//!   file, checked into a [`JudgeConfig`] (errors carry line and column).
//! * [`verify`]: regex, length, JSON Schema, reference answer, forbidden strings.
//! * [`guard`]: built-in hard checks against judge injection, padding and
//!   copying the prompt.
//! * [`ai`]: the AI judge, read from next-token probabilities.
//! * [`Judge::judge`]: one match in, one [`Verdict`] out.
//! * [`worker::JudgeWorker`]: the request/response interface the arena uses.
//! * [`calibrate`]: the red-team corpus runner behind `arena judge calibrate`.
//!
//! It uses the model through `agent-runtime` and does no networking.

pub mod aggregate;
pub mod ai;
pub mod calibrate;
pub mod degrade;
pub mod embed;
pub mod files;
pub mod guard;
pub mod signals;
pub mod spec;
pub mod text;
pub mod trained;
pub mod verify;
pub mod worker;

pub use ai::JudgeModel;
pub use embed::Embedder;
pub use spec::{JudgeConfig, JudgeMode, SpecError};
pub use trained::TrainedJudge;
pub use verify::VerifierResult;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Characters of one candidate the verifiers read; the rest is cut and the
/// cut recorded in the verdict.
pub const MAX_CANDIDATE_CHARS: usize = 100_000;
/// Characters of the prompt (and reference) the judge reads.
pub const MAX_PROMPT_CHARS: usize = 20_000;
/// Candidates in one match.
pub const MAX_CANDIDATES: usize = 16;
/// Tokens of one candidate the AI judge reads when the length cap defense is
/// off (calibration only): work stays bounded either way.
pub const UNCAPPED_CANDIDATE_TOKENS: usize = 1536;

/// One match as the judge sees it (the `arena judge --input` format).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchInput {
    pub prompt: String,
    #[serde(default)]
    pub reference: Option<String>,
    pub candidates: Vec<Candidate>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Candidate {
    pub id: String,
    pub text: String,
}

/// Which protections run. A Space always runs with all of them; turning
/// them off one at a time is how `arena judge calibrate` measures each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Defenses {
    /// Special-token text, role markers and fake delimiters removed before
    /// the AI judge reads a candidate.
    pub sanitize: bool,
    /// Candidates wrapped in nonce delimiters; the judge is told they are data.
    pub delimit: bool,
    /// Candidates cut to `judge.max_candidate_tokens` for the AI judge.
    pub length_cap: bool,
    /// Each pair judged in both orders, combined by the debiased reading
    /// (off: one order, its verdict as it is). The combined judge always
    /// reads both orders: its pairwise signal needs them.
    pub both_orders: bool,
    /// The injection / padding / prompt-copy guards gate.
    pub guards: bool,
    /// The Space's hard verifiers gate.
    pub hard_verifiers: bool,
    /// The Space's verifiers run at all (off: the AI judge alone decides).
    pub verifiers: bool,
}

impl Defenses {
    pub const ALL: Defenses = Defenses {
        sanitize: true,
        delimit: true,
        length_cap: true,
        both_orders: true,
        guards: true,
        hard_verifiers: true,
        verifiers: true,
    };
    pub const NONE: Defenses = Defenses {
        sanitize: false,
        delimit: false,
        length_cap: false,
        both_orders: false,
        guards: false,
        hard_verifiers: false,
        verifiers: false,
    };
    /// The AI judge alone with its prompt defenses: no verifier or guard
    /// decides anything, so every pair reaches the judge in both orders.
    pub const JUDGE_ONLY: Defenses = Defenses {
        sanitize: true,
        delimit: true,
        length_cap: true,
        both_orders: true,
        guards: false,
        hard_verifiers: false,
        verifiers: false,
    };
    pub const NAMES: [&'static str; 7] =
        ["sanitize", "delimit", "length_cap", "both_orders", "guards", "hard_verifiers", "verifiers"];

    /// All defenses but the named one.
    pub fn without(name: &str) -> Option<Defenses> {
        let mut d = Defenses::ALL;
        match name {
            "sanitize" => d.sanitize = false,
            "delimit" => d.delimit = false,
            "length_cap" => d.length_cap = false,
            "both_orders" => d.both_orders = false,
            "guards" => d.guards = false,
            "hard_verifiers" => d.hard_verifiers = false,
            "verifiers" => d.verifiers = false,
            _ => return None,
        }
        Some(d)
    }
}

/// What was cut from a candidate before judging.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Truncation {
    /// Characters before and after the verifier cap, if it cut.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chars: Option<(usize, usize)>,
    /// Tokens before and after the AI judge's cap, if it cut.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub judge_tokens: Option<(usize, usize)>,
}

/// One ordered-pair comparison by the AI judge.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub a: String,
    pub b: String,
    /// P(a better) with `a` shown first.
    pub p_a_first: f64,
    /// P(a better) with `a` shown second (None when one order only).
    pub p_a_second: Option<f64>,
    /// Both orders agree on the winner (a raw diagnostic: the debiased
    /// reading combines the orders whether or not they agree).
    pub consistent: bool,
    /// The debiased pairwise reading s = (l₁ − l₂)/2 (> 0: a reads better).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub s: Option<f64>,
    /// The combined judge's z for (a, b) (> 0: a better), length held at 0.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub z: Option<f64>,
    /// The outcome used: P(a better), 0.5 for a tie.
    pub outcome: f64,
    /// Probability mass on the verdict tokens (low: the judge model was lost).
    pub mass: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct JudgeReport {
    pub mode: JudgeMode,
    pub model_sha256: Option<String>,
    pub template_sha256: String,
    pub comparisons: Vec<Comparison>,
    /// Pointwise: each candidate's expected score in [0, 1] and the mass on
    /// the score tokens.
    pub pointwise: BTreeMap<String, (f64, f64)>,
    /// Each candidate's AI-judge score in [0, 1] (win rate against its tier
    /// under the Bradley–Terry fit, or the pointwise score).
    pub scores: BTreeMap<String, f64>,
    /// The combined judge's artifact (sha256 of its file).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trained_sha256: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embedder_sha256: Option<String>,
    /// The combined judge's signals per candidate (in input order).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signals: Option<signals::MatchSignals>,
    /// The tie threshold used: on |s| (pairwise) or |z| (combined).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tie_threshold: Option<f64>,
}

/// A preference pair: the chosen output beat the rejected one by `margin`.
#[derive(Debug, Clone, Serialize)]
pub struct Pair {
    pub chosen: String,
    pub rejected: String,
    /// Difference of rank keys: 1 for passing every hard check the other
    /// failed, plus the difference of scores in [0, 1].
    pub margin: f64,
    /// P(chosen better) as the AI judge saw it with the chosen output shown
    /// first, and shown second (None where that order was not judged).
    pub p_chosen_first: Option<f64>,
    pub p_chosen_second: Option<f64>,
    /// False when the judge's two orders disagreed.
    pub consistent: bool,
    pub chosen_verifiers: Vec<VerifierResult>,
    pub rejected_verifiers: Vec<VerifierResult>,
    pub judge_model_sha256: Option<String>,
    pub judge_template_sha256: String,
    /// The combined judge's artifact, when one decided.
    pub judge_trained_sha256: Option<String>,
}

/// The judge's answer for one match.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    /// Candidate ids, best first (ties keep input order).
    pub ranking: Vec<String>,
    /// Competition ranks: tied candidates share a rank ("1224").
    pub ranks: BTreeMap<String, usize>,
    /// Scores in [0, 1]: verifier and judge scores by weight.
    pub scores: BTreeMap<String, f64>,
    /// Whether each candidate passed every hard verifier and guard.
    pub passed_hard: BTreeMap<String, bool>,
    /// Mean decisiveness over all candidate pairs, in [0, 1]: 1 when a hard
    /// check separates them, |2p − 1| for the AI judge's debiased outcome p,
    /// min(1, 2·|score difference|) otherwise. 0 means coin flips.
    pub confidence: f64,
    /// Verifier and guard results per candidate.
    pub verifiers: BTreeMap<String, Vec<VerifierResult>>,
    pub judge: JudgeReport,
    pub pairs: Vec<Pair>,
    /// Candidates that were cut, and how much.
    pub truncated: BTreeMap<String, Truncation>,
    pub defenses: Defenses,
}

#[derive(Debug, thiserror::Error)]
pub enum JudgeError {
    #[error("invalid match: {0}")]
    Input(String),
    #[error("judge model: {0}")]
    Model(String),
    #[error("judge model: {0}")]
    Runtime(#[from] agent_runtime::RuntimeError),
    #[error("embedding model: {0}")]
    Embedder(String),
    /// A trained judge's artifact or feature table that does not read.
    #[error("trained judge: {0}")]
    Artifact(String),
    /// Red-team cases or a corpus of answers that do not read.
    #[error("{0}")]
    Cases(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// A Space's judge, ready to rank matches.
pub struct Judge {
    pub config: Arc<JudgeConfig>,
    pub model: Option<Arc<JudgeModel>>,
    /// The sentence-embedding model (the combined judge's embedding signals).
    pub embedder: Option<Arc<Embedder>>,
    pub defenses: Defenses,
    /// Answers this Space's judge recently saw (the `emb_constant` signal).
    pub recent: Arc<signals::RecentAnswers>,
}

/// A match's texts as the judge reads them: the prompt and reference cut
/// to `MAX_PROMPT_CHARS`, each output to `MAX_CANDIDATE_CHARS`, and what
/// was cut.
struct Texts {
    prompt: String,
    reference: Option<String>,
    capped: Vec<String>,
    truncated: BTreeMap<String, Truncation>,
}

impl Texts {
    fn capped(input: &MatchInput) -> Texts {
        let (prompt, _) = text::cap_chars(&input.prompt, MAX_PROMPT_CHARS);
        let reference = input.reference.as_deref().map(|r| text::cap_chars(r, MAX_PROMPT_CHARS).0);
        let mut truncated: BTreeMap<String, Truncation> = BTreeMap::new();
        let capped: Vec<String> = input
            .candidates
            .iter()
            .map(|c| {
                let (t, cut) = text::cap_chars(&c.text, MAX_CANDIDATE_CHARS);
                if cut {
                    truncated.insert(
                        c.id.clone(),
                        Truncation { chars: Some((c.text.chars().count(), MAX_CANDIDATE_CHARS)), judge_tokens: None },
                    );
                }
                t
            })
            .collect();
        Texts { prompt, reference, capped, truncated }
    }
}

/// The verifiers' side of a verdict.
struct Checked {
    results: Vec<Vec<VerifierResult>>,
    /// Whether each output passed every hard check and guard.
    gate: Vec<bool>,
    /// Per output: (weighted sum of verifier scores, their weight).
    verifier_score: Vec<(f64, f64)>,
}

/// The AI judge's side of a verdict.
struct Reading {
    report: JudgeReport,
    judge_score: Vec<f64>,
    /// outcome[i][j]: the debiased P(i better than j) where judged.
    outcome: Vec<Vec<Option<(f64, bool)>>>,
    /// P(a better | a shown first) for each ordered pair judged.
    by_order: BTreeMap<(usize, usize), (f64, f64)>,
}

impl Reading {
    /// Judge scores from a Bradley–Terry fit of the outcomes, per gate tier.
    fn fit_tiers(&mut self, gate: &[bool]) {
        let n = gate.len();
        let wins: Vec<Vec<f64>> =
            self.outcome.iter().map(|row| row.iter().map(|o| o.map_or(0.0, |(p, _)| p)).collect()).collect();
        for tier in [true, false] {
            let members: Vec<usize> = (0..n).filter(|&i| gate[i] == tier).collect();
            if members.len() < 2 {
                continue;
            }
            let sub: Vec<Vec<f64>> = members.iter().map(|&i| members.iter().map(|&j| wins[i][j]).collect()).collect();
            let theta = aggregate::bradley_terry(&sub, 0.5);
            for (a, &i) in members.iter().enumerate() {
                let others = members.len() - 1;
                self.judge_score[i] = (0..members.len())
                    .filter(|&b| b != a)
                    .map(|b| aggregate::sigmoid(theta[a] - theta[b]))
                    .sum::<f64>()
                    / others as f64;
            }
        }
    }
}

/// What the AI judge is asked: the question, the outputs as it reads them,
/// and the nonce that fences them.
struct Asked<'a> {
    model: &'a JudgeModel,
    question: &'a str,
    judged: &'a [String],
    refs: &'a [&'a str],
    nonce: &'a str,
}

/// Records P(i better than j) = `o` both ways.
fn set_outcome(outcome: &mut [Vec<Option<(f64, bool)>>], i: usize, j: usize, o: f64, consistent: bool) {
    outcome[i][j] = Some((o, consistent));
    outcome[j][i] = Some((1.0 - o, consistent));
}

/// The pairwise mode's tie threshold on |s| when the Space sets none: the
/// one the default trained judge measured on its null set.
pub fn default_pairwise_tie() -> f64 {
    static TIE: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TIE.get_or_init(|| TrainedJudge::default_judge().map_or(0.5, |j| j.pairwise_tie))
}

impl Judge {
    /// `model` is required when the config runs an AI judge.
    pub fn new(config: Arc<JudgeConfig>, model: Option<Arc<JudgeModel>>) -> Result<Judge, JudgeError> {
        if config.mode != JudgeMode::None && model.is_none() {
            return Err(JudgeError::Model("this Space's judge mode needs a judge model".to_owned()));
        }
        Ok(Judge { config, model, embedder: None, defenses: Defenses::ALL, recent: Default::default() })
    }

    /// A Space's judge as the arena loads it: `config`, the judge `model`
    /// (needed unless the mode is `none`), and the embedding model kept
    /// beside `model_path` when its combined judge reads embeddings.
    pub fn for_space(
        config: Arc<JudgeConfig>,
        model: Option<Arc<JudgeModel>>,
        model_path: &std::path::Path,
    ) -> Result<Judge, JudgeError> {
        Judge::new(config, model)?.with_embedder_for(model_path)
    }

    /// The embedding model, for a combined judge that reads embeddings.
    pub fn with_embedder(mut self, embedder: Option<Arc<Embedder>>) -> Judge {
        self.embedder = embedder;
        self
    }

    /// Attaches the embedding model kept beside `model_path` (shared per
    /// process) when this Space's combined judge reads embeddings.
    pub fn with_embedder_for(self, model_path: &std::path::Path) -> Result<Judge, JudgeError> {
        let needed = self.config.mode == JudgeMode::Combined
            && self.config.trained.as_ref().is_some_and(|t| t.judge.uses_embeddings());
        if !needed || self.embedder.is_some() {
            return Ok(self);
        }
        let e = embed::shared(&embed::default_dir(model_path))?;
        Ok(self.with_embedder(Some(e)))
    }

    /// The texts the AI judge reads: cleaned (if the defense is on) and cut
    /// to the token cap; records what was cut in `truncated`.
    fn judged_texts(
        &self,
        model: &JudgeModel,
        input: &MatchInput,
        capped: &[String],
        prompt: &str,
        truncated: &mut BTreeMap<String, Truncation>,
    ) -> (String, Vec<String>) {
        let (cfg, d) = (&self.config, self.defenses);
        let judged = capped
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let clean = if d.sanitize { text::for_judge(t, |s| model.strip_special(s)) } else { t.clone() };
                let cap = if d.length_cap { cfg.max_candidate_tokens } else { UNCAPPED_CANDIDATE_TOKENS };
                let (cut, before) = model.cap_tokens(&clean, cap);
                if before > cap {
                    truncated
                        .entry(input.candidates[i].id.clone())
                        .or_insert(Truncation { chars: None, judge_tokens: None })
                        .judge_tokens = Some((before, cap));
                }
                cut
            })
            .collect();
        let question = if d.sanitize { text::for_judge(prompt, |s| model.strip_special(s)) } else { prompt.to_owned() };
        (question, judged)
    }

    /// The combined judge's signals for a match, read exactly as
    /// [`Judge::judge`] reads them (what `arena judge train` fits on),
    /// with the pairwise reading for every pair.
    pub fn signals(&self, input: &MatchInput) -> Result<signals::MatchSignals, JudgeError> {
        Judge::check_input(input)?;
        let model = self.model.as_ref().ok_or_else(|| JudgeError::Model("signals need a judge model".to_owned()))?;
        let (prompt, _) = text::cap_chars(&input.prompt, MAX_PROMPT_CHARS);
        let reference = input.reference.as_deref().map(|r| text::cap_chars(r, MAX_PROMPT_CHARS).0);
        let capped: Vec<String> =
            input.candidates.iter().map(|c| text::cap_chars(&c.text, MAX_CANDIDATE_CHARS).0).collect();
        let mut truncated = BTreeMap::new();
        let (question, judged) = self.judged_texts(model, input, &capped, &prompt, &mut truncated);
        let n = judged.len();
        let orders: Vec<(usize, usize)> =
            (0..n).flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j))).collect();
        self.read_signals(model, &question, reference.as_deref(), &judged, &orders)
    }

    /// Likelihood and embedding signals, plus the debiased pairwise
    /// reading over `orders` (each unordered pair in both orders).
    fn read_signals(
        &self,
        model: &JudgeModel,
        question: &str,
        reference: Option<&str>,
        judged: &[String],
        orders: &[(usize, usize)],
    ) -> Result<signals::MatchSignals, JudgeError> {
        let refs: Vec<&str> = judged.iter().map(String::as_str).collect();
        let input = signals::SignalInput { question, reference, answers: &refs };
        let mut sig = signals::compute(model, self.embedder.as_deref(), Some(&self.recent), &input)?;
        if !orders.is_empty() {
            let n = judged.len();
            let nonce = ai::nonce(question, &refs);
            let pairs: Vec<(&str, &str)> = orders.iter().map(|&(a, b)| (refs[a], refs[b])).collect();
            let probs = model.pairwise(question, &self.config.rubric, &pairs, &nonce, self.defenses.delimit)?;
            let by: BTreeMap<(usize, usize), f64> = orders.iter().copied().zip(probs.iter().map(|p| p.0)).collect();
            let mut s = vec![vec![0.0; n]; n];
            let mut agree = vec![vec![true; n]; n];
            let mut p_a = vec![vec![(0.5, 0.5); n]; n];
            for (&(i, j), &p1) in &by {
                if let Some(&p2) = by.get(&(j, i)) {
                    s[i][j] = signals::debiased(p1, p2);
                    agree[i][j] = (p1 - 0.5) * (0.5 - p2) > 0.0;
                    p_a[i][j] = (p1, p2);
                }
            }
            sig.pairwise = Some(s);
            sig.orders_agree = Some(agree);
            sig.p_a = Some(p_a);
        }
        Ok(sig)
    }

    pub fn with_defenses(mut self, defenses: Defenses) -> Judge {
        self.defenses = defenses;
        self
    }

    fn check_input(input: &MatchInput) -> Result<(), JudgeError> {
        let n = input.candidates.len();
        if n == 0 || n > MAX_CANDIDATES {
            return Err(JudgeError::Input(format!("{n} candidates; a match has 1..={MAX_CANDIDATES}")));
        }
        let mut seen = std::collections::HashSet::new();
        for c in &input.candidates {
            if c.id.is_empty() || c.id.len() > 128 || c.id.chars().any(char::is_control) {
                return Err(JudgeError::Input(format!(
                    "candidate id {:?} must be 1..=128 bytes without control characters",
                    c.id.chars().take(40).collect::<String>()
                )));
            }
            if !seen.insert(c.id.as_str()) {
                return Err(JudgeError::Input(format!("candidate id {:?} appears twice", c.id)));
            }
        }
        Ok(())
    }

    /// Ranks one match.
    pub fn judge(&self, input: &MatchInput) -> Result<Verdict, JudgeError> {
        Judge::check_input(input)?;
        let mut texts = Texts::capped(input);
        let checked = self.verify(&texts);
        let reading = self.read(input, &mut texts, &checked.gate)?;
        Ok(self.verdict(input, texts, checked, reading))
    }

    /// The verifiers and guards on every (capped) output: each one's
    /// results, whether it passed the hard checks, and its weighted score.
    fn verify(&self, texts: &Texts) -> Checked {
        let (cfg, d) = (&self.config, self.defenses);
        let n = texts.capped.len();
        let folded_prompt = text::fold(&texts.prompt, true);
        let counter = self.model.as_ref().map(|m| move |t: &str| m.count_tokens(t));
        let count_ref: Option<&dyn Fn(&str) -> usize> = counter.as_ref().map(|f| f as &dyn Fn(&str) -> usize);
        let ctx =
            verify::Context { prompt: &texts.prompt, reference: texts.reference.as_deref(), count_tokens: count_ref };
        let mut checked =
            Checked { results: Vec::with_capacity(n), gate: vec![true; n], verifier_score: vec![(0.0f64, 0.0f64); n] };
        for (i, out) in texts.capped.iter().enumerate() {
            let mut list = Vec::new();
            for v in cfg.verifiers.iter().filter(|_| d.verifiers) {
                let mut r = v.check(out, &ctx);
                r.hard &= d.hard_verifiers;
                if r.hard && !r.passed {
                    checked.gate[i] = false;
                }
                if let Some(s) = r.score {
                    checked.verifier_score[i].0 += v.weight * s;
                    checked.verifier_score[i].1 += v.weight;
                }
                list.push(r);
            }
            if d.guards {
                let folded = text::fold(out, true);
                for g in &cfg.guards {
                    let failure = g.check(&folded, &folded_prompt);
                    if failure.is_some() {
                        checked.gate[i] = false;
                    }
                    list.push(VerifierResult {
                        name: format!("guard:{}", g.name()),
                        kind: "guard",
                        hard: true,
                        passed: failure.is_none(),
                        score: None,
                        reason: failure.unwrap_or_else(|| "passed".to_owned()),
                    });
                }
            }
            checked.results.push(list);
        }
        checked
    }

    /// The AI judge's reading of the outputs on each side of the hard
    /// `gate`, in the Space's mode (none: every score ½, nothing compared).
    fn read(&self, input: &MatchInput, texts: &mut Texts, gate: &[bool]) -> Result<Reading, JudgeError> {
        let cfg = &self.config;
        let n = texts.capped.len();
        let mut reading = Reading {
            report: JudgeReport {
                mode: cfg.mode,
                model_sha256: self.model.as_ref().map(|m| m.sha256.clone()),
                template_sha256: ai::template_sha256(),
                comparisons: Vec::new(),
                pointwise: BTreeMap::new(),
                scores: BTreeMap::new(),
                trained_sha256: None,
                embedder_sha256: None,
                signals: None,
                tie_threshold: None,
            },
            judge_score: vec![0.5f64; n],
            outcome: vec![vec![None; n]; n],
            by_order: BTreeMap::new(),
        };
        let (Some(model), true) = (&self.model, cfg.mode != JudgeMode::None) else { return Ok(reading) };
        let (question, judged) = self.judged_texts(model, input, &texts.capped, &texts.prompt, &mut texts.truncated);
        let refs: Vec<&str> = judged.iter().map(String::as_str).collect();
        let nonce = ai::nonce(&question, &refs);
        let asked = Asked { model, question: &question, judged: &judged, refs: &refs, nonce: &nonce };
        // Pairwise and combined outcomes are fitted per gate tier.
        let bradley_terry = match cfg.mode {
            JudgeMode::Pairwise => {
                self.pairwise(input, &asked, gate, &mut reading)?;
                true
            }
            JudgeMode::Combined => {
                self.combined(input, &asked, texts.reference.as_deref(), gate, &mut reading)?;
                true
            }
            JudgeMode::Pointwise => {
                let d = self.defenses;
                let scored = model.pointwise(&question, &cfg.rubric, &refs, cfg.scale, &nonce, d.delimit)?;
                for (i, (s, mass)) in scored.into_iter().enumerate() {
                    reading.judge_score[i] = s;
                    reading.report.pointwise.insert(input.candidates[i].id.clone(), (s, mass));
                }
                false
            }
            JudgeMode::None => false,
        };
        if bradley_terry {
            reading.fit_tiers(gate);
        }
        for (i, c) in input.candidates.iter().enumerate() {
            reading.report.scores.insert(c.id.clone(), reading.judge_score[i]);
        }
        Ok(reading)
    }

    /// The pairwise judge: each pair on the same side of the gate read in
    /// one or both orders, debiased, a tie under the null-set threshold.
    fn pairwise(
        &self,
        input: &MatchInput,
        asked: &Asked<'_>,
        gate: &[bool],
        reading: &mut Reading,
    ) -> Result<(), JudgeError> {
        let (cfg, d, n) = (&self.config, self.defenses, gate.len());
        // Only candidates on the same side of the hard gate need the
        // judge: the gate already orders the others.
        let mut orders: Vec<(usize, usize)> = Vec::new();
        for i in 0..n {
            for j in i + 1..n {
                if gate[i] == gate[j] {
                    orders.push((i, j));
                    if d.both_orders {
                        orders.push((j, i));
                    }
                }
            }
        }
        let pairs: Vec<(&str, &str)> = orders.iter().map(|&(a, b)| (asked.refs[a], asked.refs[b])).collect();
        let probs = asked.model.pairwise(asked.question, &cfg.rubric, &pairs, asked.nonce, d.delimit)?;
        reading.by_order = orders.iter().copied().zip(probs).collect();
        let tie = cfg.tie_threshold.unwrap_or_else(default_pairwise_tie);
        reading.report.tie_threshold = Some(tie);
        let by_order = reading.by_order.clone();
        for (&(i, j), &(p_first, mass)) in &by_order {
            if i > j {
                continue;
            }
            let second = by_order.get(&(j, i)).map(|&(p, _)| 1.0 - p);
            let consistent = second.is_none_or(|p2| (p_first - 0.5) * (p2 - 0.5) > 0.0);
            // Both orders: the debiased reading s, a tie below the
            // threshold set on the null set. One order: its verdict as it
            // is (position bias and all).
            let s = second.map(|p2| signals::debiased(p_first, 1.0 - p2));
            let o = match s {
                Some(s) if s.abs() < tie => 0.5,
                Some(s) => aggregate::sigmoid(s),
                None => p_first,
            };
            set_outcome(&mut reading.outcome, i, j, o, consistent);
            reading.report.comparisons.push(Comparison {
                a: input.candidates[i].id.clone(),
                b: input.candidates[j].id.clone(),
                p_a_first: p_first,
                p_a_second: second,
                consistent,
                s,
                z: None,
                outcome: o,
                mass,
            });
        }
        Ok(())
    }

    /// The combined judge: each pair on the same side of the gate decided
    /// by the trained model on the difference of their signals.
    fn combined(
        &self,
        input: &MatchInput,
        asked: &Asked<'_>,
        reference: Option<&str>,
        gate: &[bool],
        reading: &mut Reading,
    ) -> Result<(), JudgeError> {
        let n = gate.len();
        let trained = self
            .config
            .trained
            .as_ref()
            .ok_or_else(|| JudgeError::Model("the combined judge has no trained model configured".to_owned()))?;
        if trained.judge.uses_embeddings() && self.embedder.is_none() {
            return Err(JudgeError::Model(
                "the combined judge reads embeddings: the embedding model is not loaded (fetch it with \
                 `arena model fetch`)"
                    .to_owned(),
            ));
        }
        let mut orders: Vec<(usize, usize)> = Vec::new();
        if trained.judge.uses_pairwise() {
            for i in 0..n {
                for j in i + 1..n {
                    if gate[i] == gate[j] {
                        orders.push((i, j));
                        orders.push((j, i));
                    }
                }
            }
        }
        let sig = self.read_signals(asked.model, asked.question, reference, asked.judged, &orders)?;
        let tie = trained.judge.tie_threshold;
        reading.report.tie_threshold = Some(tie);
        reading.report.trained_sha256 = Some(trained.sha256.clone());
        reading.report.embedder_sha256 = self.embedder.as_ref().map(|e| e.sha256.clone());
        for i in 0..n {
            for j in i + 1..n {
                if gate[i] != gate[j] {
                    continue;
                }
                let z = trained.judge.z(&sig.difference(i, j));
                // A signal that is not a number decides nothing: a tie,
                // never an order by slot.
                let o = if !z.is_finite() || z.abs() < tie { 0.5 } else { aggregate::sigmoid(z) };
                let (p_first, second, consistent) = match &sig.p_a {
                    Some(p) => (p[i][j].0, Some(1.0 - p[i][j].1), sig.orders_agree.as_ref().is_none_or(|a| a[i][j])),
                    None => (0.5, None, true),
                };
                if let Some(p) = &sig.p_a {
                    reading.by_order.insert((i, j), (p[i][j].0, 1.0));
                    reading.by_order.insert((j, i), (p[i][j].1, 1.0));
                }
                set_outcome(&mut reading.outcome, i, j, o, consistent);
                reading.report.comparisons.push(Comparison {
                    a: input.candidates[i].id.clone(),
                    b: input.candidates[j].id.clone(),
                    p_a_first: p_first,
                    p_a_second: second,
                    consistent,
                    s: sig.pairwise.as_ref().map(|p| p[i][j]),
                    z: Some(z),
                    outcome: o,
                    mass: 1.0,
                });
            }
        }
        reading.report.signals = Some(sig);
        Ok(())
    }

    /// Scores, rank keys, ranks, the verdict's confidence and its pairs.
    fn verdict(&self, input: &MatchInput, texts: Texts, checked: Checked, reading: Reading) -> Verdict {
        let cfg = &self.config;
        let n = input.candidates.len();
        let Checked { results, gate, verifier_score } = checked;
        let Reading { report, judge_score, outcome, by_order } = reading;
        let judge_weight = if cfg.mode == JudgeMode::None { 0.0 } else { cfg.weight };
        let scores: Vec<f64> = (0..n)
            .map(|i| {
                let (sum, weight) = verifier_score[i];
                let total = weight + judge_weight;
                if total > 0.0 { (sum + judge_weight * judge_score[i]) / total } else { 0.5 }
            })
            .collect();
        let keys: Vec<f64> = (0..n).map(|i| if gate[i] { 1.0 } else { 0.0 } + scores[i]).collect();
        let (order, rank) = aggregate::ranks(&keys, 1e-9);

        let mut decisive = Vec::new();
        for i in 0..n {
            for j in i + 1..n {
                decisive.push(if gate[i] != gate[j] {
                    1.0
                } else if let Some((o, _)) = outcome[i][j] {
                    (2.0 * o - 1.0).abs()
                } else {
                    (2.0 * (scores[i] - scores[j]).abs()).min(1.0)
                });
            }
        }
        let confidence = if decisive.is_empty() { 1.0 } else { decisive.iter().sum::<f64>() / decisive.len() as f64 };

        let mut pairs = Vec::new();
        for &i in &order {
            for &j in &order {
                let margin = keys[i] - keys[j];
                if i == j || margin <= cfg.min_margin {
                    continue;
                }
                pairs.push(Pair {
                    chosen: input.candidates[i].id.clone(),
                    rejected: input.candidates[j].id.clone(),
                    margin,
                    p_chosen_first: by_order.get(&(i, j)).map(|&(p, _)| p),
                    p_chosen_second: by_order.get(&(j, i)).map(|&(p, _)| 1.0 - p),
                    consistent: outcome[i][j].is_none_or(|(_, c)| c),
                    chosen_verifiers: results[i].clone(),
                    rejected_verifiers: results[j].clone(),
                    judge_model_sha256: report.model_sha256.clone(),
                    judge_template_sha256: report.template_sha256.clone(),
                    judge_trained_sha256: report.trained_sha256.clone(),
                });
            }
        }

        let ids = |i: usize| input.candidates[i].id.clone();
        Verdict {
            ranking: order.iter().map(|&i| ids(i)).collect(),
            ranks: (0..n).map(|i| (ids(i), rank[i])).collect(),
            scores: (0..n).map(|i| (ids(i), scores[i])).collect(),
            passed_hard: (0..n).map(|i| (ids(i), gate[i])).collect(),
            confidence,
            verifiers: (0..n).map(|i| (ids(i), results[i].clone())).collect(),
            judge: report,
            pairs,
            truncated: texts.truncated,
            defenses: self.defenses,
        }
    }
}
