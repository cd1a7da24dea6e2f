//! The consumer's contract, generated from the code so it cannot drift: the JSON Schema of
//! the event (from the `hookrelay_common::event` types) and the AsyncAPI 3.0 document
//! (from the template beside this crate and the vendors' event mapping tables).
//!
//! `cargo run -p hookrelay-contract` rewrites `docs/event.schema.json` and
//! `docs/asyncapi.yaml`; `-- --check` only compares (this crate's tests do the same).

use hookrelay_common::event::CloudEvent;
use hookrelay_common::topology::{history_name, unrouted_name};
use hookrelay_vendors::Vendor;
use schemars::generate::{Contract, SchemaSettings};
use serde_json::Value;
use serde_norway::{Mapping, Value as Yaml};
use std::path::{Path, PathBuf};

/// The default events exchange (`amqp.exchange` in config/default.toml).
pub const EXCHANGE: &str = "hookrelay.events";
/// Where the schema is, relative to the repository root.
pub const SCHEMA_PATH: &str = "docs/event.schema.json";
/// Where the AsyncAPI document is, relative to the repository root.
pub const ASYNCAPI_PATH: &str = "docs/asyncapi.yaml";
/// The `$id` of the schema: where it is published in the repository.
const SCHEMA_ID: &str = "https://hookrelay.dev/schemas/event.schema.json";

const TEMPLATE: &str = include_str!("../asyncapi.template.yaml");

/// The repository root (this crate lives in `crates/hookrelay-contract`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The JSON Schema (draft 2020-12) of the event as the relay publishes it. Serialize
/// contract: a field is required when the relay always writes it (`direction`,
/// `attachments`), optional when it is skipped when absent.
pub fn event_schema() -> Value {
    let settings = SchemaSettings::draft2020_12().with(|s| s.contract = Contract::Serialize);
    let schema = settings
        .into_generator()
        .into_root_schema_for::<CloudEvent>();
    let mut schema = schema.to_value();
    drop_null(&mut schema);
    let vendors: Vec<Value> = Vendor::ALL.iter().map(|v| Value::from(v.name())).collect();
    let root = schema.as_object_mut().expect("a root schema is an object");
    root.insert("$id".into(), SCHEMA_ID.into());
    // The vendor names come from the registry, not from the types (they are strings).
    root["properties"]["vendor"]["enum"] = Value::Array(vendors.clone());
    root["$defs"]["EventData"]["properties"]["vendor"]["enum"] = Value::Array(vendors);
    schema
}

/// The relay skips an absent field (`skip_serializing_if`), it never writes `null`: an
/// `Option<T>` is "T, not required", not "T or null" as schemars describes it.
fn drop_null(v: &mut Value) {
    let null = serde_json::json!({"type": "null"});
    if let Some(obj) = v.as_object_mut() {
        if let Some(Value::Array(types)) = obj.get_mut("type") {
            types.retain(|t| t != "null");
            if types.len() == 1 {
                obj["type"] = types.remove(0);
            }
        }
        if let Some(Value::Array(any)) = obj.get("anyOf") {
            if any.len() == 2 && any.contains(&null) {
                let inner = any.iter().find(|s| **s != null).cloned();
                obj.remove("anyOf");
                if let Some(Value::Object(inner)) = inner {
                    obj.extend(inner);
                }
            }
        }
        obj.values_mut().for_each(drop_null);
    } else if let Some(items) = v.as_array_mut() {
        items.iter_mut().for_each(drop_null);
    }
}

/// [`event_schema`] as committed: pretty JSON and a final newline.
pub fn event_schema_text() -> String {
    let mut text = serde_json::to_string_pretty(&event_schema()).expect("JSON serializes");
    text.push('\n');
    text
}

/// One routing key the relay can produce (`<...>` marks a variable part), with the
/// vendor events behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutingKey {
    pub key: String,
    pub vendor: &'static str,
    pub vendor_events: Vec<&'static str>,
}

/// Every routing key, vendor by vendor in registry order, each vendor's mapped events in
/// table order, then its patterns.
pub fn routing_keys() -> Vec<RoutingKey> {
    let mut keys: Vec<RoutingKey> = Vec::new();
    for vendor in Vendor::ALL {
        let rows = vendor.events().iter().chain(vendor.event_patterns());
        for (vendor_event, event) in rows {
            let key = hookrelay_common::routing::routing_key(vendor.name(), event);
            match keys.iter_mut().find(|k| k.key == key) {
                Some(k) if !k.vendor_events.contains(vendor_event) => {
                    k.vendor_events.push(vendor_event)
                }
                Some(_) => {}
                None => keys.push(RoutingKey {
                    key,
                    vendor: vendor.name(),
                    vendor_events: vec![vendor_event],
                }),
            }
        }
    }
    keys
}

/// Whether `key` is one of `listed` or matches a listed pattern (a `<...>` part stands for
/// one routing-key word or, at the end, for the rest of the key).
pub fn key_is_listed(listed: &[String], key: &str) -> bool {
    listed.iter().any(|l| pattern_matches(l, key))
}

fn pattern_matches(pattern: &str, key: &str) -> bool {
    let p: Vec<&str> = pattern.split('.').collect();
    let k: Vec<&str> = key.split('.').collect();
    let variable = |w: &str| w.starts_with('<') && w.ends_with('>');
    for (i, word) in p.iter().enumerate() {
        let Some(actual) = k.get(i) else {
            return false;
        };
        if variable(word) {
            if i == p.len() - 1 {
                return true;
            }
        } else if word != actual {
            return false;
        }
    }
    p.len() == k.len()
}

fn yaml_str(s: &str) -> Yaml {
    Yaml::String(s.to_owned())
}

fn get_mut<'a>(v: &'a mut Yaml, path: &[&str]) -> &'a mut Yaml {
    path.iter().fold(v, |v, k| {
        v.get_mut(*k)
            .unwrap_or_else(|| panic!("asyncapi.template.yaml lacks {path:?}"))
    })
}

/// The AsyncAPI 3.0 document, as committed.
pub fn asyncapi_text() -> String {
    let unrouted = unrouted_name(EXCHANGE);
    let history = history_name(EXCHANGE);
    let filled = TEMPLATE
        .replace("{exchange}", EXCHANGE)
        .replace("{unrouted}", &unrouted)
        .replace("{history}", &history)
        .replace("{version}", env!("CARGO_PKG_VERSION"));
    let mut doc: Yaml = serde_norway::from_str(&filled).expect("the template is YAML");
    let keys = routing_keys();

    let events = get_mut(&mut doc, &["channels", "events"]);
    let mut table = String::from("\n| routing key | vendor events |\n| --- | --- |\n");
    for k in &keys {
        let names: Vec<String> = k.vendor_events.iter().map(|e| format!("`{e}`")).collect();
        table.push_str(&format!("| `{}` | {} |\n", k.key, names.join(", ")));
    }
    table.push_str("| `<source>.<type>` | a `standard-webhooks` sender's `type` |\n");
    let description = get_mut(events, &["description"]);
    let text = description
        .as_str()
        .expect("description is text")
        .to_owned();
    *description = Yaml::String(text + &table);

    let mut listed = Mapping::new();
    for k in &keys {
        let names = k.vendor_events.iter().map(|e| yaml_str(e)).collect();
        listed.insert(yaml_str(&k.key), Yaml::Sequence(names));
    }
    listed.insert(
        yaml_str("<source>.<type>"),
        Yaml::Sequence(vec![yaml_str("<type> (standard-webhooks)")]),
    );
    events
        .as_mapping_mut()
        .expect("a channel is a mapping")
        .insert(yaml_str("x-routing-keys"), Yaml::Mapping(listed));

    let vendors = Vendor::ALL.iter().map(|v| yaml_str(v.name())).collect();
    let vendor = get_mut(events, &["parameters", "vendor"]);
    vendor
        .as_mapping_mut()
        .expect("a parameter is a mapping")
        .insert(yaml_str("examples"), Yaml::Sequence(vendors));
    let mut fixed: Vec<Yaml> = Vec::new();
    for k in keys.iter().filter(|k| !k.key.contains('<')) {
        let event = yaml_str(&k.key[k.vendor.len() + 1..]);
        if !fixed.contains(&event) {
            fixed.push(event);
        }
    }
    let event = get_mut(events, &["parameters", "event"]);
    event
        .as_mapping_mut()
        .expect("a parameter is a mapping")
        .insert(yaml_str("examples"), Yaml::Sequence(fixed));

    let body = serde_norway::to_string(&doc).expect("YAML serializes");
    format!(
        "# Generated by `cargo run -p hookrelay-contract` from the code (the event types, the\n\
         # vendors' event mapping tables) and crates/hookrelay-contract/asyncapi.template.yaml.\n\
         # Do not edit: a test fails when this file differs from what the code generates.\n{body}"
    )
}

/// The generated files, `(path relative to the repository root, contents)`.
pub fn generated() -> [(&'static str, String); 2] {
    [
        (SCHEMA_PATH, event_schema_text()),
        (ASYNCAPI_PATH, asyncapi_text()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_words() {
        let listed = vec![
            "cometchat.group.<verb>".to_owned(),
            "chatwoot.unmapped.<event>".to_owned(),
            "chatwoot.message.created".to_owned(),
        ];
        assert!(key_is_listed(&listed, "cometchat.group.member_joined"));
        assert!(key_is_listed(
            &listed,
            "chatwoot.unmapped.automation_event_x"
        ));
        assert!(key_is_listed(&listed, "chatwoot.message.created"));
        assert!(!key_is_listed(&listed, "chatwoot.message.updated"));
        assert!(!key_is_listed(&listed, "cometchat.group"));
        assert!(!key_is_listed(&listed, "chatwoot.message.created.x"));
    }

    #[test]
    fn every_vendor_with_a_mapping_also_routes_what_it_does_not_map() {
        let keys = routing_keys();
        // A vendor that routes by source name (`standard-webhooks`: `<source>.<type>`)
        // has no table; the document's static `<source>.<type>` row covers it.
        for v in Vendor::ALL
            .iter()
            .copied()
            .filter(|v| !v.events().is_empty())
        {
            let unmapped = format!("{}.unmapped.", v.name());
            assert!(
                keys.iter().any(|k| k.key.starts_with(&unmapped)),
                "{} routes what it does not map",
                v.name()
            );
        }
        assert!(keys.iter().any(|k| !k.key.contains('<')));
    }
}
