//! Validating a virtual model's answer model (`answer_with` and its settings). It
//! runs after every model is built, because `answer_with` may name another virtual
//! model, whose chain then writes the reply.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::raw::{AnswerFallback, AnswerWhen, RawModel};
use super::validate::{Checker, chain_entry};
use super::{AnswerModel, Provider, VirtualModel};

/// Told to the loop model when another model writes the reply.
pub const DEFAULT_GATHER_PROMPT: &str = "Another assistant will write the reply to the user from what you \
gather. Use the tools to find what the request needs, then end with short notes: what was asked, what you \
found (facts, figures, names, links) and what is still open. Do not write the final reply yourself.";
const DEFAULT_RESULT_CHARS: usize = 4_000;
const DEFAULT_BRIEF_CHARS: usize = 24_000;

/// A model's answer settings, taken out of its raw table.
pub(super) struct Raw {
    answer_with: Option<toml::Value>,
    when: Option<AnswerWhen>,
    fallback: Option<AnswerFallback>,
    gather_prompt: Option<String>,
    result_chars: Option<usize>,
    brief_chars: Option<usize>,
}

impl Raw {
    pub(super) fn take(m: &mut RawModel) -> Self {
        Self {
            answer_with: m.answer_with.take(),
            when: m.answer_when.take(),
            fallback: m.answer_fallback.take(),
            gather_prompt: m.gather_prompt.take(),
            result_chars: m.brief_result_chars.take(),
            brief_chars: m.brief_max_chars.take(),
        }
    }
}

/// Sets each model's `answer` from its raw settings.
pub(super) fn resolve(
    c: &mut Checker,
    providers: &BTreeMap<String, Arc<Provider>>,
    raw: Vec<(String, Raw)>,
    models: &mut BTreeMap<String, VirtualModel>,
) {
    let mut resolved = Vec::new();
    for (name, settings) in raw {
        let key = format!("models.{name}");
        let Some(with) = settings.answer_with else {
            let stray = [
                ("answer_when", settings.when.is_some()),
                ("answer_fallback", settings.fallback.is_some()),
                ("gather_prompt", settings.gather_prompt.is_some()),
                ("brief_result_chars", settings.result_chars.is_some()),
                ("brief_max_chars", settings.brief_chars.is_some()),
            ];
            for (field, set) in stray {
                if set {
                    c.err(format!("{key}.{field}"), "only applies with `answer_with`");
                }
            }
            continue;
        };
        let field = format!("{key}.answer_with");
        let (answer_name, chain) = match with {
            toml::Value::String(named) if !named.contains('/') => {
                if named == name {
                    c.err(&field, "a model cannot answer for itself");
                    continue;
                }
                match models.get(&named) {
                    Some(other) => (named, other.chain.clone()),
                    None => {
                        let known: Vec<&str> = models.keys().map(String::as_str).collect();
                        c.err(
                            &field,
                            format!(
                                "`{named}` is neither a virtual model ({}) nor a provider/model target",
                                known.join(", ")
                            ),
                        );
                        continue;
                    }
                }
            }
            entry => match chain_entry(c, providers, &field, entry) {
                Some(entry) => (entry.label().to_owned(), vec![entry]),
                None => continue,
            },
        };
        let positive = |c: &mut Checker, field: &str, value: Option<usize>, default: usize| match value {
            Some(0) => {
                c.err(format!("{key}.{field}"), "must be at least 1");
                default
            }
            other => other.unwrap_or(default),
        };
        let result_chars = positive(c, "brief_result_chars", settings.result_chars, DEFAULT_RESULT_CHARS);
        let brief_chars = positive(c, "brief_max_chars", settings.brief_chars, DEFAULT_BRIEF_CHARS);
        let gather_prompt = settings.gather_prompt.unwrap_or_else(|| DEFAULT_GATHER_PROMPT.to_owned());
        let answer = AnswerModel {
            name: answer_name,
            chain,
            when: settings.when.unwrap_or_default(),
            fallback: settings.fallback.unwrap_or_default(),
            gather_prompt,
            result_chars,
            brief_chars,
        };
        resolved.push((name, answer));
    }
    for (name, answer) in resolved {
        if let Some(model) = models.get_mut(&name) {
            model.answer = Some(answer);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{AnswerFallback, AnswerWhen, Config};

    const BASE: &str = "[providers.p]\nbase_url = \"http://127.0.0.1:9/v1\"\n\
        [models.writer]\nchain = [\"p/big\", \"p/backup\"]\n";

    fn load(model: &str) -> Result<Config, Vec<(String, String)>> {
        let text = format!("{BASE}[models.m]\nchain = [\"p/small\"]\n{model}");
        Config::from_toml(Path::new("t.toml"), &text, &|_| None)
            .map_err(|errors| errors.into_iter().map(|e| (e.key, e.reason)).collect())
    }

    #[test]
    fn a_virtual_model_or_a_target_answers() {
        let config =
            load("answer_with = \"writer\"\nanswer_when = \"tools_used\"\nbrief_result_chars = 100\n").unwrap();
        let answer = config.models["m"].answer.as_ref().unwrap();
        let chain: Vec<&str> = answer.chain.iter().map(|e| e.label()).collect();
        assert_eq!((answer.name.as_str(), chain), ("writer", vec!["p/big", "p/backup"]));
        assert_eq!(
            (answer.when, answer.fallback, answer.result_chars),
            (AnswerWhen::ToolsUsed, AnswerFallback::Error, 100)
        );
        assert!(config.models["writer"].answer.is_none());

        let config = load("answer_with = { target = \"p/big\", context_window = 64000 }\n").unwrap();
        let answer = config.models["m"].answer.as_ref().unwrap();
        assert_eq!((answer.name.as_str(), answer.chain[0].context_window), ("p/big", Some(64000)));
    }

    #[test]
    fn mistakes_name_their_key() {
        let errors = load("answer_with = \"m\"\n").unwrap_err();
        assert_eq!(errors, [("models.m.answer_with".into(), "a model cannot answer for itself".into())]);
        let errors = load("answer_with = \"writer\"\nbrief_max_chars = 0\n").unwrap_err();
        assert_eq!(errors, [("models.m.brief_max_chars".into(), "must be at least 1".into())]);
        let errors = load("answer_fallback = \"loop\"\n").unwrap_err();
        assert_eq!(errors[0].0, "models.m.answer_fallback");
        let errors = load("answer_with = \"q/big\"\n").unwrap_err();
        assert!(errors[0].1.contains("unknown provider `q`"), "{errors:?}");
    }
}
