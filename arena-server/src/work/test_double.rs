//! Test doubles, named as such: stand-ins for parts that a test or a
//! benchmark is not about. `arena serve` never uses them; `Options`
//! takes one only when a caller passes it.

use super::generator::{GenJob, GenOutput, Generator};
use futures_util::future::BoxFuture;

/// A test double for control-plane benchmarks and tests that are not about
/// the model: answers instantly, the reference answer from even slots and a
/// wrong one from odd slots. Never used by `arena serve`.
pub struct StubGenerator;

impl Generator for StubGenerator {
    fn generate(&self, jobs: Vec<GenJob>) -> BoxFuture<'static, Vec<anyhow::Result<GenOutput>>> {
        let outputs = jobs
            .into_iter()
            .map(|job| {
                let text = match (&job.reference, job.slot % 2) {
                    (Some(reference), 0) => format!("The answer is {reference}."),
                    (Some(_), _) => "I am not sure, maybe 7 or 12.".to_owned(),
                    (None, n) => format!("Stub answer {n} to: {}", job.prompt.chars().take(40).collect::<String>()),
                };
                Ok(GenOutput { tokens: text.split_whitespace().count(), text, finish: "end_of_turn".into() })
            })
            .collect();
        Box::pin(std::future::ready(outputs))
    }
}

/// A test double for multi-turn Spaces, named as one: answers a referee's
/// view instantly with a plausible move read from the view itself — the
/// first free cell of a tic-tac-toe board, a column of connect-four chosen
/// from the seat and the pieces on the board, an offer then an acceptance
/// in a negotiation, a short argument otherwise (even slots give a reason,
/// odd ones do not). With `illegal_first`, odd slots first answer every
/// turn with no move at all and give a move only when told their last
/// answer was illegal (a retry), to exercise the illegal-move policies. Never
/// used by `arena serve`.
pub struct GameStub {
    pub illegal_first: bool,
}

impl GameStub {
    /// The answer for one view.
    pub fn answer(&self, view: &str, slot: usize) -> String {
        let board: Vec<&str> = view.lines().filter(|l| l.contains(" | ")).collect();
        if self.illegal_first && slot % 2 == 1 && !view.contains("not a legal move") {
            return "Let me think about the position.".to_owned();
        }
        if board.len() == 3 {
            let free = board.iter().flat_map(|l| l.split('|')).map(str::trim).find(|c| c.parse::<u32>().is_ok());
            return format!("move: {}", free.unwrap_or("1"));
        }
        if view.contains(" 1 2 3 4 5 6 7") {
            let rows: Vec<&str> =
                view.lines().filter(|l| l.starts_with(" .") || l.starts_with(" X") || l.starts_with(" O")).collect();
            let top: Vec<char> = rows
                .first()
                .map(|r| r.split_whitespace().filter_map(|c| c.chars().next()).collect())
                .unwrap_or_default();
            let pieces = rows.iter().map(|r| r.matches(['X', 'O']).count()).sum::<usize>();
            let column = (0..7)
                .map(|k| (slot * 3 + pieces + k) % 7)
                .find(|&c| top.get(c).is_none_or(|t| *t == '.'))
                .unwrap_or(0);
            return format!("I drop in column {}", column + 1);
        }
        if view.contains("Answer rock, paper or scissors") {
            return if slot.is_multiple_of(2) { "Rock.".to_owned() } else { "I choose scissors.".to_owned() };
        }
        if view.contains("OFFER n") {
            return if view.contains("The other player offers") { "ACCEPT".to_owned() } else { "OFFER 60".to_owned() };
        }
        if slot.is_multiple_of(2) {
            "This side is right because the evidence supports it.".to_owned()
        } else {
            "This side is right.".to_owned()
        }
    }
}

impl Generator for GameStub {
    fn generate(&self, jobs: Vec<GenJob>) -> BoxFuture<'static, Vec<anyhow::Result<GenOutput>>> {
        let outputs = jobs
            .into_iter()
            .map(|job| {
                let text = self.answer(&job.prompt, job.slot);
                Ok(GenOutput { tokens: text.split_whitespace().count(), text, finish: "end_of_turn".into() })
            })
            .collect();
        Box::pin(std::future::ready(outputs))
    }
}
