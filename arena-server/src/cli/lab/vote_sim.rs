//! `arena lab vote-sim`: the rigging simulation of `domain::votes` over
//! several seeds, printed as a table with the means.

use crate::cli::args::VoteSimArgs;
use crate::domain::votes::simulate_rigging;

/// Prints one line per seed and the means; true when every seed met the
/// issue's targets (recall ≥ 0.8 at precision ≥ 0.9, the favoured agent's
/// win rate within 2 points of the honest voters').
pub fn run(args: &VoteSimArgs) -> bool {
    println!(
        "{} honest voters, {} riggers, {} votes each, {} agents, {} matches",
        args.honest, args.riggers, args.votes_per_voter, args.agents, args.matches
    );
    println!("seed  flagged riggers  flagged honest  recall  precision  win rate: honest  unfiltered  filtered  moved");
    let (mut recall, mut precision, mut moved_max, mut ok) = (0.0, 0.0, 0.0f64, true);
    for seed in 1..=args.seeds.max(1) {
        let r = simulate_rigging(seed, args.honest, args.riggers, args.votes_per_voter, args.agents, args.matches);
        let moved = 100.0 * (r.win_rate_filtered - r.win_rate_honest);
        println!(
            "{seed:>4}  {:>15}  {:>14}  {:>6.2}  {:>9.2}  {:>16.3}  {:>10.3}  {:>8.3}  {:>+5.1}",
            r.flagged_riggers,
            r.flagged_honest,
            r.recall,
            r.precision,
            r.win_rate_honest,
            r.win_rate_unfiltered,
            r.win_rate_filtered,
            moved
        );
        recall += r.recall;
        precision += r.precision;
        moved_max = moved_max.max(moved.abs());
        ok &= r.recall >= 0.8 && r.precision >= 0.9 && moved.abs() < 2.0;
    }
    let n = args.seeds.max(1) as f64;
    println!(
        "mean recall {:.3}, mean precision {:.3}, largest move {:.2} points; every seed on target: {ok}",
        recall / n,
        precision / n,
        moved_max
    );
    ok
}
