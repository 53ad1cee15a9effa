//! `${VAR}` and `${VAR:-default}` expansion over every string of a parsed TOML tree.
//!
//! Expansion runs on the parsed tree, not on the file text, so a value containing
//! quotes or newlines can never change the structure of the document.

use super::ConfigError;

/// Replaces variables in every string value of `table`, appending one error per
/// missing variable (naming the variable and the key) to `errors`.
pub fn expand_table(
    table: &mut toml::Table,
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<ConfigError>,
) {
    for (key, value) in table.iter_mut() {
        let child = join(path, key);
        expand_value(value, &child, env, errors);
    }
}

fn expand_value(
    value: &mut toml::Value,
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<ConfigError>,
) {
    match value {
        toml::Value::String(s) => match expand_str(s, env) {
            Ok(expanded) => *s = expanded,
            Err(reason) => errors.push(ConfigError::new(path, reason)),
        },
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                expand_value(item, &format!("{path}[{i}]"), env, errors);
            }
        }
        toml::Value::Table(table) => expand_table(table, path, env, errors),
        _ => {}
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_owned() } else { format!("{path}.{key}") }
}

/// Expands one string. `$$` stands for a literal `$`.
pub fn expand_str(input: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    if !input.contains('$') {
        return Ok(input.to_owned());
    }
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body.find('}').ok_or_else(|| format!("unterminated `${{` in `{input}`"))?;
            let spec = &body[..end];
            let (name, default) = match spec.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (spec, None),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("`${{{spec}}}` is not a valid variable reference"));
            }
            match (env(name), default) {
                (Some(value), _) => out.push_str(&value),
                (None, Some(default)) => out.push_str(default),
                (None, None) => {
                    return Err(format!(
                        "environment variable `{name}` is not set (use `${{{name}:-}}` for an optional value)"
                    ));
                }
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "KEY" => Some("sk-123".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expands_references() {
        let cases = [
            ("plain", Ok("plain")),
            ("${KEY}", Ok("sk-123")),
            ("Bearer ${KEY}!", Ok("Bearer sk-123!")),
            ("${EMPTY}", Ok("")),
            ("${MISSING:-fallback}", Ok("fallback")),
            ("${MISSING:-}", Ok("")),
            ("${KEY:-fallback}", Ok("sk-123")),
            ("cost $5", Ok("cost $5")),
            ("$${KEY}", Ok("${KEY}")),
        ];
        for (input, want) in cases {
            assert_eq!(expand_str(input, &env).as_deref(), want.map(str::to_owned).as_deref(), "{input}");
        }
    }

    #[test]
    fn reports_bad_references() {
        let missing = expand_str("${NOPE}", &env).unwrap_err();
        assert!(missing.contains("`NOPE`"), "{missing}");
        assert!(expand_str("${KEY", &env).unwrap_err().contains("unterminated"));
        assert!(expand_str("${A B}", &env).unwrap_err().contains("not a valid"));
    }

    #[test]
    fn errors_name_the_key_path() {
        let mut table: toml::Table = "[providers.openai]\napi_key = \"${NOPE}\"\nlist = [\"${NOPE}\"]".parse().unwrap();
        let mut errors = Vec::new();
        expand_table(&mut table, "", &env, &mut errors);
        let keys: Vec<_> = errors.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["providers.openai.api_key", "providers.openai.list[0]"]);
    }
}
