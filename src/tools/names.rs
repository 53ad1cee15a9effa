//! Tool names the OpenAI API accepts: `^[a-zA-Z0-9_-]{1,64}$`.

use sha2::{Digest, Sha256};

/// `<server>__<tool>` (or just `<tool>`), with every other character replaced by `_`
/// and, when too long, cut and suffixed with a short hash so names stay unique.
pub fn tool_name(server: Option<&str>, tool: &str) -> String {
    let raw = match server {
        Some(server) => format!("{server}__{tool}"),
        None => tool.to_owned(),
    };
    let mut name: String =
        raw.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' }).collect();
    if name.is_empty() {
        name.push('_');
    }
    if name.len() > 64 {
        let hash = hex::encode(&Sha256::digest(raw.as_bytes())[..4]);
        name.truncate(64 - 9);
        name.push('_');
        name.push_str(&hash);
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn makes_valid_names() {
        let cases = [
            (Some("time"), "get_current_time", "time__get_current_time"),
            (None, "get_current_time", "get_current_time"),
            (Some("docs"), "search.v2/all", "docs__search_v2_all"),
            (Some("fs"), "lire_fichier_é", "fs__lire_fichier__"),
            (None, "", "_"),
        ];
        for (server, tool, want) in cases {
            assert_eq!(tool_name(server, tool), want);
        }
        let long = tool_name(Some("server"), &"x".repeat(100));
        assert_eq!(long.len(), 64);
        assert_ne!(long, tool_name(Some("server"), &"x".repeat(101)), "cut names stay distinct");
        assert!(long.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'));
    }
}
