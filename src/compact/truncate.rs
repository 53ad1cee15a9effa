//! Cutting a tool result to a head of N chars followed by `…[M chars omitted]`.
//!
//! Truncation is idempotent: a text that already ends with a marker is read as a
//! head followed by its marker, so cutting it again to the same or a larger cap
//! changes nothing, and cutting it to a smaller cap replaces the marker (adding the
//! newly omitted chars to its count) instead of appending a second one, so that two
//! cuts give what one cut to the smaller cap gives. Cuts fall on char boundaries;
//! "chars" are Unicode scalar values, as `str::chars` counts them.

use serde_json::Value;

use crate::openai::{Content, part_text};

const MARKER_OPEN: &str = "…[";
const MARKER_CLOSE: &str = " chars omitted]";

/// The marker for `omitted` chars.
pub fn marker(omitted: usize) -> String {
    format!("{MARKER_OPEN}{omitted}{MARKER_CLOSE}")
}

/// Cuts the text of a content value (a string, or the text parts of an array) to
/// `cap` chars plus a marker. Returns whether anything changed: text within the cap,
/// and text a cut would not make shorter than it was before any cut, is left as it
/// is (a re-cut may keep the length, when the marker gains a digit).
pub fn truncate(content: &mut Content, cap: usize) -> bool {
    match content {
        Content::Text(s) => match plan(&[s.as_str()], cap) {
            Some(cut) => {
                s.truncate(cut.at);
                s.push_str(&marker(cut.omitted));
                true
            }
            None => false,
        },
        Content::Parts(parts) => {
            let texts: Vec<&str> = parts.iter().filter_map(part_text).collect();
            let Some(cut) = plan(&texts, cap) else { return false };
            let mut seen = 0;
            parts.retain_mut(|part| {
                if part_text(part).is_none() {
                    return true;
                }
                let index = seen;
                seen += 1;
                if index == cut.part
                    && let Some(Value::String(text)) = part.get_mut("text")
                {
                    text.truncate(cut.at);
                    text.push_str(&marker(cut.omitted));
                }
                // Text parts after the cut go; everything else stays.
                index <= cut.part
            });
            true
        }
        Content::None => false,
    }
}

/// Where to cut: in text segment `part`, at byte `at`, with `omitted` chars in the
/// new marker (earlier omissions included).
#[derive(Debug, PartialEq, Eq)]
struct Cut {
    part: usize,
    at: usize,
    omitted: usize,
}

fn plan(texts: &[&str], cap: usize) -> Option<Cut> {
    let last = texts.len().checked_sub(1)?;
    let (head_end, prior) = texts.get(last).and_then(|t| parse_marker(t)).unwrap_or((texts[last].len(), 0));
    // A char is at least one byte: a head within `cap` bytes is within `cap` chars.
    // This keeps the common case, an already cut result, free of char counting.
    if head_end + texts[..last].iter().map(|t| t.len()).sum::<usize>() <= cap {
        return None;
    }
    let segment = |i: usize| if i == last { &texts[i][..head_end] } else { texts[i] };
    let mut remaining = cap;
    for i in 0..texts.len() {
        let text = segment(i);
        match text.char_indices().nth(remaining) {
            None => remaining -= text.chars().count(),
            Some((at, _)) => {
                let omitted_now = text[at..].chars().count()
                    + (i + 1..texts.len()).map(|j| segment(j).chars().count()).sum::<usize>();
                // Only cut when the result is shorter than the text was before any
                // cut. Measured against the uncut text, not the current one, so that
                // cuts compose: cutting to 42 then 20 chars gives what one cut to 20
                // gives, even where the marker gains a digit (`…[99` to `…[100`).
                let omitted = prior + omitted_now;
                return (marker_chars(omitted) < omitted).then_some(Cut { part: i, at, omitted });
            }
        }
    }
    None
}

fn marker_chars(omitted: usize) -> usize {
    MARKER_OPEN.chars().count() + omitted.to_string().len() + MARKER_CLOSE.len()
}

/// A trailing marker: the byte where it starts and its count.
fn parse_marker(text: &str) -> Option<(usize, usize)> {
    let body = text.strip_suffix(MARKER_CLOSE)?;
    let open = body.rfind(MARKER_OPEN)?;
    let digits = &body[open + MARKER_OPEN.len()..];
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((open, digits.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openai::Content;
    use serde_json::json;

    #[test]
    fn marker_round_trips() {
        assert_eq!(parse_marker(&format!("abc{}", marker(42))), Some((3, 42)));
        assert_eq!(parse_marker("abc…[x chars omitted]"), None);
        assert_eq!(parse_marker("abc…[ chars omitted]"), None);
        assert_eq!(marker_chars(42), marker(42).chars().count());
    }

    #[test]
    fn cuts_on_char_boundaries() {
        let mut v = Content::from(json!("ééééé".repeat(20)));
        assert!(truncate(&mut v, 3));
        assert_eq!(v, json!("ééé…[97 chars omitted]"));
        let mut v = Content::from(json!("🦀".repeat(40)));
        assert!(truncate(&mut v, 1));
        assert_eq!(v, json!("🦀…[39 chars omitted]"));
    }

    #[test]
    fn retruncation_replaces_the_marker() {
        let mut v = Content::from(json!("x".repeat(1000)));
        assert!(truncate(&mut v, 100));
        assert!(!truncate(&mut v, 100), "idempotent");
        assert!(!truncate(&mut v, 500), "a larger cap does not grow it back");
        assert!(truncate(&mut v, 10));
        assert_eq!(v, json!(format!("{}{}", "x".repeat(10), marker(990))));
    }

    #[test]
    fn two_cuts_give_what_one_cut_gives() {
        // The case where the marker gains a digit: 21 chars and `…[99` against
        // 20 chars and `…[100` (found by the compaction proptest).
        let text = "y".repeat(120);
        for (first, second) in [(42, 21), (21, 20), (85, 20), (300, 7), (60, 59)] {
            let mut twice = Content::from(json!(text));
            truncate(&mut twice, first);
            truncate(&mut twice, second);
            let mut once = Content::from(json!(text));
            truncate(&mut once, second);
            assert_eq!(twice, once, "{first} then {second}");
        }
    }

    #[test]
    fn short_or_barely_longer_text_stays() {
        let mut v = Content::from(json!("x".repeat(110)));
        assert!(!truncate(&mut v, 100), "cutting 10 chars for a 20-char marker");
        let mut v = Content::from(json!("short"));
        assert!(!truncate(&mut v, 100));
    }

    #[test]
    fn text_parts_are_cut_across_parts() {
        let mut v = Content::from(json!([
            {"type": "text", "text": "a".repeat(30)},
            {"type": "image_url", "image_url": {"url": "x"}},
            {"type": "text", "text": "b".repeat(50)},
            {"type": "text", "text": "c".repeat(50)},
        ]));
        assert!(truncate(&mut v, 40));
        assert_eq!(
            v,
            json!([
                {"type": "text", "text": "a".repeat(30)},
                {"type": "image_url", "image_url": {"url": "x"}},
                {"type": "text", "text": format!("{}{}", "b".repeat(10), marker(90))},
            ])
        );
        assert!(!truncate(&mut v, 40), "idempotent on parts");
        assert!(truncate(&mut v, 5));
        assert_eq!(
            v,
            json!([{"type": "text", "text": format!("aaaaa{}", marker(125))}, {"type": "image_url", "image_url": {"url": "x"}}])
        );
    }
}
