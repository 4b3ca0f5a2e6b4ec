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

/// [`judge_reward`] holding its judge (for a training thread).
pub fn judge_reward_owned(judge: Judge) -> impl FnMut(&GrpoPrompt, &[String]) -> Result<Vec<Reward>, String> + Send {
    move |prompt: &GrpoPrompt, texts: &[String]| judge_reward(&judge)(prompt, texts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use judge::files::SpaceFiles;
    use std::path::Path;
    use std::sync::Arc;

    fn space(extra: &str) -> Space {
        let text = format!(
            r#"name = "sums"
agents_per_match = 2
[prompts]
inline = [{{ prompt = "What is 2 + 3?", reference = "5" }}, {{ prompt = "What is 4 + 4?", reference = "8" }},
          {{ prompt = "What is 1 + 6?", reference = "7" }}, {{ prompt = "What is 9 + 9?", reference = "18" }}]
{extra}
[judge]
mode = "none"
[training]
holdout = 0.25
"#
        );
        Space::parse(&text, &SpaceFiles::new(), Path::new(".")).unwrap()
    }

    #[test]
    fn the_reward_is_the_judges_score_and_a_pass_is_the_hard_check() {
        let hard = space("[[verifiers]]\nkind = \"answer\"\nmode = \"numeric\"\nhard = true\n");
        let judge = Judge::new(Arc::new(hard.judge.clone()), None).unwrap();
        let prompts = training_prompts(&hard, Some("Be brief."));
        assert_eq!(prompts.len(), 3, "the held-out prompt is not a training prompt");
        assert!(prompts.iter().all(|p| !hard.held_out.contains(&p.index)));
        assert!(prompts.iter().all(|p| p.system.as_deref() == Some("Be brief.")));
        let p = &prompts[0];
        let right = p.reference.clone().unwrap();
        let texts = vec![format!("It is {right}."), "It is 1000.".to_owned(), String::new()];
        let rewards = judge_reward(&judge)(p, &texts).unwrap();
        assert_eq!(rewards.len(), 3);
        assert!(rewards[0].passed && !rewards[1].passed && !rewards[2].passed, "{rewards:?}");
        assert!(rewards[0].value > rewards[1].value, "{rewards:?}");

        // Without a hard check, a pass is a score of at least one half.
        let soft = space("[[verifiers]]\nkind = \"length\"\nunit = \"words\"\nmax = 3\n");
        let judge = Judge::new(Arc::new(soft.judge.clone()), None).unwrap();
        let texts = vec!["Five.".to_owned(), "one two three four five six seven eight nine ten".to_owned()];
        let rewards = judge_reward(&judge)(p, &texts).unwrap();
        assert_eq!(
            rewards.iter().map(|r| r.passed).collect::<Vec<_>>(),
            vec![rewards[0].value >= 0.5, rewards[1].value >= 0.5]
        );
        assert!(rewards[0].value > rewards[1].value, "{rewards:?}");
    }
}
