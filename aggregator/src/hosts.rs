//! Hosts and registrable domains of clicked URLs, and host exclusion rules.

/// The lowercase host of `url`, also for URLs reported without a scheme (`example.com/x`).
pub fn host_of(url: &str) -> Option<String> {
    let parsed = url::Url::parse(url)
        .ok()
        .filter(|u| u.host_str().is_some())
        .or_else(|| url::Url::parse(&format!("http://{url}")).ok())?;
    let host = parsed
        .host_str()?
        .trim_end_matches('.')
        .to_ascii_lowercase();
    (!host.is_empty()).then_some(host)
}

/// The registrable domain (public suffix plus one label) of `host`; the host itself when it has
/// none (an IP address, a bare suffix, an internal name).
pub fn domain_of(host: &str) -> String {
    if host.starts_with('[') || host.parse::<std::net::IpAddr>().is_ok() {
        return host.to_owned();
    }
    psl::domain_str(host)
        .map(str::to_owned)
        .unwrap_or_else(|| host.to_owned())
}

/// True when `host` is `rule` or one of its subdomains.
pub fn host_matches(host: &str, rule: &str) -> bool {
    host == rule
        || (host.len() > rule.len()
            && host.ends_with(rule)
            && host.as_bytes()[host.len() - rule.len() - 1] == b'.')
}

/// Normalises a host rule as people write it (`Jenkins.Enterprise.com.`, `*.x.com`, `https://x.com/`).
pub fn normalise_rule(rule: &str) -> String {
    let r = rule.trim().trim_start_matches("*.");
    host_of(r).unwrap_or_else(|| r.trim_end_matches('.').to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_lowercased_and_found_without_scheme() {
        assert_eq!(
            host_of("https://Login.Example.COM/a?b").as_deref(),
            Some("login.example.com")
        );
        assert_eq!(host_of("example.org/path").as_deref(), Some("example.org"));
        assert_eq!(
            host_of("http://10.1.2.3:8080/x").as_deref(),
            Some("10.1.2.3")
        );
        assert_eq!(host_of(""), None);
    }

    #[test]
    fn rules_match_the_host_and_its_subdomains_only() {
        assert!(host_matches(
            "jenkins.enterprise.com",
            "jenkins.enterprise.com"
        ));
        assert!(host_matches(
            "a.jenkins.enterprise.com",
            "jenkins.enterprise.com"
        ));
        assert!(!host_matches(
            "xjenkins.enterprise.com",
            "jenkins.enterprise.com"
        ));
        assert!(!host_matches("enterprise.com", "jenkins.enterprise.com"));
        assert_eq!(
            normalise_rule("*.Nexus.Internal.com."),
            "nexus.internal.com"
        );
        assert_eq!(
            normalise_rule("https://ci.pipeline.enterprise.com/x"),
            "ci.pipeline.enterprise.com"
        );
    }

    #[test]
    fn registrable_domains_follow_the_public_suffix_list() {
        assert_eq!(domain_of("a.b.example.co.uk"), "example.co.uk");
        assert_eq!(
            domain_of("login.microsoftonline.com"),
            "microsoftonline.com"
        );
        assert_eq!(domain_of("10.1.2.3"), "10.1.2.3");
    }
}
