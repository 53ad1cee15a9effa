//! Warnings: a config that is valid but will probably not work as meant. They do
//! not stop lariat (an operator may mean it), but start-up logs them and `lariat
//! check` prints them, so a first run is not a silent dead end.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use super::{Provider, ProviderKind};

/// One warning: the key it concerns and what will probably go wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigWarning {
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}`: {}", self.key, self.message)
    }
}

/// Ollama's port; its OpenAI-compatible API lives under `/v1`, its own API at the root.
const OLLAMA_PORT: u16 = 11434;

/// The warnings of a validated config. `unexpanded` is the `[providers]` table as
/// written, before `${VAR}` expansion, so a warning can name the variable.
pub(super) fn collect(
    unexpanded: Option<&toml::Value>,
    providers: &BTreeMap<String, Arc<Provider>>,
) -> Vec<ConfigWarning> {
    let mut warnings = Vec::new();
    for (name, provider) in providers {
        let written = unexpanded.and_then(|p| p.get(name)).and_then(|p| p.get("api_key")).and_then(|k| k.as_str());
        if let Some(written) = written
            && provider.api_key.is_none()
        {
            warnings.push(empty_key(name, written));
        }
        if let Some(warning) = ollama_without_v1(name, provider) {
            warnings.push(warning);
        }
    }
    warnings
}

/// `api_key` was written but came out empty (`${OPENAI_API_KEY:-}` with the variable
/// unset): lariat then sends no `Authorization`, and a hosted provider answers 401.
fn empty_key(provider: &str, written: &str) -> ConfigWarning {
    let variables = variables(written);
    let cause = match variables.as_slice() {
        [] => "it is empty".to_owned(),
        [one] => format!("`{written}` expanded to nothing: `{one}` is not set or empty"),
        many => format!("`{written}` expanded to nothing: none of {} is set", many.join(", ")),
    };
    ConfigWarning {
        key: format!("providers.{provider}.api_key"),
        message: format!(
            "{cause}, so requests to provider `{provider}` carry no API key (a hosted provider will refuse them with 401){}",
            variables.first().map(|v| format!("; set it with `export {v}=...`")).unwrap_or_default()
        ),
    }
}

/// The names of the `${VAR}` references in `text`.
fn variables(text: &str) -> Vec<String> {
    text.split("${")
        .skip(1)
        .filter_map(|rest| {
            let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            (!name.is_empty()).then_some(name)
        })
        .collect()
}

/// A base URL on Ollama's port (or naming an `ollama` host) without `/v1`: lariat
/// would post to Ollama's own API, which answers 404 to every chat completion.
fn ollama_without_v1(name: &str, provider: &Provider) -> Option<ConfigWarning> {
    if provider.kind != ProviderKind::Openai {
        return None;
    }
    let base = provider.chat_url.strip_suffix("/chat/completions")?;
    let url = url::Url::parse(base).ok()?;
    let ollama = url.port_or_known_default() == Some(OLLAMA_PORT)
        || url.host_str().is_some_and(|h| h.to_ascii_lowercase().contains("ollama"));
    let path = url.path().trim_end_matches('/');
    if !ollama || path.ends_with("/v1") {
        return None;
    }
    Some(ConfigWarning {
        key: format!("providers.{name}.base_url"),
        message: format!(
            "`{base}` looks like Ollama, whose OpenAI-compatible API is under `/v1`: use `{base}/v1` (lariat posts to `{{base_url}}/chat/completions`)"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_are_named_in_order() {
        assert_eq!(variables("${OPENAI_API_KEY:-}"), ["OPENAI_API_KEY"]);
        assert_eq!(variables("Bearer ${A}-${B_2:-x}"), ["A", "B_2"]);
        assert!(variables("plain").is_empty());
    }

    #[test]
    fn an_empty_key_names_its_provider_and_variable() {
        let warning = empty_key("openai", "${OPENAI_API_KEY:-}");
        assert_eq!(warning.key, "providers.openai.api_key");
        assert!(warning.message.contains("`OPENAI_API_KEY` is not set"), "{warning}");
        assert!(warning.message.contains("provider `openai`"), "{warning}");
        assert!(warning.message.contains("export OPENAI_API_KEY="), "{warning}");
    }
}
