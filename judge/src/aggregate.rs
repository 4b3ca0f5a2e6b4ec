//! Aggregation: Bradley–Terry strengths from soft pairwise outcomes, and
//! competition ranks with ties.

/// Bradley–Terry strengths from `wins[i][j]`, the (soft) number of times i
/// beat j. A Gaussian prior (ridge `prior` on the strengths) keeps them
/// finite when one candidate wins everything. Fitted by Newton steps on the
/// full Hessian; `n` is at most a few dozen here.
pub fn bradley_terry(wins: &[Vec<f64>], prior: f64) -> Vec<f64> {
    let n = wins.len();
    let mut theta = vec![0.0f64; n];
    for _ in 0..100 {
        let mut grad = vec![0.0f64; n];
        let mut hess = vec![vec![0.0f64; n]; n];
        for i in 0..n {
            grad[i] -= prior * theta[i];
            hess[i][i] += prior;
            for j in 0..n {
                if i == j {
                    continue;
                }
                let games = wins[i][j] + wins[j][i];
                if games == 0.0 {
                    continue;
                }
                let p = sigmoid(theta[i] - theta[j]);
                grad[i] += wins[i][j] - games * p;
                let w = games * p * (1.0 - p);
                hess[i][i] += w;
                hess[i][j] -= w;
            }
        }
        let step = solve(hess, grad);
        let mut largest = 0.0f64;
        for (t, s) in theta.iter_mut().zip(&step) {
            *t += s;
            largest = largest.max(s.abs());
        }
        if largest < 1e-10 {
            break;
        }
    }
    theta
}

pub fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// Solves `a x = b` by Gaussian elimination with partial pivoting (a is
/// positive definite here, thanks to the prior).
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Vec<f64> {
    let n = b.len();
    for col in 0..n {
        let pivot = (col..n).max_by(|&x, &y| a[x][col].abs().total_cmp(&a[y][col].abs())).unwrap_or(col);
        a.swap(col, pivot);
        b.swap(col, pivot);
        let d = a[col][col];
        if d.abs() < 1e-300 {
            continue;
        }
        for row in col + 1..n {
            let f = a[row][col] / d;
            if f == 0.0 {
                continue;
            }
            let (top, rest) = a.split_at_mut(row);
            for (x, p) in rest[0][col..].iter_mut().zip(&top[col][col..]) {
                *x -= f * p;
            }
            b[row] -= f * b[col];
        }
    }
    let mut x = vec![0.0; n];
    for row in (0..n).rev() {
        let s: f64 = (row + 1..n).map(|k| a[row][k] * x[k]).sum();
        x[row] = if a[row][row].abs() < 1e-300 { 0.0 } else { (b[row] - s) / a[row][row] };
    }
    x
}

/// Competition ranks ("1224") of `keys`, higher is better; keys closer than
/// `eps` tie. A key that is not a number (NaN) ranks last, tied with any
/// other such key: it never orders candidates by their slots.
pub fn ranks(keys: &[f64], eps: f64) -> (Vec<usize>, Vec<usize>) {
    let keys: Vec<f64> = keys.iter().map(|k| if k.is_nan() { f64::NEG_INFINITY } else { *k }).collect();
    let mut order: Vec<usize> = (0..keys.len()).collect();
    order.sort_by(|&a, &b| keys[b].total_cmp(&keys[a]).then(a.cmp(&b)));
    let mut rank = vec![0usize; keys.len()];
    for (pos, &i) in order.iter().enumerate() {
        let (prev, key) = if pos > 0 { (keys[order[pos - 1]], keys[i]) } else { (f64::NAN, keys[i]) };
        rank[i] = if pos > 0 && (prev == key || (prev - key).abs() <= eps) { rank[order[pos - 1]] } else { pos + 1 };
    }
    (order, rank)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_that_are_not_numbers_tie_last_and_never_order_by_slot() {
        let (_, rank) = ranks(&[f64::NAN, 0.3, f64::NAN, f64::NEG_INFINITY], 1e-9);
        assert_eq!(rank, vec![2, 1, 2, 2]);
        let (_, rank) = ranks(&[f64::NAN, f64::NAN], 1e-9);
        assert_eq!(rank, vec![1, 1]);
    }

    #[test]
    fn bradley_terry_orders_by_wins_and_stays_finite() {
        // 0 beats 1 beats 2, always.
        let wins = vec![vec![0.0, 2.0, 2.0], vec![0.0, 0.0, 2.0], vec![0.0, 0.0, 0.0]];
        let t = bradley_terry(&wins, 0.1);
        assert!(t[0] > t[1] && t[1] > t[2], "{t:?}");
        assert!(t.iter().all(|x| x.is_finite()));
        // Even record: equal strengths.
        let even = vec![vec![0.0, 1.0], vec![1.0, 0.0]];
        let t = bradley_terry(&even, 0.1);
        assert!((t[0] - t[1]).abs() < 1e-9);
    }

    #[test]
    fn bradley_terry_recovers_known_strengths() {
        // Win rates generated from strengths (1, 0, -1) with many games.
        let s = [1.0, 0.0, -1.0];
        let mut wins = vec![vec![0.0; 3]; 3];
        for i in 0..3 {
            for j in 0..3 {
                if i != j {
                    wins[i][j] = 1000.0 * sigmoid(s[i] - s[j]);
                }
            }
        }
        let t = bradley_terry(&wins, 1e-6);
        for i in 0..3 {
            assert!(((t[i] - t[2]) - (s[i] - s[2])).abs() < 1e-3, "{t:?}");
        }
    }

    #[test]
    fn ranks_share_places_on_ties() {
        let (order, rank) = ranks(&[0.5, 0.9, 0.5, 0.1], 1e-9);
        assert_eq!(order, vec![1, 0, 2, 3]);
        assert_eq!(rank, vec![2, 1, 2, 4]);
    }
}
