//! The judge the arena trains: a Bradley–Terry logistic model on the
//! difference of two candidates' signals ([`crate::signals`]), fitted on
//! pairs whose better side is known without a person (synthetic
//! degradations of good answers, fluent answers with a wrong fact, the
//! red-team corpus), and a tie threshold set on a null set (an answer
//! against itself with whitespace changes) so that equivalent answers are
//! decided at most 10% of the time.
//!
//! A trained judge is a versioned artifact: a JSON file whose sha256 is its
//! identity, with the manifest of the data it was fitted on. Fitting is
//! deterministic: the same feature table gives the same bytes
//! ([`fit_artifact`]). The default judge ships with the project
//! (`judge/trained/default.json`), fitted from the committed table
//! `judge/trained/features.json` by `arena judge train`.

use crate::JudgeError;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

pub const FORMAT: &str = "arena-judge/1";
/// The shipped default judge and the feature table it was fitted on.
pub static DEFAULT_JSON: &str = include_str!("../trained/default.json");
pub static DEFAULT_FEATURES_JSON: &str = include_str!("../trained/features.json");
/// The corpus of good answers the default judge's table was built from.
pub static ANSWERS_JSONL: &str = include_str!("../trained/answers.jsonl");
pub use crate::degrade::NULL_FAMILY;
/// The largest share of null pairs the tie threshold lets be decided.
pub const NULL_DECIDED_MAX: f64 = 0.10;
/// Features held at zero when judging.
pub const HELD_AT_ZERO: [&str; 1] = ["length"];

/// One labelled pair: the feature difference better − worse.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Row {
    pub id: String,
    pub family: String,
    /// The Space (or corpus group) the prompt comes from.
    pub space: String,
    pub x: Vec<f64>,
    /// Today's rule on the same pair: 1 the better won with both orders
    /// agreeing, -1 the worse did, 0 a tie (orders disagreed).
    pub old: i8,
}

/// The feature table a judge is fitted on (and evaluated by).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureTable {
    pub features: Vec<String>,
    pub judge_model_sha256: String,
    pub embedder_sha256: String,
    /// The files the rows were built from, with their sha256.
    pub sources: BTreeMap<String, String>,
    pub rows: Vec<Row>,
}

impl FeatureTable {
    pub fn parse(text: &str) -> Result<FeatureTable, JudgeError> {
        let t: FeatureTable =
            serde_json::from_str(text).map_err(|e| JudgeError::Artifact(format!("feature table: {e}")))?;
        if let Some(r) = t.rows.iter().find(|r| r.x.len() != t.features.len() || r.x.iter().any(|v| !v.is_finite())) {
            return Err(JudgeError::Artifact(format!(
                "feature table: row {} has {} finite values; expected {}",
                r.id,
                r.x.len(),
                t.features.len()
            )));
        }
        Ok(t)
    }

    pub fn sha256(&self) -> String {
        hex::encode(Sha256::digest(serde_json::to_vec(self).unwrap_or_default()))
    }

    /// Families of known-better pairs, sorted.
    pub fn families(&self) -> Vec<String> {
        let mut f: Vec<String> =
            self.rows.iter().filter(|r| r.family != NULL_FAMILY).map(|r| r.family.clone()).collect();
        f.sort();
        f.dedup();
        f
    }
}

/// What a trained judge was fitted on.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// sha256 of the feature table (its compact JSON).
    pub features_sha256: String,
    /// The files the table was built from, with their sha256.
    pub sources: BTreeMap<String, String>,
    /// Training pairs per family.
    pub families: BTreeMap<String, usize>,
    pub null_pairs: usize,
    /// Families and Spaces left out of this fit.
    pub excluded: Vec<String>,
    /// Features left out of this fit (their weight is zero, and a judge
    /// that does not read them skips their cost).
    pub without: Vec<String>,
    pub judge_model_sha256: String,
    pub embedder_sha256: String,
    pub l2: f64,
    pub iterations: usize,
}

/// Bytes of a trained judge's artifact a Space may carry (the shipped one
/// is a few kilobytes; its manifest lists families and Spaces, not data).
pub const MAX_ARTIFACT_BYTES: usize = 256 * 1024;

/// A trained judge.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TrainedJudge {
    pub format: String,
    pub features: Vec<String>,
    /// One weight per feature, in raw feature units.
    pub weights: Vec<f64>,
    /// Features whose difference is set to zero when judging.
    pub held_at_zero: Vec<String>,
    /// |z| below this is a tie (z = the weights · the difference).
    pub tie_threshold: f64,
    /// For the pairwise mode: |s| below this is a tie.
    pub pairwise_tie: f64,
    pub manifest: Manifest,
}

impl TrainedJudge {
    /// Parses an artifact and checks it fits this build's signals.
    pub fn parse(text: &str) -> Result<TrainedJudge, JudgeError> {
        if text.len() > MAX_ARTIFACT_BYTES {
            return Err(JudgeError::Artifact(format!("{} bytes; at most {MAX_ARTIFACT_BYTES}", text.len())));
        }
        let j: TrainedJudge = serde_json::from_str(text).map_err(|e| JudgeError::Artifact(e.to_string()))?;
        if j.format != FORMAT {
            return Err(JudgeError::Artifact(format!("format {:?}, this build reads {FORMAT:?}", j.format)));
        }
        if j.features != crate::signals::feature_names() || j.weights.len() != j.features.len() {
            return Err(JudgeError::Artifact(format!(
                "its features {:?} are not this build's {:?}",
                j.features,
                crate::signals::feature_names()
            )));
        }
        if j.weights.iter().any(|w| !w.is_finite())
            || !j.tie_threshold.is_finite()
            || j.tie_threshold < 0.0
            || !j.pairwise_tie.is_finite()
            || j.pairwise_tie < 0.0
        {
            return Err(JudgeError::Artifact(
                "a weight or threshold is not a finite number (or is negative)".to_owned(),
            ));
        }
        if let Some(f) = j.held_at_zero.iter().find(|f| !j.features.contains(f)) {
            return Err(JudgeError::Artifact(format!("held_at_zero names {f:?}, not one of its features")));
        }
        Ok(j)
    }

    /// The shipped default.
    pub fn default_judge() -> Result<TrainedJudge, JudgeError> {
        TrainedJudge::parse(DEFAULT_JSON)
    }

    /// The artifact's bytes (what its sha256 is taken over).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).unwrap_or_default();
        out.push(b'\n');
        out
    }

    pub fn sha256(&self) -> String {
        hex::encode(Sha256::digest(self.to_bytes()))
    }

    /// z for a feature difference, with the held features at zero.
    pub fn z(&self, x: &[f64]) -> f64 {
        self.weights
            .iter()
            .zip(x)
            .zip(&self.features)
            .filter(|(_, name)| !self.held_at_zero.contains(name))
            .map(|((w, v), _)| w * v)
            .sum()
    }

    /// Whether the judge reads the embedding signals.
    pub fn uses_embeddings(&self) -> bool {
        self.features.iter().zip(&self.weights).any(|(f, w)| f.starts_with("emb_") && *w != 0.0)
    }

    /// Whether the judge reads the pairwise A/B signal.
    pub fn uses_pairwise(&self) -> bool {
        self.weights.first().is_some_and(|w| *w != 0.0)
    }
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// L2-regularised logistic regression without intercept on both
/// orientations of every row (x → 1, −x → 0), by Newton's method on
/// RMS-scaled features. Deterministic: plain loops in a fixed order.
/// Returns the weights in raw units.
pub fn fit_weights(rows: &[&Row], dims: usize, l2: f64, iterations: usize) -> Vec<f64> {
    if rows.is_empty() {
        return vec![0.0; dims];
    }
    let scale: Vec<f64> = (0..dims)
        .map(|k| {
            let ms = rows.iter().map(|r| r.x[k] * r.x[k]).sum::<f64>() / rows.len() as f64;
            if ms > 1e-12 { ms.sqrt() } else { 1.0 }
        })
        .collect();
    let xs: Vec<Vec<f64>> = rows.iter().map(|r| r.x.iter().zip(&scale).map(|(v, s)| v / s).collect()).collect();
    let mut w = vec![0.0f64; dims];
    for _ in 0..iterations {
        // With both orientations, the gradient and Hessian of the pair
        // (x, 1), (−x, 0) are 2× those of (x, 1) alone.
        let mut grad: Vec<f64> = w.iter().map(|wk| l2 * wk).collect();
        let mut hess = vec![vec![0.0f64; dims]; dims];
        for (k, row) in hess.iter_mut().enumerate() {
            row[k] = l2;
        }
        for x in &xs {
            let p = sigmoid(x.iter().zip(&w).map(|(a, b)| a * b).sum());
            for a in 0..dims {
                grad[a] -= (1.0 - p) * x[a];
                for b in 0..dims {
                    hess[a][b] += p * (1.0 - p) * x[a] * x[b];
                }
            }
        }
        let step = solve(hess, grad);
        let mut moved = 0.0f64;
        for (wk, sk) in w.iter_mut().zip(&step) {
            *wk -= sk;
            moved = moved.max(sk.abs());
        }
        if moved < 1e-10 {
            break;
        }
    }
    w.iter().zip(&scale).map(|(wk, s)| wk / s).collect()
}

/// Solves `a · x = b` by Gaussian elimination with partial pivoting.
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Vec<f64> {
    let n = b.len();
    for col in 0..n {
        let pivot = (col..n).fold(col, |best, r| if a[r][col].abs() > a[best][col].abs() { r } else { best });
        a.swap(col, pivot);
        b.swap(col, pivot);
        let d = a[col][col];
        if d.abs() < 1e-300 {
            continue;
        }
        for r in col + 1..n {
            let f = a[r][col] / d;
            if f != 0.0 {
                let pivot_row = a[col].clone();
                for (x, p) in a[r][col..].iter_mut().zip(&pivot_row[col..]) {
                    *x -= f * p;
                }
                b[r] -= f * b[col];
            }
        }
    }
    let mut x = vec![0.0; n];
    for r in (0..n).rev() {
        let s: f64 = (r + 1..n).map(|c| a[r][c] * x[c]).sum();
        x[r] = if a[r][r].abs() < 1e-300 { 0.0 } else { (b[r] - s) / a[r][r] };
    }
    x
}

/// The smallest threshold that leaves at most [`NULL_DECIDED_MAX`] of the
/// `values` (|z| of null pairs) decided.
pub fn null_threshold(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let k = ((1.0 - NULL_DECIDED_MAX) * values.len() as f64).floor() as usize;
    values[k.min(values.len() - 1)]
}

pub const DEFAULT_L2: f64 = 1.0;
pub const DEFAULT_ITERATIONS: usize = 50;

/// Fits a judge on the table's rows whose family and Space are not in
/// `exclude`; the null rows set the thresholds.
pub fn fit_artifact(
    table: &FeatureTable,
    exclude: &[String],
    without: &[String],
    l2: f64,
    iterations: usize,
) -> TrainedJudge {
    let train: Vec<&Row> = training_rows(table, exclude);
    let dims = table.features.len();
    let kept: Vec<bool> = table.features.iter().map(|f| !without.contains(f)).collect();
    let masked: Vec<Row> = train
        .iter()
        .map(|r| Row { x: r.x.iter().zip(&kept).map(|(v, k)| if *k { *v } else { 0.0 }).collect(), ..(*r).clone() })
        .collect();
    let weights = fit_weights(&masked.iter().collect::<Vec<_>>(), dims, l2, iterations);
    let held: Vec<String> = HELD_AT_ZERO.iter().map(|s| (*s).to_owned()).collect();
    let mut judge = TrainedJudge {
        format: FORMAT.to_owned(),
        features: table.features.clone(),
        weights,
        held_at_zero: held,
        tie_threshold: 0.0,
        pairwise_tie: 0.0,
        manifest: Manifest {
            features_sha256: table.sha256(),
            sources: table.sources.clone(),
            families: BTreeMap::new(),
            null_pairs: 0,
            excluded: exclude.to_vec(),
            without: without.to_vec(),
            judge_model_sha256: table.judge_model_sha256.clone(),
            embedder_sha256: table.embedder_sha256.clone(),
            l2,
            iterations,
        },
    };
    for r in &train {
        *judge.manifest.families.entry(r.family.clone()).or_default() += 1;
    }
    let null: Vec<&Row> = table.rows.iter().filter(|r| r.family == NULL_FAMILY).collect();
    judge.manifest.null_pairs = null.len();
    let mut z: Vec<f64> = null.iter().map(|r| judge.z(&r.x).abs()).collect();
    judge.tie_threshold = null_threshold(&mut z);
    let mut s: Vec<f64> = null.iter().map(|r| r.x[0].abs()).collect();
    judge.pairwise_tie = null_threshold(&mut s);
    judge
}

/// The rows a fit that leaves out `exclude` (families or Spaces) sees.
pub fn training_rows<'a>(table: &'a FeatureTable, exclude: &[String]) -> Vec<&'a Row> {
    table
        .rows
        .iter()
        .filter(|r| r.family != NULL_FAMILY && !exclude.contains(&r.family) && !exclude.contains(&r.space))
        .collect()
}

/// Accuracy among decided comparisons and coverage, for one judge on rows.
#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct Score {
    pub pairs: usize,
    pub decided: usize,
    pub correct: usize,
}

impl Score {
    pub fn accuracy(&self) -> f64 {
        if self.decided == 0 { 0.0 } else { self.correct as f64 / self.decided as f64 }
    }
    pub fn coverage(&self) -> f64 {
        if self.pairs == 0 { 0.0 } else { self.decided as f64 / self.pairs as f64 }
    }
    fn add(&mut self, decided: bool, correct: bool) {
        self.pairs += 1;
        self.decided += usize::from(decided);
        self.correct += usize::from(decided && correct);
    }
}

/// Three judges on the same rows: today's rule, the debiased pairwise
/// reading alone, and a trained judge.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Compared {
    pub old: Score,
    pub pairwise: Score,
    pub trained: Score,
    /// (coverage, accuracy) of the trained judge keeping only its most
    /// confident share of the rows.
    pub curve: Vec<(f64, f64)>,
}

/// Scores `judge` (and the two baselines) on `rows`.
pub fn compare(judge: &TrainedJudge, rows: &[&Row]) -> Compared {
    let mut c = Compared::default();
    let mut confident: Vec<(f64, bool)> = Vec::new();
    for r in rows {
        c.old.add(r.old != 0, r.old > 0);
        let s = r.x[0];
        c.pairwise.add(s.abs() >= judge.pairwise_tie && s != 0.0, s > 0.0);
        let z = judge.z(&r.x);
        c.trained.add(z.abs() >= judge.tie_threshold && z != 0.0, z > 0.0);
        confident.push((z.abs(), z > 0.0));
    }
    confident.sort_by(|a, b| b.0.total_cmp(&a.0));
    for share in [0.5, 0.7, 0.9, 1.0] {
        let k = ((share * confident.len() as f64).round() as usize).max(1).min(confident.len());
        if k > 0 {
            let right = confident[..k].iter().filter(|(_, ok)| *ok).count();
            c.curve.push((share, right as f64 / k as f64));
        }
    }
    c
}

/// Leave-one-out evaluation: for each family (or Space), a judge fitted
/// without it is scored on it.
pub fn leave_one_out(table: &FeatureTable, by_space: bool, without: &[String]) -> Vec<(String, Compared)> {
    let groups: Vec<String> = if by_space {
        let mut s: Vec<String> =
            table.rows.iter().filter(|r| r.family != NULL_FAMILY).map(|r| r.space.clone()).collect();
        s.sort();
        s.dedup();
        s
    } else {
        table.families()
    };
    groups
        .into_iter()
        .map(|g| {
            let judge = fit_artifact(table, std::slice::from_ref(&g), without, DEFAULT_L2, DEFAULT_ITERATIONS);
            let held: Vec<&Row> = table
                .rows
                .iter()
                .filter(|r| r.family != NULL_FAMILY && if by_space { r.space == g } else { r.family == g })
                .collect();
            (g, compare(&judge, &held))
        })
        .collect()
}

/// Share of null pairs a judge decides.
pub fn null_decided(judge: &TrainedJudge, table: &FeatureTable) -> (usize, usize) {
    let null: Vec<&Row> = table.rows.iter().filter(|r| r.family == NULL_FAMILY).collect();
    let decided = null.iter().filter(|r| judge.z(&r.x).abs() > judge.tie_threshold).count();
    (decided, null.len())
}

/// Builds a feature table: every generated pair (and every red-team case)
/// read by `judge` as a two-candidate match, better first. `sources` names
/// the files the pairs came from with their sha256. `progress` hears
/// (done, total) now and then.
pub fn build_table(
    judge: &crate::Judge,
    pairs: &[crate::degrade::Generated],
    sources: BTreeMap<String, String>,
    mut progress: impl FnMut(usize, usize),
) -> Result<FeatureTable, crate::JudgeError> {
    let model =
        judge.model.as_ref().ok_or_else(|| crate::JudgeError::Model("training needs a judge model".to_owned()))?;
    let mut rows = Vec::with_capacity(pairs.len());
    for (k, p) in pairs.iter().enumerate() {
        let input = crate::MatchInput {
            prompt: p.prompt.clone(),
            reference: p.reference.clone(),
            candidates: vec![
                crate::Candidate { id: "better".to_owned(), text: p.better.clone() },
                crate::Candidate { id: "worse".to_owned(), text: p.worse.clone() },
            ],
        };
        let sig = judge.signals(&input)?;
        // Today's rule: the orders must agree.
        let old = match &sig.p_a {
            Some(pa) => {
                let (p1, p2) = pa[0][1];
                if p1 > 0.5 && p2 < 0.5 {
                    1
                } else if p1 < 0.5 && p2 > 0.5 {
                    -1
                } else {
                    0
                }
            }
            None => 0,
        };
        rows.push(Row {
            id: p.id.clone(),
            family: p.family.clone(),
            space: p.space.clone(),
            x: sig.difference(0, 1).iter().map(|v| (v * 1e9).round() / 1e9).collect(),
            old,
        });
        if k % 25 == 24 || k + 1 == pairs.len() {
            progress(k + 1, pairs.len());
        }
    }
    Ok(FeatureTable {
        features: crate::signals::feature_names(),
        judge_model_sha256: model.sha256.clone(),
        embedder_sha256: judge.embedder.as_ref().map(|e| e.sha256.clone()).unwrap_or_default(),
        sources,
        rows,
    })
}

/// Red-team cases as generated pairs: family `redteam:ATTACK`, the corpus
/// named by `space`.
pub fn from_cases(cases: &[crate::calibrate::Case], space: &str) -> Vec<crate::degrade::Generated> {
    cases
        .iter()
        .map(|c| crate::degrade::Generated {
            id: format!("{space}:{}", c.id),
            family: format!("redteam:{}", c.attack),
            space: space.to_owned(),
            prompt: c.prompt.clone(),
            reference: c.reference.clone(),
            better: c.better.clone(),
            worse: c.worse.clone(),
        })
        .collect()
}

/// The evaluation as a table for people: per held-out family, and per
/// held-out Space, today's rule, the debiased pairwise reading and the
/// trained judge fitted without that family or Space, side by side.
pub fn render_evaluation(table: &FeatureTable, shipped: &TrainedJudge) -> String {
    let pct = |v: f64| format!("{:5.1}%", v * 100.0);
    let line = |name: &str, c: &Compared| {
        format!(
            "{name:<26} {:>4} | old {} @ {} | pairwise s {} @ {} | trained {} @ {} | curve {}\n",
            c.trained.pairs,
            pct(c.old.accuracy()),
            pct(c.old.coverage()),
            pct(c.pairwise.accuracy()),
            pct(c.pairwise.coverage()),
            pct(c.trained.accuracy()),
            pct(c.trained.coverage()),
            c.curve
                .iter()
                .map(|(cov, acc)| format!("{:.0}%:{:.0}%", cov * 100.0, acc * 100.0))
                .collect::<Vec<_>>()
                .join(" ")
        )
    };
    let mut out = String::from(
        "accuracy among decided @ coverage, each family judged by a judge fitted WITHOUT it (leave one family out)\n\
         (old = both orders must agree; pairwise s = the debiased A/B reading alone; curve = accuracy keeping the most \
         confident share)\n\n",
    );
    let without = &shipped.manifest.without;
    let families = leave_one_out(table, false, without);
    let mut gross = Compared::default();
    for (f, c) in &families {
        out.push_str(&line(f, c));
        if crate::degrade::GROSS.contains(&f.as_str()) {
            for (total, part) in
                [(&mut gross.old, &c.old), (&mut gross.pairwise, &c.pairwise), (&mut gross.trained, &c.trained)]
            {
                total.pairs += part.pairs;
                total.decided += part.decided;
                total.correct += part.correct;
            }
        }
    }
    out.push_str(&line("GROSS (held-out fits)", &gross));
    out.push_str("\nper held-out Space (a judge fitted without any of its prompts):\n");
    for (s, c) in leave_one_out(table, true, without) {
        out.push_str(&line(&s, &c));
    }
    out.push_str(
        "(redteam-arithmetic and redteam-json-contact are verifiable Spaces read with their verifiers hidden: \
         the judge-blind check)\n",
    );
    let (decided, total) = null_decided(shipped, table);
    let s_null = table.rows.iter().filter(|r| r.family == NULL_FAMILY && r.x[0].abs() > shipped.pairwise_tie).count();
    out.push_str(&format!(
        "\nnull set (an answer against itself, whitespace changed): trained judge decides {decided}/{total}, pairwise s \
         decides {s_null}/{total} (tie thresholds |z| < {:.4}, |s| < {:.4})\n",
        shipped.tie_threshold, shipped.pairwise_tie
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: usize, family: &str, x: Vec<f64>) -> Row {
        Row { id: format!("r{id}"), family: family.to_owned(), space: "s".to_owned(), x, old: 0 }
    }

    #[test]
    fn a_hostile_artifact_is_refused_with_its_reason() {
        let shipped = TrainedJudge::default_judge().expect("the default parses");
        let with = |edit: &dyn Fn(&mut serde_json::Value)| {
            let mut v = serde_json::to_value(&shipped).expect("json");
            edit(&mut v);
            TrainedJudge::parse(&v.to_string()).map_err(|e| e.to_string())
        };
        let err = with(&|v| v["pairwise_tie"] = serde_json::json!(-1.0)).expect_err("negative");
        assert!(err.contains("finite"), "{err}");
        let err = with(&|v| v["held_at_zero"] = serde_json::json!(["no_such_feature"])).expect_err("unknown");
        assert!(err.contains("no_such_feature"), "{err}");
        let err = with(&|v| v["weights"].as_array_mut().expect("weights").push(serde_json::json!(1.0)))
            .expect_err("one weight too many");
        assert!(err.contains("features"), "{err}");
        let err = with(&|v| v["manifest"]["excluded"] = serde_json::json!(vec!["x".repeat(100); 5_000]))
            .expect_err("too big");
        assert!(err.contains("at most"), "{err}");
        // JSON has no NaN: a weight written as one does not parse at all.
        let text = serde_json::to_string(&shipped).expect("json").replacen("\"weights\":[", "\"weights\":[NaN,", 1);
        assert!(TrainedJudge::parse(&text).is_err());
    }

    #[test]
    fn the_fit_finds_the_informative_feature_and_is_deterministic() {
        // Feature 1 says which side is better; feature 0 is noise.
        let mut state = 7u64;
        let mut next = || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 33) as f64 / (1u64 << 31) as f64) - 0.5
        };
        let rows: Vec<Row> = (0..200).map(|i| row(i, "f", vec![next(), 0.5 + next() * 0.2])).collect();
        let refs: Vec<&Row> = rows.iter().collect();
        let w = fit_weights(&refs, 2, 1.0, 50);
        assert!(w[1] > 2.0 && w[1].abs() > 5.0 * w[0].abs(), "{w:?}");
        assert_eq!(w, fit_weights(&refs, 2, 1.0, 50));
    }

    #[test]
    fn the_null_threshold_leaves_at_most_a_tenth_decided() {
        for n in [1usize, 9, 10, 11, 99, 250] {
            let mut v: Vec<f64> = (0..n).map(|i| (i * 37 % 101) as f64).collect();
            let t = null_threshold(&mut v);
            let decided = v.iter().filter(|x| **x > t).count();
            assert!(decided as f64 <= NULL_DECIDED_MAX * n as f64, "n {n}: {decided} decided over {t}");
        }
    }

    #[test]
    fn the_default_judge_is_reproduced_byte_for_byte_from_its_committed_features() {
        let table = FeatureTable::parse(DEFAULT_FEATURES_JSON).unwrap();
        let shipped = TrainedJudge::default_judge().unwrap();
        assert_eq!(shipped.manifest.features_sha256, table.sha256(), "the manifest names this table");
        let refit =
            fit_artifact(&table, &[], &shipped.manifest.without, shipped.manifest.l2, shipped.manifest.iterations);
        assert_eq!(refit.to_bytes(), DEFAULT_JSON.as_bytes(), "refitting gave different bytes");
    }

    #[test]
    fn a_held_out_family_is_absent_from_its_training_rows() {
        let table = FeatureTable::parse(DEFAULT_FEATURES_JSON).unwrap();
        for family in table.families() {
            let train = training_rows(&table, std::slice::from_ref(&family));
            assert!(!train.is_empty());
            assert!(train.iter().all(|r| r.family != family), "{family} leaked into its own fit");
            let judge = fit_artifact(&table, std::slice::from_ref(&family), &[], DEFAULT_L2, DEFAULT_ITERATIONS);
            assert!(!judge.manifest.families.contains_key(&family));
            assert_eq!(judge.manifest.excluded, vec![family.clone()]);
        }
        // And a held-out Space likewise.
        let space = table.rows[0].space.clone();
        assert!(training_rows(&table, std::slice::from_ref(&space)).iter().all(|r| r.space != space));
    }
}
