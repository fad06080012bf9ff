//! Globs on API names, as silences and maintenance windows name the APIs
//! they cover: `*` matches any run of characters (also none), `?` exactly
//! one character, and every other character only itself, case-sensitively.
//! There is no escape and no character class: names hold dots, brackets
//! and plus signs that mean nothing special here.

use std::fmt;

/// Longest pattern accepted, as long as the longest API name.
pub const MAX_LEN: usize = 200;

/// A validated glob: 1 to [`MAX_LEN`] printable characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob(String);

impl Glob {
    /// Checks `pattern` (trimmed); the error says what is expected.
    pub fn new(pattern: &str) -> Result<Glob, String> {
        let p = pattern.trim();
        if p.is_empty() || p.chars().count() > MAX_LEN || p.chars().any(char::is_control) {
            return Err(format!(
                "expected an API name or a glob such as `Billing*` (1 to {MAX_LEN} printable \
                 characters), got `{}`",
                p.escape_debug()
            ));
        }
        Ok(Glob(p.to_string()))
    }

    /// Whether `name` matches the whole pattern.
    pub fn matches(&self, name: &str) -> bool {
        matches(&self.0, name)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether `name` matches the whole of `pattern`.
///
/// The usual wildcard walk: on a mismatch, go back to the last `*` and let
/// it take one more character. Time is at most the product of the two
/// lengths, with no recursion.
pub fn matches(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    let (mut pi, mut ni) = (0, 0);
    // Position after the last `*` seen, and where in `name` it resumes.
    let mut back: Option<(usize, usize)> = None;
    while ni < n.len() {
        match p.get(pi) {
            Some('*') => {
                pi += 1;
                back = Some((pi, ni));
            }
            Some(&c) if c == '?' || c == n[ni] => {
                pi += 1;
                ni += 1;
            }
            _ => match back {
                Some((bp, bn)) => {
                    pi = bp;
                    ni = bn + 1;
                    back = Some((bp, bn + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_star_alone_matches_every_name() {
        for name in ["", "GitHub", "a.b(c)[d]+$^", "Ünïcødé api"] {
            assert!(matches("*", name), "{name}");
        }
    }

    #[test]
    fn star_matches_any_run_and_question_mark_one_character() {
        assert!(matches("Billing*", "Billing"));
        assert!(matches("Billing*", "Billing EU"));
        assert!(!matches("Billing*", "Old Billing"));
        assert!(matches("*Billing*", "Old Billing v2"));
        assert!(matches("api-?", "api-1"));
        assert!(!matches("api-?", "api-"));
        assert!(!matches("api-?", "api-10"));
        assert!(matches("a*b*c", "axxbyyc"));
        assert!(matches("a*b*c", "abcbc"));
        assert!(!matches("a*b*c", "axxbyy"));
        assert!(matches("**a**", "a"));
        assert!(matches("?é?", "ñéß"));
    }

    #[test]
    fn every_other_character_is_literal_regex_metacharacters_included() {
        assert!(matches("api.v1", "api.v1"));
        assert!(!matches("api.v1", "apixv1"), "a dot is not any character");
        assert!(matches("(prod)+[eu]", "(prod)+[eu]"));
        assert!(!matches("[eu]", "e"), "no character classes");
        assert!(matches("^pay$|x", "^pay$|x"));
        assert!(!matches("^pay$|x", "pay"));
        assert!(
            matches("a\\*", "a\\xyz"),
            "no escapes: the backslash is literal"
        );
        assert!(matches("cost {eur}*", "cost {eur} 2"));
        assert!(!matches("a+", "aa"));
    }

    #[test]
    fn matching_is_case_sensitive_and_whole_name() {
        assert!(!matches("github", "GitHub"));
        assert!(!matches("Git", "GitHub"));
        assert!(!matches("Hub", "GitHub"));
        assert!(matches("GitHub", "GitHub"));
    }

    #[test]
    fn long_patterns_with_many_stars_stay_fast() {
        let name = "a".repeat(200);
        let pattern = format!("{}b", "a*".repeat(100));
        let t = std::time::Instant::now();
        assert!(!matches(&pattern, &name));
        assert!(t.elapsed() < std::time::Duration::from_secs(1));
    }

    #[test]
    fn glob_new_trims_and_refuses_empty_or_control_characters() {
        assert_eq!(Glob::new("  Billing* ").unwrap().as_str(), "Billing*");
        assert!(Glob::new("  ").is_err());
        assert!(Glob::new("a\nb").is_err());
        assert!(Glob::new(&"x".repeat(MAX_LEN + 1)).is_err());
        assert!(Glob::new("Pay?").unwrap().matches("Pay1"));
    }
}
