//! Validating forwarded identity: a key a frontend (Open WebUI) uses for all its
//! people, the headers that name each person, their roles' access, and per-user
//! overrides.

use std::collections::BTreeMap;

use super::raw::RawUser;
use super::validate::Checker;
use super::{Access, Forwarded, UserOverride};

/// The headers Open WebUI sends with `ENABLE_FORWARD_USER_INFO_HEADERS=true`.
const OPENWEBUI_USER: [&str; 3] = ["x-openwebui-user-email", "x-openwebui-user-id", "x-openwebui-user-name"];
const OPENWEBUI_ROLE: &str = "x-openwebui-user-role";
const OPENWEBUI_CHAT: &str = "x-openwebui-chat-id";

pub(super) fn forwarded(
    c: &mut Checker,
    key: &str,
    raw: Option<toml::Value>,
    role_access: Option<BTreeMap<String, String>>,
) -> Option<Forwarded> {
    let field = format!("{key}.forwarded_identity");
    let (user_headers, role_header, conversation_header) = match raw {
        None => {
            if role_access.is_some() {
                c.err(format!("{key}.role_access"), "only applies with `forwarded_identity`");
            }
            return None;
        }
        Some(toml::Value::String(preset)) if preset == "openwebui" => {
            let users = OPENWEBUI_USER.map(str::to_owned).to_vec();
            (users, Some(OPENWEBUI_ROLE.to_owned()), Some(OPENWEBUI_CHAT.to_owned()))
        }
        Some(toml::Value::Array(names)) if !names.is_empty() => {
            let mut headers = Vec::new();
            for name in names {
                match name.as_str().filter(|n| http::HeaderName::from_bytes(n.as_bytes()).is_ok()) {
                    Some(name) => headers.push(name.to_ascii_lowercase()),
                    None => c.err(&field, format!("`{name}` is not a header name")),
                }
            }
            (headers, None, None)
        }
        Some(other) => {
            c.err(&field, format!("expected \"openwebui\" or a list of header names, got {other}"));
            return None;
        }
    };
    let role_access = role_access
        .unwrap_or_default()
        .into_iter()
        .map(|(role, level)| {
            let access = c.access(&format!("{key}.role_access.{role}"), Some(&level), Access::Guest);
            (role.to_ascii_lowercase(), access)
        })
        .collect();
    Some(Forwarded { user_headers, role_header, role_access, conversation_header })
}

pub(super) fn users(c: &mut Checker, raw: BTreeMap<String, RawUser>) -> BTreeMap<String, UserOverride> {
    raw.into_iter()
        .map(|(name, u)| {
            let key = format!("users.{name}");
            let access = u.access.map(|a| c.access(&format!("{key}.access"), Some(&a), Access::Guest));
            let user = UserOverride {
                access,
                confirm_allow: c.globs(&format!("{key}.confirm_allow"), &u.confirm_allow),
                confirm_deny: c.globs(&format!("{key}.confirm_deny"), &u.confirm_deny),
            };
            (name.to_lowercase(), user)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{Access, Config};

    fn load(key: &str, rest: &str) -> Result<Config, Vec<(String, String)>> {
        let text = format!(
            "[providers.p]\nbase_url = \"http://127.0.0.1:9/v1\"\n[models.m]\nchain = [\"p/m\"]\n\
             [[keys]]\nkey = \"sk-0123456789\"\nuser = \"webui\"\n{key}\n{rest}"
        );
        Config::from_toml(Path::new("t.toml"), &text, &|_| None)
            .map_err(|errors| errors.into_iter().map(|e| (e.key, e.reason)).collect())
    }

    #[test]
    fn the_open_webui_preset_and_header_lists() {
        let config = load(
            "forwarded_identity = \"openwebui\"\nrole_access = { Admin = \"admin\" }",
            "[users.\"Alice@Example.com\"]\naccess = \"guest\"\nconfirm_allow = [\"x\"]",
        )
        .unwrap();
        let forwarded = config.keys[0].forwarded.as_ref().unwrap();
        assert_eq!(forwarded.user_headers[0], "x-openwebui-user-email");
        assert_eq!(forwarded.role_header.as_deref(), Some("x-openwebui-user-role"));
        assert_eq!(forwarded.role_access["admin"], Access::Admin, "roles compare case-insensitively");
        assert_eq!(config.users["alice@example.com"].access, Some(Access::Guest));

        let config = load("forwarded_identity = [\"X-Remote-User\"]", "").unwrap();
        let forwarded = config.keys[0].forwarded.as_ref().unwrap();
        assert_eq!(
            (forwarded.user_headers.as_slice(), &forwarded.role_header),
            (&["x-remote-user".to_owned()][..], &None)
        );
    }

    #[test]
    fn mistakes_name_their_key() {
        let errors = load("forwarded_identity = \"librechat\"", "").unwrap_err();
        assert_eq!(errors[0].0, "keys[0].forwarded_identity");
        let errors = load("role_access = { admin = \"admin\" }", "").unwrap_err();
        assert_eq!(errors, [("keys[0].role_access".into(), "only applies with `forwarded_identity`".into())]);
        let errors = load("forwarded_identity = \"openwebui\"\nrole_access = { admin = \"root\" }", "").unwrap_err();
        assert_eq!(errors[0].0, "keys[0].role_access.admin");
        let errors = load("", "[users.bob]\naccess = \"boss\"").unwrap_err();
        assert_eq!(errors[0].0, "users.bob.access");
    }
}
