//! The token estimate for models without a known tokenizer (local models, other
//! providers): a weighted count of character classes, calibrated to overestimate.
//!
//! A flat "chars ÷ 4" undercounts exactly the text tool results are made of: JSON,
//! logs, CSV, hex ids and numbers run at 1.5–3 characters per token, and an
//! undercount means an upstream overflow, which is worse than some slack. So each
//! class of character carries its own weight, plus a weight for every change of class,
//! which is where pre-tokenizers split:
//!
//! | class | tokens |
//! |---|---|
//! | ASCII letter | 0.20 |
//! | digit | 1.00 (Llama 2, Mistral, Qwen and Gemma give every digit its own token) |
//! | space, tab | 0.05 (mostly merged into the next word) |
//! | newline | 0.50 |
//! | other ASCII (punctuation, symbols) | 0.40 |
//! | 2-byte UTF-8 char (accented Latin, Cyrillic, Greek, Hebrew, Arabic) | 1.00 |
//! | 3-byte UTF-8 char (CJK, Thai, most symbols) | 1.75 |
//! | 4-byte UTF-8 char (emoji, rare CJK) | 3.00 |
//! | change of class (letter case, letter/digit/punctuation/space/newline/non-ASCII) | 0.35 |
//!
//! Calibration (estimate ÷ cl100k_base count, the less efficient of the two OpenAI
//! vocabularies; o200k_base counts at most as many on these): English prose and
//! Markdown 1.36–1.41, Rust code 1.41–1.48, JSON 1.25–1.55, a build log 1.32, HTML
//! 1.33, CSV of numbers 2.0, hex and UUIDs 1.5, German/Spanish/French/Polish/Turkish
//! 1.12–1.28, Russian 1.9, Greek 1.11, Hebrew 1.03, Arabic 1.28, Thai 1.77,
//! Japanese/Korean/Chinese 1.14–1.75, emoji 1.07. The margin of about 1.3 on common
//! text covers vocabularies smaller than cl100k (Llama 2 and Mistral's 32k ones count
//! roughly 1.2× as many tokens on English). The known undercounts are random base64
//! (0.77) and dense mathematical symbols (0.95): the upstream's context-length
//! error, answered with a tighter budget, is the safety net for those.

/// Weights are in twentieths of a token, so the scan adds integers.
const UNITS_PER_TOKEN: usize = 20;
const TRANSITION: usize = 7;
/// The most one byte can add: a digit (20) that starts a new class (7).
const MAX_UNITS_PER_BYTE: usize = 27;

/// A continuation byte of a UTF-8 sequence: it belongs to its lead byte's char.
const CONTINUATION: u8 = u8::MAX;

/// Per byte: (class, weight). Built at compile time.
static TABLE: [(u8, u8); 256] = table();

const fn table() -> [(u8, u8); 256] {
    let mut t = [(0u8, 0u8); 256];
    let mut b = 0usize;
    while b < 256 {
        t[b] = match b as u8 {
            b'a'..=b'z' => (0, 4),
            b'A'..=b'Z' => (1, 4),
            b'0'..=b'9' => (2, 20),
            b' ' | b'\t' => (3, 1),
            b'\n' | b'\r' => (4, 10),
            0..=0x7f => (5, 8),
            0x80..=0xbf => (CONTINUATION, 0),
            0xc0..=0xdf => (6, 20),
            0xe0..=0xef => (6, 35),
            _ => (6, 60),
        };
        b += 1;
    }
    t
}

/// The estimated token count of `text`.
pub fn tokens(text: &str) -> usize {
    let mut units = 0usize;
    let mut previous = CONTINUATION;
    for &byte in text.as_bytes() {
        let (class, weight) = TABLE[usize::from(byte)];
        units += usize::from(weight);
        if class != CONTINUATION && class != previous {
            units += TRANSITION;
            previous = class;
        }
    }
    units.div_ceil(UNITS_PER_TOKEN)
}

/// An upper bound of [`tokens`] for any text of `bytes` bytes.
pub fn bound(bytes: usize) -> usize {
    bytes.saturating_mul(MAX_UNITS_PER_BYTE).div_ceil(UNITS_PER_TOKEN)
}
