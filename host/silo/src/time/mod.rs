//! What the silo does for objects over time: an activation's timers
//! (`timers`), and durable reminders: what a turn sets (`reminders`) and
//! the scan that fires them (`firing`).
//!
//! Everything here reads time from `base::clock::Clock`, never from the
//! system directly, so tests move it by hand.

pub(crate) mod firing;
#[cfg(test)]
mod firing_tests;
pub(crate) mod reminders;
pub(crate) mod timers;

use crate::base::reserved::PREFIX;

/// Checks the name of a timer or reminder (`what`): not empty, not
/// reserved, at most `max_bytes`, and without control characters (it goes
/// into log lines and listings).
pub(crate) fn check_name(what: &str, name: &str, max_bytes: usize) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("a {what}'s name must not be empty"));
    }
    if name.len() > max_bytes {
        return Err(format!(
            "a {what}'s name may be at most {max_bytes} bytes (this one has {})",
            name.len()
        ));
    }
    if name.starts_with(PREFIX) {
        return Err(format!(
            "{what} names starting with `{PREFIX}` are reserved to the silo"
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(format!(
            "a {what}'s name may not hold control characters: {}",
            crate::base::text::one_line(name, 200)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_are_checked_alike_for_timers_and_reminders() {
        for what in ["timer", "reminder"] {
            assert!(super::check_name(what, "flush", 10).is_ok());
            assert!(super::check_name(what, "", 10).is_err());
            assert!(super::check_name(what, "rio:x", 10).is_err());
            assert!(super::check_name(what, "abcdefghijk", 10).is_err());
            let error = super::check_name(what, "a\nb", 10).unwrap_err();
            assert!(error.contains("control"), "{error}");
        }
    }
}
