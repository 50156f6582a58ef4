//! Wildcard channel patterns.
//!
//! A subscription whose name contains `*` is a pattern: each `*` matches any
//! run of characters (including none). Matching is byte-wise, like channel
//! comparison, so it never depends on Unicode normalisation.

/// A compiled wildcard pattern, split once at subscribe time so matching a
/// publication does not re-scan the pattern for stars.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    /// The literal pieces between the stars, in order.
    parts: Vec<Box<str>>,
    /// Whether the pattern starts with `*` (the first piece may float).
    open_start: bool,
    /// Whether the pattern ends with `*` (the last piece may float).
    open_end: bool,
}

impl Pattern {
    /// Compiles `text`; returns `None` when it holds no `*` (an exact name).
    pub fn compile(text: &str) -> Option<Self> {
        if !text.contains('*') {
            return None;
        }
        Some(Self {
            parts: text.split('*').map(Into::into).collect(),
            open_start: text.starts_with('*'),
            open_end: text.ends_with('*'),
        })
    }

    /// True when `channel` matches the whole pattern.
    pub fn matches(&self, channel: &str) -> bool {
        let mut rest = channel.as_bytes();
        let last = self.parts.len() - 1;

        for (i, part) in self.parts.iter().enumerate() {
            let part = part.as_bytes();
            if i == 0 && !self.open_start {
                // The first piece is anchored at the start of the name.
                match rest.strip_prefix(part) {
                    Some(r) => rest = r,
                    None => return false,
                }
            } else if i == last && !self.open_end {
                // The last piece is anchored at the end of the name.
                return rest.ends_with(part);
            } else if !part.is_empty() {
                // A middle piece: take its first occurrence (greedy-left is
                // enough, since later pieces only need to appear after it).
                match find(rest, part) {
                    Some(at) => rest = &rest[at + part.len()..],
                    None => return false,
                }
            }
        }
        true
    }
}

/// Byte-substring search; patterns are short, so the naive scan is fine.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::Pattern;

    fn m(p: &str, c: &str) -> bool {
        Pattern::compile(p).expect("pattern").matches(c)
    }

    #[test]
    fn exact_names_are_not_patterns() {
        assert!(Pattern::compile("news").is_none());
    }

    #[test]
    fn trailing_star_matches_prefixes_including_the_bare_prefix() {
        assert!(m("news*", "news"));
        assert!(m("news*", "news.eu"));
        assert!(m("news*", "newsroom"));
        assert!(!m("news*", "new"));
        assert!(!m("news*", "the news"));
    }

    #[test]
    fn leading_and_middle_stars() {
        assert!(m("*.eu", "news.eu"));
        assert!(!m("*.eu", "news.eu.x"));
        assert!(m("a*b*c", "abc"));
        assert!(m("a*b*c", "axxbyyc"));
        assert!(!m("a*b*c", "axxcyyb"));
        assert!(m("*", ""));
        assert!(m("*", "anything"));
        assert!(m("room:*:x", "room:1:x"));
        assert!(!m("ab*ba", "aba"));
    }
}
