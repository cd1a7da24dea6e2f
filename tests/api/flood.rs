//! Floods from clients without credentials: refused before their bodies are read where
//! the headers decide, bodies held within the in-flight budget (with shares that keep
//! room for authenticated senders and for other clients), and the budget given back
//! after every outcome.

use crate::helpers::*;
use serde_json::Value;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const K_OK: &str = "Basic YWJjZGVm";
const K_WRONG: &str = "Basic d3Jvbmc=";
const C_WRONG: &str = "Basic dXNlcjp3cm9uZw==";
const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

fn addr(app: &TestApp) -> SocketAddr {
    app.base.trim_start_matches("http://").parse().unwrap()
}

/// A TCP connection to the relay from `local` (any 127/8 address is this host), so one
/// test can be several clients.
async fn connect_from(app: &TestApp, local: &str) -> TcpStream {
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind(format!("{local}:0").parse().unwrap()).unwrap();
    sock.connect(addr(app)).await.expect("connect")
}

/// A request head for `source`; chunked when `length` is `None`.
fn head(source: &str, headers: &[(&str, String)], length: Option<usize>) -> String {
    let mut h = format!("POST /webhooks/{source} HTTP/1.1\r\nHost: relay\r\n");
    for (k, v) in headers {
        h.push_str(&format!("{k}: {v}\r\n"));
    }
    match length {
        Some(n) => h.push_str(&format!("Content-Length: {n}\r\n\r\n")),
        None => h.push_str("Transfer-Encoding: chunked\r\n\r\n"),
    }
    h
}

/// Request headers for [`head`].
type Headers = Vec<(&'static str, String)>;

fn json_ct() -> (&'static str, String) {
    ("Content-Type", "application/json".to_owned())
}

/// Well-formed, fresh Chatwoot signature headers that do not match any body: only the
/// body can tell.
fn chatwoot_forged() -> Vec<(&'static str, String)> {
    vec![
        json_ct(),
        (
            "X-Chatwoot-Timestamp",
            time::OffsetDateTime::now_utc().unix_timestamp().to_string(),
        ),
        ("X-Chatwoot-Signature", format!("sha256={}", "0".repeat(64))),
    ]
}

/// A client that sent a head and part of a body and now holds the connection.
struct Holder {
    stream: TcpStream,
}

async fn hold(app: &TestApp, local: &str, head: &str, body_part: &[u8]) -> Holder {
    let mut stream = connect_from(app, local).await;
    stream.write_all(head.as_bytes()).await.unwrap();
    // A relay that refuses at once may close before all of it is written.
    let _ = stream.write_all(body_part).await;
    Holder { stream }
}

/// One HTTP response read off a raw connection: status, lower-cased headers, body.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Value,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

impl Holder {
    /// The response, read without sending anything more; `None` if none came in `wait`.
    async fn answer_within(&mut self, wait: Duration) -> Option<Answer> {
        let mut buf = Vec::new();
        let read = async {
            let mut chunk = [0_u8; 4096];
            loop {
                if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    let mut lines = head.split("\r\n");
                    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
                    let headers: Vec<(String, String)> = lines
                        .filter_map(|l| l.split_once(':'))
                        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
                        .collect();
                    let len: usize = headers
                        .iter()
                        .find(|(k, _)| k == "content-length")
                        .and_then(|(_, v)| v.parse().ok())
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + len {
                        let body = serde_json::from_slice(&buf[end + 4..end + 4 + len])
                            .unwrap_or(Value::Null);
                        return Some(Answer {
                            status,
                            headers,
                            body,
                        });
                    }
                }
                match self.stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return None,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
        };
        tokio::time::timeout(wait, read).await.ok().flatten()
    }

    async fn answer(&mut self) -> Answer {
        self.answer_within(Duration::from_secs(5))
            .await
            .expect("an answer within 5 s")
    }

    /// Whether the relay closes the connection within `wait` (EOF or reset), while this
    /// client sends nothing more.
    async fn closed_within(&mut self, wait: Duration) -> bool {
        let mut sink = [0_u8; 4096];
        let read = async {
            loop {
                match self.stream.read(&mut sink).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        };
        tokio::time::timeout(wait, read).await.is_ok()
    }
}

/// `hookrelay_inflight_body_bytes` as `/metrics` shows it.
async fn reserved(app: &TestApp) -> u64 {
    let text = app.get("/metrics").await.text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("hookrelay_inflight_body_bytes "))
        .expect("the gauge is exported")
        .trim()
        .parse()
        .unwrap()
}

/// Wait (polling the metric) until the reserved bytes satisfy `pred`.
async fn await_reserved(app: &TestApp, what: &str, pred: impl Fn(u64) -> bool) {
    let started = Instant::now();
    loop {
        let r = reserved(app).await;
        if pred(r) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "reserved bytes stayed at {r}, expected {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A Kommunicate body of exactly `size` bytes.
fn k_body(tag: &str, size: usize) -> Vec<u8> {
    let base = format!(r#"{{"key":"{tag}","groupId":7,"message":""}}"#);
    assert!(size >= base.len());
    format!(
        r#"{{"key":"{tag}","groupId":7,"message":"{}"}}"#,
        "x".repeat(size - base.len())
    )
    .into_bytes()
}

fn flood_config(tag: &str, budget: usize, max_body: usize) -> TestConfig {
    let mut cfg = TestConfig::new(tag);
    cfg.set(
        "HOOKRELAY__SERVER__MAX_INFLIGHT_BODY_BYTES",
        &budget.to_string(),
    );
    cfg.set("HOOKRELAY__SERVER__MAX_BODY_BYTES", &max_body.to_string());
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_credentials_are_refused_before_the_body_is_read() {
    let cfg = flood_config("early401", 4 * MIB, MIB);
    let app = spawn_app(&cfg).await;
    let mut tap = Tap::new(&cfg.exchange, "#").await;
    let part = vec![b' '; 16 * KIB];
    let cases: Vec<(&str, Headers, bool)> = vec![
        (
            "kommunicate",
            vec![json_ct(), ("Authentication", K_WRONG.to_owned())],
            true,
        ),
        ("kommunicate", vec![json_ct()], true),
        (
            "cometchat",
            vec![json_ct(), ("Authorization", C_WRONG.to_owned())],
            true,
        ),
        ("cometchat", vec![json_ct()], true),
        // Chatwoot without its signature headers, or with a stale timestamp: the
        // headers decide too.
        ("chatwoot", vec![json_ct()], false),
        (
            "chatwoot",
            vec![
                json_ct(),
                ("X-Chatwoot-Timestamp", "1000000000".to_owned()),
                ("X-Chatwoot-Signature", format!("sha256={}", "0".repeat(64))),
            ],
            false,
        ),
    ];
    for (source, headers, basic) in cases {
        for length in [Some(MIB), None] {
            // A large body announced, a sliver sent, then nothing: the answer must not
            // wait for the rest.
            let first = if length.is_some() {
                part.clone()
            } else {
                let mut c = format!("{:x}\r\n", part.len()).into_bytes();
                c.extend_from_slice(&part);
                c.extend_from_slice(b"\r\n");
                c
            };
            let mut h = hold(&app, "127.0.0.1", &head(source, &headers, length), &first).await;
            let a = h.answer().await;
            assert_eq!(a.status, 401, "{source} {length:?}: {a:?}");
            assert_eq!(a.body["error"], "unauthorized");
            assert_eq!(a.header("connection"), Some("close"), "{source} {length:?}");
            assert_eq!(
                a.header("www-authenticate").is_some(),
                basic,
                "{source} {length:?}"
            );
            assert!(
                h.closed_within(Duration::from_secs(3)).await,
                "{source} {length:?}: the relay kept a refused connection open"
            );
        }
    }
    // Nothing was reserved for any of them, nothing published, and the relay serves on.
    assert_eq!(reserved(&app).await, 0);
    tap.expect_nothing().await;
    let r = app
        .post_signed("kommunicate", &k_body("after-early-401", 2000))
        .await;
    assert_eq!(r.status(), 200);
    tap.next().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_checks_keep_their_order_and_chunked_bodies_meet_413_while_read() {
    let cfg = flood_config("floodorder", 4 * MIB, 64 * KIB);
    let app = spawn_app(&cfg).await;
    let mut tap = Tap::new(&cfg.exchange, "#").await;
    let wrong = vec![
        ("Content-Type", "text/plain".to_owned()),
        ("Authentication", K_WRONG.to_owned()),
    ];
    // A declared length over the limit comes first, whatever else is wrong.
    let mut h = hold(
        &app,
        "127.0.0.1",
        &head("kommunicate", &wrong, Some(MIB)),
        b"{",
    )
    .await;
    let a = h.answer().await;
    assert_eq!(
        (a.status, a.body["error"].as_str()),
        (413, Some("payload_too_large"))
    );
    assert_eq!(a.header("connection"), Some("close"));
    // Then the content type, then the credentials.
    let mut h = hold(
        &app,
        "127.0.0.1",
        &head("kommunicate", &wrong, Some(100)),
        b"{",
    )
    .await;
    assert_eq!(h.answer().await.status, 415);
    let bad_auth = vec![json_ct(), ("Authentication", K_WRONG.to_owned())];
    let mut h = hold(
        &app,
        "127.0.0.1",
        &head("kommunicate", &bad_auth, Some(100)),
        b"{",
    )
    .await;
    assert_eq!(h.answer().await.status, 401);
    // Chunked: the size is known only while reading, so what the headers decide comes
    // first (the one difference)...
    let chunk = |n: usize| {
        let mut c = format!("{n:x}\r\n").into_bytes();
        c.extend(std::iter::repeat_n(b' ', n));
        c.extend_from_slice(b"\r\n");
        c
    };
    let mut h = hold(
        &app,
        "127.0.0.1",
        &head("kommunicate", &wrong, None),
        &chunk(70 * KIB),
    )
    .await;
    assert_eq!(h.answer().await.status, 415);
    let mut h = hold(
        &app,
        "127.0.0.1",
        &head("kommunicate", &bad_auth, None),
        &chunk(70 * KIB),
    )
    .await;
    assert_eq!(h.answer().await.status, 401);
    // ...and a chunked body with good headers gets its 413 once it passes the limit.
    let good = vec![json_ct(), ("Authentication", K_OK.to_owned())];
    let mut h = hold(
        &app,
        "127.0.0.1",
        &head("kommunicate", &good, None),
        &chunk(70 * KIB),
    )
    .await;
    let a = h.answer().await;
    assert_eq!(
        (a.status, a.body["error"].as_str()),
        (413, Some("payload_too_large"))
    );
    await_reserved(&app, "0", |r| r == 0).await;
    tap.expect_nothing().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_bodies_cannot_take_the_budget_from_signed_ones() {
    // 4 MiB budget, 1 MiB bodies: unproven senders share 2 MiB, one client 1 MiB.
    let cfg = flood_config("floodshare", 4 * MIB, MIB);
    let app = spawn_app(&cfg).await;
    let mut tap = Tap::new(&cfg.exchange, "#").await;
    let forged = head("chatwoot", &chatwoot_forged(), Some(MIB));
    let half = vec![b' '; MIB / 2];

    // A client holding a forged Chatwoot body has its client's share...
    let first = hold(&app, "127.0.0.1", &forged, &half).await;
    await_reserved(&app, "1 MiB", |r| r == MIB as u64).await;
    // ...so its second body waits a moment, then 503 with Retry-After and close.
    let started = Instant::now();
    let mut second = hold(&app, "127.0.0.1", &forged, &half).await;
    let a = second.answer().await;
    assert_eq!(a.status, 503, "{a:?}");
    assert_eq!(a.body["error"], "unavailable");
    assert_eq!(a.header("retry-after"), Some("10"));
    assert_eq!(a.header("connection"), Some("close"));
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "it waited first"
    );
    assert!(second.closed_within(Duration::from_secs(3)).await);

    // A genuine Chatwoot webhook from elsewhere still fits in the unproven share.
    let genuine = fixture("chatwoot/message_created_incoming.json");
    let client_b = reqwest::Client::builder()
        .local_address(Some("127.0.0.2".parse().unwrap()))
        .build()
        .unwrap();
    let (vendor, creds) = app.credentials("chatwoot");
    let post_chatwoot = |client: reqwest::Client, body: Vec<u8>| {
        let url = format!("{}/webhooks/chatwoot", app.base);
        let headers = vendor.sign(&creds, &body, time::OffsetDateTime::now_utc());
        async move {
            let mut req = client.post(url).body(body);
            for (k, v) in headers {
                req = req.header(k, v);
            }
            req.send().await.unwrap()
        }
    };
    let r = post_chatwoot(client_b.clone(), genuine.clone()).await;
    assert_eq!(r.status(), 200);
    tap.next().await;

    // A third client fills the unproven share: now unsigned-until-read bodies wait and
    // are refused, from anyone, genuine or not: the limit of what a budget can do.
    let third = hold(&app, "127.0.0.3", &forged, &half).await;
    await_reserved(&app, "2 MiB", |r| r == 2 * MIB as u64).await;
    let client_d = reqwest::Client::builder()
        .local_address(Some("127.0.0.4".parse().unwrap()))
        .build()
        .unwrap();
    let r = post_chatwoot(client_d.clone(), genuine.clone()).await;
    assert_eq!(r.status(), 503);

    // Header-authenticated webhooks, large ones too, are answered throughout.
    let r = app
        .post_signed("kommunicate", &k_body("share-k", MIB))
        .await;
    assert_eq!(r.status(), 200);
    tap.next().await;
    let c_body = fixture("cometchat/message_sent_text.json");
    let r = app.post_signed("cometchat", &c_body).await;
    assert_eq!(r.status(), 200);
    tap.next().await;

    // The hostile clients go away mid-body: their shares come back, the retry succeeds.
    drop((first, third));
    await_reserved(&app, "0", |r| r == 0).await;
    let r = post_chatwoot(client_d, genuine).await;
    assert_eq!(r.status(), 200);
    let d = tap.next().await;
    assert_eq!(body_json(&d)["vendor"], "chatwoot");
    tap.expect_nothing().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_budget_is_given_back_after_every_outcome() {
    // The budget is one largest body: a full-size request fits only if nothing is held.
    let mut cfg = flood_config("floodrelease", 256 * KIB, 256 * KIB);
    // Longer than a request waits for room (1 s), so the 503 below is certain.
    cfg.set("HOOKRELAY__SERVER__BODY_READ_TIMEOUT_MS", "3000");
    let app = spawn_app(&cfg).await;
    let mut tap = Tap::new(&cfg.exchange, "#").await;
    let full = 256 * KIB;
    let good = vec![json_ct(), ("Authentication", K_OK.to_owned())];
    let mut round = 0;
    let mut full_size_request_succeeds = || {
        round += 1;
        let body = k_body(&format!("release-{round}"), full);
        let app = &app;
        async move {
            await_reserved(app, "0", |r| r == 0).await;
            let r = app.post_signed("kommunicate", &body).await;
            assert_eq!(
                r.status(),
                200,
                "round {round}: {}",
                r.text().await.unwrap()
            );
        }
    };

    // Timeout: the body stops arriving; 408 at the deadline.
    let mut h = hold(
        &app,
        "127.0.0.1",
        &head("kommunicate", &good, Some(full)),
        &[b' '; 1000],
    )
    .await;
    await_reserved(&app, "the full body", |r| r == full as u64).await;
    let a = h.answer().await;
    assert_eq!(a.status, 408);
    full_size_request_succeeds().await;
    tap.next().await;

    // The client disconnects mid-body.
    let h = hold(
        &app,
        "127.0.0.1",
        &head("kommunicate", &good, Some(full)),
        &[b' '; 1000],
    )
    .await;
    await_reserved(&app, "the full body", |r| r == full as u64).await;
    drop(h);
    full_size_request_succeeds().await;
    tap.next().await;

    // 413 while reading a chunked body (reserved as it grew).
    let mut c = format!("{:x}\r\n", full + 10).into_bytes();
    c.extend(std::iter::repeat_n(b' ', full + 10));
    c.extend_from_slice(b"\r\n0\r\n\r\n");
    let mut h = hold(&app, "127.0.0.1", &head("kommunicate", &good, None), &c).await;
    assert_eq!(h.answer().await.status, 413);
    full_size_request_succeeds().await;
    tap.next().await;

    // 401 after reading: a forged Chatwoot signature over a whole body.
    let body = vec![b'{'; full];
    let mut h = hold(
        &app,
        "127.0.0.1",
        &head("chatwoot", &chatwoot_forged(), Some(full)),
        &body,
    )
    .await;
    assert_eq!(h.answer().await.status, 401);
    // 401 before reading.
    let bad = vec![json_ct(), ("Authentication", K_WRONG.to_owned())];
    let mut h = hold(
        &app,
        "127.0.0.1",
        &head("kommunicate", &bad, Some(full)),
        b"{",
    )
    .await;
    assert_eq!(h.answer().await.status, 401);
    // 400: authenticated, not JSON.
    let mut h = hold(
        &app,
        "127.0.0.1",
        &head("kommunicate", &good, Some(full)),
        &body,
    )
    .await;
    assert_eq!(h.answer().await.status, 400);
    full_size_request_succeeds().await;
    tap.next().await;

    // 503: while one body holds everything, another waits, is refused, costs nothing.
    let mut holder = hold(
        &app,
        "127.0.0.1",
        &head("kommunicate", &good, Some(full)),
        &[b' '; 1000],
    )
    .await;
    await_reserved(&app, "the full body", |r| r == full as u64).await;
    let r = app
        .post_signed("kommunicate", &k_body("refused", full))
        .await;
    assert_eq!(r.status(), 503);
    assert_eq!(holder.answer().await.status, 408);
    // Success, and a duplicate: both give back.
    full_size_request_succeeds().await;
    tap.next().await;
    let dup = k_body("release-dup", full);
    assert_eq!(app.post_signed("kommunicate", &dup).await.status(), 200);
    tap.next().await;
    let r = app.post_signed("kommunicate", &dup).await;
    assert_eq!(r.json::<Value>().await.unwrap()["duplicate"], true);
    full_size_request_succeeds().await;
    tap.next().await;

    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("hookrelay_body_budget_exhausted_total 1"),
        "{metrics}"
    );
    tap.expect_nothing().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_few_dozen_hostile_connections_leave_genuine_webhooks_answered() {
    let cfg = flood_config("floodcrowd", 2 * MIB, 256 * KIB);
    let app = spawn_app(&cfg).await;
    let mut tap = Tap::new(&cfg.exchange, "#").await;
    let part = vec![b' '; 128 * KIB];
    let mut hostile = Vec::new();
    for i in 0..36 {
        let (source, headers) = match i % 3 {
            0 => (
                "kommunicate",
                vec![json_ct(), ("Authentication", K_WRONG.to_owned())],
            ),
            1 => (
                "cometchat",
                vec![json_ct(), ("Authorization", C_WRONG.to_owned())],
            ),
            _ => ("chatwoot", chatwoot_forged()),
        };
        let local = format!("127.0.1.{}", i % 7 + 1);
        hostile.push((
            source,
            hold(
                &app,
                &local,
                &head(source, &headers, Some(256 * KIB)),
                &part,
            )
            .await,
        ));
    }
    // Unsigned-until-read bodies hold at most their half of the budget.
    await_reserved(&app, "some forged bodies", |r| r > 0).await;
    assert!(reserved(&app).await <= MIB as u64);
    for i in 0..5 {
        let r = app
            .post_signed("kommunicate", &k_body(&format!("crowd-{i}"), 200 * KIB))
            .await;
        assert_eq!(r.status(), 200);
        tap.next().await;
        // The same delivery each time: published once, then answered as a duplicate.
        let r = app
            .post_signed("cometchat", &fixture("cometchat/message_sent_text.json"))
            .await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.json::<Value>().await.unwrap()["duplicate"], i > 0);
        if i == 0 {
            tap.next().await;
        }
    }
    let mut statuses = std::collections::BTreeMap::<(&str, u16), usize>::new();
    for (source, h) in &mut hostile {
        if *source == "chatwoot" {
            continue;
        }
        let a = h.answer().await;
        *statuses.entry((*source, a.status)).or_default() += 1;
    }
    assert_eq!(
        statuses,
        [(("cometchat", 401), 12), (("kommunicate", 401), 12)].into()
    );
    drop(hostile);
    await_reserved(&app, "0", |r| r == 0).await;
    tap.expect_nothing().await;
    app.stop().await;
}
