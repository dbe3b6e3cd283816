//! RapidFuzz's `fuzz.ratio` and `process.extractOne` on strings, to the bit, for KATO's fuzzy
//! token path (`fuzzy_token_threshold > 0`).
//!
//! `fuzz.ratio` is the normalized Indel similarity of two strings' code points times 100. RapidFuzz
//! computes it through the normalized *distance*, with a score cutoff that shapes the result:
//! `sim = 1 - dist / (len1 + len2)` (0 distance for two empty strings), reported when the distance
//! passes a slightly widened cutoff and `sim >= cutoff / 100`, else 0. Each step below is one
//! float operation of that computation in the same order, so the value is the same double.
//! `extractOne` first stores its `score_cutoff` in a C `float` (so the cutoff it applies is the
//! float32 nearest the one given: a `fuzzy_token_threshold * 100` of 66.666...67 lets
//! 66.666664 through), then raises the cutoff to each new best score and keeps the first choice
//! with the highest score, stopping at a perfect 100.

/// The longest common subsequence of two code-point sequences (tokens are short: one DP row).
pub fn lcs_chars(a: &[char], b: &[char]) -> usize {
    let mut row = vec![0usize; b.len() + 1];
    for &x in a {
        let mut diagonal = 0;
        for (j, &y) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = if x == y { diagonal + 1 } else { above.max(row[j]) };
            diagonal = above;
        }
    }
    row[b.len()]
}

/// The slack RapidFuzz adds when it turns a similarity cutoff into a distance cutoff.
const CUTOFF_IMPRECISION: f64 = 0.00001;

/// `fuzz.ratio` of two sequences of `len1` and `len2` code points sharing `lcs` of them in order,
/// scored with RapidFuzz's `score_cutoff` (0 to 100; 0 when none is given).
pub fn ratio_score(lcs: usize, len1: usize, len2: usize, score_cutoff: f64) -> f64 {
    let similarity_cutoff = score_cutoff / 100.0;
    let distance_cutoff = (1.0 - similarity_cutoff + CUTOFF_IMPRECISION).min(1.0);
    let maximum = len1 + len2;
    let max_distance = (maximum as f64 * distance_cutoff).ceil() as usize;
    let exact = maximum - 2 * lcs;
    let distance = if exact <= max_distance { exact } else { max_distance + 1 };
    let normalized = if maximum != 0 { distance as f64 / maximum as f64 } else { 0.0 };
    let normalized = if normalized <= distance_cutoff { normalized } else { 1.0 };
    let similarity = 1.0 - normalized;
    (if similarity >= similarity_cutoff { similarity } else { 0.0 }) * 100.0
}

/// `rapidfuzz.fuzz.ratio(a, b)` (the tests' and the bindings' pair form).
#[cfg(any(test, feature = "python"))]
pub fn ratio(a: &str, b: &str) -> f64 {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    ratio_score(lcs_chars(&a, &b), a.len(), b.len(), 0.0)
}

/// `rapidfuzz.process.extractOne` over `choices` choices with a native scorer: `score(k, cutoff)`
/// is choice k's score under `cutoff`. Returns the index and score of the first choice with the
/// highest score `>=` the float32 nearest `score_cutoff`.
pub fn extract_one(
    choices: usize,
    score_cutoff: f64,
    mut score: impl FnMut(usize, f64) -> f64,
) -> Option<(usize, f64)> {
    let mut cutoff = score_cutoff as f32 as f64;
    let mut best: Option<(usize, f64)> = None;
    for k in 0..choices {
        let s = score(k, cutoff);
        if s >= cutoff && best.is_none_or(|(_, b)| s > b) {
            best = Some((k, s));
            cutoff = s;
        }
        if s == 100.0 {
            break;
        }
    }
    best
}

/// `rapidfuzz.process.extractOne(token, choices, scorer=fuzz.ratio, score_cutoff=score_cutoff)`
/// as (index, score) (the tests' and the bindings' form on strings).
#[cfg(any(test, feature = "python"))]
pub fn extract_one_str(token: &str, choices: &[&str], score_cutoff: f64) -> Option<(usize, f64)> {
    let token: Vec<char> = token.chars().collect();
    let choices: Vec<Vec<char>> = choices.iter().map(|c| c.chars().collect()).collect();
    extract_one(choices.len(), score_cutoff, |k, cutoff| {
        ratio_score(lcs_chars(&token, &choices[k]), token.len(), choices[k].len(), cutoff)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        // RapidFuzz's documented example, and the edge cases.
        assert_eq!(ratio("this is a test", "this is a test!"), 96.55172413793103);
        assert_eq!(ratio("", ""), 100.0);
        assert_eq!(ratio("a", ""), 0.0);
        assert_eq!(ratio("äbc", "abc"), (1.0 - 2.0 / 6.0) * 100.0);
        assert_eq!(lcs_chars(&['a', 'b', 'c', 'b'], &['b', 'd', 'c', 'a', 'b']), 3);
    }

    #[test]
    fn extract_one_keeps_the_first_best_above_the_cutoff() {
        assert_eq!(extract_one_str("abc", &["xyz", "abd", "abx", "abc", "abc"], 50.0), Some((3, 100.0)));
        assert_eq!(extract_one_str("abc", &["abd", "xbc"], 0.0).map(|b| b.0), Some(0));
        assert_eq!(extract_one_str("abc", &["xyz"], 10.0), None);
        assert_eq!(extract_one_str("abc", &[], 10.0), None);
        // A score equal to the cutoff passes, and so does one below it by less than the cutoff's
        // float32 rounding; one below the float32 cutoff does not.
        let score = ratio("abc", "abd");
        assert_eq!(extract_one_str("abc", &["abd"], score), Some((0, score)));
        assert_eq!(extract_one_str("abc", &["abd"], score + 1e-6), Some((0, score)));
        assert_eq!(ratio("x", "yyyyyyyyx"), 19.999999999999996);
        assert_eq!(extract_one_str("x", &["yyyyyyyyx"], 20.0), None);
    }
}
