//! Whether log lines carry ANSI colour codes: only for a person at a terminal. Written to a file
//! or read by a log collector they are noise that breaks grep, and `NO_COLOR` (no-color.org)
//! turns them off anywhere.

use std::ffi::OsStr;

/// Colour for a terminal on stdout, unless `NO_COLOR` is set to anything but the empty string.
pub fn log_colour(stdout_is_terminal: bool, no_color: Option<&OsStr>) -> bool {
    stdout_is_terminal && no_color.is_none_or(OsStr::is_empty)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_and_never_with_no_color() {
        assert!(log_colour(true, None));
        assert!(
            !log_colour(false, None),
            "a file or a pipe gets no colour codes"
        );
        assert!(!log_colour(true, Some(OsStr::new("1"))));
        assert!(!log_colour(false, Some(OsStr::new("1"))));
        // The convention: an empty NO_COLOR is as if unset.
        assert!(log_colour(true, Some(OsStr::new(""))));
    }
}
