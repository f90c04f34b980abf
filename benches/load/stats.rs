//! Percentiles.

/// The `p` quantile (nearest rank) of sorted values.
pub fn pct<T: Copy>(sorted: &[T], p: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Three quantiles of unsorted values.
pub fn pct_ms(mut values: Vec<f64>, ps: [f64; 3]) -> [Option<f64>; 3] {
    values.sort_by(f64::total_cmp);
    ps.map(|p| pct(&values, p))
}
