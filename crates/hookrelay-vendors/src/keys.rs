//! A source's vendor-specific keys: what each vendor declares ([`Key`]), how the values
//! given in the configuration are read ([`resolve`]: inline, from `<key>_file`, as a
//! list), and the resolved values a vendor builds its [`Credentials`](crate::Credentials)
//! from ([`KeyValues`]). Unknown keys are refused here, naming the nearest known one.

use hookrelay_common::Secret;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

/// The keys every source takes whatever its vendor (the relay reads them itself).
pub const COMMON: &[&str] = &[
    "vendor",
    "allow_unauthenticated",
    "allowed_ips",
    "rate_limit_per_sec",
    "rate_limit_burst",
];

/// One key a vendor's source takes.
#[derive(Debug, Clone, Copy)]
pub struct Key {
    pub name: &'static str,
    pub kind: KeyKind,
    /// The value `config/default.toml` ships (the fixtures' test value). A secret still
    /// holding it is refused on a non-loopback bind. `None` for options.
    pub demo: Option<&'static str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// One secret, inline or from `<key>_file` (a non-empty file wins; its trailing
    /// newline is dropped).
    Secret,
    /// A credential part that is not secret in itself (a user name): read like
    /// [`KeyKind::Secret`], but its demo value alone does not refuse a public bind.
    Identity,
    /// Several secrets (a rotation): a TOML array or one comma-separated string, inline
    /// or from `<key>_file` (commas or newlines between them).
    SecretList,
    /// A number of seconds, with its default.
    Seconds { default: u64 },
}

/// A value as the configuration gives it (TOML types, or text from the environment).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Given {
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
    List(Vec<Given>),
}

impl Given {
    fn text(&self) -> Option<String> {
        match self {
            Given::Bool(b) => Some(b.to_string()),
            Given::Int(i) => Some(i.to_string()),
            Given::Float(f) => Some(f.to_string()),
            Given::Text(t) => Some(t.clone()),
            Given::List(_) => None,
        }
    }
}

/// A problem with one key: `key` is relative to the source (`secret`, `token_file`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{key}` {reason}")]
pub struct KeyError {
    pub key: String,
    pub reason: String,
}

impl KeyError {
    pub fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

#[derive(Debug, Clone)]
enum Resolved {
    Secret(Secret),
    List(Vec<Secret>),
    Seconds(u64),
}

/// A source's keys after [`resolve`]: secrets read (empty counts as missing), lists
/// split, defaults filled in.
#[derive(Debug, Clone, Default)]
pub struct KeyValues {
    values: BTreeMap<&'static str, Resolved>,
}

const MISSING: &str = "is missing: a source needs credentials (or allow_unauthenticated = true)";

impl KeyValues {
    /// The secret `name`; an error when it is missing or empty.
    pub fn secret(&self, name: &str) -> Result<Secret, KeyError> {
        match self.values.get(name) {
            Some(Resolved::Secret(s)) => Ok(s.clone()),
            _ => Err(KeyError::new(name, MISSING)),
        }
    }

    /// The secrets `name` (at least one); an error when there is none.
    pub fn secrets(&self, name: &str) -> Result<Vec<Secret>, KeyError> {
        match self.values.get(name) {
            Some(Resolved::List(l)) if !l.is_empty() => Ok(l.clone()),
            _ => Err(KeyError::new(name, MISSING)),
        }
    }

    /// The seconds `name`, its default when not given.
    pub fn seconds(&self, name: &str) -> Result<u64, KeyError> {
        match self.values.get(name) {
            Some(Resolved::Seconds(s)) => Ok(*s),
            _ => Err(KeyError::new(name, "is not a key of this vendor")),
        }
    }

    /// Every key at its demo value (secrets) or default (options).
    pub fn demo(keys: &[Key]) -> Self {
        let mut values = BTreeMap::new();
        for k in keys {
            let v = match (k.kind, k.demo) {
                (KeyKind::Secret | KeyKind::Identity, Some(d)) => Resolved::Secret(Secret::new(d)),
                (KeyKind::SecretList, Some(d)) => Resolved::List(vec![Secret::new(d)]),
                (KeyKind::Seconds { default }, _) => Resolved::Seconds(default),
                (KeyKind::Secret | KeyKind::Identity | KeyKind::SecretList, None) => continue,
            };
            values.insert(k.name, v);
        }
        Self { values }
    }

    /// The first secret key that still holds its demo value, if any.
    pub fn demo_key(&self, keys: &[Key]) -> Option<&'static str> {
        keys.iter().find_map(|k| {
            let demo = k.demo.filter(|_| k.kind != KeyKind::Identity)?;
            let held = match self.values.get(k.name)? {
                Resolved::Secret(s) => s.expose() == demo,
                Resolved::List(l) => l.iter().any(|s| s.expose() == demo),
                Resolved::Seconds(_) => false,
            };
            held.then_some(k.name)
        })
    }
}

/// Read a source's vendor keys from what the configuration gave (`given`: every key of
/// the source table that is not a common one). `read_file` reads a `<key>_file`;
/// `common` are the source keys every vendor takes, for the nearest-key suggestion.
pub fn resolve(
    keys: &[Key],
    given: &BTreeMap<String, Given>,
    common: &[&str],
    read_file: &dyn Fn(&Path) -> std::io::Result<String>,
) -> Result<KeyValues, KeyError> {
    let mut known: Vec<String> = common.iter().map(|s| (*s).to_owned()).collect();
    for k in keys {
        known.push(k.name.to_owned());
        if !matches!(k.kind, KeyKind::Seconds { .. }) {
            known.push(format!("{}_file", k.name));
        }
    }
    for name in given.keys() {
        if !known.iter().any(|k| k == name) {
            return Err(KeyError::new(name.clone(), unknown_reason(name, &known)));
        }
    }
    let mut values = BTreeMap::new();
    for k in keys {
        let inline = given.get(k.name);
        let file_key = format!("{}_file", k.name);
        let from_file = match given.get(&file_key).and_then(Given::text) {
            Some(path) if !path.trim().is_empty() => {
                let text = read_file(Path::new(&path)).map_err(|e| {
                    KeyError::new(file_key.clone(), format!("cannot be read ({e})"))
                })?;
                Some(text.trim_end_matches(['\n', '\r']).to_owned()).filter(|t| !t.is_empty())
            }
            _ => None,
        };
        let resolved = match k.kind {
            KeyKind::Secret | KeyKind::Identity => {
                let text = match from_file {
                    Some(t) => Some(t),
                    None => match inline {
                        None => None,
                        Some(g) => Some(g.text().ok_or_else(|| {
                            KeyError::new(k.name, "must be one value, not a list")
                        })?),
                    },
                };
                match text.filter(|t| !t.is_empty()) {
                    Some(t) => Resolved::Secret(Secret::new(t)),
                    None => continue,
                }
            }
            KeyKind::SecretList => {
                let items: Vec<String> = match (from_file, inline) {
                    (Some(t), _) => split(&t, &[',', '\n']),
                    (None, Some(Given::List(l))) => l
                        .iter()
                        .map(|g| {
                            g.text()
                                .ok_or_else(|| KeyError::new(k.name, "must be a list of strings"))
                        })
                        .collect::<Result<Vec<_>, _>>()?
                        .into_iter()
                        .map(|s| s.trim().to_owned())
                        .filter(|s| !s.is_empty())
                        .collect(),
                    (None, Some(g)) => split(&g.text().unwrap_or_default(), &[',']),
                    (None, None) => Vec::new(),
                };
                if items.is_empty() {
                    continue;
                }
                Resolved::List(items.into_iter().map(Secret::new).collect())
            }
            KeyKind::Seconds { default } => {
                let secs = match inline.map(|g| (g, g.text())) {
                    None => default,
                    Some((_, Some(t))) if t.trim().is_empty() => default,
                    Some((_, Some(t))) => t.trim().parse::<u64>().map_err(|_| {
                        KeyError::new(k.name, format!("{t:?} is not a whole number of seconds"))
                    })?,
                    Some((_, None)) => {
                        return Err(KeyError::new(k.name, "must be a number of seconds"))
                    }
                };
                Resolved::Seconds(secs)
            }
        };
        values.insert(k.name, resolved);
    }
    Ok(KeyValues { values })
}

fn split(text: &str, seps: &[char]) -> Vec<String> {
    text.split(seps)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// "is not a known key (did you mean `x`?)" with the nearest of `known`, when one is near.
pub fn unknown_reason<S: AsRef<str>>(name: &str, known: &[S]) -> String {
    match nearest(name, known) {
        Some(n) => format!("is not a known key (did you mean `{n}`?)"),
        None => {
            let list: Vec<&str> = known.iter().map(AsRef::as_ref).collect();
            format!("is not a known key (known: {})", list.join(", "))
        }
    }
}

/// The entry of `known` closest to `name` by edit distance, if close enough to be a
/// plausible typo (edits, a swap of neighbours counting as one: at most a third of the
/// name's length, at least 1).
pub fn nearest<'a, S: AsRef<str>>(name: &str, known: &'a [S]) -> Option<&'a str> {
    let limit = (name.chars().count() / 3).max(1);
    known
        .iter()
        .map(|k| (strsim::osa_distance(name, k.as_ref()), k.as_ref()))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEYS: &[Key] = &[
        Key {
            name: "secret",
            kind: KeyKind::SecretList,
            demo: Some("whsec_demo"),
        },
        Key {
            name: "token",
            kind: KeyKind::Secret,
            demo: Some("abc"),
        },
        Key {
            name: "signature_tolerance_secs",
            kind: KeyKind::Seconds { default: 300 },
            demo: None,
        },
    ];

    fn given(pairs: &[(&str, Given)]) -> BTreeMap<String, Given> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    fn no_files(_: &Path) -> std::io::Result<String> {
        Err(std::io::Error::other("no files here"))
    }

    #[test]
    fn lists_split_defaults_fill_in_and_empty_is_missing() {
        let v = resolve(
            KEYS,
            &given(&[
                ("secret", Given::Text("a, b,,c".into())),
                ("token", Given::Text(String::new())),
            ]),
            &[],
            &no_files,
        )
        .unwrap();
        let s: Vec<String> = v
            .secrets("secret")
            .unwrap()
            .iter()
            .map(|s| s.expose().to_owned())
            .collect();
        assert_eq!(s, ["a", "b", "c"]);
        assert_eq!(v.seconds("signature_tolerance_secs").unwrap(), 300);
        assert!(v.secret("token").unwrap_err().reason.contains("missing"));
        let arr = resolve(
            KEYS,
            &given(&[(
                "secret",
                Given::List(vec![Given::Text("x".into()), Given::Text("y".into())]),
            )]),
            &[],
            &no_files,
        )
        .unwrap();
        assert_eq!(arr.secrets("secret").unwrap().len(), 2);
    }

    #[test]
    fn files_win_and_unreadable_files_name_their_key() {
        let read = |p: &Path| Ok(format!("{}\n", p.display()));
        let v = resolve(
            KEYS,
            &given(&[
                ("token", Given::Text("inline".into())),
                ("token_file", Given::Text("from-file".into())),
                ("secret_file", Given::Text("k1\nk2".into())),
            ]),
            &[],
            &read,
        )
        .unwrap();
        assert_eq!(v.secret("token").unwrap().expose(), "from-file");
        assert_eq!(v.secrets("secret").unwrap().len(), 2);
        let e = resolve(
            KEYS,
            &given(&[("token_file", Given::Text("/x".into()))]),
            &[],
            &no_files,
        )
        .unwrap_err();
        assert_eq!(e.key, "token_file");
    }

    #[test]
    fn unknown_keys_name_the_nearest_known_one() {
        let e = resolve(
            KEYS,
            &given(&[("secert", Given::Text("x".into()))]),
            &["vendor"],
            &no_files,
        )
        .unwrap_err();
        assert_eq!(e.key, "secert");
        assert!(e.reason.contains("did you mean `secret`"), "{}", e.reason);
        let e = resolve(
            KEYS,
            &given(&[("vendr", Given::Text("x".into()))]),
            &["vendor"],
            &no_files,
        )
        .unwrap_err();
        assert!(e.reason.contains("`vendor`"), "{}", e.reason);
        let e = resolve(KEYS, &given(&[("zzzzzzzz", Given::Int(1))]), &[], &no_files).unwrap_err();
        assert!(e.reason.contains("known: secret"), "{}", e.reason);
        let e = resolve(
            KEYS,
            &given(&[("signature_tolerance_secs", Given::Text("soon".into()))]),
            &[],
            &no_files,
        )
        .unwrap_err();
        assert_eq!(e.key, "signature_tolerance_secs");
    }

    #[test]
    fn demo_values_are_found() {
        let demo = KeyValues::demo(KEYS);
        assert_eq!(demo.demo_key(KEYS), Some("secret"));
        let real = resolve(
            KEYS,
            &given(&[
                ("secret", Given::Text("real".into())),
                ("token", Given::Text("abc".into())),
            ]),
            &[],
            &no_files,
        )
        .unwrap();
        assert_eq!(real.demo_key(KEYS), Some("token"));
    }
}
