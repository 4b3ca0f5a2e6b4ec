//! Pairing: which entered agents meet. Groups are rating-aware (every
//! member within the Space's window of every other) and never hold two
//! agents of one owner.

use super::ids::{AgentId, UserId};
use super::rating::display;
use rand::Rng;
use rand::seq::SliceRandom;
use uuid::Uuid;

/// An agent that could play now.
#[derive(Debug, Clone)]
pub struct Contender {
    pub agent_id: AgentId,
    pub owner_id: UserId,
    pub version: i32,
    pub mu: f64,
    pub sigma: f64,
    /// The owner's account and its balance when the round began.
    pub account: Uuid,
    pub balance: i64,
}

/// Picks groups of `k` agents: each group starts from a random agent and
/// adds the nearest-rated agents of other owners within `window` rating
/// points. Agents are used at most once.
pub fn pick_groups<R: Rng>(
    candidates: &[Contender],
    k: usize,
    window: f64,
    max_groups: usize,
    rng: &mut R,
) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..candidates.len()).collect();
    order.shuffle(rng);
    let mut used = vec![false; candidates.len()];
    let mut groups = Vec::new();
    for &anchor in &order {
        if groups.len() >= max_groups {
            break;
        }
        if used[anchor] {
            continue;
        }
        let a = &candidates[anchor];
        let mut near: Vec<usize> = (0..candidates.len())
            .filter(|&i| i != anchor && !used[i])
            .filter(|&i| (display(candidates[i].mu) - display(a.mu)).abs() <= window)
            .collect();
        near.sort_by(|&x, &y| {
            let dx = (candidates[x].mu - a.mu).abs();
            let dy = (candidates[y].mu - a.mu).abs();
            dx.total_cmp(&dy)
        });
        let mut group = vec![anchor];
        let mut owners = vec![a.owner_id];
        for i in near {
            if group.len() == k {
                break;
            }
            let c = &candidates[i];
            // Every member within the window of every other, not just the anchor.
            let fits = group.iter().all(|&g| (display(candidates[g].mu) - display(c.mu)).abs() <= window);
            if !owners.contains(&c.owner_id) && fits {
                group.push(i);
                owners.push(c.owner_id);
            }
        }
        if group.len() == k {
            for &g in &group {
                used[g] = true;
            }
            groups.push(group);
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn candidates(rng: &mut StdRng, n: usize, owners: usize, spread: f64) -> Vec<Contender> {
        let owner_ids: Vec<UserId> = (0..owners).map(|_| UserId::new()).collect();
        (0..n)
            .map(|_| Contender {
                agent_id: AgentId::new(),
                owner_id: owner_ids[rng.random_range(0..owners)],
                version: 1,
                mu: 25.0 + rng.random_range(-spread..=spread),
                sigma: 8.3,
                account: Uuid::new_v4(),
                balance: 100,
            })
            .collect()
    }

    #[test]
    fn groups_respect_owners_size_window_and_use_each_agent_once() {
        for seed in 0..200 {
            let mut rng = StdRng::seed_from_u64(seed);
            let n = rng.random_range(0..40);
            let owners = rng.random_range(1..12);
            let k = rng.random_range(2..=8);
            let window = rng.random_range(50.0..800.0);
            let pool = candidates(&mut rng, n, owners, 15.0);
            let groups = pick_groups(&pool, k, window, 100, &mut rng);
            let mut seen = std::collections::HashSet::new();
            for group in &groups {
                assert_eq!(group.len(), k, "seed {seed}");
                let owners: std::collections::HashSet<UserId> = group.iter().map(|&i| pool[i].owner_id).collect();
                assert_eq!(owners.len(), k, "seed {seed}: two agents of one owner");
                for &a in group {
                    assert!(seen.insert(a), "seed {seed}: an agent in two matches");
                    for &b in group {
                        let gap = (display(pool[a].mu) - display(pool[b].mu)).abs();
                        assert!(gap <= window, "seed {seed}: gap {gap} > window {window}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_wide_window_and_many_owners_forms_every_possible_match() {
        let mut rng = StdRng::seed_from_u64(1);
        let pool: Vec<Contender> = (0..12)
            .map(|i| Contender {
                agent_id: AgentId::new(),
                owner_id: UserId(Uuid::from_u128(i)),
                version: 1,
                mu: 25.0,
                sigma: 8.3,
                account: Uuid::new_v4(),
                balance: 100,
            })
            .collect();
        assert_eq!(pick_groups(&pool, 4, 1e9, 100, &mut rng).len(), 3);
        assert_eq!(pick_groups(&pool, 4, 1e9, 2, &mut rng).len(), 2, "at most the room left");
        let one_owner: Vec<Contender> =
            pool.iter().map(|c| Contender { owner_id: UserId(Uuid::nil()), ..c.clone() }).collect();
        assert!(pick_groups(&one_owner, 2, 1e9, 100, &mut rng).is_empty());
    }
}
