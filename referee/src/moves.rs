//! Reading moves out of free text. Small models answer in sentences, so the
//! rules look for a keyword followed by a number ("move: 5", "offer 60")
//! first and fall back to the first number standing on its own. Numbers
//! longer than nine digits are not numbers here (no overflow, no giant
//! values).

/// Longest run of digits read as a number.
const MAX_DIGITS: usize = 9;

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Every standalone number in `text` with its byte offset: a run of ASCII
/// digits with no letter or digit right before or after it. A run longer
/// than nine digits is skipped.
pub fn numbers(text: &str) -> Vec<(usize, u64)> {
    let mut found = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if !bytes[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        let before = text[..start].chars().next_back();
        let after = text[i..].chars().next();
        let standalone = !before.is_some_and(is_word_char) && !after.is_some_and(is_word_char);
        if standalone
            && i - start <= MAX_DIGITS
            && let Ok(n) = text[start..i].parse::<u64>()
        {
            found.push((start, n));
        }
    }
    found
}

/// Byte offsets where `word` stands as a whole word, ASCII case ignored.
pub fn word_at(text: &str, word: &str) -> Vec<usize> {
    let lower = text.to_ascii_lowercase();
    let word = word.to_ascii_lowercase();
    let mut at = Vec::new();
    let mut from = 0;
    while let Some(pos) = lower[from..].find(&word) {
        let start = from + pos;
        let end = start + word.len();
        let before = lower[..start].chars().next_back();
        let after = lower[end..].chars().next();
        if !before.is_some_and(is_word_char) && !after.is_some_and(is_word_char) {
            at.push(start);
        }
        from = end;
    }
    at
}

/// The number right after one of `keywords` ("move: 5", "column is 3",
/// "offer = 40"): at most a few separators or the word "is" between them.
/// The first keyword occurrence followed by a number wins.
pub fn keyword_number(text: &str, keywords: &[&str]) -> Option<u64> {
    let nums = numbers(text);
    let mut best: Option<(usize, u64)> = None;
    for keyword in keywords {
        for start in word_at(text, keyword) {
            let end = start + keyword.len();
            let Some(&(at, n)) = nums.iter().find(|(at, _)| *at >= end) else { continue };
            let between = text[end..at].to_ascii_lowercase();
            let between = between.trim_matches(|c: char| c.is_whitespace() || ":=-#.,(".contains(c));
            let between = between
                .strip_prefix("is")
                .unwrap_or(between)
                .trim_matches(|c: char| c.is_whitespace() || ":=-#".contains(c));
            let between = between.strip_prefix("number").unwrap_or(between).trim();
            if between.is_empty() && best.is_none_or(|(b, _)| start < b) {
                best = Some((start, n));
            }
        }
    }
    best.map(|(_, n)| n)
}

/// The move number in an answer: after a keyword when there is one, else
/// the first standalone number.
pub fn move_number(text: &str, keywords: &[&str]) -> Option<u64> {
    keyword_number(text, keywords).or_else(|| numbers(text).first().map(|(_, n)| *n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standalone_numbers_only() {
        assert_eq!(numbers("cell 5, then 12; x3 and 4th 7."), vec![(5, 5), (13, 12), (28, 7)]);
        assert_eq!(numbers("1234567890 2"), vec![(11, 2)]);
        assert!(numbers("no digits at all").is_empty());
    }

    #[test]
    fn keywords_win_over_earlier_numbers() {
        assert_eq!(move_number("I see 3 free cells. Move: 7", &["move"]), Some(7));
        assert_eq!(move_number("My move is 4.", &["move"]), Some(4));
        assert_eq!(move_number("Column #6 looks good", &["column", "move"]), Some(6));
        assert_eq!(move_number("I think 2 is best", &["move"]), Some(2));
        assert_eq!(move_number("Nothing to say", &["move"]), None);
        // "move" followed by other words first: the fallback applies.
        assert_eq!(move_number("I move to the centre, 5", &["move"]), Some(5));
    }

    #[test]
    fn words_are_whole_and_case_blind() {
        assert_eq!(word_at("Accept. I ACCEPT; unacceptable", "accept"), vec![0, 10]);
    }
}
