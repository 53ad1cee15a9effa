//! Who is calling: bearer keys → `Caller` (user, access level, allowed models), and
//! for a frontend's key the person it forwards (`Keys::identify`).
//!
//! Keys are stored and looked up by their SHA-256, so plain and pre-hashed keys are
//! the same thing after load and the plain text of a key is never kept.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::config::{Access, Forwarded, Key, Progress, UserOverride, key_digest};
use crate::globs::Globs;

/// The authenticated identity of one request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user: String,
    pub access: Access,
    models: Option<Globs>,
    pub confirm_allow: Globs,
    pub confirm_deny: Globs,
    /// The key's own `progress`, over the model's.
    pub progress: Option<Progress>,
    /// Identifies the key (its hash, hex) without revealing it; binds suspended loops.
    /// For a forwarded person: the key and the person together.
    pub key_id: String,
    /// The key takes its person from these headers.
    forwarded: Option<Arc<Forwarded>>,
    /// The conversation as the frontend names it (Open WebUI's chat id), when the
    /// key's `forwarded_identity` reads one and the request carries it.
    pub conversation: Option<String>,
}

impl Caller {
    pub fn may_use_model(&self, model: &str) -> bool {
        self.models.as_ref().is_none_or(|m| m.matches(model))
    }

    /// The identity used when no keys are configured (loopback-only serving).
    fn anonymous() -> Self {
        Self {
            user: "anonymous".into(),
            access: Access::Admin,
            models: None,
            confirm_allow: Globs::empty(),
            confirm_deny: Globs::empty(),
            progress: None,
            key_id: "anonymous".into(),
            forwarded: None,
            conversation: None,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("missing API key: send `Authorization: Bearer <key>`")]
    Missing,
    #[error("invalid API key")]
    Unknown,
}

/// The configured keys, indexed by hash.
#[derive(Debug)]
pub struct Keys {
    by_hash: HashMap<[u8; 32], Arc<Caller>>,
    anonymous: Option<Arc<Caller>>,
    /// Overrides for forwarded people, by lower-case name.
    users: HashMap<String, UserOverride>,
}

impl Keys {
    pub fn new(keys: &[Key]) -> Self {
        let by_hash = keys
            .iter()
            .map(|k| {
                let caller = Caller {
                    user: k.user.clone(),
                    access: k.access,
                    models: k.models.clone(),
                    confirm_allow: k.confirm_allow.clone(),
                    confirm_deny: k.confirm_deny.clone(),
                    progress: k.progress,
                    key_id: hex::encode(&k.sha256[..8]),
                    forwarded: k.forwarded.clone().map(Arc::new),
                    conversation: None,
                };
                (k.sha256, Arc::new(caller))
            })
            .collect();
        let anonymous = keys.is_empty().then(|| Arc::new(Caller::anonymous()));
        Self { by_hash, anonymous, users: HashMap::new() }
    }

    /// With overrides for the people frontends forward (`[users."..."]`).
    pub fn with_users(mut self, users: &BTreeMap<String, UserOverride>) -> Self {
        self.users = users.iter().map(|(name, u)| (name.to_lowercase(), u.clone())).collect();
        self
    }

    /// The person behind a frontend's key, from the headers it forwards: their name,
    /// their role's access (never above the key's), their overrides, and a key id of
    /// their own (so one person cannot answer another's confirmation). Any other
    /// key's caller, or a request naming nobody, stays as it is.
    pub fn identify(&self, caller: Arc<Caller>, headers: &http::HeaderMap) -> Arc<Caller> {
        let Some(forwarded) = &caller.forwarded else { return caller };
        let header = |name: &str| {
            let value = headers.get(name)?.to_str().ok()?.trim();
            (!value.is_empty() && value.len() <= 256).then_some(value)
        };
        // Open WebUI names every temporary chat of a browser tab `local:<socket id>`:
        // not one conversation, so such requests are told apart by their content.
        let conversation = forwarded
            .conversation_header
            .as_deref()
            .and_then(header)
            .filter(|chat| !chat.starts_with("local:"))
            .map(str::to_owned);
        let Some(user) = forwarded.user_headers.iter().find_map(|h| header(h)) else {
            if conversation.is_none() {
                return caller;
            }
            return Arc::new(Caller { conversation, forwarded: None, ..caller.as_ref().clone() });
        };
        let role_access = |role: &str| forwarded.role_access.get(&role.to_ascii_lowercase()).copied();
        let from_role = match &forwarded.role_header {
            // A role the key does not map gets the lowest level.
            Some(name) => header(name).and_then(role_access).unwrap_or(Access::Guest),
            None => caller.access,
        };
        let own = self.users.get(&user.to_lowercase());
        let access = own.and_then(|u| u.access).unwrap_or(from_role).min(caller.access);
        let (confirm_allow, confirm_deny) = match own {
            Some(u) => (u.confirm_allow.clone(), u.confirm_deny.clone()),
            None => (caller.confirm_allow.clone(), caller.confirm_deny.clone()),
        };
        let key_id = hex::encode(&key_digest(format!("{}\0{user}", caller.key_id).as_bytes())[..8]);
        Arc::new(Caller {
            user: user.to_owned(),
            access,
            models: caller.models.clone(),
            confirm_allow,
            confirm_deny,
            progress: caller.progress,
            key_id,
            forwarded: None,
            conversation,
        })
    }

    /// True when no keys are configured and every request is served anonymously.
    pub fn is_open(&self) -> bool {
        self.anonymous.is_some()
    }

    /// Resolves an `Authorization` header value to a caller.
    pub fn authenticate(&self, authorization: Option<&[u8]>) -> Result<Arc<Caller>, AuthError> {
        if let Some(anonymous) = &self.anonymous {
            return Ok(anonymous.clone());
        }
        let header = authorization.ok_or(AuthError::Missing)?;
        let token = strip_bearer(header).ok_or(AuthError::Missing)?;
        self.by_hash.get(&key_digest(token)).cloned().ok_or(AuthError::Unknown)
    }
}

fn strip_bearer(header: &[u8]) -> Option<&[u8]> {
    let (scheme, token) = header.split_at_checked(7)?;
    let token = token.trim_ascii();
    (scheme.eq_ignore_ascii_case(b"bearer ") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(plain: &str, user: &str, models: Option<&[&str]>) -> Key {
        Key {
            sha256: key_digest(plain.as_bytes()),
            user: user.into(),
            access: Access::User,
            models: models.map(|m| Globs::new(m).unwrap()),
            confirm_allow: Globs::empty(),
            confirm_deny: Globs::empty(),
            progress: None,
            forwarded: None,
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> http::HeaderMap {
        pairs.iter().map(|(name, value)| (http::HeaderName::from_static(name), value.parse().unwrap())).collect()
    }

    #[test]
    fn a_frontend_s_key_takes_the_person_from_its_headers() {
        let forwarded = Forwarded {
            user_headers: vec!["x-openwebui-user-email".into(), "x-openwebui-user-id".into()],
            role_header: Some("x-openwebui-user-role".into()),
            role_access: BTreeMap::from([("admin".into(), Access::Admin), ("user".into(), Access::User)]),
            conversation_header: Some("x-openwebui-chat-id".into()),
        };
        let webui = Key { access: Access::User, forwarded: Some(forwarded), ..key("sk-webui-key", "webui", None) };
        let users = BTreeMap::from([(
            "Boss@Example.com".to_owned(),
            UserOverride {
                access: None,
                confirm_allow: Globs::new(&["delete_*"]).unwrap(),
                confirm_deny: Globs::empty(),
            },
        )]);
        let keys = Keys::new(&[webui, key("sk-plain-key", "plain", None)]).with_users(&users);
        let webui = keys.authenticate(Some(b"Bearer sk-webui-key")).unwrap();

        let alice = keys.identify(
            webui.clone(),
            &headers(&[("x-openwebui-user-email", "alice@example.com"), ("x-openwebui-user-role", "user")]),
        );
        assert_eq!((alice.user.as_str(), alice.access), ("alice@example.com", Access::User));
        let admin = keys.identify(
            webui.clone(),
            &headers(&[("x-openwebui-user-email", "boss@example.com"), ("x-openwebui-user-role", "admin")]),
        );
        assert_eq!(admin.access, Access::User, "never above the key's own level");
        assert!(admin.confirm_allow.matches("delete_file"), "the person's own overrides");
        assert_ne!(alice.key_id, admin.key_id, "each person owns their confirmations");
        assert_ne!(alice.key_id, webui.key_id);
        let stranger = keys.identify(
            webui.clone(),
            &headers(&[("x-openwebui-user-id", "u-42"), ("x-openwebui-user-role", "pending")]),
        );
        assert_eq!(
            (stranger.user.as_str(), stranger.access),
            ("u-42", Access::Guest),
            "an unmapped role gets the least"
        );
        let nobody = keys.identify(webui.clone(), &headers(&[]));
        assert!(Arc::ptr_eq(&nobody, &webui), "no person named: the key itself");
        assert_eq!(alice.conversation, None);
        let chatting = keys.identify(
            webui.clone(),
            &headers(&[("x-openwebui-user-email", "alice@example.com"), ("x-openwebui-chat-id", "c-1")]),
        );
        assert_eq!((chatting.user.as_str(), chatting.conversation.as_deref()), ("alice@example.com", Some("c-1")));
        let chat_only = keys.identify(webui.clone(), &headers(&[("x-openwebui-chat-id", "c-2")]));
        assert_eq!(
            (chat_only.key_id.as_str(), chat_only.conversation.as_deref()),
            (webui.key_id.as_str(), Some("c-2"))
        );
        let temporary = keys.identify(
            webui.clone(),
            &headers(&[("x-openwebui-user-email", "alice@example.com"), ("x-openwebui-chat-id", "local:sock-1")]),
        );
        assert_eq!(temporary.conversation, None, "a tab's temporary chats are not one conversation");

        let plain = keys.authenticate(Some(b"Bearer sk-plain-key")).unwrap();
        let same = keys.identify(
            plain.clone(),
            &headers(&[("x-openwebui-user-email", "mallory@example.com"), ("x-openwebui-chat-id", "c-1")]),
        );
        assert_eq!(
            (same.user.as_str(), same.conversation.as_deref()),
            ("plain", None),
            "another key's headers are ignored"
        );
    }

    #[test]
    fn authenticates_bearer_keys() {
        let keys = Keys::new(&[key("sk-alice", "alice", Some(&["assistant"])), key("sk-bob", "bob", None)]);
        assert!(!keys.is_open());
        assert_eq!(keys.authenticate(None).unwrap_err(), AuthError::Missing);
        assert_eq!(keys.authenticate(Some(b"Basic abc")).unwrap_err(), AuthError::Missing);
        assert_eq!(keys.authenticate(Some(b"Bearer ")).unwrap_err(), AuthError::Missing);
        assert_eq!(keys.authenticate(Some(b"Bearer sk-eve")).unwrap_err(), AuthError::Unknown);
        let alice = keys.authenticate(Some(b"bearer  sk-alice ")).unwrap();
        assert_eq!(alice.user, "alice");
        assert!(alice.may_use_model("assistant"));
        assert!(!alice.may_use_model("other"));
        assert!(keys.authenticate(Some(b"Bearer sk-bob")).unwrap().may_use_model("other"));
    }

    #[test]
    fn no_keys_means_anonymous_admin() {
        let keys = Keys::new(&[]);
        assert!(keys.is_open());
        let caller = keys.authenticate(None).unwrap();
        assert_eq!(caller.access, Access::Admin);
        assert!(caller.may_use_model("anything"));
    }

    #[test]
    fn access_levels_are_ordered() {
        assert!(Access::Guest < Access::User && Access::User < Access::Admin);
        assert_eq!("admin".parse::<Access>().unwrap(), Access::Admin);
        assert!("root".parse::<Access>().is_err());
    }
}
