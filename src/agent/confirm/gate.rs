//! Which calls wait for a human "yes", and how the human's reply reads.

use std::time::Duration;

use crate::auth::Caller;
use crate::globs::Globs;

/// A held call's result when the user said no.
pub const DENIED: &str = "Action denied by user.";

/// A held call's result when the user answered with something else.
pub const DENIED_OTHER: &str =
    "Action not performed: the user did not confirm it and replied with the message that follows instead.";

/// The configured gate: `confirm.tools`, the reply words and the TTL.
#[derive(Debug, Clone)]
pub struct Gate {
    pub tools: Globs,
    pub ttl: Duration,
    /// Normalised (see `normalise`) at construction.
    yes: Vec<String>,
    no: Vec<String>,
}

impl Gate {
    pub fn new(tools: Globs, ttl: Duration, yes_words: &[String], no_words: &[String]) -> Self {
        let norm = |words: &[String]| words.iter().map(|w| normalise(w)).filter(|w| !w.is_empty()).collect();
        Self { tools, ttl, yes: norm(yes_words), no: norm(no_words) }
    }

    /// Whether `tool` waits for a human "yes" when `caller` asks for it:
    /// `confirm.tools` minus the key's `confirm_allow`, plus its `confirm_deny`.
    pub fn holds(&self, caller: &Caller, tool: &str) -> bool {
        (self.tools.matches(tool) && !caller.confirm_allow.matches(tool)) || caller.confirm_deny.matches(tool)
    }

    /// Whether any call of `caller`'s could be held (else nothing needs to wait for
    /// the end of a round to know).
    pub fn may_hold(&self, caller: &Caller) -> bool {
        !self.tools.patterns().is_empty() || !caller.confirm_deny.patterns().is_empty()
    }

    /// Reads the human's reply. Only a whole reply counts as yes or no ("yes, but
    /// use the other file" is not a yes): a polite "please"/"thanks" may follow.
    pub fn verdict(&self, reply: &str) -> Verdict {
        let text = normalise(reply);
        let text = ["please", "thanks", "thank you"]
            .iter()
            .find_map(|polite| text.strip_suffix(polite).map(str::trim_end))
            .unwrap_or(&text);
        if self.yes.iter().any(|w| w == text) {
            Verdict::Approve
        } else if self.no.iter().any(|w| w == text) {
            Verdict::Deny
        } else {
            Verdict::Other
        }
    }
}

/// Lower case, punctuation as spaces (apostrophes dropped: "don't" = "dont"),
/// whitespace collapsed.
fn normalise(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars().flat_map(char::to_lowercase) {
        if c == '\'' || c == '’' {
            continue;
        }
        let c = if c.is_alphanumeric() { c } else { ' ' };
        if c == ' ' && (out.is_empty() || out.ends_with(' ')) {
            continue;
        }
        out.push(c);
    }
    out.truncate(out.trim_end().len());
    out
}

/// What the human said to a held action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Approve,
    Deny,
    /// Neither yes nor no: the held calls are denied and the message is answered.
    Other,
}

impl Verdict {
    /// The result a held call gets when it does not run, `None` when it does.
    pub fn denial(self) -> Option<&'static str> {
        match self {
            Self::Approve => None,
            Self::Deny => Some(DENIED),
            Self::Other => Some(DENIED_OTHER),
        }
    }

    pub fn event(self) -> &'static str {
        match self {
            Self::Approve => "approved",
            Self::Deny | Self::Other => "denied",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate() -> Gate {
        let words = |w: &[&str]| w.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        Gate::new(
            Globs::new(&["fetch_url"]).unwrap(),
            Duration::from_secs(900),
            &words(&["yes", "y", "ok", "go ahead", "do it"]),
            &words(&["no", "n", "cancel", "don't"]),
        )
    }

    #[test]
    fn verdicts_ignore_case_punctuation_and_politeness() {
        let g = gate();
        for yes in ["yes", "Yes!", "  YES.  ", "y", "Go ahead!", "go   ahead", "OK, please", "yes thanks", "Do it."] {
            assert_eq!(g.verdict(yes), Verdict::Approve, "{yes:?}");
        }
        for no in ["no", "No.", "N", "cancel!", "Don't", "don’t", "no thank you"] {
            assert_eq!(g.verdict(no), Verdict::Deny, "{no:?}");
        }
        for other in ["yes, but fetch the other page", "what will it do?", "", "yesterday", "nope not that"] {
            assert_eq!(g.verdict(other), Verdict::Other, "{other:?}");
        }
    }
}
