//! The channel-name rules, shared by the WebSocket protocol and the HTTP API.

/// Why a channel name is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    /// The name is empty.
    #[error("channel is empty")]
    Empty,
    /// The name is longer than the configured maximum.
    #[error("channel longer than {0} bytes")]
    TooLong(usize),
    /// The name holds a control character (U+0000 to U+001F).
    #[error("channel contains control characters")]
    ControlCharacter,
    /// A pattern (`*`) where only a plain name is allowed.
    #[error("cannot publish to a pattern")]
    Pattern,
}

/// Checks `name` against the rules; patterns only where `allow_pattern`.
///
/// # Errors
/// The first rule the name breaks.
pub fn check(name: &str, max_len: usize, allow_pattern: bool) -> Result<(), ChannelError> {
    if name.is_empty() {
        return Err(ChannelError::Empty);
    }
    if name.len() > max_len {
        metrics::counter!("wscluster_refused_total", "reason" => "channel_length").increment(1);
        return Err(ChannelError::TooLong(max_len));
    }
    if name.chars().any(|c| c <= '\u{1f}') {
        return Err(ChannelError::ControlCharacter);
    }
    if !allow_pattern && name.contains('*') {
        return Err(ChannelError::Pattern);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rules_in_order() {
        assert_eq!(check("", 5, true), Err(ChannelError::Empty));
        assert_eq!(check("abcdef", 5, true), Err(ChannelError::TooLong(5)));
        assert_eq!(check("a\nb", 5, true), Err(ChannelError::ControlCharacter));
        assert_eq!(check("a*", 5, false), Err(ChannelError::Pattern));
        assert_eq!(check("a*", 5, true), Ok(()));
        assert_eq!(check("név", 5, false), Ok(()));
    }
}
