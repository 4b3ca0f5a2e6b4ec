//! A Space's dry run: sample matches of a draft — never published, no
//! money moved, nothing written to the database — between baseline agents
//! (the base model under a few stock system prompts) on the real runtime
//! and the Space's real judge, with the summary a designer needs before
//! players pay: each verifier's pass rate, the share of matches that yield
//! a pair at the Space's margin, the judge's decisiveness, tokens and
//! seconds per match, and matches per hour on this machine.

use crate::domain::agent::AgentSampling;
use crate::domain::dry_run::{DryGame, DryMatch, Report, summarise};
use crate::domain::space::Space;
use crate::work::generator::{GenJob, Generator};
use std::sync::Arc;
use std::time::Instant;

/// Matches one dry run may ask for.
pub const MAX_MATCHES: usize = 16;

/// Steps a dry run plays of one game (a Space may allow 200 turns, each
/// with retries; a dry run shares the server's engine).
pub const MAX_GAME_STEPS: usize = 60;

/// The stock agents a dry run seats, in order: name and system prompt.
pub const BASELINES: &[(&str, &str)] = &[
    ("base", ""),
    ("careful", "You are a careful assistant. Answer exactly what is asked, correctly and briefly."),
    ("brief", "Answer in one short sentence."),
    ("stepwise", "Think step by step, then give the final answer on the last line."),
    ("friendly", "You are a friendly, helpful assistant."),
    ("expert", "You are an expert. Be precise and complete."),
    ("plain", "Use plain words a child would understand."),
    ("formal", "Answer formally and concisely."),
];

/// A seat's agent: a name for the report, its system prompt, sampling and
/// adapter (a designer's own agent's current version, or a baseline).
#[derive(Debug, Clone)]
pub struct Seat {
    pub name: String,
    pub system: String,
    pub sampling: AgentSampling,
    pub adapter: Option<std::path::PathBuf>,
}

/// The designer's `own` agents first, then the baselines.
pub fn seats(own: Vec<Seat>) -> Vec<Seat> {
    let mut all = own;
    all.extend(BASELINES.iter().map(|(name, system)| Seat {
        name: (*name).to_owned(),
        system: (*system).to_owned(),
        sampling: AgentSampling::default(),
        adapter: None,
    }));
    all
}

/// Runs `n` sample matches of `space` on `generator` and `judge` with the
/// agents of `seats` (rotating: match m seats agents m, m+1, …), calling
/// `progress(done, n)` after each.
pub async fn run(
    space: &Space,
    generator: Arc<dyn Generator>,
    judge: Arc<judge::Judge>,
    n: usize,
    seats: &[Seat],
    progress: impl Fn(usize, usize) + Send + Sync + 'static,
) -> anyhow::Result<Report> {
    anyhow::ensure!((1..=MAX_MATCHES).contains(&n), "a dry run has 1 to {MAX_MATCHES} matches");
    anyhow::ensure!(!space.match_prompts.is_empty(), "the Space has no prompts for matches");
    let k = space.agents_per_match as usize;
    anyhow::ensure!(k <= seats.len(), "a dry run has {} agents to seat, {k} per match", seats.len());
    let started = Instant::now();
    let progress = Arc::new(progress);
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let runs = (0..n).map(|m| {
        let item = &space.prompts[space.match_prompts[m % space.match_prompts.len()]];
        let (prompt, reference) = (item.prompt.clone(), item.reference.clone());
        let chosen: Vec<&Seat> = (0..k).map(|s| &seats[(m + s) % seats.len()]).collect();
        let jobs: Vec<GenJob> = chosen
            .iter()
            .enumerate()
            .map(|(slot, seat)| GenJob {
                system: seat.system.clone(),
                prompt: prompt.clone(),
                adapter: seat.adapter.clone(),
                params: seat.sampling.params(space.max_new_tokens as usize, 1000 + m as u64 * 31 + slot as u64),
                reference: reference.clone(),
                slot,
            })
            .collect();
        let names: Vec<String> = chosen.iter().map(|s| s.name.clone()).collect();
        let (generator, judge, progress, done) = (generator.clone(), judge.clone(), progress.clone(), done.clone());
        let game_seats: Vec<Seat> = chosen.iter().map(|s| (*s).clone()).collect();
        async move {
            let t = Instant::now();
            if let Some(referee) = &space.game {
                let sample = SampleGame { index: m, prompt, reference, started: t };
                return play(space, referee, generator, judge, &game_seats, sample)
                    .await
                    .inspect(|_| progress(done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1, n));
            }
            let outs = generator.generate(jobs).await;
            let outs: Vec<_> = outs.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
            let input = judge::MatchInput {
                prompt: prompt.clone(),
                reference: reference.clone(),
                candidates: outs
                    .iter()
                    .enumerate()
                    .map(|(i, o)| judge::Candidate { id: i.to_string(), text: o.text.clone() })
                    .collect(),
            };
            let verdict = tokio::task::spawn_blocking(move || judge.judge(&input)).await??;
            let finished = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            progress(finished, n);
            anyhow::Ok(DryMatch {
                prompt,
                reference,
                agents: names.iter().enumerate().map(|(i, name)| (i.to_string(), name.clone())).collect(),
                outputs: outs.iter().enumerate().map(|(i, o)| (i.to_string(), o.text.clone())).collect(),
                tokens: outs.iter().map(|o| o.tokens).sum(),
                seconds: t.elapsed().as_secs_f64(),
                verdict,
                game: None,
            })
        }
    });
    let matches: Vec<DryMatch> = futures_util::future::join_all(runs).await.into_iter().collect::<Result<_, _>>()?;
    let wall = started.elapsed().as_secs_f64();
    Ok(Report { summary: summarise(&matches, wall), matches })
}

/// One sample game of a multi-turn Space: the seats to move answer their
/// views on `generator` step by step until the referee ends it; each seat's
/// part is its output. The Space's judge reads the parts (its verifiers'
/// results are the report's); when the referee decides, its outcome ranks
/// the seats and makes the pairs, as in the arena.
/// The sample match a game is: its number in the dry run, its prompt and
/// reference, and when it started.
struct SampleGame {
    index: usize,
    prompt: String,
    reference: Option<String>,
    started: Instant,
}

async fn play(
    space: &Space,
    referee: &referee::Referee,
    generator: Arc<dyn Generator>,
    judge: Arc<judge::Judge>,
    seats: &[Seat],
    sample: SampleGame,
) -> anyhow::Result<DryMatch> {
    let SampleGame { index: m, prompt, reference, started: t } = sample;
    // Every referee call on a blocking thread: a designer's script may use
    // its whole time limit (and runs on the script threads from there).
    let rules = Arc::new(referee.clone());
    let (r, p) = (rules.clone(), prompt.clone());
    let mut state = tokio::task::spawn_blocking(move || r.start(&p)).await??;
    let (mut steps, mut tokens) = (0usize, 0usize);
    while state.outcome.is_none() && steps < MAX_GAME_STEPS {
        let (r, s, p) = (rules.clone(), state.clone(), prompt.clone());
        let (to_move, views) = tokio::task::spawn_blocking(move || {
            let to_move = r.to_move(&s)?;
            let views = to_move.iter().map(|&seat| r.view(&s, &p, seat)).collect::<Result<Vec<String>, _>>()?;
            Ok::<_, referee::RefereeError>((to_move, views))
        })
        .await??;
        let mut jobs = Vec::with_capacity(to_move.len());
        for (&seat, view) in to_move.iter().zip(views) {
            let s = &seats[seat];
            jobs.push(GenJob {
                system: s.system.clone(),
                prompt: view,
                adapter: s.adapter.clone(),
                params: s.sampling.params(referee.turns.max_tokens as usize, 1000 + (m * 1000 + steps) as u64 * 31),
                reference: None,
                slot: seat,
            });
        }
        let outs: Vec<_> = generator.generate(jobs).await.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
        tokens += outs.iter().map(|o| o.tokens).sum::<usize>();
        let answers: Vec<(usize, String)> = to_move.iter().copied().zip(outs.into_iter().map(|o| o.text)).collect();
        let next = rules.clone();
        state = tokio::task::spawn_blocking(move || next.play(&state, &answers)).await??;
        steps += 1;
    }
    let outcome = state.outcome.clone().unwrap_or_else(|| referee::Outcome {
        scores: Vec::new(),
        reason: format!("stopped after {steps} steps (a dry run's limit); the judge ranks the parts so far"),
        judged: true,
    });
    let parts: Vec<String> = (0..seats.len()).map(|seat| referee::Referee::seat_transcript(&state, seat)).collect();
    let input = judge::MatchInput {
        prompt: prompt.clone(),
        reference: reference.clone(),
        candidates: parts
            .iter()
            .enumerate()
            .map(|(i, p)| judge::Candidate { id: i.to_string(), text: p.clone() })
            .collect(),
    };
    let mut verdict = tokio::task::spawn_blocking(move || judge.judge(&input)).await??;
    if !outcome.judged {
        let decided = crate::work::turns::outcome_verdict(
            &state,
            &(0..seats.len() as i16).collect::<Vec<_>>(),
            space.judge.min_margin,
        );
        let read = |key: &str| decided.get(key).cloned().unwrap_or_default();
        verdict.ranking = serde_json::from_value(read("ranking"))?;
        verdict.ranks = serde_json::from_value(read("ranks"))?;
        verdict.scores = serde_json::from_value(read("scores"))?;
        verdict.passed_hard = serde_json::from_value(read("passed_hard"))?;
        verdict.confidence = read("confidence").as_f64().unwrap_or(0.0);
        let template = verdict.judge.template_sha256.clone();
        verdict.pairs = read("pairs")
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|p| judge::Pair {
                chosen: p["chosen"].as_str().unwrap_or_default().to_owned(),
                rejected: p["rejected"].as_str().unwrap_or_default().to_owned(),
                margin: p["margin"].as_f64().unwrap_or(0.0),
                p_chosen_first: None,
                p_chosen_second: None,
                consistent: true,
                chosen_verifiers: Vec::new(),
                rejected_verifiers: Vec::new(),
                judge_model_sha256: None,
                judge_template_sha256: template.clone(),
                judge_trained_sha256: None,
            })
            .collect();
    }
    Ok(DryMatch {
        prompt,
        reference,
        agents: seats.iter().enumerate().map(|(i, s)| (i.to_string(), s.name.clone())).collect(),
        outputs: parts.into_iter().enumerate().map(|(i, p)| (i.to_string(), p)).collect(),
        tokens,
        seconds: t.elapsed().as_secs_f64(),
        verdict,
        game: Some(DryGame {
            reason: outcome.reason,
            scores: outcome.scores.iter().enumerate().map(|(i, s)| (i.to_string(), *s)).collect(),
            steps,
            answers: state.transcript.len(),
            illegal: state.illegal.clone(),
        }),
    })
}
