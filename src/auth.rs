//! Who is calling: bearer keys → `Caller` (user, access level, allowed models).
//!
//! Keys are stored and looked up by their SHA-256, so plain and pre-hashed keys are
//! the same thing after load and the plain text of a key is never kept.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::{Access, Key, Progress, key_digest};
use crate::globs::Globs;

/// The authenticated identity of one request.
#[derive(Debug)]
pub struct Caller {
    pub user: String,
    pub access: Access,
    models: Option<Globs>,
    pub confirm_allow: Globs,
    pub confirm_deny: Globs,
    /// The key's own `progress`, over the model's.
    pub progress: Option<Progress>,
    /// Identifies the key (its hash, hex) without revealing it; binds suspended loops.
    pub key_id: String,
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
                };
                (k.sha256, Arc::new(caller))
            })
            .collect();
        let anonymous = keys.is_empty().then(|| Arc::new(Caller::anonymous()));
        Self { by_hash, anonymous }
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
        }
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
