//! Small text helpers shared across modules: shortening for logs, footers and
//! messages, the innermost cause of an error chain, and fresh ids.

/// A fresh id: `prefix` and a random UUID's 32 hex digits (written in place, not
/// through `format!`: one is made for every response).
pub fn new_id(prefix: &str) -> String {
    let mut id = String::with_capacity(prefix.len() + uuid::fmt::Simple::LENGTH);
    id.push_str(prefix);
    id.push_str(uuid::Uuid::new_v4().simple().encode_lower(&mut uuid::Uuid::encode_buffer()));
    id
}

/// `text` cut to at most `max` characters, with `…` when something was cut.
pub fn shorten(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_owned(),
    }
}

/// `text` on one line (control characters as spaces), at most `max` characters.
pub fn one_line(text: &str, max: usize) -> String {
    let single: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    shorten(&single, max)
}

/// Tool arguments for people: compact JSON on one line, at most `max` characters.
pub fn arguments(raw: &str, max: usize) -> String {
    let compact = serde_json::from_str::<serde_json::Value>(raw).map_or_else(|_| raw.to_owned(), |v| v.to_string());
    one_line(&compact, max)
}

/// The innermost cause of an error: HTTP clients' top-level messages name the URL
/// only, the cause says what happened (connection refused, reset, …).
pub fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_the_prefix_and_32_fresh_hex_digits() {
        let (a, b) = (new_id("chatcmpl-"), new_id("chatcmpl-"));
        let hex = a.strip_prefix("chatcmpl-").unwrap();
        assert_eq!(hex.len(), 32);
        assert!(hex.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)), "{a}");
        assert_ne!(a, b);
    }

    #[test]
    fn shortens_on_character_boundaries() {
        assert_eq!(shorten("short", 10), "short");
        assert_eq!(shorten("ééééé", 2), "éé…");
        assert_eq!(one_line("a\nb\tc", 10), "a b c");
        assert_eq!(arguments("{ \"a\" :  1 }", 100), "{\"a\":1}");
        assert_eq!(arguments("not json\n", 100), "not json ");
    }
}
