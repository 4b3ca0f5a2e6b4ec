//! Grid games for two seats: tic-tac-toe (3 × 3, three in a row, a move is
//! a cell 1–9) and connect-four (7 columns × 6 rows, four in a row, a move
//! is a column 1–7 and the piece falls to the lowest free row).
//!
//! A prompt may start the game from a position: a line `opening: 5 1 9`
//! plays those moves first (X, O, X, …); the seat to move after the opening
//! is Player 1. The state is `{"cells": "....X....", "next": 0|1,
//! "first": 0|1}`: cells row by row from the top, `next` the symbol to move
//! (0 = X), `first` the symbol Player 1 plays.

use crate::{Move, RefereeError, moves};
use serde_json::{Value, json};

/// Which grid game.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GridKind {
    TicTacToe,
    ConnectFour,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Grid {
    pub kind: GridKind,
}

const SYMBOLS: [char; 2] = ['X', 'O'];

impl Grid {
    pub fn new(kind: GridKind) -> Grid {
        Grid { kind }
    }

    pub fn width(&self) -> usize {
        match self.kind {
            GridKind::TicTacToe => 3,
            GridKind::ConnectFour => 7,
        }
    }

    pub fn height(&self) -> usize {
        match self.kind {
            GridKind::TicTacToe => 3,
            GridKind::ConnectFour => 6,
        }
    }

    fn connect(&self) -> usize {
        match self.kind {
            GridKind::TicTacToe => 3,
            GridKind::ConnectFour => 4,
        }
    }

    /// The highest move number.
    pub fn max_move(&self) -> u64 {
        match self.kind {
            GridKind::TicTacToe => 9,
            GridKind::ConnectFour => 7,
        }
    }

    /// The most moves a game can have (a full board).
    pub fn max_moves(&self) -> u32 {
        (self.width() * self.height()) as u32
    }

    fn keywords(&self) -> &'static [&'static str] {
        match self.kind {
            GridKind::TicTacToe => &["move", "cell", "square", "position"],
            GridKind::ConnectFour => &["move", "column", "col"],
        }
    }

    /// The starting state for a prompt (its `opening:` line, if any). An
    /// opening that is illegal, or already won, is an error naming the move.
    pub fn start(&self, prompt: &str) -> Result<Value, RefereeError> {
        let mut cells = vec!['.'; self.width() * self.height()];
        let mut next = 0usize;
        if let Some(line) = prompt.lines().find_map(|l| l.trim().strip_prefix("opening:")) {
            for (k, word) in line.split_whitespace().enumerate() {
                let n: u64 = word
                    .parse()
                    .map_err(|_| RefereeError::Rules(format!("opening move {} ({word:?}) is not a number", k + 1)))?;
                let cell = self
                    .place(&cells, n)
                    .map_err(|why| RefereeError::Rules(format!("opening move {} ({n}): {why}", k + 1)))?;
                cells[cell] = SYMBOLS[next];
                if self.winner(&cells).is_some() {
                    return Err(RefereeError::Rules(format!("the opening is already won after move {}", k + 1)));
                }
                next = 1 - next;
            }
            if cells.iter().all(|c| *c != '.') {
                return Err(RefereeError::Rules("the opening fills the board".into()));
            }
        }
        Ok(json!({ "cells": cells.iter().collect::<String>(), "next": next, "first": next }))
    }

    fn read(state: &Value) -> Result<(Vec<char>, usize, usize), RefereeError> {
        let bad = || RefereeError::Rules("grid state is malformed".into());
        let cells: Vec<char> = state.get("cells").and_then(Value::as_str).ok_or_else(bad)?.chars().collect();
        let next = state.get("next").and_then(Value::as_u64).ok_or_else(bad)? as usize;
        let first = state.get("first").and_then(Value::as_u64).ok_or_else(bad)? as usize;
        if next > 1 || first > 1 {
            return Err(bad());
        }
        Ok((cells, next, first))
    }

    /// The seat whose symbol is to move.
    pub fn seat_to_move(&self, state: &Value) -> Result<usize, RefereeError> {
        let (_, next, first) = Grid::read(state)?;
        Ok(if next == first { 0 } else { 1 })
    }

    /// The cell a move number lands on, or why it cannot be played.
    fn place(&self, cells: &[char], n: u64) -> Result<usize, String> {
        if n < 1 || n > self.max_move() {
            return Err(format!("{n} is not a {} from 1 to {}", self.unit(), self.max_move()));
        }
        match self.kind {
            GridKind::TicTacToe => {
                let cell = n as usize - 1;
                if cells[cell] == '.' { Ok(cell) } else { Err(format!("cell {n} is taken")) }
            }
            GridKind::ConnectFour => {
                let col = n as usize - 1;
                (0..self.height())
                    .rev()
                    .map(|row| row * self.width() + col)
                    .find(|&i| cells[i] == '.')
                    .ok_or_else(|| format!("column {n} is full"))
            }
        }
    }

    fn unit(&self) -> &'static str {
        match self.kind {
            GridKind::TicTacToe => "cell",
            GridKind::ConnectFour => "column",
        }
    }

    /// The symbol with `connect` in a row, if any.
    fn winner(&self, cells: &[char]) -> Option<char> {
        let (w, h, k) = (self.width() as i64, self.height() as i64, self.connect() as i64);
        for row in 0..h {
            for col in 0..w {
                let c = cells[(row * w + col) as usize];
                if c == '.' {
                    continue;
                }
                for (dr, dc) in [(0, 1), (1, 0), (1, 1), (1, -1)] {
                    let all = (1..k).all(|step| {
                        let (r, q) = (row + dr * step, col + dc * step);
                        (0..h).contains(&r) && (0..w).contains(&q) && cells[(r * w + q) as usize] == c
                    });
                    if all {
                        return Some(c);
                    }
                }
            }
        }
        None
    }

    /// Reads the answer as a move and plays it.
    pub fn apply(&self, state: &mut Value, seat: usize, text: &str) -> Result<Move, RefereeError> {
        let (mut cells, next, first) = Grid::read(state)?;
        let Some(n) = moves::move_number(text, self.keywords()) else {
            return Ok(Move::illegal(format!("no {} number found in the answer", self.unit())));
        };
        let cell = match self.place(&cells, n) {
            Ok(cell) => cell,
            Err(why) => return Ok(Move::illegal(why)),
        };
        let symbol = SYMBOLS[next];
        cells[cell] = symbol;
        state["cells"] = Value::String(cells.iter().collect());
        state["next"] = json!(1 - next);
        let mut mv = Move::legal(format!("{symbol} {} {n}", self.unit()));
        if self.winner(&cells) == Some(symbol) {
            let scores = (0..2).map(|s| if s == seat { 1.0 } else { 0.0 }).collect();
            mv.end =
                Some((scores, format!("{} ({symbol}) wins with {} in a row", crate::seat_name(seat), self.connect())));
        } else if cells.iter().all(|c| *c != '.') {
            mv.end = Some((vec![0.5, 0.5], "draw: the board is full".into()));
        }
        let _ = first;
        Ok(mv)
    }

    /// An illegal move under the penalty policy: the turn passes.
    pub fn pass(&self, state: &mut Value) -> Result<(), RefereeError> {
        let (_, next, _) = Grid::read(state)?;
        state["next"] = json!(1 - next);
        Ok(())
    }

    /// The board as text, rows from the top; free cells of tic-tac-toe
    /// show their numbers, connect-four numbers its columns.
    pub fn board(&self, state: &Value) -> Result<String, RefereeError> {
        let (cells, _, _) = Grid::read(state)?;
        let w = self.width();
        let mut out = String::new();
        match self.kind {
            GridKind::TicTacToe => {
                for row in 0..3 {
                    let line: Vec<String> = (0..3)
                        .map(|c| {
                            let i = row * 3 + c;
                            if cells[i] == '.' { (i + 1).to_string() } else { cells[i].to_string() }
                        })
                        .collect();
                    out.push_str(&format!(" {}\n", line.join(" | ")));
                }
            }
            GridKind::ConnectFour => {
                out.push_str(&format!(" {}\n", (1..=w).map(|c| c.to_string()).collect::<Vec<_>>().join(" ")));
                for row in 0..self.height() {
                    let line: String = cells[row * w..(row + 1) * w].iter().map(|c| format!(" {c}")).collect();
                    out.push_str(&line);
                    out.push('\n');
                }
            }
        }
        Ok(out)
    }

    /// A seat's view: the prompt's text (without its `opening:` line), its
    /// symbol, the board, and how to answer.
    pub fn view(&self, state: &Value, seat: usize, prompt: &str) -> Result<String, RefereeError> {
        let (_, _, first) = Grid::read(state)?;
        let symbol = SYMBOLS[(first + seat) % 2];
        let intro: Vec<&str> = prompt.lines().filter(|l| !l.trim().starts_with("opening:")).collect();
        let intro = intro.join("\n");
        let how = match self.kind {
            GridKind::TicTacToe => "Answer with the number of a free cell, like: move: 5",
            GridKind::ConnectFour => "Answer with the number of a column that is not full, like: move: 4",
        };
        Ok(format!(
            "{}You play {symbol}.\n\n{}\n{how}",
            if intro.trim().is_empty() { String::new() } else { format!("{}\n\n", intro.trim()) },
            self.board(state)?
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn play(g: &Grid, state: &mut Value, seat: usize, text: &str) -> Move {
        g.apply(state, seat, text).expect("state is well formed")
    }

    #[test]
    fn tic_tac_toe_detects_rows_columns_and_diagonals() {
        let g = Grid::new(GridKind::TicTacToe);
        for line in [[1, 2, 3], [4, 5, 6], [1, 4, 7], [3, 6, 9], [1, 5, 9], [3, 5, 7]] {
            let mut s = g.start("").expect("empty opening");
            let others: Vec<u64> = (1..=9).filter(|c| !line.contains(c)).take(2).collect();
            assert!(play(&g, &mut s, 0, &format!("move: {}", line[0])).end.is_none());
            play(&g, &mut s, 1, &others[0].to_string());
            play(&g, &mut s, 0, &line[1].to_string());
            play(&g, &mut s, 1, &others[1].to_string());
            let last = play(&g, &mut s, 0, &format!("I take {}", line[2]));
            let (scores, reason) = last.end.expect("three in a row ends the game");
            assert_eq!(scores, vec![1.0, 0.0], "{line:?}");
            assert!(reason.contains("Player 1"), "{reason}");
        }
    }

    #[test]
    fn illegal_moves_are_named_and_change_nothing() {
        let g = Grid::new(GridKind::TicTacToe);
        let mut s = g.start("").expect("empty");
        play(&g, &mut s, 0, "5");
        let before = s.clone();
        let taken = play(&g, &mut s, 1, "move: 5");
        assert!(!taken.legal && taken.note.contains("taken"), "{}", taken.note);
        let out = play(&g, &mut s, 1, "10");
        assert!(!out.legal && out.note.contains("1 to 9"), "{}", out.note);
        let none = play(&g, &mut s, 1, "the middle one");
        assert!(!none.legal && none.note.contains("no cell"), "{}", none.note);
        assert_eq!(s, before);
    }

    #[test]
    fn connect_four_pieces_fall_and_four_in_a_row_wins() {
        let g = Grid::new(GridKind::ConnectFour);
        let mut s = g.start("").expect("empty");
        // X plays column 1 four times, O column 2 three times.
        for k in 0..3 {
            assert!(play(&g, &mut s, 0, "column 1").end.is_none(), "{k}");
            play(&g, &mut s, 1, "column 2");
        }
        let board = g.board(&s).expect("board");
        assert!(board.lines().last().is_some_and(|l| l.starts_with(" X O")), "{board}");
        let win = play(&g, &mut s, 0, "1").end.expect("four in a column");
        assert_eq!(win.0, vec![1.0, 0.0]);
        // A full column is illegal.
        let mut s = g.start("").expect("empty");
        for k in 0..6 {
            play(&g, &mut s, k % 2, "3");
        }
        let full = play(&g, &mut s, 0, "3");
        assert!(!full.legal && full.note.contains("full"), "{}", full.note);
    }

    #[test]
    fn openings_set_the_position_and_who_moves() {
        let g = Grid::new(GridKind::TicTacToe);
        let s = g.start("Play well.\nopening: 5").expect("one move");
        assert_eq!(s["cells"], "....X....");
        // O is to move, and Player 1 plays O.
        assert_eq!(g.seat_to_move(&s).expect("seat"), 0);
        let view = g.view(&s, 0, "Play well.\nopening: 5").expect("view");
        assert!(view.contains("You play O") && view.contains(" 4 | X | 6") && !view.contains("opening"), "{view}");
        for (bad, why) in
            [("opening: 5 5", "taken"), ("opening: 1 4 2 5 3", "already won"), ("opening: x", "not a number")]
        {
            let err = g.start(bad).expect_err(bad);
            assert!(err.to_string().contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn a_full_board_without_a_line_is_a_draw() {
        let g = Grid::new(GridKind::TicTacToe);
        let mut s = g.start("").expect("empty");
        let order = [1, 2, 3, 5, 4, 6, 8, 7, 9];
        let mut last = None;
        for (k, cell) in order.iter().enumerate() {
            last = play(&g, &mut s, k % 2, &cell.to_string()).end;
        }
        assert_eq!(last.expect("full").0, vec![0.5, 0.5]);
    }
}
