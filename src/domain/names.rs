//! Kubernetes' rules for object and namespace names (DNS-1123), shared by the policy
//! validation and the --watch-namespaces flag.

/// What a DNS-1123 subdomain is, as messages say it.
pub const DNS1123_SUBDOMAIN: &str =
    "must be a DNS-1123 subdomain: lowercase letters, digits, '-' and '.', starting and ending with a letter or digit";
/// What a DNS-1123 label is, as messages say it.
pub const DNS1123_LABEL: &str =
    "must be a DNS-1123 label: lowercase letters, digits and '-', starting and ending with a letter or digit";

/// A DNS-1123 subdomain, as Kubernetes validates object names.
pub fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

/// A DNS-1123 label, as Kubernetes validates namespace and container names.
pub fn is_dns1123_label(s: &str) -> bool {
    let bytes = s.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    !bytes.is_empty()
        && bytes.len() <= 63
        && alnum(&bytes[0])
        && alnum(&bytes[bytes.len() - 1])
        && bytes.iter().all(|b| alnum(b) || *b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_subdomains_follow_kubernetes() {
        assert!(is_dns1123_label("b-c") && is_dns1123_label(&"a".repeat(63)));
        for bad in ["", "-a", "a-", "A", "a.b", "a_b", &"a".repeat(64)] {
            assert!(!is_dns1123_label(bad), "{bad:?}");
        }
        assert!(is_dns1123_subdomain("a.b-c") && !is_dns1123_subdomain("a..b"));
        assert!(!is_dns1123_subdomain(&format!("{}.a", "a".repeat(252))), "longer than 253");
    }
}
