//! Authentic, unique webhooks: fixture-shaped bodies (copies of the shared fixtures in
//! `bench/templates/`) with a fresh vendor id per request, signed by
//! `hookrelay_vendors::Vendor::sign` exactly as the vendor would sign them.
//!
//! The id that makes each delivery distinct, per each vendor's dedup rules (docs/vendors.md):
//! Kommunicate `key`; Chatwoot `id` (and the message's id inside the conversation) plus a
//! fresh `X-Chatwoot-Delivery` UUID; CometChat `data.message.id`.
//!
//! Bodies are built by splicing the id into a pre-serialized template (no JSON
//! serialization per request), so the load generator spends its CPU on HTTP, not here.

use hookrelay_vendors::{chatwoot, Credentials, Vendor};
use serde_json::Value;
use time::OffsetDateTime;

const KOMMUNICATE: &str = include_str!("../templates/kommunicate.json");
const CHATWOOT: &str = include_str!("../templates/chatwoot.json");
const COMETCHAT: &str = include_str!("../templates/cometchat.json");
const STANDARD_WEBHOOKS: &str = include_str!("../templates/standard-webhooks.json");

/// Stands for the id in a serialized template (always as a JSON string, quotes included).
const SLOT: &str = "@@HOOKRELAY_BENCH_ID@@";

/// One vendor's load template: a typical message body, the JSON paths its id goes to,
/// and how a number becomes that id (its text, and its JSON literal).
pub struct Template {
    pub vendor: &'static str,
    text: &'static str,
    slots: &'static [&'static [&'static str]],
    id: fn(u64) -> (String, String),
}

/// The templates, one per vendor of the registry (a test checks none is missing).
pub const TEMPLATES: &[Template] = &[
    Template {
        vendor: "kommunicate",
        text: KOMMUNICATE,
        slots: &[&["key"]],
        id: |num| {
            let key = format!("5-hookrelay-bench-{num}");
            (key.clone(), format!("\"{key}\""))
        },
    },
    Template {
        vendor: "chatwoot",
        text: CHATWOOT,
        slots: &[&["id"], &["conversation", "messages", "0", "id"]],
        // Chatwoot record ids are integers.
        id: |num| (num.to_string(), num.to_string()),
    },
    Template {
        vendor: "cometchat",
        text: COMETCHAT,
        slots: &[&["data", "message", "id"]],
        // CometChat message ids are numeric strings.
        id: |num| (num.to_string(), format!("\"{num}\"")),
    },
    Template {
        vendor: "standard-webhooks",
        text: STANDARD_WEBHOOKS,
        // The dedup key is the signed webhook-id; the message id keeps bodies distinct.
        slots: &[&["data", "id"]],
        id: |num| {
            let id = format!("msg_bench_{num}");
            (id.clone(), format!("\"{id}\""))
        },
    },
];

/// `vendor`'s load template, if it has one.
pub fn template(vendor: Vendor) -> Option<&'static Template> {
    TEMPLATES.iter().find(|t| t.vendor == vendor.name())
}

/// One request, ready to send.
#[derive(Debug, Clone)]
pub struct Webhook {
    pub body: Vec<u8>,
    /// Content-Type and the vendor's authentication headers.
    pub headers: Vec<(String, String)>,
    /// The vendor's own id for this delivery (what makes it unique).
    pub vendor_id: String,
}

/// Makes request number `n` of a run. Cheap to share between tasks (`&self`).
#[derive(Debug, Clone)]
pub struct Generator {
    vendor: Vendor,
    credentials: Credentials,
    /// The template cut at each id slot: `parts.len() == slots + 1`.
    parts: Vec<String>,
    /// Per-run prefix, so two runs against one relay never share an id (the relay's
    /// dedup window would answer `"duplicate": true`).
    base: u64,
    /// The template's id maker.
    id: fn(u64) -> (String, String),
}

fn set_path(root: &mut Value, path: &[&str], value: Value) {
    let mut cur = root;
    for key in &path[..path.len() - 1] {
        cur = match cur {
            Value::Object(m) => m.get_mut(*key).expect("template path exists"),
            Value::Array(a) => a
                .get_mut(key.parse::<usize>().expect("array index"))
                .expect("template index exists"),
            _ => panic!("template path {path:?} crosses a scalar"),
        };
    }
    match cur {
        Value::Object(m) => {
            m.insert(path[path.len() - 1].to_owned(), value);
        }
        _ => panic!("template path {path:?} does not end in an object"),
    }
}

impl Generator {
    /// `seed` picks the run's id range; take it from a random source (see [`run_seed`]).
    pub fn new(vendor: Vendor, credentials: Credentials, seed: u64) -> Self {
        let template = template(vendor).unwrap_or_else(|| {
            panic!(
                "no load template for vendor {}: add one to TEMPLATES (bench/src/bodies.rs)",
                vendor.name()
            )
        });
        let (text, paths) = (template.text, template.slots);
        let mut root: Value = serde_json::from_str(text).expect("template is JSON");
        for path in paths {
            set_path(&mut root, path, Value::String(SLOT.to_owned()));
        }
        let serialized = serde_json::to_string(&root).expect("serializable");
        let parts = serialized
            .split(&format!("\"{SLOT}\""))
            .map(str::to_owned)
            .collect::<Vec<_>>();
        assert_eq!(parts.len(), paths.len() + 1, "every slot found once");
        // 20 bits of run prefix above 32 bits of counter: < 2^52, so it stays an exact
        // integer even for JSON readers that use doubles.
        let base = (seed & 0xF_FFFF) << 32;
        Self {
            vendor,
            credentials,
            parts,
            base,
            id: template.id,
        }
    }

    pub fn vendor(&self) -> Vendor {
        self.vendor
    }

    /// Request number `n` (unique within the run for `n < 2^32`), signed at `now`.
    pub fn make(&self, n: u64, now: OffsetDateTime) -> Webhook {
        let num = self.base | (n & 0xFFFF_FFFF);
        let (vendor_id, literal) = (self.id)(num);
        let len = self.parts.iter().map(String::len).sum::<usize>()
            + literal.len() * (self.parts.len() - 1);
        let mut body = Vec::with_capacity(len);
        for (i, part) in self.parts.iter().enumerate() {
            if i > 0 {
                body.extend_from_slice(literal.as_bytes());
            }
            body.extend_from_slice(part.as_bytes());
        }
        let mut headers = self.vendor.sign(&self.credentials, &body, now);
        if self.vendor == chatwoot::VENDOR {
            // Chatwoot sends a random UUID per delivery; the signature does not cover it.
            let delivery = uuid::Uuid::new_v4().to_string();
            match headers
                .iter_mut()
                .find(|(k, _)| k.eq_ignore_ascii_case(chatwoot::DELIVERY_HEADER))
            {
                Some((_, v)) => *v = delivery,
                None => headers.push((chatwoot::DELIVERY_HEADER.to_owned(), delivery)),
            }
        }
        Webhook {
            body,
            headers,
            vendor_id,
        }
    }
}

/// A random seed for [`Generator::new`].
pub fn run_seed() -> u64 {
    uuid::Uuid::new_v4().as_u64_pair().0
}

#[cfg(test)]
mod tests {
    use super::*;
    use hookrelay_common::Secret;
    use hookrelay_vendors::{chatwoot, cometchat, kommunicate};

    #[test]
    fn ids_are_spliced_as_the_right_json_type() {
        let g = Generator::new(chatwoot::VENDOR, Credentials::NONE, 1);
        let w = g.make(7, OffsetDateTime::now_utc());
        let v: Value = serde_json::from_slice(&w.body).unwrap();
        let id = v["id"].as_u64().unwrap();
        assert_eq!(id, (1 << 32) | 7);
        assert_eq!(v["conversation"]["messages"][0]["id"].as_u64(), Some(id));
        assert_eq!(w.vendor_id, id.to_string());

        let g = Generator::new(cometchat::VENDOR, Credentials::NONE, 1);
        let v: Value = serde_json::from_slice(&g.make(7, OffsetDateTime::now_utc()).body).unwrap();
        assert_eq!(
            v["data"]["message"]["id"],
            Value::String(((1u64 << 32) | 7).to_string())
        );

        let creds = Credentials::new(hookrelay_vendors::kommunicate::Token(Secret::new("abcdef")));
        let g = Generator::new(kommunicate::VENDOR, creds, 1);
        let w = g.make(7, OffsetDateTime::now_utc());
        let v: Value = serde_json::from_slice(&w.body).unwrap();
        assert_eq!(v["key"].as_str(), Some(w.vendor_id.as_str()));
        assert!(w
            .headers
            .iter()
            .any(|(k, v)| k == "Authentication" && v == "Basic YWJjZGVm"));
    }
}
