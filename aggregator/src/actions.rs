//! The seed query's column semantics, exactly as KQL evaluates them.
//!
//! `ActionType has_any("X")` is true when `X` equals, case-insensitively, one whole *term* of
//! `ActionType`, where terms are the maximal runs of alphanumeric characters. So `clickblocked`
//! and `ClickBlocked;Foo` are Blocked, and `ClickBlockedByTenantPolicy` is not (it is one term).

/// True when `term` equals, ignoring ASCII case, one maximal alphanumeric run of `text`.
pub fn has_term(text: &str, term: &str) -> bool {
    text.split(|c: char| !c.is_alphanumeric())
        .any(|t| !t.is_empty() && t.eq_ignore_ascii_case(term))
}

/// Which of the seed's action columns one `ActionType` value adds to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SeedColumns {
    /// `has_any("ClickBlocked")`.
    pub blocked: bool,
    /// `has_any("ClickAllowed")`.
    pub allowed: bool,
    /// `has_any("UrlScanInProgress")`.
    pub pending_verdict: bool,
    /// `has_any("UrlErrorPage")`.
    pub error: bool,
    /// `has_any("ClickBlockedByTenantPolicy")`: shown beside the seed's columns.
    pub blocked_by_policy: bool,
}

/// Classifies one `ActionType` value into the seed's columns.
pub fn classify(action_type: &str) -> SeedColumns {
    SeedColumns {
        blocked: has_term(action_type, "ClickBlocked"),
        allowed: has_term(action_type, "ClickAllowed"),
        pending_verdict: has_term(action_type, "UrlScanInProgress"),
        error: has_term(action_type, "UrlErrorPage"),
        blocked_by_policy: has_term(action_type, "ClickBlockedByTenantPolicy"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_values_match_their_column() {
        assert_eq!(
            classify("ClickBlocked"),
            SeedColumns {
                blocked: true,
                ..Default::default()
            }
        );
        assert!(classify("ClickAllowed").allowed);
        assert!(classify("UrlScanInProgress").pending_verdict);
        assert!(classify("UrlErrorPage").error);
    }

    #[test]
    fn matching_ignores_case() {
        assert!(classify("clickblocked").blocked);
        assert!(classify("CLICKALLOWED").allowed);
        assert!(classify("urlerrorpage").error);
    }

    #[test]
    fn tenant_policy_is_one_term_and_not_blocked() {
        let c = classify("ClickBlockedByTenantPolicy");
        assert!(!c.blocked);
        assert!(c.blocked_by_policy);
        assert!(!c.allowed);
    }

    #[test]
    fn terms_split_on_non_alphanumerics() {
        let c = classify("ClickBlocked;Foo");
        assert!(c.blocked && !c.allowed);
        let c = classify("UrlScanInProgress, ClickAllowed");
        assert!(c.pending_verdict && c.allowed && !c.blocked);
        assert!(classify(" ClickBlocked ").blocked);
    }

    #[test]
    fn prefixes_and_suffixes_are_not_terms() {
        assert_eq!(classify("ClickBlockedX"), SeedColumns::default());
        assert_eq!(classify("XClickAllowed"), SeedColumns::default());
        assert_eq!(classify("Click_Blocked"), SeedColumns::default());
        assert_eq!(classify(""), SeedColumns::default());
        assert_eq!(classify("UnknownAction"), SeedColumns::default());
    }
}
