//! A debate: each seat argues an assigned position on the prompt's motion
//! for a number of rounds, seeing everything said so far; at the end the
//! Space's judge ranks the seats' whole parts (every argument a seat made,
//! joined). Any non-empty answer is a legal turn.

use crate::{Move, State};

#[derive(Debug, Clone, PartialEq)]
pub struct Debate {
    /// One position per seat ("for", "against", …).
    pub positions: Vec<String>,
}

pub fn apply(text: &str) -> Move {
    if text.trim().is_empty() { Move::illegal("the answer is empty") } else { Move::legal("argument") }
}

impl Debate {
    /// The motion, the seat's position, every argument so far labelled by
    /// position, and the round.
    pub fn view(&self, state: &State, seat: usize, prompt: &str, max_turns: u32, seats: usize) -> String {
        let position = self.positions.get(seat).map(String::as_str).unwrap_or("your side");
        let mut text = format!("Motion: {}\n\nYou argue {position}.", prompt.trim());
        let said: Vec<_> = state.transcript.iter().filter(|e| e.legal).collect();
        if !said.is_empty() {
            text.push_str("\n\nThe debate so far:");
            for e in said {
                let who = self.positions.get(e.seat).map(String::as_str).unwrap_or("?");
                let me = if e.seat == seat { " (you)" } else { "" };
                text.push_str(&format!("\n\n[{who}{me}] {}", e.text));
            }
        }
        let rounds = max_turns.div_ceil(seats.max(1) as u32);
        let round = state.turn / seats.max(1) as u32 + 1;
        let step = if round == 1 { "Open your case" } else { "Answer the other side's points and press yours" };
        text.push_str(&format!("\n\nRound {round} of {rounds}. {step}, briefly."));
        text
    }
}
