//! Capacities as the solver adds and compares them: exact integers where ties
//! can occur, floats with a proven rounding margin where they cannot matter.
//!
//! Every finite `f64` is `odd · 2^e`. If `unit = g · 2^e_min`, with `e_min` the
//! smallest exponent and `g` the greatest common divisor of the odd parts, then
//! every capacity is an integer number of units.
//!
//! - When the total fits in 62 bits the solver runs on `u64`: sums and twice
//!   sums never overflow, every comparison is exact, ties included. Unit and
//!   equal capacities (of any value) and integral ones take this path.
//! - When it fits in 125 bits and the capacities take at most
//!   [`FEW_VALUES`] distinct values (mixed decimals such as 0.1 and 0.3, whose
//!   odd parts are coprime and 52 bits long, so ties are likely), on `u128`.
//! - Otherwise on `f64`. A sum of at most `N` non-negative terms is within a
//!   relative `γ = N·2⁻⁵³/(1 − N·2⁻⁵³)` of the true sum, however it is
//!   bracketed, and every quantity the solver compares is such a sum, so a test
//!   `a ≥ b` is taken only when `a ≥ b · (1 + 3·N·2⁻⁵³)`, which proves it for
//!   the true values: no lighter cut is ever contracted away, and ties are
//!   merely not contracted. Random capacities (all distinct, ties measure-zero)
//!   land here, where floats run up to twice as fast as `u128`.

use std::cmp::Ordering;
use std::fmt::Debug;

use crate::control::Control;
use crate::Error;

/// A capacity, or a sum of capacities, as the solver holds it.
pub(super) trait Weight:
    Copy + PartialEq + PartialOrd + Debug + Send + Sync + 'static
{
    const ZERO: Self;
    /// Whether sums and comparisons are exact (then flows are too).
    const EXACT: bool;
    fn plus(self, other: Self) -> Self;
    /// `self − other`, for `other ≤ self`.
    fn minus(self, other: Self) -> Self;
    fn double(self) -> Self;
    /// Half of an even integer (exact types only).
    fn half(self) -> Self;
    fn order(&self, other: &Self) -> Ordering;
    /// Whether the true value of `self` is certainly ≥ that of `bound`.
    fn at_least(self, bound: Self, margin: Margin) -> bool;
    /// Whether the true value of `self` is certainly > that of `bound`.
    fn exceeds(self, bound: Self, margin: Margin) -> bool;
    /// `min(self, cap)` as an index, for bucket queues.
    fn bucket(self, cap: usize) -> usize;

    /// A scan key of the matrix rounds: signed, so that [`Weight::SCANNED`]
    /// stays below every real key however many rows are added to it (rows
    /// add up to at most the total, which is below a quarter of the range).
    type Key: Copy + PartialOrd + PartialEq;
    const SCANNED: Self::Key;
    fn key(self) -> Self::Key;
    fn unkey(key: Self::Key) -> Self;

    /// `keys[y] += row[y]` for every `y`, returning the index and value of the
    /// largest key. Eight independent lanes keep the loop free of
    /// cross-iteration dependencies.
    fn add_row_and_find_max(keys: &mut [Self::Key], row: &[Self]) -> (usize, Self::Key) {
        const LANES: usize = 8;
        let mut lane_max = [Self::SCANNED; LANES];
        let mut key_chunks = keys.chunks_exact_mut(LANES);
        let mut row_chunks = row.chunks_exact(LANES);
        for (kc, rc) in (&mut key_chunks).zip(&mut row_chunks) {
            for i in 0..LANES {
                kc[i] = Self::add_to_key(kc[i], rc[i]);
                lane_max[i] = if kc[i] > lane_max[i] {
                    kc[i]
                } else {
                    lane_max[i]
                };
            }
        }
        let mut max = lane_max[0];
        for &m in &lane_max[1..] {
            if m > max {
                max = m;
            }
        }
        for (key, &w) in key_chunks
            .into_remainder()
            .iter_mut()
            .zip(row_chunks.remainder())
        {
            *key = Self::add_to_key(*key, w);
            if *key > max {
                max = *key;
            }
        }
        let at = keys.iter().position(|&key| key == max).unwrap_or(0);
        (at, max)
    }

    fn add_to_key(key: Self::Key, w: Self) -> Self::Key;
    fn is_zero(self) -> bool {
        self == Self::ZERO
    }
    fn min(self, other: Self) -> Self {
        if other < self {
            other
        } else {
            self
        }
    }
}

/// The factor by which a float comparison must clear its bound (1 for integers).
#[derive(Debug, Clone, Copy)]
pub(super) struct Margin(pub(super) f64);

impl Margin {
    /// For sums of at most `terms` input capacities.
    pub(super) fn for_terms(terms: usize) -> Margin {
        Margin(1.0 + 3.0 * (terms as f64 + 1.0) * f64::EPSILON / 2.0)
    }
}

/// What a contraction test must reach: `lambda_hat`, the lightest cut found so
/// far, with the margin its float comparisons must clear.
#[derive(Debug, Clone, Copy)]
pub(super) struct Bar<W> {
    pub(super) lambda_hat: W,
    pub(super) margin: Margin,
}

impl<W: Weight> Bar<W> {
    /// Whether `bound`, a lower bound on the connectivity of two vertices,
    /// certainly reaches `lambda_hat` (ties included): then no lighter cut
    /// separates them, and they may be merged.
    pub(super) fn reached_by(self, bound: W) -> bool {
        bound.at_least(self.lambda_hat, self.margin)
    }
}

macro_rules! exact_weight {
    ($t:ty, $key:ty) => {
        impl Weight for $t {
            const ZERO: Self = 0;
            const EXACT: bool = true;
            type Key = $key;
            const SCANNED: $key = <$key>::MIN;
            #[inline]
            fn key(self) -> $key {
                self as $key
            }
            #[inline]
            fn unkey(key: $key) -> Self {
                key as $t
            }
            #[inline]
            fn add_to_key(key: $key, w: Self) -> $key {
                key.wrapping_add(w as $key)
            }
            #[inline]
            fn plus(self, other: Self) -> Self {
                self + other
            }
            #[inline]
            fn minus(self, other: Self) -> Self {
                self - other
            }
            #[inline]
            fn double(self) -> Self {
                self << 1
            }
            #[inline]
            fn half(self) -> Self {
                self >> 1
            }
            #[inline]
            fn order(&self, other: &Self) -> Ordering {
                self.cmp(other)
            }
            #[inline]
            fn at_least(self, bound: Self, _: Margin) -> bool {
                self >= bound
            }
            #[inline]
            fn bucket(self, cap: usize) -> usize {
                if self >= cap as $t {
                    cap
                } else {
                    self as usize
                }
            }
            #[inline]
            fn exceeds(self, bound: Self, _: Margin) -> bool {
                self > bound
            }
        }
    };
}

exact_weight!(u64, i64);
exact_weight!(u128, i128);

impl Weight for f64 {
    const ZERO: Self = 0.0;
    const EXACT: bool = false;
    type Key = f64;
    const SCANNED: f64 = f64::NEG_INFINITY;
    #[inline]
    fn key(self) -> f64 {
        self
    }
    #[inline]
    fn unkey(key: f64) -> Self {
        key
    }
    #[inline]
    fn add_to_key(key: f64, w: Self) -> f64 {
        key + w
    }
    #[inline]
    fn plus(self, other: Self) -> Self {
        self + other
    }
    #[inline]
    fn minus(self, other: Self) -> Self {
        (self - other).max(0.0)
    }
    #[inline]
    fn double(self) -> Self {
        2.0 * self
    }
    #[inline]
    fn half(self) -> Self {
        0.5 * self
    }
    #[inline]
    fn order(&self, other: &Self) -> Ordering {
        self.total_cmp(other)
    }
    #[inline]
    fn at_least(self, bound: Self, margin: Margin) -> bool {
        self >= bound * margin.0
    }
    #[inline]
    fn bucket(self, cap: usize) -> usize {
        self.min(cap as f64) as usize
    }
    #[inline]
    fn exceeds(self, bound: Self, margin: Margin) -> bool {
        self > bound * margin.0
    }
}

/// One exact unit: `odd · 2^exp`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Unit {
    odd: u64,
    exp: i32,
}

impl Unit {
    /// `w` as a whole number of this unit, if it is one and fits.
    fn units(self, w: f64) -> Option<u128> {
        let (odd, exp) = odd_and_exponent(w);
        if odd % self.odd != 0 || exp < self.exp {
            return None;
        }
        let quotient = (odd / self.odd) as u128;
        let shift = (exp - self.exp) as u32;
        (shift < quotient.leading_zeros()).then(|| quotient << shift)
    }

    /// `units` of this unit as the nearest `f64` (exactly rounded when
    /// `units · odd` fits in 128 bits, within one more rounding otherwise).
    pub(super) fn to_f64(self, units: u128) -> f64 {
        let scaled = match units.checked_mul(self.odd as u128) {
            Some(product) => product as f64,
            None => units as f64 * self.odd as f64,
        };
        scale_by_power_of_two(scaled, self.exp) + 0.0
    }
}

/// `x · 2^exp`, exact while the result is representable; steps through the
/// exponent so that no intermediate overflows or underflows early.
fn scale_by_power_of_two(mut x: f64, mut exp: i32) -> f64 {
    const STEP: i32 = 960;
    while exp > STEP {
        x *= f64::from_bits(((STEP + 1023) as u64) << 52);
        exp -= STEP;
    }
    while exp < -STEP {
        x *= f64::from_bits(((1023 - STEP) as u64) << 52);
        exp += STEP;
    }
    x * f64::from_bits(((exp + 1023) as u64) << 52)
}

/// A positive finite `f64` as `odd · 2^exp`.
fn odd_and_exponent(w: f64) -> (u64, i32) {
    let bits = w.to_bits();
    let field = ((bits >> 52) & 0x7ff) as i32;
    let fraction = bits & ((1u64 << 52) - 1);
    let (mantissa, exp) = if field == 0 {
        (fraction, -1074)
    } else {
        (fraction | (1u64 << 52), field - 1075)
    };
    let zeros = mantissa.trailing_zeros();
    (mantissa >> zeros, exp + zeros as i32)
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Totals up to this many units run on `u64`: twice a total still fits.
const U64_TOTAL: u128 = 1 << 62;
/// Totals up to this many units run on `u128`.
const U128_TOTAL: u128 = 1 << 125;

/// Capacities taking at most this many distinct values run on exact `u128`
/// when they do not fit `u64`: so few values make ties likely. Random ones
/// (more values than this among the first few edges) run on floats.
pub(super) const FEW_VALUES: usize = 64;

/// The positive edges of a graph, in the representation the solver takes.
pub(super) enum Capacities {
    Small(Vec<(u32, u32, u64)>, Unit),
    Wide(Vec<(u32, u32, u128)>, Unit),
    /// With the exact unit when the total fits 125 bits: the chosen cut's
    /// weight is then still summed exactly.
    Float(Vec<(u32, u32, f64)>, Option<Unit>),
}

/// Whether `edges` carry at most [`FEW_VALUES`] distinct weights (stops at the
/// first one beyond).
fn few_values(edges: &[(u32, u32, f64)]) -> bool {
    let mut seen = std::collections::HashSet::with_capacity(FEW_VALUES + 1);
    for &(_, _, w) in edges {
        if seen.insert(w.to_bits()) && seen.len() > FEW_VALUES {
            return false;
        }
    }
    true
}

impl Capacities {
    /// Chooses the narrowest exact representation of `edges` (positive, finite
    /// weights), or floats when none fits.
    pub(super) fn of(
        edges: &[(u32, u32, f64)],
        control: &mut Control,
    ) -> Result<Capacities, Error> {
        let mut exp_min = i32::MAX;
        let mut odd_gcd = 0u64;
        for chunk in edges.chunks(CHUNK) {
            for &(_, _, w) in chunk {
                let (odd, exp) = odd_and_exponent(w);
                exp_min = exp_min.min(exp);
                if odd_gcd != 1 {
                    odd_gcd = gcd(odd_gcd, odd);
                }
            }
            control.work(chunk.len())?;
        }
        if edges.is_empty() {
            return Ok(Capacities::Small(Vec::new(), Unit { odd: 1, exp: 0 }));
        }
        let unit = Unit {
            odd: odd_gcd,
            exp: exp_min,
        };
        let units = |w: f64| unit.units(w);
        let mut total = 0u128;
        for chunk in edges.chunks(CHUNK) {
            for &(_, _, w) in chunk {
                match units(w).and_then(|u| total.checked_add(u)) {
                    Some(t) if t <= U128_TOTAL => total = t,
                    _ => return Ok(Capacities::Float(edges.to_vec(), None)),
                }
            }
            control.work(chunk.len())?;
        }
        let converted = if total <= U64_TOTAL {
            convert(
                edges,
                |w| units(w).and_then(|u| u64::try_from(u).ok()),
                control,
            )?
            .map(|edges| Capacities::Small(edges, unit))
        } else if few_values(edges) {
            convert(edges, units, control)?.map(|edges| Capacities::Wide(edges, unit))
        } else {
            None
        };
        Ok(converted.unwrap_or_else(|| Capacities::Float(edges.to_vec(), Some(unit))))
    }

    /// The weight of the edges across `side`, summed exactly in units when
    /// there is a unit, else as floats.
    pub(super) fn float_cut(edges: &[(u32, u32, f64)], unit: Option<Unit>, side: &[bool]) -> f64 {
        let crossing = edges
            .iter()
            .filter(|&&(u, v, _)| side[u as usize] != side[v as usize]);
        let exact = unit.and_then(|unit| {
            let mut total = 0u128;
            for &(_, _, w) in crossing.clone() {
                total = total.checked_add(unit.units(w)?)?;
            }
            Some(unit.to_f64(total))
        });
        exact.unwrap_or_else(|| crossing.fold(0.0, |sum, &(_, _, w)| sum + w))
    }
}

/// Edges are converted and checked in chunks of this many between two calls of
/// the interrupt hook.
const CHUNK: usize = 4096;

/// Edges with their weights as exact units.
type Converted<T> = Vec<(u32, u32, T)>;

/// `edges` with every weight converted, or `None` if one does not convert.
fn convert<T>(
    edges: &[(u32, u32, f64)],
    units: impl Fn(f64) -> Option<T>,
    control: &mut Control,
) -> Result<Option<Converted<T>>, Error> {
    let mut out = Vec::with_capacity(edges.len());
    for chunk in edges.chunks(CHUNK) {
        for &(u, v, w) in chunk {
            match units(w) {
                Some(units) => out.push((u, v, units)),
                None => return Ok(None),
            }
        }
        control.work(chunk.len())?;
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Capacities {
        fn of_unchecked(edges: &[(u32, u32, f64)]) -> Capacities {
            Capacities::of(edges, &mut Control::default()).unwrap()
        }
    }

    #[test]
    fn floats_split_into_odd_parts_and_exponents() {
        assert_eq!(odd_and_exponent(1.0), (1, 0));
        assert_eq!(odd_and_exponent(6.0), (3, 1));
        assert_eq!(odd_and_exponent(0.375), (3, -3));
        assert_eq!(odd_and_exponent(f64::from_bits(1)), (1, -1074));
        assert_eq!(odd_and_exponent(f64::MAX), ((1u64 << 53) - 1, 971));
    }

    #[test]
    fn unit_and_equal_capacities_become_small_integers() {
        for w in [1.0, 0.1, 3.5, 1e-300, 1e300] {
            let Capacities::Small(edges, unit) = Capacities::of_unchecked(&[(0, 1, w), (1, 2, w)])
            else {
                panic!("{w} should be exact")
            };
            assert_eq!(edges, [(0, 1, 1), (1, 2, 1)]);
            assert_eq!(unit.to_f64(1), w);
            assert_eq!(unit.to_f64(2), w + w);
        }
        let Capacities::Small(edges, unit) = Capacities::of_unchecked(&[(0, 1, 0.5), (1, 2, 1.5)])
        else {
            panic!("halves are exact")
        };
        assert_eq!(edges, [(0, 1, 1), (1, 2, 3)]);
        assert_eq!(unit.to_f64(4), 2.0);
    }

    #[test]
    fn few_decimals_take_wide_integers_and_random_or_huge_ranges_take_floats() {
        let decimals: Vec<_> = (0..3000u32)
            .map(|i| (i, i + 1, [0.1, 0.3, 0.7][i as usize % 3]))
            .collect();
        assert!(matches!(
            Capacities::of_unchecked(&decimals),
            Capacities::Wide(..)
        ));
        let random: Vec<_> = (0..1000u32)
            .map(|i| (i, i + 1, 0.1 + i as f64 * 0.37))
            .collect();
        let Capacities::Float(_, Some(unit)) = Capacities::of_unchecked(&random) else {
            panic!("random decimals run on floats, with an exact unit")
        };
        // The crossing weight is summed exactly, then rounded once.
        let side: Vec<bool> = (0..=1000).map(|v| v % 2 == 0).collect();
        let exact: f64 = random.iter().map(|e| e.2).sum();
        let summed = Capacities::float_cut(&random, Some(unit), &side);
        assert!((summed - exact).abs() <= 1e-12 * exact);
        assert!(matches!(
            Capacities::of_unchecked(&[(0, 1, 1e-200), (1, 2, 1.0 + f64::EPSILON)]),
            Capacities::Float(..)
        ));
    }

    #[test]
    fn scaling_reaches_both_ends_of_the_range() {
        assert_eq!(scale_by_power_of_two(1.0, -1074), f64::from_bits(1));
        assert_eq!(scale_by_power_of_two(1.5, 1023), 1.5 * 2f64.powi(1023));
        assert_eq!(scale_by_power_of_two(3.0, 0), 3.0);
    }
}
