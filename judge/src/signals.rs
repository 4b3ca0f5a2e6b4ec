//! The signals the combined judge reads, per candidate and per pair.
//!
//! * **Likelihood** (one teacher-forced batch on the judge model, shared
//!   prefixes computed once): `fluency`, the answer's mean token
//!   log-probability after the question; `pmi`, how much the question raises
//!   that against the answer read as a bare passage (off-topic and generic
//!   answers gain nothing); `relevance`, how much the answer raises the
//!   question's likelihood (UPR: "Passage: ANSWER / A question this passage
//!   answers: QUESTION", against the same without the answer — the same
//!   sequence gives `pmi`'s baseline); `reference_gain`, how much it raises
//!   the reference answer's likelihood, where the prompt has one.
//! * **Exploit guards**: `repetition` (the share of repeated word trigrams:
//!   repeating text inflates fluency) and `prompt_copy` (the share of the
//!   answer's trigrams found in the question: copying it inflates
//!   relevance), so a trained judge can discount both.
//! * **Embeddings** (all-MiniLM-L6-v2): similarity to the question, to the
//!   reference, to the other candidates, and `constant`, the highest
//!   similarity to answers this Space recently saw for *other* prompts (the
//!   same answer to every question).
//! * `length` (log tokens): a feature when training, held at zero when
//!   judging (length-controlled, as AlpacaEval 2.0).
//! * Per pair, `pairwise`: the debiased A/B reading s = (l₁ − l₂)/2.

use crate::JudgeError;
use crate::ai::JudgeModel;
use crate::embed::{Embedder, cosine};
use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

/// Candidate-level features, in the order of [`CandidateSignals::values`].
pub const CANDIDATE_FEATURES: [&str; 11] = [
    "fluency",
    "pmi",
    "relevance",
    "reference_gain",
    "repetition",
    "prompt_copy",
    "emb_prompt",
    "emb_reference",
    "emb_others",
    "emb_constant",
    "length",
];
/// The pair-level feature.
pub const PAIRWISE_FEATURE: &str = "pairwise";
/// Every feature of a pair difference: `pairwise`, then the candidate ones.
pub fn feature_names() -> Vec<String> {
    std::iter::once(PAIRWISE_FEATURE).chain(CANDIDATE_FEATURES).map(str::to_owned).collect()
}
/// Index of `length` in a pair's feature vector.
pub const LENGTH_INDEX: usize = 11;

/// Tokens of the question the likelihood signals read.
pub const MAX_QUESTION_TOKENS: usize = 384;
/// Tokens of an answer (and of a reference) the likelihood signals read.
pub const MAX_ANSWER_TOKENS: usize = 640;
/// Fluency of an empty answer (a very unlikely text).
const EMPTY_FLUENCY: f64 = -10.0;

/// One candidate's signal values, in [`CANDIDATE_FEATURES`] order.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CandidateSignals {
    pub values: Vec<f64>,
}

/// A match's signals.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct MatchSignals {
    pub candidates: Vec<CandidateSignals>,
    /// s\[i\]\[j\]: the debiased pairwise reading, > 0 when i reads better
    /// (antisymmetric); None when the pairwise reading was not run.
    pub pairwise: Option<Vec<Vec<f64>>>,
    /// The raw diagnostic: whether the two orders' verdicts agreed, per pair.
    pub orders_agree: Option<Vec<Vec<bool>>>,
    /// (p with i shown first, p with j shown first) of "A", per ordered pair.
    pub p_a: Option<Vec<Vec<(f64, f64)>>>,
}

impl MatchSignals {
    /// The feature difference of candidates i and j: `pairwise` s(i, j),
    /// then each candidate feature of i minus j.
    pub fn difference(&self, i: usize, j: usize) -> Vec<f64> {
        let s = self.pairwise.as_ref().map_or(0.0, |p| p[i][j]);
        std::iter::once(s)
            .chain(self.candidates[i].values.iter().zip(&self.candidates[j].values).map(|(a, b)| a - b))
            .collect()
    }
}

/// Answers a Space recently saw, with a hash of their prompt, for the
/// `emb_constant` signal. Bounded; oldest forgotten first.
#[derive(Default)]
pub struct RecentAnswers {
    inner: Mutex<VecDeque<(u64, Vec<f32>)>>,
}

/// Answers remembered per Space.
pub const RECENT_ANSWERS: usize = 256;

impl RecentAnswers {
    fn most_similar_elsewhere(&self, prompt: u64, v: &[f32]) -> f64 {
        let Ok(recent) = self.inner.lock() else { return 0.0 };
        recent.iter().filter(|(p, _)| *p != prompt).map(|(_, e)| cosine(e, v)).fold(0.0, f64::max)
    }

    fn remember(&self, prompt: u64, vs: &[Vec<f32>]) {
        if let Ok(mut recent) = self.inner.lock() {
            for v in vs {
                if recent.len() == RECENT_ANSWERS {
                    recent.pop_front();
                }
                recent.push_back((prompt, v.clone()));
            }
        }
    }
}

/// A stable 64-bit hash of a prompt (FNV-1a; only equality matters).
pub fn prompt_hash(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_lowercase).collect()
}

fn trigrams(words: &[String]) -> Vec<(&str, &str, &str)> {
    words.windows(3).map(|w| (w[0].as_str(), w[1].as_str(), w[2].as_str())).collect()
}

/// The share of an answer's word trigrams that repeat an earlier one.
pub fn repetition(answer: &str) -> f64 {
    let w = words(answer);
    let t = trigrams(&w);
    if t.is_empty() {
        return 0.0;
    }
    let distinct: HashSet<_> = t.iter().collect();
    1.0 - distinct.len() as f64 / t.len() as f64
}

/// The share of an answer's word trigrams that appear in the question.
pub fn prompt_copy(answer: &str, question: &str) -> f64 {
    let (wa, wq) = (words(answer), words(question));
    let (ta, tq) = (trigrams(&wa), trigrams(&wq));
    if ta.is_empty() {
        return 0.0;
    }
    let q: HashSet<_> = tq.into_iter().collect();
    ta.iter().filter(|t| q.contains(t)).count() as f64 / ta.len() as f64
}

fn mean(v: &[f32]) -> f64 {
    if v.is_empty() { 0.0 } else { v.iter().map(|&x| f64::from(x)).sum::<f64>() / v.len() as f64 }
}

/// What the signals are computed from.
pub struct SignalInput<'a> {
    pub question: &'a str,
    pub reference: Option<&'a str>,
    /// The candidates as the judge reads them (cleaned, capped).
    pub answers: &'a [&'a str],
}

/// The likelihood, guard and embedding signals of every candidate; the
/// pairwise reading is added by the caller when the judge runs it.
pub fn compute(
    model: &JudgeModel,
    embedder: Option<&Embedder>,
    recent: Option<&RecentAnswers>,
    input: &SignalInput<'_>,
) -> Result<MatchSignals, JudgeError> {
    let n = input.answers.len();
    let q_tokens = model.tokens(input.question);
    let question: String = if q_tokens.len() > MAX_QUESTION_TOKENS {
        model.runtime.tokenizer.decode(&q_tokens[..MAX_QUESTION_TOKENS], true).unwrap_or_default()
    } else {
        input.question.to_owned()
    };
    // Answers past the cap are read cut (a Space may let the judge read up
    // to 2048 tokens; the context must hold question and answer).
    let cut: Vec<String> = input
        .answers
        .iter()
        .map(|a| {
            let t = model.tokens(a);
            if t.len() > MAX_ANSWER_TOKENS {
                model.runtime.tokenizer.decode(&t[..MAX_ANSWER_TOKENS], true).unwrap_or_default()
            } else {
                (*a).to_owned()
            }
        })
        .collect();
    let answers: Vec<&str> = cut.iter().map(String::as_str).collect();
    let input = &SignalInput { question: input.question, reference: input.reference, answers: &answers };
    let answer_tokens: Vec<Vec<u32>> = input.answers.iter().map(|a| model.tokens(a)).collect();

    // One batch. Per answer: the answer after the question (conditional);
    // "Passage: ANSWER / A question this passage answers: QUESTION", whose
    // answer part is the answer's likelihood without the question (the
    // neutral baseline of `pmi`) and whose question part is the question's
    // likelihood given the answer (`relevance`); and, with a reference,
    // the reference after the answer. Then the baselines without an answer.
    let head = model.chat_head(&question)?;
    let passage = model.tokens("Passage:");
    let bridge = model.tokens("\nA question this passage answers:");
    let q_target = model.tokens(&format!(" {question}"));
    let reference = input.reference.filter(|r| !r.trim().is_empty());
    let ref_prefix =
        |answer: &str| model.tokens(&format!("Question: {question}\nAnswer: {answer}\nThe correct answer:"));
    let ref_target = reference.map(|r| {
        let mut t = model.tokens(&format!(" {r}"));
        t.truncate(MAX_ANSWER_TOKENS / 2);
        t
    });
    let spaced: Vec<Vec<u32>> = input.answers.iter().map(|a| model.tokens(&format!(" {a}"))).collect();
    let mut items: Vec<(Vec<u32>, Vec<u32>)> = Vec::new();
    for (i, a) in input.answers.iter().enumerate() {
        items.push((head.clone(), answer_tokens[i].clone()));
        let target: Vec<u32> = spaced[i].iter().chain(&bridge).chain(&q_target).copied().collect();
        items.push((passage.clone(), target));
        if let Some(t) = &ref_target {
            items.push((ref_prefix(a), t.clone()));
        }
    }
    items.push((passage.clone(), bridge.iter().chain(&q_target).copied().collect()));
    if let Some(t) = &ref_target {
        items.push((ref_prefix(""), t.clone()));
    }
    let scored = model.score_cached(&items)?;
    let per = if ref_target.is_some() { 3 } else { 2 };
    let question_part = |lp: &[f32]| mean(&lp[lp.len().saturating_sub(q_target.len())..]);
    let upr_base = question_part(&scored[n * per]);
    let ref_base = if ref_target.is_some() { mean(&scored[n * per + 1]) } else { 0.0 };

    let embeddings = match embedder {
        Some(e) => {
            let mut texts: Vec<&str> = vec![input.question];
            texts.extend(reference);
            texts.extend(input.answers.iter().copied());
            Some(e.embed(&texts)?)
        }
        None => None,
    };
    let key = prompt_hash(input.question);
    let mut candidates = Vec::with_capacity(n);
    for (i, a) in input.answers.iter().enumerate() {
        let row = &scored[i * per..(i + 1) * per];
        let empty = answer_tokens[i].is_empty();
        let fluency = if empty { EMPTY_FLUENCY } else { mean(&row[0]) };
        let neutral = mean(&row[1][..spaced[i].len().min(row[1].len())]);
        let pmi = if empty { 0.0 } else { fluency - neutral };
        let relevance = question_part(&row[1]) - upr_base;
        let reference_gain = if ref_target.is_some() { mean(&row[2]) - ref_base } else { 0.0 };
        let (emb_prompt, emb_reference, emb_others, emb_constant) = match &embeddings {
            Some(e) => {
                let off = 1 + usize::from(reference.is_some());
                let me = &e[off + i];
                let others: Vec<f64> = (0..n).filter(|&j| j != i).map(|j| cosine(me, &e[off + j])).collect();
                (
                    cosine(&e[0], me),
                    if reference.is_some() { cosine(&e[1], me) } else { 0.0 },
                    if others.is_empty() { 0.0 } else { others.iter().sum::<f64>() / others.len() as f64 },
                    recent.map_or(0.0, |r| r.most_similar_elsewhere(key, me)),
                )
            }
            None => (0.0, 0.0, 0.0, 0.0),
        };
        candidates.push(CandidateSignals {
            values: vec![
                fluency,
                pmi,
                relevance,
                reference_gain,
                repetition(a),
                prompt_copy(a, input.question),
                emb_prompt,
                emb_reference,
                emb_others,
                emb_constant,
                (1.0 + answer_tokens[i].len() as f64).ln(),
            ],
        });
    }
    if let (Some(r), Some(e)) = (recent, &embeddings) {
        let off = 1 + usize::from(reference.is_some());
        r.remember(key, &e[off..]);
    }
    Ok(MatchSignals { candidates, pairwise: None, orders_agree: None, p_a: None })
}

/// log(p / (1 − p)), clamped away from 0 and 1.
pub fn logit(p: f64) -> f64 {
    let p = p.clamp(1e-6, 1.0 - 1e-6);
    (p / (1.0 - p)).ln()
}

/// The debiased pairwise reading from the two orders' P("A"): with i shown
/// first p₁, with j shown first p₂, s = (logit p₁ − logit p₂)/2. A constant
/// bias toward either slot adds the same amount to both logits and cancels.
pub fn debiased(p_i_first: f64, p_j_first: f64) -> f64 {
    (logit(p_i_first) - logit(p_j_first)) / 2.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_constant_position_bias_cancels_exactly() {
        let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
        for &d in &[-2.0, -0.3, 0.0, 0.7, 1.9] {
            for &bias in &[-3.0, -1.0, 0.0, 1.66, 4.0] {
                // The judge's logit of "A" = bias + (quality of the answer in A − the other).
                let s = debiased(sig(bias + d), sig(bias - d));
                assert!((s - d).abs() < 1e-9, "bias {bias}, difference {d}: read {s}");
            }
        }
    }

    #[test]
    fn repetition_and_prompt_copy_measure_what_they_say() {
        let plain = "Air scatters blue light more than red light, so the sky looks blue.";
        assert_eq!(repetition(plain), 0.0);
        let repeated = [plain; 5].join(" ");
        assert!(repetition(&repeated) > 0.7, "{}", repetition(&repeated));
        let q = "Explain to a curious twelve-year-old: why is the sky blue?";
        assert!(prompt_copy(plain, q) < 0.1);
        assert!((prompt_copy(q, q) - 1.0).abs() < 1e-9);
        assert_eq!(prompt_hash("a"), prompt_hash("a"));
        assert_ne!(prompt_hash("a"), prompt_hash("b"));
    }
}
