//! Token counting of plain text: a real BPE for the OpenAI families, a calibrated
//! estimate for every other model.

use std::fmt;

use super::estimate;

/// How one upstream model turns text into tokens.
///
/// Both BPE vocabularies are compiled into the binary by `bpe-openai` and built once
/// on first use (a `LazyLock` inside that crate); a `Tokenizer` is a `Copy` handle to
/// them, cheap to pass around and to compare.
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

    /// Builds this tokenizer's BPE tables now. They are built on first use otherwise,
    /// and that takes tens of milliseconds (o200k_base: about 50 ms): call this at
    /// start-up for the tokenizers the configured models use, so that no request
    /// pays it.
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
            Self::O200k => Some(bpe_openai::o200k_base()),
            Self::Cl100k => Some(bpe_openai::cl100k_base()),
            Self::Estimate => None,
        }
    }
}

impl fmt::Display for Tokenizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
