//! Drift statistics on binned distributions: a reference histogram (training rows per bin) against
//! a live one (logged requests per bin), both over the same bins.
//!
//! Every function is checked against scipy/numpy in the tests below.

use statrs::distribution::{ChiSquared, ContinuousCDF};

/// Shares below this are raised to it before PSI's logarithm (and by the SQL view, identically),
/// so an empty bin does not make PSI infinite.
pub const SHARE_FLOOR: f64 = 1e-4;

fn total(counts: &[u64]) -> f64 {
    counts.iter().sum::<u64>() as f64
}

fn shares(counts: &[u64]) -> Vec<f64> {
    let t = total(counts);
    counts.iter().map(|&c| if t > 0.0 { c as f64 / t } else { 0.0 }).collect()
}

/// Population stability index: `Σ (p_live - p_ref) · ln(p_live / p_ref)`, shares floored at
/// [`SHARE_FLOOR`].
pub fn psi(reference: &[u64], live: &[u64]) -> f64 {
    shares(reference)
        .into_iter()
        .zip(shares(live))
        .map(|(r, l)| {
            let (r, l) = (r.max(SHARE_FLOOR), l.max(SHARE_FLOOR));
            (l - r) * (l / r).ln()
        })
        .sum()
}

/// Jensen-Shannon distance (square root of the divergence, base 2): 0 for equal distributions,
/// 1 for disjoint ones.
pub fn jensen_shannon_distance(reference: &[u64], live: &[u64]) -> f64 {
    let kl = |p: &[f64], m: &[f64]| -> f64 {
        p.iter().zip(m).filter(|(p, _)| **p > 0.0).map(|(p, m)| p * (p / m).log2()).sum()
    };
    let (p, q) = (shares(reference), shares(live));
    let m: Vec<f64> = p.iter().zip(&q).map(|(a, b)| (a + b) / 2.0).collect();
    f64::midpoint(kl(&p, &m), kl(&q, &m)).max(0.0).sqrt()
}

/// Two-sample Kolmogorov-Smirnov on binned data: the largest gap between the cumulative shares
/// (at the bin edges), and its asymptotic p-value with effective size `n·m/(n+m)` (the counts'
/// totals).
pub fn kolmogorov_smirnov(reference: &[u64], live: &[u64]) -> (f64, f64) {
    let (mut cr, mut cl, mut d) = (0.0, 0.0, 0.0f64);
    for (r, l) in shares(reference).into_iter().zip(shares(live)) {
        cr += r;
        cl += l;
        d = d.max((cr - cl).abs());
    }
    let (n, m) = (total(reference), total(live));
    let effective = if n + m > 0.0 { n * m / (n + m) } else { 0.0 };
    (d, kolmogorov_survival(d * effective.sqrt()))
}

/// `P(K > x)` for the Kolmogorov distribution (scipy's `kstwobign.sf`).
pub fn kolmogorov_survival(x: f64) -> f64 {
    if x <= 0.0 {
        return 1.0;
    }
    if x < 1.18 {
        // Jacobi theta form: converges fast for small x.
        let k = (2.0 * std::f64::consts::PI).sqrt() / x;
        let s: f64 = (1..=50)
            .map(|j| {
                let odd = f64::from(2 * j - 1);
                (-(odd * odd) * std::f64::consts::PI.powi(2) / (8.0 * x * x)).exp()
            })
            .sum();
        (1.0 - k * s).clamp(0.0, 1.0)
    } else {
        let s: f64 = (1..=50)
            .map(|j| {
                let j = f64::from(j);
                let sign = if j as u64 % 2 == 1 { 1.0 } else { -1.0 };
                sign * (-2.0 * j * j * x * x).exp()
            })
            .sum();
        (2.0 * s).clamp(0.0, 1.0)
    }
}

/// Wasserstein-1 distance between the two histograms with each bin's mass at `points[i]`
/// (`Σ |F_ref - F_live| · Δpoint`).
pub fn wasserstein(points: &[f64], reference: &[u64], live: &[u64]) -> f64 {
    let (p, q) = (shares(reference), shares(live));
    let (mut cp, mut cq, mut w) = (0.0, 0.0, 0.0);
    for i in 0..points.len().saturating_sub(1) {
        cp += p[i];
        cq += q[i];
        w += (cp - cq).abs() * (points[i + 1] - points[i]);
    }
    w
}

/// Pearson chi-square goodness of fit of the live counts to the reference shares (floored at
/// [`SHARE_FLOOR`] and renormalised): (statistic, p-value, degrees of freedom).
pub fn chi_square(reference: &[u64], live: &[u64]) -> (f64, f64, usize) {
    let floored: Vec<f64> = shares(reference).into_iter().map(|s| s.max(SHARE_FLOOR)).collect();
    let norm: f64 = floored.iter().sum();
    let n = total(live);
    let statistic: f64 = floored
        .iter()
        .zip(live)
        .map(|(s, &o)| {
            let expected = n * s / norm;
            (o as f64 - expected).powi(2) / expected
        })
        .sum();
    let dof = reference.len().saturating_sub(1).max(1);
    let p = ChiSquared::new(dof as f64).map_or(f64::NAN, |d| d.sf(statistic));
    (statistic, p, dof)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Literals computed with numpy 2 / scipy 1.16 (Python 3.11):
    //   ref = [10,20,30,25,15]; live = [5,25,40,20,10]
    //   psi: pr = maximum(ref/ref.sum(), 1e-4), pl likewise; sum((pl-pr)*log(pl/pr))
    //   scipy.spatial.distance.jensenshannon(ref/ref.sum(), live/live.sum(), base=2)
    //   D = max|cumsum shares|; scipy.stats.kstwobign.sf(D*sqrt(n*m/(n+m)))
    //   scipy.stats.wasserstein_distance([1..5], [1..5], ref, live)
    //   scipy.stats.chisquare(live, live.sum()*pr/pr.sum())
    const REF: [u64; 5] = [10, 20, 30, 25, 15];
    const LIVE: [u64; 5] = [5, 25, 40, 20, 10];

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-9, "{a} vs {b}");
    }

    #[test]
    fn psi_matches_numpy() {
        close(psi(&REF, &LIVE), 0.10601317681000455);
        // An empty reference bin is floored, not infinite.
        close(psi(&[50, 50, 0], &[30, 60, 10]), 0.8104820328029091);
        close(psi(&REF, &REF), 0.0);
    }

    #[test]
    fn jensen_shannon_matches_scipy() {
        close(jensen_shannon_distance(&REF, &LIVE), 0.1376405231023615);
        close(jensen_shannon_distance(&[1, 0], &[0, 1]), 1.0);
    }

    #[test]
    fn kolmogorov_smirnov_matches_scipy() {
        let (d, p) = kolmogorov_smirnov(&REF, &LIVE);
        close(d, 0.1);
        assert!((p - 0.6993741991310158).abs() < 1e-7, "{p}");
    }

    #[test]
    fn kolmogorov_survival_matches_kstwobign() {
        assert!((kolmogorov_survival(0.5) - 0.9639452436648751).abs() < 1e-9);
        assert!((kolmogorov_survival(1.0) - 0.26999967167735456).abs() < 1e-9);
        assert!((kolmogorov_survival(2.0) - 0.0006709252557796953).abs() < 1e-12);
    }

    #[test]
    fn wasserstein_matches_scipy() {
        close(wasserstein(&[1.0, 2.0, 3.0, 4.0, 5.0], &REF, &LIVE), 0.2);
    }

    #[test]
    fn chi_square_matches_scipy() {
        let (statistic, p, dof) = chi_square(&REF, &LIVE);
        close(statistic, 9.75);
        assert!((p - 0.04485617853580228).abs() < 1e-9, "{p}");
        assert_eq!(dof, 4);
    }
}
