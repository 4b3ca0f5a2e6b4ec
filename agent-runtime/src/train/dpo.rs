//! The DPO objective on sequence log-likelihoods (Rafailov et al., the
//! "sigmoid" loss TRL's DPOTrainer uses by default): for a pair, with the
//! policy's and the frozen reference's log-likelihoods of the chosen and
//! rejected completions,
//!
//! ```text
//! z    = β·((π_c − ref_c) − (π_r − ref_r))
//! loss = −log σ(z) = softplus(−z)
//! ```
//!
//! The trainer back-propagates `∂loss/∂π_c` and `∂loss/∂π_r` through the
//! per-token log-probabilities into the LoRA parameters.

use serde::Serialize;

/// One pair's (or a batch's mean) loss, gradients and the figures TRL logs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct DpoTerms {
    pub loss: f64,
    /// ∂loss/∂(policy log-likelihood of the chosen completion).
    pub grad_chosen: f64,
    /// ∂loss/∂(policy log-likelihood of the rejected completion).
    pub grad_rejected: f64,
    /// β·(π_c − ref_c): the implicit reward of the chosen completion.
    pub chosen_reward: f64,
    /// β·(π_r − ref_r).
    pub rejected_reward: f64,
    /// 1 when the chosen reward exceeds the rejected one, else 0 (a mean
    /// over a batch is the reward accuracy).
    pub accuracy: f64,
}

impl DpoTerms {
    pub fn margin(&self) -> f64 {
        self.chosen_reward - self.rejected_reward
    }
}

/// log(1 + e^x) without overflow.
fn softplus(x: f64) -> f64 {
    if x > 0.0 { x + (-x).exp().ln_1p() } else { x.exp().ln_1p() }
}

fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// The terms for one pair.
pub fn pair(policy_chosen: f64, policy_rejected: f64, ref_chosen: f64, ref_rejected: f64, beta: f64) -> DpoTerms {
    let chosen_reward = beta * (policy_chosen - ref_chosen);
    let rejected_reward = beta * (policy_rejected - ref_rejected);
    let z = chosen_reward - rejected_reward;
    let pull = beta * sigmoid(-z);
    DpoTerms {
        loss: softplus(-z),
        grad_chosen: -pull,
        grad_rejected: pull,
        chosen_reward,
        rejected_reward,
        accuracy: if z > 0.0 { 1.0 } else { 0.0 },
    }
}

/// The batch mean; each pair's gradients are scaled by 1/n, as the mean's.
/// `pairs` holds (π_c, π_r, ref_c, ref_r).
pub fn batch(pairs: &[(f64, f64, f64, f64)], beta: f64) -> (DpoTerms, Vec<DpoTerms>) {
    let n = pairs.len().max(1) as f64;
    let each: Vec<DpoTerms> = pairs
        .iter()
        .map(|&(pc, pr, rc, rr)| {
            let mut t = pair(pc, pr, rc, rr, beta);
            t.grad_chosen /= n;
            t.grad_rejected /= n;
            t
        })
        .collect();
    let mean = |f: fn(&DpoTerms) -> f64| each.iter().map(f).sum::<f64>() / n;
    let summary = DpoTerms {
        loss: mean(|t| t.loss),
        grad_chosen: each.iter().map(|t| t.grad_chosen).sum(),
        grad_rejected: each.iter().map(|t| t.grad_rejected).sum(),
        chosen_reward: mean(|t| t.chosen_reward),
        rejected_reward: mean(|t| t.rejected_reward),
        accuracy: mean(|t| t.accuracy),
    };
    (summary, each)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_the_reference_the_loss_is_ln_2_and_accuracy_zero() {
        let t = pair(-12.0, -15.0, -12.0, -15.0, 0.1);
        assert!((t.loss - std::f64::consts::LN_2).abs() < 1e-12);
        assert_eq!(t.accuracy, 0.0);
        assert!((t.grad_chosen + 0.05).abs() < 1e-12 && (t.grad_rejected - 0.05).abs() < 1e-12);
    }

    #[test]
    fn gradients_match_finite_differences() {
        let beta = 0.3;
        for &(pc, pr, rc, rr) in &[(-10.0, -11.0, -10.5, -10.2), (-3.0, -40.0, -20.0, -5.0), (-50.0, -2.0, -1.0, -60.0)]
        {
            let t = pair(pc, pr, rc, rr, beta);
            let h = 1e-6;
            let dc = (pair(pc + h, pr, rc, rr, beta).loss - pair(pc - h, pr, rc, rr, beta).loss) / (2.0 * h);
            let dr = (pair(pc, pr + h, rc, rr, beta).loss - pair(pc, pr - h, rc, rr, beta).loss) / (2.0 * h);
            assert!((t.grad_chosen - dc).abs() < 1e-6, "{} vs {dc}", t.grad_chosen);
            assert!((t.grad_rejected - dr).abs() < 1e-6, "{} vs {dr}", t.grad_rejected);
        }
    }

    #[test]
    fn extreme_margins_stay_finite() {
        let winning = pair(0.0, -1e6, 0.0, 0.0, 1.0);
        assert!(winning.loss.is_finite() && winning.loss < 1e-12 && winning.accuracy == 1.0);
        let losing = pair(-1e6, 0.0, 0.0, 0.0, 1.0);
        assert!((losing.loss - 1e6).abs() < 1e-3 && (losing.grad_chosen + 1.0).abs() < 1e-12);
    }

    #[test]
    fn the_batch_is_the_mean_of_its_pairs() {
        let pairs = [(-1.0, -2.0, -1.5, -1.5), (-3.0, -1.0, -2.0, -2.0)];
        let (mean, each) = batch(&pairs, 0.5);
        assert!((mean.loss - (each[0].loss + each[1].loss) / 2.0).abs() < 1e-12);
        assert_eq!(mean.accuracy, 0.5);
        assert!((each[0].grad_chosen - pair(-1.0, -2.0, -1.5, -1.5, 0.5).grad_chosen / 2.0).abs() < 1e-12);
        assert!(mean.margin() < 0.0, "the second pair is badly ranked and dominates");
    }
}
