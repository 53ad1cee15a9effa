//! Name allow-lists with shell-style globs (`time__*`, `docs__delete_*`).

use globset::{Glob, GlobSet, GlobSetBuilder};

/// A compiled list of name patterns. An empty list matches nothing.
#[derive(Debug, Clone)]
pub struct Globs {
    patterns: Vec<String>,
    set: GlobSet,
}

impl Globs {
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Self, String> {
        let mut builder = GlobSetBuilder::new();
        for p in patterns {
            let glob = Glob::new(p.as_ref()).map_err(|e| format!("bad pattern `{}`: {e}", p.as_ref()))?;
            builder.add(glob);
        }
        let set = builder.build().map_err(|e| e.to_string())?;
        Ok(Self { patterns: patterns.iter().map(|p| p.as_ref().to_owned()).collect(), set })
    }

    pub fn empty() -> Self {
        Self { patterns: Vec::new(), set: GlobSet::empty() }
    }

    pub fn matches(&self, name: &str) -> bool {
        self.set.is_match(name)
    }

    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    /// True when a pattern has glob metacharacters and so can match names that do
    /// not exist yet (tools listed later by an MCP server).
    pub fn is_glob(pattern: &str) -> bool {
        pattern.contains(['*', '?', '[', '{'])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_names_and_globs() {
        let g = Globs::new(&["current_time", "time__*", "docs__delete_?"]).unwrap();
        let cases = [
            ("current_time", true),
            ("time__get_current_time", true),
            ("time_", false),
            ("docs__delete_x", true),
            ("docs__delete_xy", false),
            ("fetch_url", false),
        ];
        for (name, want) in cases {
            assert_eq!(g.matches(name), want, "{name}");
        }
        assert!(!Globs::empty().matches("anything"));
        assert!(Globs::new(&["[bad"]).is_err());
    }
}
