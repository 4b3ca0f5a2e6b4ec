//! Referees for multi-turn Spaces: the rules that turn agents' answers into
//! moves, keep the state of a game between turns, render what each seat
//! sees, and declare the outcome.
//!
//! A [`Referee`] is the checked `[turns]` and `[referee]` tables of a Space.
//! Its game state is a [`State`], plain JSON-serialisable data, so the arena
//! stores it per (match, turn) and resumes a match from the last stored
//! turn. Every function here is pure: the same state and answers give the
//! same next state. Built-in rules: [`grid`] (tic-tac-toe, connect-four),
//! [`negotiation`] (splitting a pot), [`debate`] (positions, rounds, the
//! judge decides); [`script`] runs a designer's Rhai script under
//! operation, size, depth and time limits with no I/O.
//!
//! Every game ends: a turn limit always applies, retries are bounded, and a
//! seat that keeps playing illegal moves forfeits.

pub mod debate;
pub mod grid;
pub mod moves;
pub mod negotiation;
pub mod sandbox;
pub mod script;

// The crate's own tests meter scripts' memory as the arena does.
#[cfg(test)]
#[global_allocator]
static ALLOC: sandbox::MeteredAlloc = sandbox::MeteredAlloc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Seats a multi-turn match may have.
pub const MAX_SEATS: usize = 8;
/// The most turns a Space may ask for.
pub const MAX_TURNS: u32 = 200;
/// Characters of one answer the referee reads and the transcript keeps.
pub const MAX_TURN_CHARS: usize = 4_000;
/// Characters of a view (what a seat is shown in one turn); a transcript
/// view keeps the prompt and the most recent turns that fit.
pub const MAX_VIEW_CHARS: usize = 12_000;

/// Who moves in a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Order {
    /// One seat per turn, as the rules say (built-ins: seat after seat).
    RoundRobin,
    /// Every seat each turn; no seat sees the others' answers of that turn.
    Simultaneous,
}

/// What a seat is shown each turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum View {
    /// The prompt and every answer so far, labelled by seat.
    Transcript,
    /// The referee's rendering of the state for that seat (a board, the
    /// standing offer, …).
    Referee,
}

/// What happens when the turn limit is reached and the rules declared no
/// outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnLimit {
    /// The rules' scores at the limit (a draw in a grid game, no deal in a
    /// negotiation).
    Rules,
    /// The Space's judge ranks the seats' transcripts.
    Judge,
}

/// How an illegal move is handled.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Illegal {
    /// The seat loses at once.
    Forfeit,
    /// The move is void, the turn passes, `points` come off the seat's
    /// final score; past `max` illegal moves the seat forfeits.
    Penalty { points: f64, max: u32 },
    /// The seat is asked again (told why), up to `retries` times in a row;
    /// then it forfeits.
    Retry { retries: u32 },
}

/// The turn protocol (`[turns]`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Turns {
    pub order: Order,
    /// Turns before the match ends (a round-robin turn is one seat's move;
    /// a simultaneous turn is every seat's).
    pub max_turns: u32,
    pub view: View,
    /// Tokens one answer may have.
    pub max_tokens: u32,
    pub on_limit: OnLimit,
}

/// The game's rules.
#[derive(Debug, Clone)]
pub enum Rules {
    Grid(grid::Grid),
    Negotiation(negotiation::Negotiation),
    Debate(debate::Debate),
    Script(script::Script),
}

impl Rules {
    /// The kind as a Space names it (`referee.kind`).
    pub fn kind(&self) -> &'static str {
        match self {
            Rules::Grid(g) if g.kind == grid::GridKind::TicTacToe => "tic-tac-toe",
            Rules::Grid(_) => "connect-four",
            Rules::Negotiation(_) => "negotiation",
            Rules::Debate(_) => "debate",
            Rules::Script(_) => "script",
        }
    }
}

/// A checked referee: the turn protocol, the rules, the illegal-move policy
/// and the number of seats.
#[derive(Debug, Clone)]
pub struct Referee {
    pub turns: Turns,
    pub rules: Rules,
    pub illegal: Illegal,
    pub seats: usize,
}

/// One answer as the referee read it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// The turn it was given in (retries share their turn).
    pub turn: u32,
    pub seat: usize,
    /// The answer, cut to [`MAX_TURN_CHARS`].
    pub text: String,
    pub legal: bool,
    /// The move as the rules read it ("cell 5", "offer 60"), or why it
    /// was illegal.
    pub note: String,
}

/// How a game ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// Per seat, higher is better; empty when `judged`.
    pub scores: Vec<f64>,
    /// In words: "X wins (three in a row)", "deal: 60 / 40", …
    pub reason: String,
    /// The Space's judge ranks the transcripts instead of scores.
    pub judged: bool,
}

/// A game between turns: what the arena stores per (match, turn).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// Turns completed.
    pub turn: u32,
    /// The rules' own state.
    pub game: Value,
    pub transcript: Vec<Entry>,
    /// Illegal moves per seat.
    pub illegal: Vec<u32>,
    /// A seat asked again after an illegal move: (seat, attempts so far,
    /// why the last one was illegal).
    pub retry: Option<(usize, u32, String)>,
    pub outcome: Option<Outcome>,
}

/// Why a referee could not go on. A script's error fails the match (and
/// refunds it); it never takes the worker down.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RefereeError {
    #[error("referee script: {0}")]
    Script(String),
    #[error("referee: {0}")]
    Rules(String),
}

/// The rules' reading of one answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Move {
    pub legal: bool,
    pub note: String,
    /// Scores, when this move ended the game.
    pub end: Option<(Vec<f64>, String)>,
}

impl Move {
    pub fn legal(note: impl Into<String>) -> Move {
        Move { legal: true, note: note.into(), end: None }
    }
    pub fn illegal(why: impl Into<String>) -> Move {
        Move { legal: false, note: why.into(), end: None }
    }
}

/// Cuts `text` to at most `max` characters (on a character boundary).
pub fn cut(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

/// Seat `seat`'s name in transcripts: "Player 1", "Player 2", …
pub fn seat_name(seat: usize) -> String {
    format!("Player {}", seat + 1)
}

impl Referee {
    /// The starting state for a prompt (a grid game's `opening:` line, a
    /// debate's motion, …).
    pub fn start(&self, prompt: &str) -> Result<State, RefereeError> {
        let game = match &self.rules {
            Rules::Grid(g) => g.start(prompt)?,
            Rules::Negotiation(n) => n.start(),
            Rules::Debate(_) => Value::Null,
            Rules::Script(s) => s.init(self.seats, prompt)?,
        };
        Ok(State { turn: 0, game, transcript: Vec::new(), illegal: vec![0; self.seats], retry: None, outcome: None })
    }

    /// The starting state where the rules are built in (cheap, pure Rust);
    /// `None` for a designer's script, whose `init` runs only where scripts
    /// may run (a blocking thread, through [`sandbox`]) — pages showing a
    /// game's first position read the stored steps instead.
    pub fn builtin_start(&self, prompt: &str) -> Option<State> {
        match &self.rules {
            Rules::Script(_) => None,
            _ => self.start(prompt).ok(),
        }
    }

    /// The seats to answer next, in order; empty once the game is over.
    pub fn to_move(&self, state: &State) -> Result<Vec<usize>, RefereeError> {
        if state.outcome.is_some() {
            return Ok(Vec::new());
        }
        if let Some((seat, _, _)) = &state.retry {
            return Ok(vec![*seat]);
        }
        if self.turns.order == Order::Simultaneous {
            return Ok((0..self.seats).collect());
        }
        let seat = match &self.rules {
            Rules::Grid(g) => g.seat_to_move(&state.game)?,
            Rules::Negotiation(_) | Rules::Debate(_) => state.turn as usize % self.seats,
            Rules::Script(s) => s.to_move(&state.game, self.seats)?,
        };
        Ok(vec![seat])
    }

    /// What `seat` is shown this turn, under the prompt `prompt`.
    pub fn view(&self, state: &State, prompt: &str, seat: usize) -> Result<String, RefereeError> {
        let mut text = match (self.turns.view, &self.rules) {
            (View::Referee, Rules::Grid(g)) => g.view(&state.game, seat, prompt)?,
            (View::Referee, Rules::Negotiation(n)) => {
                n.view(&state.game, seat, prompt, state.turn, self.turns.max_turns)?
            }
            (View::Referee, Rules::Script(s)) => s.view(&state.game, seat)?,
            (View::Referee, Rules::Debate(d)) => d.view(state, seat, prompt, self.turns.max_turns, self.seats),
            (View::Transcript, Rules::Debate(d)) => d.view(state, seat, prompt, self.turns.max_turns, self.seats),
            (View::Transcript, _) => transcript_view(state, prompt, seat),
        };
        if let Some((s, _, why)) = &state.retry
            && *s == seat
        {
            text.push_str(&format!("\n\nYour last answer was not a legal move: {why}. Answer again."));
        }
        Ok(fit_view(text))
    }

    /// Plays one turn: the answers of the seats [`Referee::to_move`] named,
    /// in that order. Answers are cut to [`MAX_TURN_CHARS`].
    pub fn play(&self, state: &State, answers: &[(usize, String)]) -> Result<State, RefereeError> {
        let mut next = state.clone();
        if next.outcome.is_some() {
            return Err(RefereeError::Rules("the game is already over".into()));
        }
        let expected = self.to_move(state)?;
        let given: Vec<usize> = answers.iter().map(|(s, _)| *s).collect();
        if given != expected {
            return Err(RefereeError::Rules(format!("answers from seats {given:?}, expected {expected:?}")));
        }
        let mut retrying = None;
        for (seat, text) in answers {
            let text = cut(text, MAX_TURN_CHARS);
            let mv = match &self.rules {
                Rules::Grid(g) => g.apply(&mut next.game, *seat, text)?,
                Rules::Negotiation(n) => n.apply(&mut next.game, *seat, text)?,
                Rules::Debate(_) => debate::apply(text),
                Rules::Script(s) => s.apply(&mut next.game, *seat, text)?,
            };
            if let (Rules::Script(s), Some((scores, _))) = (&self.rules, &mv.end) {
                s.check_scores(scores, self.seats)?;
            }
            next.transcript.push(Entry {
                turn: state.turn,
                seat: *seat,
                text: text.to_owned(),
                legal: mv.legal,
                note: mv.note.clone(),
            });
            if mv.legal {
                if let Some((scores, reason)) = mv.end {
                    next.outcome = Some(Outcome { scores, reason, judged: false });
                    break;
                }
                continue;
            }
            next.illegal[*seat] += 1;
            match self.illegal {
                Illegal::Forfeit => {
                    next.outcome = Some(self.forfeit(*seat, &mv.note));
                    break;
                }
                Illegal::Penalty { max, .. } => {
                    if next.illegal[*seat] > max {
                        next.outcome = Some(self.forfeit(*seat, &format!("more than {max} illegal moves")));
                        break;
                    }
                    match &self.rules {
                        Rules::Grid(g) => g.pass(&mut next.game)?,
                        Rules::Script(s) => s.pass(&mut next.game, *seat)?,
                        Rules::Negotiation(_) | Rules::Debate(_) => {}
                    }
                }
                Illegal::Retry { retries } => {
                    let attempts = match &state.retry {
                        Some((s, n, _)) if s == seat => n + 1,
                        _ => 1,
                    };
                    if attempts > retries {
                        next.outcome = Some(self.forfeit(*seat, &format!("{} (after {retries} retries)", mv.note)));
                        break;
                    }
                    retrying = Some((*seat, attempts, mv.note.clone()));
                }
            }
        }
        next.retry = retrying;
        if next.retry.is_none() {
            next.turn += 1;
        }
        if next.outcome.is_none() && next.retry.is_none() && next.turn >= self.turns.max_turns {
            next.outcome = Some(match self.turns.on_limit {
                OnLimit::Judge => Outcome {
                    scores: Vec::new(),
                    reason: format!("{} turns played; the judge decides", next.turn),
                    judged: true,
                },
                OnLimit::Rules => {
                    let (scores, reason) = match &self.rules {
                        Rules::Grid(_) => (vec![0.5; self.seats], "draw: the turn limit was reached".to_owned()),
                        Rules::Negotiation(_) => (vec![0.0; self.seats], "no deal before the turn limit".to_owned()),
                        Rules::Debate(_) => (vec![0.5; self.seats], "the turn limit was reached".to_owned()),
                        Rules::Script(s) => s
                            .outcome(&next.game, self.seats)?
                            .unwrap_or_else(|| (vec![0.5; self.seats], "draw: the turn limit was reached".to_owned())),
                    };
                    Outcome { scores, reason, judged: false }
                }
            });
        }
        if let (Some(outcome), Illegal::Penalty { points, .. }) = (&mut next.outcome, self.illegal)
            && !outcome.judged
        {
            for (score, n) in outcome.scores.iter_mut().zip(&next.illegal) {
                *score -= points * f64::from(*n);
            }
        }
        // Scores to a millionth: short decimals survive a JSON round trip
        // (the state is stored as JSON) bit for bit.
        if let Some(outcome) = &mut next.outcome {
            for score in &mut outcome.scores {
                *score = (*score * 1e6).round() / 1e6;
            }
        }
        Ok(next)
    }

    fn forfeit(&self, seat: usize, why: &str) -> Outcome {
        let scores = (0..self.seats).map(|s| if s == seat { 0.0 } else { 1.0 }).collect();
        Outcome { scores, reason: format!("{} forfeits: {why}", seat_name(seat)), judged: false }
    }

    /// Each seat's answers joined, as the judge and preference pairs see a
    /// seat's whole part in the game.
    pub fn seat_transcript(state: &State, seat: usize) -> String {
        let parts: Vec<&str> = state.transcript.iter().filter(|e| e.seat == seat).map(|e| e.text.as_str()).collect();
        parts.join("\n\n")
    }
}

/// The transcript view: the prompt, then every answer so far by seat.
pub fn transcript_view(state: &State, prompt: &str, seat: usize) -> String {
    let mut text = format!("{prompt}\n");
    for e in &state.transcript {
        let who = if e.seat == seat { "You".to_owned() } else { seat_name(e.seat) };
        text.push_str(&format!("\n{who}: {}", e.text));
    }
    text.push_str(&format!("\n\nYou are {}. Your turn.", seat_name(seat)));
    text
}

/// Keeps a view within [`MAX_VIEW_CHARS`]: the head (the prompt) and the
/// newest text, with a marker where the middle was dropped.
fn fit_view(text: String) -> String {
    let n = text.chars().count();
    if n <= MAX_VIEW_CHARS {
        return text;
    }
    let head: String = text.chars().take(MAX_VIEW_CHARS / 3).collect();
    let tail: String = text.chars().skip(n - (MAX_VIEW_CHARS * 2 / 3 - 40)).collect();
    format!("{head}\n[… earlier turns left out …]\n{tail}")
}

/// Competition ranks from scores (higher better; equal scores share a
/// rank, "1224").
pub fn ranks(scores: &[f64]) -> Vec<usize> {
    scores.iter().map(|s| 1 + scores.iter().filter(|o| *o > s).count()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_share_ties() {
        assert_eq!(ranks(&[0.5, 1.0, 0.5, 0.0]), vec![2, 1, 2, 4]);
    }

    #[test]
    fn cut_keeps_whole_characters() {
        assert_eq!(cut("héllo", 2), "hé");
        assert_eq!(cut("hi", 5), "hi");
    }

    #[test]
    fn long_views_keep_the_head_and_the_newest_turns() {
        let text = format!("PROMPT{}END", "x".repeat(MAX_VIEW_CHARS * 2));
        let fitted = fit_view(text);
        assert!(fitted.chars().count() <= MAX_VIEW_CHARS);
        assert!(fitted.starts_with("PROMPT") && fitted.ends_with("END"));
    }
}
