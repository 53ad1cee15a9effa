//! Access levels of keys and tools.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

/// Ordered access levels: a tool's `min_access` is compared against the caller's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Access {
    Guest,
    User,
    Admin,
}

impl FromStr for Access {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "guest" => Ok(Self::Guest),
            "user" => Ok(Self::User),
            "admin" => Ok(Self::Admin),
            other => Err(format!("unknown access level `{other}` (expected guest, user or admin)")),
        }
    }
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Guest => "guest",
            Self::User => "user",
            Self::Admin => "admin",
        })
    }
}

/// How keys are stored and looked up: by SHA-256, so the plain text of a key is
/// never kept after load.
pub fn key_digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}
