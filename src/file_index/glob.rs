//! `--ignore` patterns: shell globs over absolute paths.
//!
//! `*` and `?` stay within one path component, `**` spans components, and
//! `[abc]` matches one of a set. A pattern starting with `/` is anchored at
//! the root; any other matches at any depth, as in `.gitignore`. A pattern
//! that matches a directory ignores everything below it.

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Glob {
    pattern: String,
}

impl Glob {
    pub fn new(pattern: &str) -> Result<Self, String> {
        if pattern.trim().is_empty() {
            return Err("an empty pattern matches nothing".to_owned());
        }
        let mut depth = 0;
        for byte in pattern.bytes() {
            match byte {
                b'[' => depth += 1,
                b']' if depth > 0 => depth -= 1,
                _ => {}
            }
        }
        if depth != 0 {
            return Err(format!("`{pattern}` has an unclosed `[`"));
        }
        let trimmed = pattern.trim_end_matches('/');
        let anchored = if trimmed.starts_with('/') {
            trimmed.to_owned()
        } else {
            format!("/**/{trimmed}")
        };
        Ok(Self { pattern: anchored })
    }

    /// Whether an absolute path (`/var/log/x`) matches.
    pub fn matches(&self, path: &str) -> bool {
        matches(self.pattern.as_bytes(), path.as_bytes())
    }
}

fn matches(pattern: &[u8], text: &[u8]) -> bool {
    match pattern {
        [] => text.is_empty(),
        // `/**/` is `/` or `/any/depth/`.
        [b'/', b'*', b'*', b'/', rest @ ..] => text
            .iter()
            .enumerate()
            .any(|(at, byte)| *byte == b'/' && matches(rest, &text[at + 1..])),
        [b'*', b'*', rest @ ..] => (0..=text.len()).any(|at| matches(rest, &text[at..])),
        [b'*', rest @ ..] => {
            let component = text.iter().position(|byte| *byte == b'/');
            let limit = component.unwrap_or(text.len());
            (0..=limit).any(|at| matches(rest, &text[at..]))
        }
        [b'?', rest @ ..] => match text {
            [first, tail @ ..] if *first != b'/' => matches(rest, tail),
            _ => false,
        },
        [b'[', rest @ ..] => {
            let Some(close) = rest.iter().position(|byte| *byte == b']') else {
                return false;
            };
            let (set, after) = (&rest[..close], &rest[close + 1..]);
            let (negated, set) = match set {
                [b'!' | b'^', set @ ..] => (true, set),
                _ => (false, set),
            };
            match text {
                [first, tail @ ..] if *first != b'/' => {
                    let mut found = false;
                    let mut at = 0;
                    while at < set.len() {
                        if at + 2 < set.len() && set[at + 1] == b'-' {
                            found |= (set[at]..=set[at + 2]).contains(first);
                            at += 3;
                        } else {
                            found |= set[at] == *first;
                            at += 1;
                        }
                    }
                    found != negated && matches(after, tail)
                }
                _ => false,
            }
        }
        [literal, rest @ ..] => match text {
            [first, tail @ ..] if first == literal => matches(rest, tail),
            _ => false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn glob(pattern: &str) -> Glob {
        Glob::new(pattern).unwrap()
    }

    #[test]
    fn anchored_patterns_match_from_the_root() {
        assert!(glob("/var/log").matches("/var/log"));
        assert!(glob("/var/log/").matches("/var/log"));
        assert!(!glob("/var/log").matches("/srv/var/log"));
        assert!(glob("/var/log/*").matches("/var/log/syslog"));
        assert!(!glob("/var/log/*").matches("/var/log/apt/history.log"));
        assert!(glob("/var/**/*.log").matches("/var/log/apt/history.log"));
        assert!(glob("/var/**/*.log").matches("/var/x.log"));
        assert!(glob("/etc/ssh/ssh_host_*").matches("/etc/ssh/ssh_host_rsa_key"));
        assert!(glob("/tmp/?").matches("/tmp/a"));
        assert!(!glob("/tmp/?").matches("/tmp/ab"));
        assert!(glob("/dev/tty[0-9]").matches("/dev/tty3"));
        assert!(!glob("/dev/tty[!0-9]").matches("/dev/tty3"));
    }

    #[test]
    fn relative_patterns_match_at_any_depth() {
        assert!(glob("*.pyc").matches("/usr/lib/x.pyc"));
        assert!(glob("*.pyc").matches("/x.pyc"));
        assert!(glob("__pycache__").matches("/usr/lib/__pycache__"));
        assert!(!glob("*.pyc").matches("/usr/lib/x.py"));
        assert!(glob("log/*.gz").matches("/var/log/a.gz"));
    }

    #[test]
    fn bad_patterns_are_refused() {
        assert!(Glob::new("").is_err());
        assert!(Glob::new("/dev/tty[0-9").is_err());
    }
}
