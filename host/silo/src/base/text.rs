//! Text that reaches a caller or the log from something the silo does not
//! control (a guest's error, a peer's reason, a trap's cause): kept on one
//! line and within a size.

/// `text` on one line (control characters as spaces), at most `max_chars`
/// characters long, with `…` where it was cut.
pub(crate) fn one_line(text: &str, max_chars: usize) -> String {
    let mut line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(max_chars)
        .collect();
    if text.chars().nth(max_chars).is_some() {
        line.push('…');
    }
    line
}

/// `text` cut to at most `max_bytes` bytes at a character boundary, with
/// `…` where it was cut.
pub(crate) fn cut(mut text: String, max_bytes: usize) -> String {
    if text.len() > max_bytes {
        let mut end = max_bytes;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_folds_control_characters_and_marks_a_cut() {
        assert_eq!(one_line("a\nb\tc", 10), "a b c");
        assert_eq!(one_line("abcdef", 3), "abc…");
        assert_eq!(one_line("abc", 3), "abc");
        assert_eq!(one_line("ééé", 2), "éé…");
    }

    #[test]
    fn cut_keeps_characters_whole() {
        assert_eq!(cut("abc".into(), 3), "abc");
        assert_eq!(cut("abcd".into(), 3), "abc…");
        // "é" is two bytes: a cut inside it steps back before it.
        assert_eq!(cut("aé".into(), 2), "a…");
    }
}
