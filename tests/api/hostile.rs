//! Hostile input gets the right status, publishes nothing, and the process keeps serving.

use crate::helpers::*;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bodies_are_400_and_the_relay_keeps_serving() {
    let cfg = TestConfig::new("hostile");
    let app = spawn_app(&cfg).await;
    let mut tap = Tap::new(&cfg.exchange, "#").await;
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let deep_obj = format!(r#"{{"key":"deep","x":{}}}"#, deep);
    let bodies: Vec<Vec<u8>> = vec![
        vec![],
        b"   ".to_vec(),
        br#"{"key":"trunc","message":"hel"#.to_vec(),
        b"[]".to_vec(),
        b"null".to_vec(),
        b"\"string\"".to_vec(),
        b"42".to_vec(),
        b"\xff\xfe{}".to_vec(),
        br#"{"key":"x"} trailing"#.to_vec(),
        deep_obj.into_bytes(),
        br#"{"key":"bad\ud800surrogate"}"#.to_vec(),
    ];
    for source in ["kommunicate", "chatwoot", "cometchat"] {
        for body in &bodies {
            let r = app.post_signed(source, body).await;
            let status = r.status().as_u16();
            let v: Value = r.json().await.unwrap_or(Value::Null);
            assert_eq!(
                status,
                400,
                "{source}: {:?}",
                String::from_utf8_lossy(&body[..body.len().min(60)])
            );
            assert_eq!(v["error"], "invalid_payload");
        }
    }
    tap.expect_nothing().await;
    assert_eq!(app.get("/healthz").await.status(), 200);
    // Still relaying.
    let r = app
        .post_signed("kommunicate", &fixture("kommunicate/message_group.json"))
        .await;
    assert_eq!(r.status(), 200);
    tap.next().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn awkward_but_valid_payloads_survive_byte_for_byte() {
    let cfg = TestConfig::new("awkward");
    let app = spawn_app(&cfg).await;
    let mut tap = Tap::new(&cfg.exchange, "#").await;
    let nested = format!(r#"{}"deep"{}"#, "{\"a\":".repeat(39), "}".repeat(39));
    let cases = vec![
        format!(r#"{{"key":"nest40","groupId":7,"metadata":{nested}}}"#),
        format!(r#"{{"key":"big","groupId":7,"message":"{}"}}"#, "é漢🎉".repeat(20_000)),
        r#"{"key":"uni","groupId":"7","message":"nul \u0000 ls \u2028 ps \u2029 astral 😀 \ud83d\ude00","__proto__":{"polluted":true},"constructor":null,"timeStamp":"1791969697000","n":1.0e400}"#.to_owned(),
        "{\"key\":\"raw-unicode\",\"message\":\"\u{2028}\u{10FFFF}\",\"dup\":1,\"dup\":2}".to_owned(),
    ];
    for body in cases {
        let r = app.post_signed("kommunicate", body.as_bytes()).await;
        let status = r.status();
        let text = r.text().await.unwrap();
        if body.contains("1.0e400") {
            // serde_json refuses numbers out of f64 range: a clear 400, not a crash.
            assert_eq!(status, 400, "{text}");
            continue;
        }
        assert_eq!(status, 200, "{text}");
        let d = tap.next().await;
        let event = std::str::from_utf8(&d.data).unwrap();
        assert!(event.contains(&body), "data.raw is the exact bytes");
        let ev: Value = serde_json::from_str(event).unwrap();
        assert_eq!(
            ev["data"]["raw"]["key"],
            serde_json::from_str::<Value>(&body).unwrap()["key"]
        );
    }
    tap.expect_nothing().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_near_the_size_limit_arrives_whole_in_both_ack_modes() {
    // ~1.9 MB: the relay asks for 16 KiB AMQP frames, so this event crosses the wire as
    // more than a hundred body frames, and in spool mode as one record of a spool group.
    for mode in ["broker", "spool"] {
        let mut cfg = TestConfig::new(&format!("nearmax-{mode}"));
        cfg.set("HOOKRELAY__DURABILITY__ACK", mode);
        let app = spawn_app(&cfg).await;
        let mut tap = Tap::new(&cfg.exchange, "#").await;
        let text: String = (0..1_900_000u32)
            .map(|i| char::from(b'a' + (i * 7 % 26) as u8))
            .collect();
        let body = format!(r#"{{"key":"near-max-{mode}","groupId":7,"message":"{text}"}}"#);
        assert!(body.len() < 2 * 1024 * 1024);
        let r = app.post_signed("kommunicate", body.as_bytes()).await;
        assert_eq!(r.status(), 200, "{mode}: {}", r.text().await.unwrap());
        let d = tap.next().await;
        let event = std::str::from_utf8(&d.data).unwrap();
        assert!(event.contains(&body), "{mode}: data.raw is the exact bytes");
        tap.expect_nothing().await;
        app.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_stale_and_missing_signatures_are_401() {
    let cfg = TestConfig::new("forged");
    let app = spawn_app(&cfg).await;
    let mut tap = Tap::new(&cfg.exchange, "#").await;
    let body = fixture("chatwoot/message_created_incoming.json");
    let (vendor, creds) = app.credentials("chatwoot");
    let now = time::OffsetDateTime::now_utc();
    let good = vendor.sign(&creds, &body, now);
    let ts = signed_header(&good, "x-chatwoot-timestamp");
    let sig = signed_header(&good, "x-chatwoot-signature");
    let stale = vendor.sign(&creds, &body, now - time::Duration::minutes(10));
    let stale_ts = signed_header(&stale, "x-chatwoot-timestamp");
    let stale_sig = signed_header(&stale, "x-chatwoot-signature");
    let mut tampered = body.clone();
    let pos = tampered.iter().position(|b| *b == b'a').unwrap();
    tampered[pos] = b'b';
    let upper = format!(
        "sha256={}",
        sig.trim_start_matches("sha256=").to_uppercase()
    );
    let truncated = sig[..sig.len() - 2].to_owned();
    let ct = ("content-type", "application/json");
    type Case<'a> = (Vec<(&'a str, &'a str)>, Vec<u8>);
    let cases: Vec<Case> = vec![
        (
            vec![
                ct,
                ("x-chatwoot-timestamp", &ts),
                ("x-chatwoot-signature", &sig),
            ],
            tampered,
        ),
        (
            vec![
                ct,
                ("x-chatwoot-timestamp", &stale_ts),
                ("x-chatwoot-signature", &stale_sig),
            ],
            body.clone(),
        ),
        (vec![ct, ("x-chatwoot-timestamp", &ts)], body.clone()),
        (vec![ct, ("x-chatwoot-signature", &sig)], body.clone()),
        (
            vec![
                ct,
                ("x-chatwoot-timestamp", &ts),
                ("x-chatwoot-signature", &upper),
            ],
            body.clone(),
        ),
        (
            vec![
                ct,
                ("x-chatwoot-timestamp", &ts),
                ("x-chatwoot-signature", &truncated),
            ],
            body.clone(),
        ),
        (
            vec![
                ct,
                ("x-chatwoot-timestamp", "abc"),
                ("x-chatwoot-signature", &sig),
            ],
            body.clone(),
        ),
        (
            vec![
                ct,
                ("x-chatwoot-timestamp", "99999999999"),
                ("x-chatwoot-signature", &sig),
            ],
            body.clone(),
        ),
    ];
    for (headers, body) in cases {
        let r = app.post_raw("chatwoot", &headers, body).await;
        assert_eq!(r.status(), 401, "{headers:?}");
    }
    // The genuine one still passes.
    let refs: Vec<(&str, &str)> = good.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(
        app.post_raw("chatwoot", &refs, body.clone()).await.status(),
        200
    );
    tap.next().await;
    tap.expect_nothing().await;
    app.stop().await;
}
