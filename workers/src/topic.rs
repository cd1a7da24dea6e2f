//! Topic-pattern matching with RabbitMQ's own semantics, for filters applied client-side
//! (`history --bind`, `tail --since --bind`): a stream has one `#` binding, so the
//! binding keys a user gives are matched here exactly as a topic exchange would match them.
//!
//! Words are separated by `.`; `*` matches exactly one word, `#` zero or more. An empty
//! routing key or pattern is zero words, and `a..b` has an empty middle word (which `*`
//! matches), as in RabbitMQ's topic exchange.

/// Several binding keys: a routing key matches if any of them does.
#[derive(Debug, Clone)]
pub struct Patterns {
    patterns: Vec<Vec<String>>,
    everything: bool,
}

impl Patterns {
    /// `keys` (empty means `#`, everything).
    pub fn new(keys: &[String]) -> Self {
        let keys: Vec<&str> = keys
            .iter()
            .map(|k| k.trim())
            .filter(|k| !k.is_empty())
            .collect();
        if keys.is_empty() {
            return Self::new(&["#".to_owned()]);
        }
        Self {
            everything: keys.contains(&"#"),
            patterns: keys.iter().map(|k| words(k)).collect(),
        }
    }

    pub fn matches(&self, routing_key: &str) -> bool {
        if self.everything {
            return true;
        }
        let key = words(routing_key);
        let key: Vec<&str> = key.iter().map(String::as_str).collect();
        self.patterns.iter().any(|p| {
            let p: Vec<&str> = p.iter().map(String::as_str).collect();
            matches_words(&p, &key)
        })
    }
}

/// Whether one binding key matches one routing key.
pub fn matches(pattern: &str, routing_key: &str) -> bool {
    let p = words(pattern);
    let k = words(routing_key);
    matches_words(
        &p.iter().map(String::as_str).collect::<Vec<_>>(),
        &k.iter().map(String::as_str).collect::<Vec<_>>(),
    )
}

fn words(s: &str) -> Vec<String> {
    if s.is_empty() {
        Vec::new()
    } else {
        s.split('.').map(str::to_owned).collect()
    }
}

/// Iterative matching with backtracking on the last `#` (linear in practice, never
/// exponential: each `#` only ever restarts from the most recent one).
fn matches_words(pattern: &[&str], key: &[&str]) -> bool {
    let (mut p, mut k) = (0usize, 0usize);
    // Where to resume if the current attempt fails: the last `#` seen and how many key
    // words it has swallowed so far.
    let mut star: Option<(usize, usize)> = None;
    loop {
        if p < pattern.len() && pattern[p] == "#" {
            star = Some((p, k));
            p += 1;
            continue;
        }
        if k == key.len() && p == pattern.len() {
            return true;
        }
        if k < key.len() && p < pattern.len() && (pattern[p] == "*" || pattern[p] == key[k]) {
            p += 1;
            k += 1;
            continue;
        }
        match star {
            Some((sp, sk)) if sk < key.len() => {
                star = Some((sp, sk + 1));
                p = sp + 1;
                k = sk + 1;
            }
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn star_is_one_word_and_hash_is_zero_or_more() {
        assert!(matches("*.message.created", "chatwoot.message.created"));
        assert!(!matches("*.message.created", "message.created"));
        assert!(!matches("*.message.created", "a.b.message.created"));
        assert!(matches("chatwoot.#", "chatwoot"));
        assert!(matches("chatwoot.#", "chatwoot.message.created"));
        assert!(!matches("chatwoot.#", "kommunicate.message.created"));
        assert!(matches("#.created", "created"));
        assert!(matches("#.created", "a.b.created"));
        assert!(matches("a.#.b.#.c", "a.b.c"));
        assert!(matches("a.#.b.#.c", "a.x.b.y.z.c"));
        assert!(!matches("a.#.b.#.c", "a.x.y.c"));
        assert!(matches("#", ""));
        assert!(!matches("*", ""));
        assert!(matches("a.*.b", "a..b"));
    }

    #[test]
    fn several_patterns_match_if_any_does() {
        let p = Patterns::new(&["kommunicate.#".into(), "*.message.deleted".into()]);
        assert!(p.matches("kommunicate.message.created"));
        assert!(p.matches("chatwoot.message.deleted"));
        assert!(!p.matches("chatwoot.message.created"));
        assert!(Patterns::new(&[]).matches("anything.at.all"));
    }
}
