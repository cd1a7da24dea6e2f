//! One test per error status: the right status and JSON body, and nothing published.

use crate::helpers::*;
use serde_json::Value;

const KOMMUNICATE_OK: &str = "Basic YWJjZGVm";

fn k_body() -> Vec<u8> {
    fixture("kommunicate/message_group.json")
}

async fn error_of(resp: reqwest::Response) -> (u16, Value, reqwest::header::HeaderMap) {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let v = resp.json().await.unwrap_or(Value::Null);
    (status, v, headers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_source_is_404() {
    let cfg = TestConfig::new("e404");
    let app = spawn_app(&cfg).await;
    let mut tap = Tap::new(&cfg.exchange, "#").await;
    let r = app
        .post_raw(
            "nope",
            &[
                ("content-type", "application/json"),
                ("authentication", KOMMUNICATE_OK),
            ],
            k_body(),
        )
        .await;
    let (s, v, _) = error_of(r).await;
    assert_eq!(s, 404);
    assert_eq!(v["error"], "unknown_source");
    // Unknown source wins over a wrong method.
    let r = app
        .client
        .get(format!("{}/webhooks/nope", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    tap.expect_nothing().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_method_is_405() {
    let cfg = TestConfig::new("e405");
    let app = spawn_app(&cfg).await;
    let mut tap = Tap::new(&cfg.exchange, "#").await;
    for method in [
        reqwest::Method::GET,
        reqwest::Method::PUT,
        reqwest::Method::DELETE,
    ] {
        let r = app
            .client
            .request(method.clone(), format!("{}/webhooks/kommunicate", app.base))
            .header("authentication", KOMMUNICATE_OK)
            .header("content-type", "application/json")
            .body(k_body())
            .send()
            .await
            .unwrap();
        let (s, v, h) = error_of(r).await;
        assert_eq!(s, 405, "{method}");
        assert_eq!(v["error"], "method_not_allowed");
        assert_eq!(h["allow"], "POST");
    }
    tap.expect_nothing().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_body_is_413() {
    let mut cfg = TestConfig::new("e413");
    cfg.set("HOOKRELAY__SERVER__MAX_BODY_BYTES", "1000");
    let app = spawn_app(&cfg).await;
    let mut tap = Tap::new(&cfg.exchange, "#").await;
    let big = format!(r#"{{"key":"big","message":"{}"}}"#, "x".repeat(5000));
    // Wrong content type and credentials too: size is checked first.
    let r = app
        .post_raw(
            "kommunicate",
            &[("content-type", "text/plain")],
            big.into_bytes(),
        )
        .await;
    let (s, v, _) = error_of(r).await;
    assert_eq!(s, 413);
    assert_eq!(v["error"], "payload_too_large");
    // Chunked (no Content-Length): enforced while reading.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..20).map(|_| Ok(vec![b' '; 100])).collect();
    let r = app
        .client
        .post(format!("{}/webhooks/kommunicate", app.base))
        .header("authentication", KOMMUNICATE_OK)
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    // Exactly at the limit is fine.
    let base = r#"{"key":"fits","message":""}"#.len();
    let body = format!(
        r#"{{"key":"fits","message":"{}"}}"#,
        "y".repeat(1000 - base)
    );
    assert_eq!(body.len(), 1000);
    let r = app.post_signed("kommunicate", body.as_bytes()).await;
    assert_eq!(r.status(), 200);
    tap.next().await;
    tap.expect_nothing().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_json_content_type_is_415() {
    let cfg = TestConfig::new("e415");
    let app = spawn_app(&cfg).await;
    let mut tap = Tap::new(&cfg.exchange, "#").await;
    for ct in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ] {
        // Bad credentials too: the content type is checked first.
        let r = app
            .post_raw(
                "kommunicate",
                &[("content-type", ct), ("authentication", "Basic bad")],
                k_body(),
            )
            .await;
        let (s, v, _) = error_of(r).await;
        assert_eq!(s, 415, "{ct}");
        assert_eq!(v["error"], "unsupported_media_type");
    }
    // Parameters are fine.
    let r = app
        .post_raw(
            "kommunicate",
            &[
                ("content-type", "application/json; charset=UTF-8"),
                ("authentication", KOMMUNICATE_OK),
            ],
            k_body(),
        )
        .await;
    assert_eq!(r.status(), 200);
    tap.next().await;
    tap.expect_nothing().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_are_401() {
    let cfg = TestConfig::new("e401");
    let app = spawn_app(&cfg).await;
    let mut tap = Tap::new(&cfg.exchange, "#").await;
    let json = ("content-type", "application/json");
    // (source, headers, body, expects WWW-Authenticate: Basic)
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, Vec<u8>, bool);
    let cases: Vec<Case> = vec![
        ("kommunicate", vec![json], k_body(), true),
        (
            "kommunicate",
            vec![json, ("authentication", "Basic d3Jvbmc=")],
            k_body(),
            true,
        ),
        (
            "kommunicate",
            vec![json, ("authorization", KOMMUNICATE_OK)],
            k_body(),
            true,
        ),
        (
            "kommunicate",
            vec![json, ("authentication", "YWJjZGVm")],
            k_body(),
            true,
        ),
        (
            "cometchat",
            vec![json],
            fixture("cometchat/message_sent_text.json"),
            true,
        ),
        (
            "cometchat",
            vec![json, ("authorization", "Basic cmVsYXl1c2VyOndyb25n")],
            fixture("cometchat/message_sent_text.json"),
            true,
        ),
        (
            "chatwoot",
            vec![json],
            fixture("chatwoot/message_created_incoming.json"),
            false,
        ),
        (
            "chatwoot",
            vec![
                json,
                ("x-chatwoot-timestamp", "1791969698"),
                (
                    "x-chatwoot-signature",
                    "sha256=5b836c66991d051902894165b4a98aa6e116811539bc390f39f6ab9dfa069d8f",
                ),
            ],
            fixture("chatwoot/message_created_incoming.json"),
            false,
        ),
    ];
    for (source, headers, body, basic) in cases {
        // Bad payload too: credentials are checked first.
        let r = app.post_raw(source, &headers, body).await;
        let (s, v, h) = error_of(r).await;
        assert_eq!(s, 401, "{source} {headers:?}");
        assert_eq!(v, serde_json::json!({"error": "unauthorized"}));
        if basic {
            assert_eq!(h["www-authenticate"], "Basic realm=\"hookrelay\"");
        } else {
            assert!(h.get("www-authenticate").is_none());
        }
        let text = v.to_string();
        assert!(!text.contains("abcdef") && !text.contains("s3cretPa55"));
    }
    // Unauthenticated garbage is 401, not 400: credentials before payload.
    let r = app
        .post_raw("kommunicate", &[json], b"not json".to_vec())
        .await;
    assert_eq!(r.status(), 401);
    tap.expect_nothing().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_payload_is_400() {
    let cfg = TestConfig::new("e400");
    let app = spawn_app(&cfg).await;
    let mut tap = Tap::new(&cfg.exchange, "#").await;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("kommunicate", b"not json".to_vec()),
        ("kommunicate", b"[1,2]".to_vec()),
        ("kommunicate", br#"{"message":"no key"}"#.to_vec()),
        ("kommunicate", br#"{"key":42}"#.to_vec()),
        ("chatwoot", br#"{"id":1}"#.to_vec()),
        ("cometchat", br#"{"trigger":"message_sent"}"#.to_vec()),
        (
            "cometchat",
            br#"{"trigger":"message_sent","data":"x"}"#.to_vec(),
        ),
    ];
    for (source, body) in cases {
        let r = app.post_signed(source, &body).await;
        let (s, v, _) = error_of(r).await;
        assert_eq!(s, 400, "{source} {}", String::from_utf8_lossy(&body));
        assert_eq!(v["error"], "invalid_payload");
        assert!(v["detail"].as_str().is_some_and(|d| !d.is_empty()));
    }
    tap.expect_nothing().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_down_and_spool_off_is_503() {
    let mut cfg = TestConfig::new("e503");
    // A port nothing listens on: the broker is unreachable.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    cfg.set(
        "HOOKRELAY__AMQP__URI",
        &format!("amqp://guest:guest@{dead}/%2f"),
    );
    cfg.set("HOOKRELAY__AMQP__CONNECT_TIMEOUT_MS", "300");
    cfg.set("HOOKRELAY__SPOOL__ENABLED", "false");
    let app = spawn_app(&cfg).await;
    let mut tap = Tap::new(&cfg.exchange, "#").await;
    let r = app.post_signed("kommunicate", &k_body()).await;
    let (s, v, h) = error_of(r).await;
    assert_eq!(s, 503);
    assert_eq!(v["error"], "unavailable");
    assert!(h.get("retry-after").is_some());
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), 503);
    let rv: Value = ready.json().await.unwrap();
    assert_eq!(rv["status"], "unavailable");
    // A 503 does not poison the dedup window: the retry is processed normally.
    let r = app.post_signed("kommunicate", &k_body()).await;
    assert_eq!(r.status(), 503);
    tap.expect_nothing().await;
    app.stop().await;
}
