//! The committed contract files are what the code generates, list every routing key the
//! vendors' mappings produce, and pass validators nobody here wrote: the official AsyncAPI
//! 3.0 JSON Schema (`@asyncapi/specs`), the official parser (`@asyncapi/parser`, run with
//! node), and the JSON Schema 2020-12 meta-schema.

use hookrelay_contract::{key_is_listed, repo_root, routing_keys, ASYNCAPI_PATH, SCHEMA_PATH};
use hookrelay_vendors::Vendor;
use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;

fn read(path: &str) -> String {
    std::fs::read_to_string(repo_root().join(path))
        .unwrap_or_else(|e| panic!("{path}: {e} (run `cargo run -p hookrelay-contract`)"))
}

fn committed_asyncapi() -> Value {
    serde_norway::from_str(&read(ASYNCAPI_PATH)).expect("docs/asyncapi.yaml is YAML")
}

/// `target/examples-env/asyncapi`, installed by scripts/examples-env.sh (which
/// scripts/test.sh runs first). Missing: fail, saying how to install it.
fn validators_dir() -> PathBuf {
    let dir = repo_root().join("target/examples-env/asyncapi/node_modules");
    assert!(
        dir.join("@asyncapi/specs").is_dir() && dir.join("@asyncapi/parser").is_dir(),
        "the AsyncAPI validators are not installed in {}: run ./scripts/examples-env.sh \
         (./scripts/test.sh does)",
        dir.display()
    );
    dir
}

#[test]
fn committed_files_are_what_the_code_generates() {
    for (path, text) in hookrelay_contract::generated() {
        assert!(
            read(path) == text,
            "{path} is out of date: run `cargo run -p hookrelay-contract` and commit it"
        );
    }
}

#[test]
fn the_document_lists_every_routing_key_of_every_vendor_mapping() {
    let doc = committed_asyncapi();
    let listed = doc["channels"]["events"]["x-routing-keys"]
        .as_object()
        .expect("channels.events.x-routing-keys");
    let table = doc["channels"]["events"]["description"].as_str().unwrap();
    // Straight from the vendors' tables, not through the generator's own list.
    for vendor in Vendor::ALL {
        for (vendor_event, event) in vendor.events().iter().chain(vendor.event_patterns()) {
            let key = format!("{}.{event}", vendor.name());
            let events = listed
                .get(&key)
                .unwrap_or_else(|| panic!("docs/asyncapi.yaml lacks routing key {key}"));
            assert!(
                events.as_array().unwrap().iter().any(|e| e == vendor_event),
                "{key}: vendor event {vendor_event} missing"
            );
            assert!(
                table.contains(&format!("| `{key}` |")),
                "{key} missing from the channel's table"
            );
        }
    }
    assert_eq!(
        listed.len(),
        routing_keys().len() + 1,
        "every listed key comes from a mapping (+ standard-webhooks' <source>.<type>)"
    );
}

#[test]
fn every_fixture_routing_key_is_in_the_document() {
    let doc = committed_asyncapi();
    let listed: Vec<String> = doc["channels"]["events"]["x-routing-keys"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    let manifest: Value = serde_json::from_str(&read("tests/fixtures/manifest.json")).unwrap();
    let fixtures = manifest["fixtures"].as_array().unwrap();
    assert!(fixtures.len() >= 15, "the manifest lists the fixtures");
    for f in fixtures {
        let Some(key) = f["expected_routing_key"].as_str() else {
            continue;
        };
        assert!(
            key_is_listed(&listed, key),
            "{key} ({}) is not in docs/asyncapi.yaml",
            f["file"]
        );
    }
}

#[test]
fn the_document_is_valid_against_the_official_asyncapi_3_schema() {
    let dir = validators_dir();
    let schema_file = dir.join("@asyncapi/specs/schemas/3.0.0-without-$id.json");
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(&schema_file).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).expect("the official schema compiles");
    let doc = committed_asyncapi();
    let errors: Vec<String> = validator
        .iter_errors(&doc)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "docs/asyncapi.yaml: {errors:#?}");

    // The validator does reject what breaks the schema (so the pass above means something).
    let mut broken = doc.clone();
    broken["channels"]["events"]["bindings"]["amqp"]["is"] = "bogus".into();
    broken["operations"]["publishEvent"]["action"] = "publish".into();
    assert!(validator.iter_errors(&broken).count() >= 2);
}

#[test]
fn the_official_asyncapi_parser_accepts_the_document() {
    let dir = validators_dir();
    let script = repo_root().join("crates/hookrelay-contract/validate.cjs");
    let out = Command::new("node")
        .arg(&script)
        .arg(repo_root().join(ASYNCAPI_PATH))
        .env("NODE_PATH", &dir)
        .output()
        .expect("node runs (Node.js 18+ is required)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "@asyncapi/parser rejects docs/asyncapi.yaml:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("valid AsyncAPI 3.0.0: 3 channels"),
        "{stdout}"
    );
    // The payload's $ref to docs/event.schema.json was resolved.
    assert!(
        stdout.contains(
            "payload requires specversion,id,source,type,time,datacontenttype,vendor,data"
        ),
        "{stdout}"
    );
}

#[test]
fn the_event_schema_is_a_valid_draft_2020_12_schema() {
    let schema: Value = serde_json::from_str(&read(SCHEMA_PATH)).unwrap();
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    jsonschema::meta::validate(&schema).expect("valid against its meta-schema");
    let data = &schema["$defs"]["EventData"];
    let required: Vec<&str> = data["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    // What every event has; the rest only when the event has it.
    assert_eq!(
        required,
        [
            "vendor",
            "source",
            "event",
            "vendor_event",
            "received_at",
            "raw"
        ]
    );
    for id in [
        &schema["$defs"]["Message"]["properties"]["id"],
        &schema["$defs"]["Party"]["properties"]["id"],
        &schema["$defs"]["Contact"]["properties"]["id"],
        &schema["$defs"]["Conversation"]["properties"]["id"],
    ] {
        assert_eq!(id["type"], "string", "ids are strings: {id}");
    }
    assert_eq!(data["properties"]["raw"]["type"], "object");
}

#[test]
fn the_readme_shows_the_python_consumer_as_it_is() {
    let script = read("examples/python/consumer.py");
    let body = &script[script.find("import os").expect("the script imports os")..];
    assert!(
        read("README.md").contains(body),
        "README.md's Python consumer differs from examples/python/consumer.py"
    );
    for example in ["examples/python/consumer.py", "examples/node/consumer.mjs"] {
        let lines = read(example).lines().count();
        assert!(
            lines < 60,
            "{example} has {lines} lines, the examples stay under 60"
        );
    }
}
