//! Splitting a pot between two seats. Seats take turns; an answer is an
//! offer ("OFFER 60": I keep 60, you get the rest) or an acceptance of the
//! other seat's standing offer ("ACCEPT"). A deal ends the game with each
//! seat's share of the pot as its score; no deal by the turn limit scores
//! 0 for both. An acceptance with no offer standing, an offer outside
//! 0..=pot, or an answer that is neither, is illegal.
//!
//! State: `{"pot": P, "offer": null | {"by": seat, "keep": k}}`.

use crate::{Move, RefereeError, moves};
use serde_json::{Value, json};

#[derive(Debug, Clone, PartialEq)]
pub struct Negotiation {
    /// Units to split.
    pub pot: u64,
}

/// Words before "accept" that turn it into a refusal.
const NEGATIONS: [&str; 6] = ["not ", "don't ", "do not ", "won't ", "cannot ", "can't "];

impl Negotiation {
    pub fn start(&self) -> Value {
        json!({ "pot": self.pot, "offer": null })
    }

    fn standing(state: &Value) -> Option<(usize, u64)> {
        let offer = state.get("offer")?;
        Some((offer.get("by")?.as_u64()? as usize, offer.get("keep")?.as_u64()?))
    }

    fn accepts(text: &str) -> bool {
        let lower = text.to_ascii_lowercase();
        moves::word_at(text, "accept").into_iter().any(|at| {
            let before = &lower[..at];
            !NEGATIONS.iter().any(|n| before.ends_with(n))
        })
    }

    pub fn apply(&self, state: &mut Value, seat: usize, text: &str) -> Result<Move, RefereeError> {
        if let Some(keep) = moves::keyword_number(text, &["offer", "keep", "i take", "propose"]) {
            if keep > self.pot {
                return Ok(Move::illegal(format!("an offer of {keep} is more than the pot of {}", self.pot)));
            }
            state["offer"] = json!({ "by": seat, "keep": keep });
            return Ok(Move::legal(format!("offer: keeps {keep}, gives {}", self.pot - keep)));
        }
        if Negotiation::accepts(text) {
            return match Negotiation::standing(state) {
                Some((by, keep)) if by != seat => {
                    let give = self.pot - keep;
                    let pot = self.pot.max(1) as f64;
                    let scores = (0..2).map(|s| if s == by { keep as f64 / pot } else { give as f64 / pot }).collect();
                    let mut mv = Move::legal(format!("accepts {keep} / {give}"));
                    mv.end = Some((
                        scores,
                        format!("deal: {} keeps {keep}, {} gets {give}", crate::seat_name(by), crate::seat_name(seat)),
                    ));
                    Ok(mv)
                }
                Some(_) => Ok(Move::illegal("you cannot accept your own offer")),
                None => Ok(Move::illegal("there is no offer to accept")),
            };
        }
        Ok(Move::illegal("neither an offer (OFFER n) nor ACCEPT found in the answer"))
    }

    pub fn view(
        &self,
        state: &Value,
        seat: usize,
        prompt: &str,
        turn: u32,
        max_turns: u32,
    ) -> Result<String, RefereeError> {
        let standing = match Negotiation::standing(state) {
            Some((by, keep)) if by != seat => {
                format!("The other player offers: they keep {keep}, you get {}.", self.pot - keep)
            }
            Some((_, keep)) => format!("Your offer stands: you keep {keep}, they get {}.", self.pot - keep),
            None => "No offer has been made yet.".to_owned(),
        };
        Ok(format!(
            "{}\n\nYou and another player split {} coins. {standing} Turns left: {}.\n\
             Answer ACCEPT to take the other player's offer, or OFFER n to propose keeping n coins yourself. \
             With no deal when the turns run out, nobody gets anything.",
            prompt.trim(),
            self.pot,
            max_turns.saturating_sub(turn)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offers_and_acceptance_make_a_deal() {
        let n = Negotiation { pot: 100 };
        let mut s = n.start();
        let early = n.apply(&mut s, 0, "I accept").expect("ok");
        assert!(!early.legal && early.note.contains("no offer"));
        let offer = n.apply(&mut s, 0, "OFFER: 70").expect("ok");
        assert!(offer.legal && offer.end.is_none(), "{offer:?}");
        let own = n.apply(&mut s, 0, "accept").expect("ok");
        assert!(!own.legal);
        let refuse = n.apply(&mut s, 1, "I do not accept that. I offer 50").expect("ok");
        assert!(refuse.legal && refuse.note.contains("keeps 50"), "{refuse:?}");
        let deal = n.apply(&mut s, 0, "Fine, I accept.").expect("ok").end.expect("a deal");
        assert_eq!(deal.0, vec![0.5, 0.5]);
        let greedy = n.apply(&mut n.start(), 1, "offer 101").expect("ok");
        assert!(!greedy.legal && greedy.note.contains("more than the pot"));
    }

    #[test]
    fn a_refusal_is_not_an_acceptance() {
        assert!(!Negotiation::accepts("I won't accept"));
        assert!(!Negotiation::accepts("unacceptable"));
        assert!(Negotiation::accepts("ACCEPT"));
    }
}
