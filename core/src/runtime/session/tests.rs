//! Unit tests of the session's pure helpers.

use super::*;

#[test]
fn error_texts_are_cut_to_the_limit_at_a_character_boundary_both_ways() {
    let short = "short";
    assert!(matches!(cut_error_text(short), std::borrow::Cow::Borrowed(_)));
    let exact = "x".repeat(MAX_ERROR_MESSAGE);
    assert_eq!(cut_error_text(&exact), exact.as_str());
    // A sender's cut text passes a receiver unchanged.
    let long = "é".repeat(MAX_ERROR_MESSAGE);
    let cut = cut_error_text(&long).into_owned();
    assert!(cut.ends_with(CUT_MARKER) && cut.len() <= MAX_ERROR_MESSAGE + CUT_MARKER.len(), "{}", cut.len());
    assert_eq!(cut_error_text(&cut), cut.as_str());
    // A peer's text beyond the limit (marked or not) is cut on receipt.
    let forged = format!("{}{CUT_MARKER}", "y".repeat(100_000));
    let kept = cut_error_text(&forged);
    assert_eq!(kept.len(), MAX_ERROR_MESSAGE + CUT_MARKER.len());
}
