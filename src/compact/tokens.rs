//! Token counting of plain text: a real BPE for the OpenAI families, a calibrated
//! estimate for every other model.

use std::fmt;
use std::io::BufReader;
use std::sync::LazyLock;

use super::estimate;

/// How one upstream model turns text into tokens.
///
/// Both BPE vocabularies are compiled into the binary gzipped (by `build.rs`, from
/// `bpe-openai`'s tables) and expanded once, on first use; a `Tokenizer` is a `Copy`
/// handle to them, cheap to pass around and to compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tokenizer {
    /// gpt-4o, gpt-4.1, gpt-4.5, gpt-5, gpt-oss, o1, o3, o4.
    O200k,
    /// gpt-4, gpt-3.5, text-embedding-3, text-embedding-ada-002.
    Cl100k,
    /// Any other model: a character-class estimate that errs on the high side.
    Estimate,
}

/// Model-name prefixes of the o200k_base families. Checked before the cl100k ones,
/// since `gpt-4o` also starts with `gpt-4`.
const O200K_PREFIXES: &[&str] = &["gpt-4o", "chatgpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "gpt-oss", "chatgpt-5"];
/// The o-series, matched as a whole first segment (`o3`, `o3-mini`), not as a prefix
/// of arbitrary names.
const O_SERIES: &[&str] = &["o1", "o3", "o4"];
const CL100K_PREFIXES: &[&str] = &["gpt-4", "gpt-3.5", "gpt-35", "text-embedding-3", "text-embedding-ada-002"];

impl Tokenizer {
    /// The tokenizer of an upstream model name as sent to the provider. A
    /// `provider/` prefix and an `ft:` (fine-tune) prefix are ignored; case does not
    /// matter. Unknown names (local models, Azure deployment names) get the estimate.
    pub fn for_model(model: &str) -> Self {
        let name = model.rsplit('/').next().unwrap_or(model).to_ascii_lowercase();
        let name = name.strip_prefix("ft:").unwrap_or(&name);
        let first_segment = name.split(['-', ':', '@']).next().unwrap_or(name);
        if O200K_PREFIXES.iter().any(|p| name.starts_with(p)) || O_SERIES.contains(&first_segment) {
            Self::O200k
        } else if CL100K_PREFIXES.iter().any(|p| name.starts_with(p)) {
            Self::Cl100k
        } else {
            Self::Estimate
        }
    }

    /// The token count of `text` (the estimate for [`Tokenizer::Estimate`]).
    pub fn count(self, text: &str) -> usize {
        match self.bpe() {
            Some(bpe) => bpe.count(text),
            None => estimate::tokens(text),
        }
    }

    /// An upper bound of [`Tokenizer::count`] from the length alone, in O(1).
    ///
    /// For the BPEs it is the byte length: every token stands for at least one byte
    /// and neither vocabulary normalizes its input. For the estimate it is the
    /// estimate's largest weight per byte. Compaction compares these bounds first and
    /// counts exactly only where the bounds do not already decide.
    pub fn bound(self, text: &str) -> usize {
        match self {
            Self::O200k | Self::Cl100k => text.len(),
            Self::Estimate => estimate::bound(text.len()),
        }
    }

    /// Expands this tokenizer's BPE tables now. They are expanded on first use
    /// otherwise, and that takes a few hundred milliseconds (o200k_base: 32 MB to
    /// inflate and decode): call this at start-up for the tokenizers the configured
    /// models use, so that no request pays it.
    pub fn warm_up(self) {
        if let Some(bpe) = self.bpe() {
            std::hint::black_box(bpe.count("warm up"));
        }
    }

    /// The name used in logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Self::O200k => "o200k_base",
            Self::Cl100k => "cl100k_base",
            Self::Estimate => "estimate",
        }
    }

    fn bpe(self) -> Option<&'static bpe_openai::Tokenizer> {
        match self {
            Self::O200k => Some(&O200K_BASE),
            Self::Cl100k => Some(&CL100K_BASE),
            Self::Estimate => None,
        }
    }
}

// The pre-tokenisation patterns are `bpe-openai`'s (0.3), which are tiktoken's with
// each negative look-ahead rewritten as a one-character look-ahead pattern (`true`).
// The unit tests compare every count with `bpe-openai`'s own tokenizers.

static O200K_BASE: LazyLock<bpe_openai::Tokenizer> = LazyLock::new(|| {
    let words = concat!(
        "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
        "|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
        "|\\p{N}{1,3}",
        "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*",
        "|\\s*[\\r\\n]+",
        "|\\s+$",
    );
    expand(include_bytes!(concat!(env!("OUT_DIR"), "/o200k_base.bpe.gz")), words)
});

static CL100K_BASE: LazyLock<bpe_openai::Tokenizer> = LazyLock::new(|| {
    let words = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+$";
    expand(include_bytes!(concat!(env!("OUT_DIR"), "/cl100k_base.bpe.gz")), words)
});

/// Expands a table `build.rs` compressed and puts the pre-tokeniser in front of it.
#[expect(
    clippy::expect_used,
    reason = "the tables and patterns are compiled in and were read once at build time: failing here is a broken build, not a runtime condition"
)]
fn expand(gzipped: &[u8], words: &str) -> bpe_openai::Tokenizer {
    // Read through a buffer: MessagePack is decoded in small reads.
    let reader = BufReader::with_capacity(1 << 16, flate2::read::GzDecoder::new(gzipped));
    let bpe = rmp_serde::from_read(reader).expect("the compiled-in BPE table decodes");
    bpe_openai::Tokenizer::new_lookahead(bpe, &[(words, false), ("\\s+\\s", true), ("\\s+", false)], false)
        .expect("the pre-tokenisation patterns compile")
}

impl fmt::Display for Tokenizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tables expanded from the compressed copy, with the patterns written out
    /// here, encode exactly as `bpe-openai`'s own tokenizers (token ids, not just counts).
    #[test]
    fn the_compressed_tables_encode_as_bpe_openai_does() {
        let texts = [
            "",
            "Hello, world!",
            "I'm sure they'll say it's fine; we've done THAT'S IT.",
            "fn main() {\n    println!(\"{}\", 12345678);\n}\n\n\n",
            "   leading and trailing spaces   ",
            "tabs\t\tand\r\nwindows\r\n\r\nline ends",
            "Größe, naïve café, Ελληνικά, русский, العربية, עברית",
            "中文分词测试，日本語のテキスト、한국어 문장",
            "emoji 👩‍👩‍👧‍👦 and 🇩🇪 flags, math ∑∫√ and ½",
            "https://example.com/path?query=1&x=%20 a/b/c\n/usr/local/bin",
            "1 12 123 1234 12345 3.14159 -42 1e10",
            "CamelCaseWordsAndALLCAPSAndsnake_case_words",
        ];
        let long = texts.concat().repeat(20);
        for (ours, theirs) in
            [(Tokenizer::O200k, bpe_openai::o200k_base()), (Tokenizer::Cl100k, bpe_openai::cl100k_base())]
        {
            let Some(bpe) = ours.bpe() else { panic!("{ours} has a table") };
            for text in texts.iter().copied().chain([long.as_str()]) {
                assert_eq!(bpe.encode(text), theirs.encode(text), "{ours}: {text:?}");
                assert_eq!(ours.count(text), theirs.count(text), "{ours}: {text:?}");
            }
        }
    }
}
