//! Online ratings: Weng-Lin (the OpenSkill model) for matches of 2–8 agents,
//! from the skillratings crate. Shown as rating points, 40 per unit of μ, so
//! a new agent starts at 1000.

use skillratings::MultiTeamOutcome;
use skillratings::weng_lin::{WengLinConfig, WengLinRating, weng_lin_multi_team};

/// Rating points per unit of μ.
pub const POINTS_PER_MU: f64 = 40.0;

pub fn initial() -> WengLinRating {
    WengLinRating::new()
}

/// μ as rating points.
pub fn display(mu: f64) -> f64 {
    (mu * POINTS_PER_MU).round()
}

/// New ratings after one match: `ranks` are competition ranks from 1 (tied
/// agents share one), one per agent in `ratings`' order.
pub fn update(ratings: &[WengLinRating], ranks: &[usize]) -> Vec<WengLinRating> {
    let teams: Vec<[WengLinRating; 1]> = ratings.iter().map(|r| [*r]).collect();
    let input: Vec<(&[WengLinRating], MultiTeamOutcome)> =
        teams.iter().zip(ranks).map(|(team, rank)| (&team[..], MultiTeamOutcome::new(*rank))).collect();
    weng_lin_multi_team(&input, &WengLinConfig::new()).into_iter().map(|team| team[0]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn winners_rise_losers_fall_and_uncertainty_shrinks() {
        let start = vec![initial(); 4];
        let after = update(&start, &[1, 2, 3, 4]);
        assert!(after[0].rating > after[1].rating && after[1].rating > after[2].rating);
        assert!(after[3].rating < start[3].rating);
        assert!(after.iter().all(|r| r.uncertainty < start[0].uncertainty));
        // Tied agents that started equal end equal.
        let tied = update(&start[..3], &[1, 1, 3]);
        assert!((tied[0].rating - tied[1].rating).abs() < 1e-9);
    }

    #[test]
    fn an_upset_moves_more_than_the_expected_result() {
        let strong = WengLinRating { rating: 35.0, uncertainty: 3.0 };
        let weak = WengLinRating { rating: 20.0, uncertainty: 3.0 };
        let expected = update(&[strong, weak], &[1, 2]);
        let upset = update(&[strong, weak], &[2, 1]);
        assert!((upset[1].rating - weak.rating) > (expected[0].rating - strong.rating));
    }
}
