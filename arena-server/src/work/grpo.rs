//! GRPO in the arena: a Space's training prompts (never its held-out ones)
//! as the trainer's prompts, and the Space's judge as the reward.

use crate::domain::space::Space;
use agent_runtime::train::grpo::{GrpoPrompt, Reward};
use judge::{Candidate, Judge, MatchInput};

/// The Space's prompts a GRPO run may sample: every prompt that is not
/// held out, with its tier and the agent's system prompt.
pub fn training_prompts(space: &Space, system: Option<&str>) -> Vec<GrpoPrompt> {
    let held: std::collections::HashSet<usize> = space.held_out.iter().copied().collect();
    space
        .prompts
        .iter()
        .enumerate()
        .filter(|(i, _)| !held.contains(i))
        .map(|(index, p)| GrpoPrompt {
            index,
            system: system.filter(|s| !s.is_empty()).map(str::to_owned),
            prompt: p.prompt.clone(),
            reference: p.reference.clone(),
            tier: p.tier,
        })
        .collect()
}

/// A group's rewards from the Space's judge: the group is judged as one
/// match and each completion's reward is its score in [0, 1] (verifiers
/// and the AI judge by weight). A completion passes when it passed every
/// hard check — or, in a Space without hard checks, when its score is at
/// least ½.
pub fn judge_reward(judge: &Judge) -> impl FnMut(&GrpoPrompt, &[String]) -> Result<Vec<Reward>, String> + Send + '_ {
    let has_hard = judge.config.verifiers.iter().any(|v| v.hard);
    move |prompt: &GrpoPrompt, texts: &[String]| {
        let candidates: Vec<Candidate> =
            texts.iter().enumerate().map(|(k, t)| Candidate { id: format!("s{k}"), text: t.clone() }).collect();
        let verdict = judge
            .judge(&MatchInput { prompt: prompt.prompt.clone(), reference: prompt.reference.clone(), candidates })
            .map_err(|e| e.to_string())?;
        (0..texts.len())
            .map(|k| {
                let id = format!("s{k}");
                let value = *verdict.scores.get(&id).ok_or_else(|| format!("the verdict has no score for {id}"))?;
                let passed =
                    if has_hard { verdict.passed_hard.get(&id).copied().unwrap_or(false) } else { value >= 0.5 };
                Ok(Reward { value, passed })
            })
            .collect()
    }
}
