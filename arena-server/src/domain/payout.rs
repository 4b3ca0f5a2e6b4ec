//! Paying out a match's pot by rank.

/// Splits a pot: the house cut first (rounded down), then the rest by rank.
/// Tied agents share the shares of the places they occupy equally. Every
/// amount is rounded down; what rounding leaves goes to the house, so the
/// payouts and the house's take always sum to the pot exactly.
pub fn split(pot: i64, house_cut: f64, shares: &[f64], ranks: &[usize]) -> (Vec<i64>, i64) {
    let n = ranks.len();
    let house_first = (pot as f64 * house_cut).floor() as i64;
    let distributable = pot - house_first;
    let mut payouts = vec![0i64; n];
    for (i, &rank) in ranks.iter().enumerate() {
        // Places rank-1 .. rank-1+tied share their shares.
        let tied = ranks.iter().filter(|&&r| r == rank).count();
        let start = rank.saturating_sub(1);
        let total: f64 = (start..start + tied).map(|place| shares.get(place).copied().unwrap_or(0.0)).sum();
        // Shares in parts per million, so 0.7 of 90 is 63, not 62.99….
        let ppm = (total * 1e6).round() as i128;
        payouts[i] = (distributable as i128 * ppm / (1_000_000 * tied as i128)) as i64;
    }
    let paid: i64 = payouts.iter().sum();
    // Floating error can never make payouts exceed the pot.
    if paid > distributable {
        let mut over = paid - distributable;
        for p in payouts.iter_mut().rev() {
            let take = over.min(*p);
            *p -= take;
            over -= take;
        }
    }
    let paid: i64 = payouts.iter().sum();
    (payouts, pot - paid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_conserves_the_pot_for_any_ranks() {
        let shares = [0.6, 0.3, 0.1];
        for pot in [0_i64, 1, 7, 40, 1001, 99_999] {
            for cut in [0.0, 0.05, 0.5] {
                for ranks in [vec![1, 2, 3, 4], vec![1, 1, 3, 4], vec![1, 1, 1, 1], vec![2, 1], vec![1, 2, 2, 4]] {
                    let (payouts, house) = split(pot, cut, &shares, &ranks);
                    assert_eq!(payouts.iter().sum::<i64>() + house, pot, "{pot} {cut} {ranks:?}");
                    assert!(payouts.iter().all(|&p| p >= 0) && house >= 0);
                }
            }
        }
    }

    #[test]
    fn split_pays_by_rank_and_shares_ties() {
        let (p, house) = split(100, 0.1, &[0.7, 0.3], &[2, 1, 3]);
        assert_eq!(p, vec![27, 63, 0]);
        assert_eq!(house, 10);
        let (p, _) = split(100, 0.0, &[0.7, 0.3], &[1, 1, 3]);
        assert_eq!(p, vec![50, 50, 0]);
    }
}
