//! Splitting a byte range of an object into per-unit pieces (4 KiB blocks
//! for `store=none`, 1 MiB chunks for `store=mem`).

/// One unit's part of a byte range: unit index and `[lo, hi)` within it.
pub(super) struct Span {
    pub(super) unit: u64,
    pub(super) lo: usize,
    pub(super) hi: usize,
}

/// The spans of `len` bytes at object offset `offset` over units of
/// `unit_bytes`, each with its start in the caller's buffer.
pub(super) fn spans(offset: u64, len: usize, unit_bytes: usize) -> impl Iterator<Item = (usize, Span)> {
    let mut pos = 0;
    std::iter::from_fn(move || {
        if pos >= len {
            return None;
        }
        let at = offset + pos as u64;
        let lo = (at % unit_bytes as u64) as usize;
        let hi = unit_bytes.min(lo + (len - pos));
        let start = pos;
        pos += hi - lo;
        Some((start, Span { unit: at / unit_bytes as u64, lo, hi }))
    })
}

#[cfg(test)]
mod tests {
    use super::spans;

    #[test]
    fn a_range_splits_at_unit_boundaries() {
        let got: Vec<_> = spans(4000, 5000, 4096).map(|(p, s)| (p, s.unit, s.lo, s.hi)).collect();
        assert_eq!(got, vec![(0, 0, 4000, 4096), (96, 1, 0, 4096), (4192, 2, 0, 808)]);
        assert_eq!(spans(0, 0, 4096).count(), 0);
    }
}
