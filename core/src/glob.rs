//! Globs for policy rules (buckets, keys, identity names) and routing rules (buckets): one
//! matcher, so that a pattern means the same wherever an operator writes it. A module of its
//! own because both `auth::policy` and `route` use it and neither should depend on the other.

/// `*` matches any run of characters, `?` one character; everything else matches itself.
/// Iterative with one backtrack point, so patterns like `*a*a*a*b` cannot blow up.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    let (mut p, mut t) = (0, 0);
    // Where the last `*` was, and the text position it is currently taken to end at.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == '?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == '*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((star_p, star_t)) = star {
            // Let the last `*` swallow one more character and try again.
            p = star_p + 1;
            t = star_t + 1;
            star = Some((star_p, star_t + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn globs() {
        // Proves the glob rules: `*` any run (slashes too), `?` one character, literal otherwise.
        for (pattern, text, expected) in [
            ("*", "", true),
            ("*", "a/b/c", true),
            ("logs/*", "logs/", true),
            ("logs/*", "logs", false),
            ("logs/*", "logsx/a", false),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("*.parquet", "x/y.parquet", true),
            ("*.parquet", "x/y.parquet.tmp", false),
            ("a*b*c", "aXbYbZc", true),
            ("a*b*c", "aXbYbZ", false),
            ("données/*", "données/é", true),
            ("[a]", "a", false),
        ] {
            assert_eq!(glob_match(pattern, text), expected, "{pattern} vs {text}");
        }
    }
}
