//! Two-seat games on an engine, without the pipeline: what the trainer
//! and `arena experiment games` play. A game runs a Space's referee over
//! answers sampled from the engine (each seat its own adapter and system
//! prompt); `play_with_branches` also samples other answers at one seat's
//! turns and plays their lines out, so the decisions whose lines ended
//! differently become preference pairs (the view as the prompt, the answer
//! whose line ended better chosen). `Score` is a score over games with its
//! interval.

use agent_runtime::chat::Message;
use agent_runtime::engine::{Engine, Prompt, Request};
use agent_runtime::sampling::SamplingParams;
use anyhow::{Context, bail};
use futures_util::future::{BoxFuture, join_all};
use referee::{Referee, State};
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;

/// A score over games (a win 1, a draw ½) with its 95% Wilson interval.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Score {
    pub wins: usize,
    pub draws: usize,
    pub losses: usize,
    pub rate: f64,
    pub low: f64,
    pub high: f64,
}

impl Score {
    /// Wilson's interval on the mean score, draws as half a win (the
    /// score's variance is at most a Bernoulli's of the same mean, so the
    /// interval is, if anything, wide).
    pub fn new(wins: usize, draws: usize, losses: usize) -> Score {
        let n = (wins + draws + losses) as f64;
        if n == 0.0 {
            return Score { wins, draws, losses, rate: 0.0, low: 0.0, high: 1.0 };
        }
        let p = (wins as f64 + 0.5 * draws as f64) / n;
        let z = 1.96f64;
        let centre = (p + z * z / (2.0 * n)) / (1.0 + z * z / n);
        let half = z * ((p * (1.0 - p) + z * z / (4.0 * n)) / n).sqrt() / (1.0 + z * z / n);
        Score { wins, draws, losses, rate: p, low: (centre - half).max(0.0), high: (centre + half).min(1.0) }
    }
}

/// One seat's player: the base model, or the base with an adapter, and
/// its system prompt.
#[derive(Clone, Default)]
pub struct Player {
    pub adapter: Option<PathBuf>,
    pub system: String,
}

/// A decision where two sampled answers' lines ended differently.
pub struct Decision {
    pub view: String,
    pub better: String,
    pub worse: String,
    pub margin: f64,
}

/// Everything a game needs, shared by its lines.
pub struct Table {
    pub engine: Engine,
    pub referee: Arc<Referee>,
    pub max_tokens: usize,
}

impl Table {
    /// Runs `f` with the referee on a blocking thread: a designer's script
    /// may use its whole time limit, never on an async worker.
    async fn rules<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Referee) -> Result<T, referee::RefereeError> + Send + 'static,
    ) -> anyhow::Result<T> {
        let referee = self.referee.clone();
        Ok(tokio::task::spawn_blocking(move || f(&referee)).await??)
    }

    pub async fn start(&self, prompt: &str) -> anyhow::Result<State> {
        let prompt = prompt.to_owned();
        self.rules(move |r| r.start(&prompt)).await
    }

    pub async fn to_move(&self, state: &State) -> anyhow::Result<Vec<usize>> {
        let state = state.clone();
        self.rules(move |r| r.to_move(&state)).await
    }

    pub async fn view(&self, state: &State, prompt: &str, seat: usize) -> anyhow::Result<String> {
        let (state, prompt) = (state.clone(), prompt.to_owned());
        self.rules(move |r| r.view(&state, &prompt, seat)).await
    }

    pub async fn play(&self, state: &State, answers: &[(usize, String)]) -> anyhow::Result<State> {
        let (state, answers) = (state.clone(), answers.to_vec());
        self.rules(move |r| r.play(&state, &answers)).await
    }

    pub async fn ask(&self, player: &Player, view: &str, temperature: f32, seed: u64) -> anyhow::Result<String> {
        let params = if temperature == 0.0 {
            SamplingParams::greedy(self.max_tokens)
        } else {
            SamplingParams {
                temperature,
                repetition_penalty: 1.0,
                max_new_tokens: self.max_tokens,
                seed,
                ..Default::default()
            }
        };
        let request = Request {
            prompt: Prompt::Chat(if player.system.is_empty() {
                vec![Message::user(view.to_owned())]
            } else {
                vec![Message::system(player.system.clone()), Message::user(view.to_owned())]
            }),
            adapter: player.adapter.clone(),
            params,
            logprobs: false,
        };
        let rx = loop {
            match self.engine.submit(request.clone()) {
                Ok(rx) => break rx,
                Err(agent_runtime::engine::SubmitError::OverCapacity { .. }) => {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await
                }
                Err(err) => bail!("{err}"),
            }
        };
        Ok(rx.await.context("the engine stopped")??.text)
    }

    /// Plays `state` to its end.
    pub async fn finish(
        &self,
        prompt: &str,
        players: &[Player; 2],
        mut state: State,
        temperature: f32,
        seed: u64,
    ) -> anyhow::Result<State> {
        let mut step = 0u64;
        while state.outcome.is_none() {
            let mut answers = Vec::new();
            for seat in self.to_move(&state).await? {
                let view = self.view(&state, prompt, seat).await?;
                let s = seed ^ (step.wrapping_mul(0x9E37_79B9_7F4A_7C15)) ^ seat as u64;
                answers.push((seat, self.ask(&players[seat], &view, temperature, s).await?));
            }
            state = self.play(&state, &answers).await?;
            step += 1;
        }
        Ok(state)
    }

    /// Plays a game; at each turn of `learner`, `alternatives` more answers
    /// are sampled from the same view and their lines played out, and each
    /// line's outcome for `learner` compared with the main line's.
    pub async fn play_with_branches(
        &self,
        prompt: &str,
        players: &[Player; 2],
        learner: usize,
        alternatives: usize,
        temperature: f32,
        seed: u64,
    ) -> anyhow::Result<(State, Vec<Decision>)> {
        let mut state = self.start(prompt).await?;
        // (view, the main line's answer and whether it was legal, the other
        // answer and whether it was, its line's end)
        type Branch<'a> = (String, String, bool, String, bool, BoxFuture<'a, anyhow::Result<State>>);
        let mut branches: Vec<Branch<'_>> = Vec::new();
        let legal_of = |s: &State| s.transcript.iter().rev().find(|e| e.seat == learner).is_some_and(|e| e.legal);
        let mut step = 0u64;
        while state.outcome.is_none() {
            let seats = self.to_move(&state).await?;
            let mut answers = Vec::new();
            let mut asked = None;
            for seat in seats {
                let view = self.view(&state, prompt, seat).await?;
                let s = seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (seat as u64) << 56;
                let main = self.ask(&players[seat], &view, temperature, s).await?;
                if seat == learner && state.retry.is_none() {
                    asked = Some((view, s, main.clone()));
                }
                answers.push((seat, main));
            }
            let next = self.play(&state, &answers).await?;
            // Other answers at the learner's turn, every other seat's answer
            // as in the game (simultaneous order moves them together).
            if let Some((view, s, main)) = asked {
                let main_legal = legal_of(&next);
                for k in 0..alternatives as u64 {
                    let alt = self.ask(&players[learner], &view, temperature, s ^ (0xA5A5_5A5A + k)).await?;
                    if alt != main {
                        let moves: Vec<(usize, String)> = answers
                            .iter()
                            .map(|(seat, a)| (*seat, if *seat == learner { alt.clone() } else { a.clone() }))
                            .collect();
                        let branch_state = self.play(&state, &moves).await?;
                        let alt_legal = legal_of(&branch_state);
                        let rollout = self.finish(prompt, players, branch_state, temperature, s ^ (0x5151 + k));
                        branches.push((view.clone(), main.clone(), main_legal, alt, alt_legal, Box::pin(rollout)));
                    }
                }
            }
            state = next;
            step += 1;
        }
        // An illegal answer's line ends at most as a loss for it: under
        // retry or penalty the line goes on, with the players' next answers
        // taking the credit otherwise.
        let credit = |score: f64, legal: bool| if legal { score } else { score.min(0.0) };
        let end_score = seat_score(&state, learner);
        let mut keys = Vec::new();
        let mut rollouts = Vec::new();
        for (view, main, main_legal, alt, alt_legal, f) in branches {
            keys.push((view, main, main_legal, alt, alt_legal));
            rollouts.push(f);
        }
        let ends = join_all(rollouts).await;
        let mut decisions = Vec::new();
        for ((view, main, main_legal, alt, alt_legal), end) in keys.into_iter().zip(ends) {
            let (alt_score, main_score) =
                (credit(seat_score(&end?, learner), alt_legal), credit(end_score, main_legal));
            if (alt_score - main_score).abs() > 1e-9 {
                let (better, worse) = if alt_score > main_score { (alt, main) } else { (main, alt) };
                decisions.push(Decision { view, better, worse, margin: (alt_score - main_score).abs() });
            }
        }
        Ok((state, decisions))
    }
}

/// A seat's score in a finished game (½ for a judged outcome, which this
/// loop does not use).
pub fn seat_score(state: &State, seat: usize) -> f64 {
    state.outcome.as_ref().and_then(|o| o.scores.get(seat).copied()).unwrap_or(0.5)
}

/// Illegal answers and answers by `seat`.
pub fn illegal(state: &State, seat: usize) -> (usize, usize) {
    let mine = state.transcript.iter().filter(|e| e.seat == seat);
    (mine.clone().filter(|e| !e.legal).count(), mine.count())
}

/// Decision pairs for `player` playing itself from each of `prompts`, once
/// from each seat, sampled at `temperature`: at each of the learning
/// seat's turns `alternatives` more answers are played out (see
/// [`Table::play_with_branches`]).
pub async fn self_play_pairs(
    table: &Table,
    player: &Player,
    prompts: &[String],
    alternatives: usize,
    temperature: f32,
    seed: u64,
) -> anyhow::Result<Vec<Decision>> {
    let players = [player.clone(), player.clone()];
    let games =
        prompts.iter().enumerate().flat_map(|(i, p)| [(i, p, 0usize), (i, p, 1usize)]).map(|(i, prompt, seat)| {
            let players = &players;
            let seed = seed ^ ((i as u64) << 8) ^ seat as u64;
            async move { table.play_with_branches(prompt, players, seat, alternatives, temperature, seed).await }
        });
    let played = join_all(games).await.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    Ok(played.into_iter().flat_map(|(_, decisions)| decisions).collect())
}

/// `new` against `old` from each prompt twice, seats swapped; each game
/// with the seat `new` played, its prompt's index, and its end.
pub async fn head_to_head(
    table: &Table,
    new: &Player,
    old: &Player,
    prompts: &[(usize, String)],
    temperature: f32,
    seed: u64,
) -> anyhow::Result<Vec<(usize, usize, State)>> {
    let games = prompts.iter().flat_map(|(i, p)| [(*i, p, 0usize), (*i, p, 1usize)]).map(|(i, prompt, seat)| {
        let players = if seat == 0 { [new.clone(), old.clone()] } else { [old.clone(), new.clone()] };
        let seed = seed ^ ((i as u64) << 8);
        async move {
            let start = table.start(prompt).await?;
            let end = table.finish(prompt, &players, start, temperature, seed).await?;
            Ok::<_, anyhow::Error>((i, seat, end))
        }
    });
    join_all(games).await.into_iter().collect()
}

/// A point in a self-play game where one seat is to move: where GRPO
/// samples that seat's answers. `others` are the answers the other seats
/// to move gave there (simultaneous order), played with each sample.
#[derive(Debug, Clone)]
pub struct Position {
    /// The game's starting prompt.
    pub prompt: String,
    pub state: State,
    pub seat: usize,
    /// What the seat was shown: the prompt its answers are sampled for.
    pub view: String,
    pub others: Vec<(usize, String)>,
}

/// Positions from `players` playing each of `prompts` at `temperature`:
/// every turn of `learner` (of either seat when `None`; retries left
/// out), at most `max`, spread evenly over the games' turns in order.
pub async fn play_positions(
    table: &Table,
    players: &[Player; 2],
    learner: Option<usize>,
    prompts: &[String],
    temperature: f32,
    seed: u64,
    max: usize,
) -> anyhow::Result<Vec<Position>> {
    let games = prompts.iter().enumerate().map(|(i, prompt)| async move {
        let mut state = table.start(prompt).await?;
        let mut found = Vec::new();
        let mut step = 0u64;
        while state.outcome.is_none() {
            let seats = table.to_move(&state).await?;
            let mut answers = Vec::new();
            let mut views = Vec::new();
            for &seat in &seats {
                let view = table.view(&state, prompt, seat).await?;
                let s = seed ^ ((i as u64) << 24) ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ seat as u64;
                answers.push((seat, table.ask(&players[seat], &view, temperature, s).await?));
                views.push((seat, view));
            }
            if state.retry.is_none() {
                for (seat, view) in views.into_iter().filter(|(s, _)| learner.is_none_or(|l| l == *s)) {
                    let others = answers.iter().filter(|(s, _)| *s != seat).cloned().collect();
                    found.push(Position { prompt: prompt.clone(), state: state.clone(), seat, view, others });
                }
            }
            state = table.play(&state, &answers).await?;
            step += 1;
        }
        Ok::<_, anyhow::Error>(found)
    });
    let all: Vec<Position> =
        join_all(games).await.into_iter().collect::<anyhow::Result<Vec<_>>>()?.into_iter().flatten().collect();
    if all.len() <= max {
        return Ok(all);
    }
    let stride = all.len() as f64 / max as f64;
    Ok((0..max).map(|k| all[(k as f64 * stride) as usize].clone()).collect())
}

/// Each answer's reward at `at`: the seat's final score when the line the
/// answer starts is played to its end by `players` (draws ½), at most 0
/// (a loss) when the answer was not a legal move, and whether it was.
/// (Under `retry` or `penalty` an illegal answer's line goes on — with the
/// rollout players answering the retry — so its end alone would credit the
/// illegal answer with their play: measured, that taught illegal moves.)
pub async fn line_rewards(
    table: &Table,
    players: &[Player; 2],
    at: &Position,
    answers: &[String],
    temperature: f32,
    seed: u64,
) -> anyhow::Result<Vec<(f64, bool)>> {
    let lines = answers.iter().enumerate().map(|(k, answer)| async move {
        let mut moves = at.others.clone();
        moves.push((at.seat, answer.clone()));
        moves.sort_by_key(|(s, _)| *s);
        let next = table.play(&at.state, &moves).await?;
        let legal = next.transcript.iter().rev().find(|e| e.seat == at.seat).is_some_and(|e| e.legal);
        let end = if next.outcome.is_some() {
            next
        } else {
            table.finish(&at.prompt, players, next, temperature, seed ^ (k as u64).wrapping_mul(0x2545_F491)).await?
        };
        let score = seat_score(&end, at.seat);
        Ok::<_, anyhow::Error>((if legal { score } else { score.min(0.0) }, legal))
    });
    join_all(lines).await.into_iter().collect()
}
