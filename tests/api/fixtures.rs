//! Every shared fixture, posted with real credentials, arrives once on the exchange with
//! the right routing key, AMQP properties, envelope (valid against docs/event.schema.json)
//! and byte-exact `data.raw`.

use crate::helpers::*;
use serde_json::Value;
use std::sync::OnceLock;

/// docs/event.schema.json, compiled once, formats (`date-time`, `uuid`) checked too.
fn event_schema() -> &'static jsonschema::Validator {
    static V: OnceLock<jsonschema::Validator> = OnceLock::new();
    V.get_or_init(|| {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/event.schema.json");
        let schema: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        jsonschema::options()
            .should_validate_formats(true)
            .build(&schema)
            .expect("docs/event.schema.json compiles")
    })
}

/// Every way `ev` breaks the committed event schema, as readable lines.
pub fn schema_errors(ev: &Value) -> Vec<String> {
    event_schema()
        .iter_errors(ev)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect()
}

async fn relay_vendor_fixtures(vendor: &str) {
    let cfg = TestConfig::new(vendor);
    let app = spawn_app(&cfg).await;
    let mut tap = Tap::new(&cfg.exchange, "#").await;
    let manifest = manifest();
    let mut seen = 0;
    for f in manifest["fixtures"].as_array().unwrap() {
        if f["vendor"] != vendor {
            continue;
        }
        seen += 1;
        let file = f["file"].as_str().unwrap();
        let expected_rk = f["expected_routing_key"].as_str().unwrap();
        let body = fixture(file);
        let resp = app.post_signed(vendor, &body).await;
        assert_eq!(resp.status(), 200, "{file}");
        assert_eq!(
            resp.headers()["content-type"].to_str().unwrap(),
            "application/json",
            "{file}"
        );
        let answer: Value = resp.json().await.unwrap();

        let d = tap.next().await;
        assert_eq!(d.routing_key.as_str(), expected_rk, "{file}");
        let ev = body_json(&d);
        let errors = schema_errors(&ev);
        assert!(
            errors.is_empty(),
            "{file} vs docs/event.schema.json: {errors:#?}"
        );
        // The schema does catch what the relay must never send (ids as numbers, no raw).
        let mut broken = ev.clone();
        broken["id"] = Value::from(7);
        broken["data"].as_object_mut().unwrap().remove("raw");
        assert_eq!(schema_errors(&broken).len(), 2, "{file}: {broken}");
        let id = ev["id"].as_str().unwrap().to_owned();
        if expected_rk == "cometchat.message.before_send" {
            assert_eq!(answer, serde_json::json!({}), "before_message answers {{}}");
        } else {
            assert_eq!(answer["id"], id.as_str(), "{file}");
            assert_eq!(answer["type"], expected_rk, "{file}");
            assert_eq!(answer["duplicate"], false, "{file}");
        }

        // AMQP properties (README: AMQP message).
        let p = &d.properties;
        assert_eq!(
            p.content_type().as_ref().unwrap().as_str(),
            "application/cloudevents+json"
        );
        assert_eq!(*p.delivery_mode(), Some(2), "persistent");
        assert_eq!(p.message_id().as_ref().unwrap().as_str(), id, "{file}");
        assert_eq!(p.kind().as_ref().unwrap().as_str(), expected_rk);
        assert_eq!(p.app_id().as_ref().unwrap().as_str(), "hookrelay");
        let ts = p.timestamp().expect("timestamp");
        let now = time::OffsetDateTime::now_utc().unix_timestamp() as u64;
        assert!(ts <= now && ts + 120 > now, "timestamp in seconds: {ts}");
        assert_eq!(header_str(&d, "vendor").as_deref(), Some(vendor));
        assert_eq!(header_str(&d, "source").as_deref(), Some(vendor));
        assert_eq!(
            header_str(&d, "event").as_deref(),
            Some(&expected_rk[vendor.len() + 1..])
        );

        // The envelope (README: The event).
        assert_eq!(ev["specversion"], "1.0");
        assert_eq!(ev["source"], format!("/webhooks/{vendor}"));
        assert_eq!(ev["type"], expected_rk);
        assert_eq!(ev["datacontenttype"], "application/json");
        assert_eq!(ev["vendor"], vendor);
        let t = ev["time"].as_str().unwrap();
        assert!(
            time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).is_ok()
                && t.ends_with('Z'),
            "time is RFC 3339 UTC: {t}"
        );
        let data = &ev["data"];
        assert_eq!(data["vendor"], vendor);
        assert_eq!(data["source"], vendor);
        assert_eq!(data["event"], &expected_rk[vendor.len() + 1..]);
        assert!(data["received_at"].as_str().unwrap().ends_with('Z'));
        if let Some(subject) = ev.get("subject") {
            assert!(subject.is_string(), "subject is a string id");
        }
        if let Some(msg) = data.get("message") {
            if let Some(mid) = msg.get("id") {
                assert!(mid.is_string(), "message ids are strings: {file}");
            }
        }

        // data.raw: the vendor's JSON exactly as received, byte for byte.
        let original: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(data["raw"], original, "{file}");
        let text = std::str::from_utf8(&d.data).unwrap();
        let trimmed = std::str::from_utf8(&body).unwrap().trim();
        assert!(
            text.contains(trimmed),
            "raw bytes embedded unchanged: {file}"
        );
    }
    assert!(seen >= 5, "the manifest lists {vendor} fixtures");
    tap.expect_nothing().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kommunicate_fixtures_are_relayed() {
    relay_vendor_fixtures("kommunicate").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chatwoot_fixtures_are_relayed() {
    relay_vendor_fixtures("chatwoot").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cometchat_fixtures_are_relayed() {
    relay_vendor_fixtures("cometchat").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_delivery_twice_is_published_once() {
    let cfg = TestConfig::new("dedup");
    let app = spawn_app(&cfg).await;
    let mut tap = Tap::new(&cfg.exchange, "#").await;
    let body = fixture("kommunicate/message_group.json");
    let first: Value = app
        .post_signed("kommunicate", &body)
        .await
        .json()
        .await
        .unwrap();
    let second: Value = app
        .post_signed("kommunicate", &body)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(first["duplicate"], false);
    assert_eq!(second["duplicate"], true);
    assert_eq!(first["id"], second["id"]);
    let d = tap.next().await;
    assert_eq!(body_json(&d)["id"], first["id"]);
    tap.expect_nothing().await;
    // Chatwoot: the same X-Chatwoot-Delivery re-signed later is the same event.
    let cw = fixture("chatwoot/message_created_incoming.json");
    let (vendor, creds) = app.credentials("chatwoot");
    let mut ids = vec![];
    for _ in 0..2 {
        let mut headers = vendor.sign(&creds, &cw, time::OffsetDateTime::now_utc());
        for h in headers.iter_mut() {
            if h.0.eq_ignore_ascii_case("x-chatwoot-delivery") {
                h.1 = "7f0c1f9e-1111-4d6e-9a49-2d0d3b8a0c11".into();
            }
        }
        let refs: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let v: Value = app
            .post_raw("chatwoot", &refs, cw.clone())
            .await
            .json()
            .await
            .unwrap();
        ids.push(v);
    }
    assert_eq!(ids[0]["id"], ids[1]["id"]);
    assert_eq!(ids[1]["duplicate"], true);
    tap.next().await;
    tap.expect_nothing().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_hundred_concurrent_posts_arrive_exactly_once() {
    let cfg = TestConfig::new("concurrent");
    let app = std::sync::Arc::new(spawn_app(&cfg).await);
    let mut tap = Tap::new(&cfg.exchange, "#").await;
    let mut tasks = vec![];
    for i in 0..400 {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            let body = format!(
                r#"{{"key":"conc-{i}","from":"user-{i}","groupId":42,"message":"hello {i}","timeStamp":1791969697000}}"#
            );
            let r = app.post_signed("kommunicate", body.as_bytes()).await;
            assert_eq!(r.status(), 200);
            let v: Value = r.json().await.unwrap();
            v["id"].as_str().unwrap().to_owned()
        }));
    }
    let mut ids = std::collections::HashSet::new();
    for t in tasks {
        assert!(ids.insert(t.await.unwrap()), "distinct ids");
    }
    let mut got = std::collections::HashSet::new();
    for _ in 0..400 {
        let d = tap.next().await;
        let id = body_json(&d)["id"].as_str().unwrap().to_owned();
        assert!(got.insert(id), "no event twice");
    }
    assert_eq!(got, ids);
    tap.expect_nothing().await;
}
