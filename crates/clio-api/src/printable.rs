//! Text from outside (Clio's answers, a producer's message) made safe to show anywhere.

/// `text` safe to show anywhere: control characters escaped (`\0`, `\u{1b}`), cut to
/// `max_chars` characters (marked with `…`).
pub fn printable(text: &str, max_chars: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max_chars + 8));
    for (count, c) in text.chars().enumerate() {
        if count == max_chars {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_escapes_control_characters_and_shortens() {
        assert_eq!(printable("a\0b\u{1b}c", 10), "a\\0b\\u{1b}c");
        assert_eq!(printable("abcdef", 3), "abc…");
        assert_eq!(printable("née", 3), "née");
    }
}
