//! Globs over names (users, repositories, tags), as access rules and
//! retention policies write them.

/// A glob: `*` and `?` stay within one path segment, `**` crosses segments.
#[derive(Debug, Clone)]
pub struct Pattern {
    pub text: String,
    matcher: globset::GlobMatcher,
}

impl Pattern {
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("empty pattern".to_string());
        }
        let glob = globset::GlobBuilder::new(text)
            .literal_separator(true)
            .backslash_escape(true)
            .build()
            .map_err(|e| e.kind().to_string())?;
        Ok(Pattern {
            text: text.to_string(),
            matcher: glob.compile_matcher(),
        })
    }

    pub fn matches(&self, s: &str) -> bool {
        self.matcher.is_match(s)
    }

    /// Whether the pattern names one thing only (no wildcard).
    pub fn is_literal(&self) -> bool {
        !self.text.contains(['*', '?', '[', '{', '\\'])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        let p = Pattern::parse("releases/**").unwrap();
        assert!(p.matches("releases/a") && p.matches("releases/a/b/c"));
        assert!(!p.matches("other/releases/a"));
        let p = Pattern::parse("team/*").unwrap();
        assert!(p.matches("team/app") && !p.matches("team/app/sub"));
        assert!(Pattern::parse("**").unwrap().matches("a/b/c"));
        assert!(Pattern::parse("release-*").unwrap().matches("release-bot"));
        assert!(Pattern::parse("[a").is_err());
        assert!(Pattern::parse("").is_err());
        assert!(Pattern::parse("ci-bot").unwrap().is_literal());
        assert!(!Pattern::parse("ci-*").unwrap().is_literal());
    }
}
