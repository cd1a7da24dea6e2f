//! Issue #7's abuse limits and hostile headers, end to end: each refused request gets the
//! right status quickly, publishes nothing, and the relay keeps serving.

use crate::helpers::*;
use serde_json::Value;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const K_OK: &str = "Basic YWJjZGVm";

fn addr(app: &TestApp) -> String {
    app.base.trim_start_matches("http://").to_owned()
}

/// Write `request` and read the answer until the server closes (or `wait` passes).
/// Writing and reading run together, so a server that answers early and closes is
/// seen answering, not as a write error.
async fn raw_exchange(addr: &str, request: Vec<u8>, wait: Duration) -> String {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut rd, mut wr) = stream.into_split();
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(&request).await;
        let _ = wr.flush().await;
        wr
    });
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, async {
        let mut buf = [0_u8; 4096];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    drop(writer.await);
    String::from_utf8_lossy(&out).into_owned()
}

fn status_of(response: &str) -> Option<u16> {
    response
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|s| s.parse().ok())
}

async fn assert_still_relaying(app: &TestApp, tap: &mut Tap, key: &str) {
    let body = format!(r#"{{"key":"{key}","groupId":7,"message":"still here"}}"#);
    let r = app.post_signed("kommunicate", body.as_bytes()).await;
    assert_eq!(r.status(), 200);
    let d = tap.next().await;
    // The first event after the refused requests is this one: none of them got through.
    assert_eq!(body_json(&d)["data"]["raw"]["key"], key);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_credential_headers_are_401_and_publish_nothing() {
    let cfg = TestConfig::new("hostile_headers");
    let app = spawn_app(&cfg).await;
    let mut tap = Tap::new(&cfg.exchange, "#").await;
    let k_body = fixture("kommunicate/message_group.json");
    let c_body = fixture("cometchat/message_sent_text.json");
    let w_body = fixture("chatwoot/message_created_incoming.json");
    let (vendor, creds) = app.credentials("chatwoot");
    let now = time::OffsetDateTime::now_utc();
    let good = vendor.sign(&creds, &w_body, now);
    let ts = signed_header(&good, "x-chatwoot-timestamp");
    let sig = signed_header(&good, "x-chatwoot-signature");
    let hex = sig.trim_start_matches("sha256=").to_owned();
    let upper = format!("sha256={}", hex.to_uppercase());
    let truncated = format!("sha256={}", &hex[..63]);
    let no_prefix = hex.clone();
    // Validly signed, but ten years ahead: only the replay window can refuse it.
    let future = vendor.sign(&creds, &w_body, now + time::Duration::days(3650));
    let (future_ts, future_sig) = (
        signed_header(&future, "x-chatwoot-timestamp"),
        signed_header(&future, "x-chatwoot-signature"),
    );
    let long_value = format!("Basic {}", "A".repeat(60_000));
    let json = ("content-type", "application/json");
    // relayuser:s3cretPa55 is the real pair; "relay:user" is not a user a Basic header
    // can name (the user ends at the first colon).
    let colon_user = "Basic cmVsYXk6dXNlcjpzM2NyZXRQYTU1"; // relay:user:s3cretPa55
    let colon_shifted = "Basic cmVsYXl1c2VyOnMzY3JldFBhNTU6"; // relayuser:s3cretPa55:
    let c_ok = "Basic cmVsYXl1c2VyOnMzY3JldFBhNTU=";

    type Case<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>, Vec<u8>);
    let cases: Vec<Case> = vec![
        (
            "duplicated Authentication",
            "kommunicate",
            vec![json, ("authentication", K_OK), ("authentication", K_OK)],
            k_body.clone(),
        ),
        (
            "Authentication with a wrong one repeated",
            "kommunicate",
            vec![
                json,
                ("authentication", "Basic d3Jvbmc="),
                ("authentication", K_OK),
            ],
            k_body.clone(),
        ),
        (
            "Basic with invalid base64 (Kommunicate)",
            "kommunicate",
            vec![json, ("authentication", "Basic YWJj!ZGVm")],
            k_body.clone(),
        ),
        (
            "Basic with invalid base64 (CometChat)",
            "cometchat",
            vec![json, ("authorization", "Basic ***not-base64***")],
            c_body.clone(),
        ),
        (
            "Basic with an empty credential",
            "cometchat",
            vec![json, ("authorization", "Basic ")],
            c_body.clone(),
        ),
        (
            "CometChat username containing a colon",
            "cometchat",
            vec![json, ("authorization", colon_user)],
            c_body.clone(),
        ),
        (
            "CometChat password with a trailing colon",
            "cometchat",
            vec![json, ("authorization", colon_shifted)],
            c_body.clone(),
        ),
        (
            "duplicated Authorization",
            "cometchat",
            vec![json, ("authorization", c_ok), ("authorization", c_ok)],
            c_body.clone(),
        ),
        (
            "over-long Authentication header (60 kB)",
            "kommunicate",
            vec![json, ("authentication", &long_value)],
            k_body.clone(),
        ),
        (
            "over-long Authorization header (60 kB)",
            "cometchat",
            vec![json, ("authorization", &long_value)],
            c_body.clone(),
        ),
        (
            "Chatwoot timestamp not a number",
            "chatwoot",
            vec![
                json,
                ("x-chatwoot-timestamp", "soon"),
                ("x-chatwoot-signature", &sig),
            ],
            w_body.clone(),
        ),
        (
            "Chatwoot timestamp with a fraction",
            "chatwoot",
            vec![
                json,
                ("x-chatwoot-timestamp", "1791969697.5"),
                ("x-chatwoot-signature", &sig),
            ],
            w_body.clone(),
        ),
        (
            "Chatwoot timestamp negative",
            "chatwoot",
            vec![
                json,
                ("x-chatwoot-timestamp", "-1"),
                ("x-chatwoot-signature", &sig),
            ],
            w_body.clone(),
        ),
        (
            "Chatwoot timestamp past u64",
            "chatwoot",
            vec![
                json,
                ("x-chatwoot-timestamp", "184467440737095516160000"),
                ("x-chatwoot-signature", &sig),
            ],
            w_body.clone(),
        ),
        (
            "Chatwoot timestamp ten years ahead, validly signed",
            "chatwoot",
            vec![
                json,
                ("x-chatwoot-timestamp", &future_ts),
                ("x-chatwoot-signature", &future_sig),
            ],
            w_body.clone(),
        ),
        (
            "Chatwoot signature in upper-case hex",
            "chatwoot",
            vec![
                json,
                ("x-chatwoot-timestamp", &ts),
                ("x-chatwoot-signature", &upper),
            ],
            w_body.clone(),
        ),
        (
            "Chatwoot signature truncated",
            "chatwoot",
            vec![
                json,
                ("x-chatwoot-timestamp", &ts),
                ("x-chatwoot-signature", &truncated),
            ],
            w_body.clone(),
        ),
        (
            "Chatwoot signature without its sha256= prefix",
            "chatwoot",
            vec![
                json,
                ("x-chatwoot-timestamp", &ts),
                ("x-chatwoot-signature", &no_prefix),
            ],
            w_body.clone(),
        ),
        (
            "Chatwoot signature repeated",
            "chatwoot",
            vec![
                json,
                ("x-chatwoot-timestamp", &ts),
                ("x-chatwoot-signature", &sig),
                ("x-chatwoot-signature", &sig),
            ],
            w_body.clone(),
        ),
    ];
    for (what, source, headers, body) in cases {
        let started = Instant::now();
        let r = app.post_raw(source, &headers, body).await;
        let status = r.status().as_u16();
        let basic = r.headers().get("www-authenticate").cloned();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        assert_eq!(status, 401, "{what}");
        assert_eq!(v, serde_json::json!({"error": "unauthorized"}), "{what}");
        if source == "chatwoot" {
            assert!(basic.is_none(), "{what}");
        } else {
            assert_eq!(basic.unwrap(), "Basic realm=\"hookrelay\"", "{what}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{what} was slow"
        );
    }
    // The genuine Chatwoot delivery still passes with the very headers reused above.
    let refs: Vec<(&str, &str)> = good.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(app.post_raw("chatwoot", &refs, w_body).await.status(), 200);
    assert_eq!(
        tap.next().await.routing_key.as_str(),
        "chatwoot.message.created",
        "the refused requests published nothing before the genuine one"
    );
    tap.expect_nothing().await;
    assert_still_relaying(&app, &mut tap, "after-hostile").await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_heads_get_431_quickly_and_the_relay_keeps_serving() {
    let cfg = TestConfig::new("heads");
    let app = spawn_app(&cfg).await;
    let mut tap = Tap::new(&cfg.exchange, "#").await;
    let a = addr(&app);
    let body = fixture("kommunicate/message_group.json");
    let request = |extra: String| {
        let mut r = format!(
            "POST /webhooks/kommunicate HTTP/1.1\r\nHost: {a}\r\nContent-Type: application/json\r\n\
             Authentication: {K_OK}\r\nConnection: close\r\n{extra}Content-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        r.extend_from_slice(&body);
        r
    };

    // One header far over the 128 KiB head limit.
    let started = Instant::now();
    let huge = format!("X-Padding: {}\r\n", "p".repeat(200 * 1024));
    let resp = raw_exchange(&a, request(huge), Duration::from_secs(5)).await;
    assert_eq!(
        status_of(&resp),
        Some(431),
        "{:?}",
        &resp[..resp.len().min(200)]
    );
    assert!(started.elapsed() < Duration::from_secs(3));

    // More headers than the HTTP layer parses (96).
    let started = Instant::now();
    let many: String = (0..120).map(|i| format!("X-H{i}: v\r\n")).collect();
    let resp = raw_exchange(&a, request(many), Duration::from_secs(5)).await;
    assert_eq!(
        status_of(&resp),
        Some(431),
        "{:?}",
        &resp[..resp.len().min(200)]
    );
    assert!(started.elapsed() < Duration::from_secs(3));

    // Under both limits the same request is fine: the 431s were about the head alone.
    let some: String = (0..40).map(|i| format!("X-H{i}: v\r\n")).collect();
    let resp = raw_exchange(&a, request(some), Duration::from_secs(5)).await;
    assert_eq!(status_of(&resp), Some(200), "{resp}");
    assert_eq!(
        tap.next().await.routing_key.as_str(),
        "kommunicate.message.created"
    );
    tap.expect_nothing().await;
    assert_eq!(app.get("/healthz").await.status(), 200);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_loris_clients_are_cut_off_while_normal_requests_are_served() {
    let mut cfg = TestConfig::new("loris");
    cfg.set("HOOKRELAY__SERVER__CLIENT_REQUEST_TIMEOUT_MS", "3000");
    // One worker thread: if the lorises could pin it, nothing else would be served
    // before they are cut off (3 s).
    cfg.set("HOOKRELAY__SERVER__WORKERS", "1");
    let app = spawn_app(&cfg).await;
    let mut tap = Tap::new(&cfg.exchange, "#").await;
    let a = addr(&app);

    // Each loris sends a request head one byte every 100 ms, for up to 10 s.
    let lorises: Vec<_> = (0..20)
        .map(|_| {
            let a = a.clone();
            tokio::spawn(async move {
                let stream = TcpStream::connect(&a).await.expect("connect");
                let started = Instant::now();
                let (mut rd, mut wr) = stream.into_split();
                let head = format!(
                    "POST /webhooks/kommunicate HTTP/1.1\r\nHost: {a}\r\n{}",
                    "X-Slow: y\r\n".repeat(100)
                );
                let writer = tokio::spawn(async move {
                    for b in head.bytes() {
                        if wr.write_all(&[b]).await.is_err() {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                });
                let mut got = Vec::new();
                let _ =
                    tokio::time::timeout(Duration::from_secs(10), rd.read_to_end(&mut got)).await;
                let cut_after = started.elapsed();
                writer.abort();
                (cut_after, String::from_utf8_lossy(&got).into_owned())
            })
        })
        .collect();

    // Meanwhile, ordinary deliveries are answered promptly.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for i in 0..10 {
        let started = Instant::now();
        let body = format!(r#"{{"key":"loris-{i}","groupId":7}}"#);
        let r = app.post_signed("kommunicate", body.as_bytes()).await;
        assert_eq!(r.status(), 200);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "a normal request waited {:?} behind slow clients",
            started.elapsed()
        );
        tap.next().await;
    }
    for l in lorises {
        let (cut_after, answer) = l.await.unwrap();
        assert!(
            cut_after < Duration::from_secs(6),
            "a slow-loris connection was kept for {cut_after:?}"
        );
        assert!(
            answer.is_empty() || status_of(&answer) == Some(408),
            "{answer:?}"
        );
    }
    tap.expect_nothing().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_trickles_in_gets_408_and_publishes_nothing() {
    let mut cfg = TestConfig::new("slowbody");
    cfg.set("HOOKRELAY__SERVER__BODY_READ_TIMEOUT_MS", "800");
    let app = spawn_app(&cfg).await;
    let mut tap = Tap::new(&cfg.exchange, "#").await;
    let a = addr(&app);
    let body = fixture("kommunicate/message_group.json");
    let head = format!(
        "POST /webhooks/kommunicate HTTP/1.1\r\nHost: {a}\r\nContent-Type: application/json\r\n\
         Authentication: {K_OK}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let stream = TcpStream::connect(&a).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let started = Instant::now();
    wr.write_all(head.as_bytes()).await.unwrap();
    // Half the body, then one byte a second: it would take minutes.
    wr.write_all(&body[..body.len() / 2]).await.unwrap();
    let rest = body[body.len() / 2..].to_vec();
    let writer = tokio::spawn(async move {
        for b in rest {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if wr.write_all(&[b]).await.is_err() {
                break;
            }
        }
    });
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), rd.read_to_end(&mut got)).await;
    writer.abort();
    let answer = String::from_utf8_lossy(&got);
    assert_eq!(status_of(&answer), Some(408), "{answer}");
    assert!(
        answer.contains(r#"{"error":"request_timeout"}"#),
        "{answer}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    tap.expect_nothing().await;
    assert_still_relaying(&app, &mut tap, "after-slow-body").await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_makes_extra_connections_wait_not_fail() {
    let mut cfg = TestConfig::new("maxconn");
    cfg.set("HOOKRELAY__SERVER__WORKERS", "1");
    cfg.set("HOOKRELAY__SERVER__MAX_CONNECTIONS", "2");
    cfg.set("HOOKRELAY__SERVER__CLIENT_REQUEST_TIMEOUT_MS", "1500");
    let app = spawn_app(&cfg).await;
    let a = addr(&app);
    let client = || {
        reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap()
    };
    // Below the cap: immediate.
    let started = Instant::now();
    assert_eq!(
        client()
            .get(format!("{}/healthz", app.base))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert!(started.elapsed() < Duration::from_millis(500));
    // Let the worker notice that connection closed before filling the cap.
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Two idle connections fill the cap until the head timeout closes them.
    let idle: Vec<TcpStream> =
        futures_util::future::join_all((0..2).map(|_| TcpStream::connect(a.clone())))
            .await
            .into_iter()
            .map(|c| c.unwrap())
            .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let r = client()
        .get(format!("{}/healthz", app.base))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("the third connection is served once a slot frees up");
    let waited = started.elapsed();
    assert_eq!(r.status(), 200);
    assert!(
        waited >= Duration::from_millis(900),
        "served after {waited:?}: the cap of 2 connections did not hold"
    );
    assert!(waited < Duration::from_secs(5), "served after {waited:?}");
    drop(idle);
    app.stop().await;
    remove_relay_topology(&cfg.exchange).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_answers_429_with_retry_after_and_publishes_nothing() {
    let mut cfg = TestConfig::new("ratelimit");
    cfg.set("HOOKRELAY__SOURCES__KOMMUNICATE__RATE_LIMIT_PER_SEC", "1");
    cfg.set("HOOKRELAY__SOURCES__KOMMUNICATE__RATE_LIMIT_BURST", "2");
    let app = spawn_app(&cfg).await;
    let mut tap = Tap::new(&cfg.exchange, "#").await;
    let body = |k: &str| format!(r#"{{"key":"{k}","groupId":7}}"#).into_bytes();
    // The burst passes.
    for k in ["rl-1", "rl-2"] {
        assert_eq!(app.post_signed("kommunicate", &body(k)).await.status(), 200);
        tap.next().await;
    }
    // Then 429, with Retry-After, before the body is even looked at: a valid delivery,
    // one with bad credentials and one with a wrong method all get it.
    let r = app.post_signed("kommunicate", &body("rl-3")).await;
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "Retry-After: {retry}");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v, serde_json::json!({"error": "rate_limited"}));
    let r = app
        .post_raw(
            "kommunicate",
            &[("authentication", "Basic d3Jvbmc=")],
            body("rl-4"),
        )
        .await;
    assert_eq!(r.status(), 429);
    // The method is checked before the limits (the documented order: 404, 405, ...).
    let r = app.get("/webhooks/kommunicate").await;
    assert_eq!(r.status(), 405);
    // Unknown sources still 404 (checked first); other sources are not limited.
    let r = app
        .post_raw("nope", &[("authentication", K_OK)], body("x"))
        .await;
    assert_eq!(r.status(), 404);
    let c = fixture("cometchat/message_sent_text.json");
    for _ in 0..3 {
        assert_eq!(app.post_signed("cometchat", &c).await.status(), 200);
    }
    assert_eq!(
        tap.next().await.routing_key.as_str(),
        "cometchat.message.created"
    );
    tap.expect_nothing().await;
    // After Retry-After, the source is served again.
    tokio::time::sleep(Duration::from_secs(retry)).await;
    assert_still_relaying(&app, &mut tap, "rl-after").await;
    let text = app.get("/metrics").await.text().await.unwrap();
    assert!(
        text.contains(r#"hookrelay_http_requests_total{source="kommunicate",status="429"} 2"#)
            && text
                .contains(r#"hookrelay_http_requests_total{source="kommunicate",status="405"} 1"#),
        "{text}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_ips_admit_and_deny_and_forwarded_headers_need_a_trusted_proxy() {
    let mut cfg = TestConfig::new("allowlist");
    // kommunicate: only a documentation network; chatwoot: loopback; cometchat: none.
    cfg.set(
        "HOOKRELAY__SOURCES__KOMMUNICATE__ALLOWED_IPS",
        "203.0.113.0/24, 2001:db8::/32",
    );
    cfg.set("HOOKRELAY__SOURCES__CHATWOOT__ALLOWED_IPS", "127.0.0.1");
    let app = spawn_app(&cfg).await;
    let mut tap = Tap::new(&cfg.exchange, "#").await;
    let k = fixture("kommunicate/message_group.json");

    // Allowed: loopback on chatwoot.
    let r = app
        .post_signed("chatwoot", &fixture("chatwoot/conversation_created.json"))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        tap.next().await.routing_key.as_str(),
        "chatwoot.conversation.created"
    );

    // Denied: loopback is not in kommunicate's list, valid credentials or not.
    let r = app.post_signed("kommunicate", &k).await;
    assert_eq!(r.status(), 403);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v, serde_json::json!({"error": "forbidden"}));
    let r = app.post_raw("kommunicate", &[], b"junk".to_vec()).await;
    assert_eq!(r.status(), 403, "403 comes before 401 and 400");

    // Spoofed: no trusted proxy is configured, so forwarded headers are ignored.
    for (name, value) in [
        ("x-forwarded-for", "203.0.113.5"),
        ("forwarded", "for=203.0.113.5"),
        ("x-real-ip", "203.0.113.5"),
    ] {
        let mut headers = vec![
            ("content-type", "application/json"),
            ("authentication", K_OK),
        ];
        headers.push((name, value));
        let r = app.post_raw("kommunicate", &headers, k.clone()).await;
        assert_eq!(
            r.status(),
            403,
            "{name} from an untrusted peer must be ignored"
        );
    }
    tap.expect_nothing().await;
    app.stop().await;

    // Behind a trusted proxy (loopback here), its X-Forwarded-For names the client.
    cfg.set("HOOKRELAY__SERVER__TRUSTED_PROXIES", "127.0.0.0/8");
    let app = spawn_app(&cfg).await;
    let via_proxy = |xff: &'static str| {
        vec![
            ("content-type", "application/json"),
            ("authentication", K_OK),
            ("x-forwarded-for", xff),
        ]
    };
    let body = |key: &str| format!(r#"{{"key":"{key}","groupId":7}}"#).into_bytes();
    let r = app
        .post_raw("kommunicate", &via_proxy("203.0.113.5"), body("via-proxy"))
        .await;
    assert_eq!(r.status(), 200, "trusted proxy, allowed client");
    assert_eq!(
        body_json(&tap.next().await)["data"]["raw"]["key"],
        "via-proxy"
    );
    let r = app
        .post_raw(
            "kommunicate",
            &via_proxy("2001:db8::7, 127.0.0.1"),
            body("v6-chain"),
        )
        .await;
    assert_eq!(r.status(), 200, "a chain of trusted proxies is walked");
    assert_eq!(
        body_json(&tap.next().await)["data"]["raw"]["key"],
        "v6-chain"
    );
    for (xff, why) in [
        ("198.51.100.1", "client not allowed"),
        (
            "203.0.113.5, 198.51.100.1",
            "the client forged the left-most hop",
        ),
        ("garbage", "unreadable hop"),
    ] {
        let r = app
            .post_raw("kommunicate", &via_proxy(xff), body("denied"))
            .await;
        assert_eq!(r.status(), 403, "{why}");
    }
    // Without the header, the proxy itself is the client: not in the list.
    let r = app
        .post_raw(
            "kommunicate",
            &[
                ("content-type", "application/json"),
                ("authentication", K_OK),
            ],
            body("denied"),
        )
        .await;
    assert_eq!(r.status(), 403);
    // Only the configured header is read (x-forwarded-for by default).
    let r = app
        .post_raw(
            "kommunicate",
            &[
                ("content-type", "application/json"),
                ("authentication", K_OK),
                ("forwarded", "for=203.0.113.5"),
            ],
            body("denied"),
        )
        .await;
    assert_eq!(r.status(), 403);
    tap.expect_nothing().await;
    app.stop().await;
}
