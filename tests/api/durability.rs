//! Durability (README: Durability): no accepted event is lost through broker outages (a cuttable
//! TCP proxy between relay and broker), restarts on a spool, SIGTERM and kill -9 under
//! load, a full spool, and a node list. Every case runs in both ack modes.

use crate::helpers::*;
use crate::proxy::Proxy;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn broker_addr() -> std::net::SocketAddr {
    "127.0.0.1:5672".parse().unwrap()
}

/// Settings tuned so outages are noticed and recovered from quickly.
fn outage_config(tag: &str, mode: &str, uri: &str) -> TestConfig {
    let mut cfg = TestConfig::new(tag);
    cfg.set("HOOKRELAY__AMQP__URI", uri);
    cfg.set("HOOKRELAY__AMQP__CONFIRM_TIMEOUT_MS", "1000");
    cfg.set("HOOKRELAY__AMQP__CONNECT_TIMEOUT_MS", "1000");
    cfg.set("HOOKRELAY__AMQP__RECONNECT_INITIAL_MS", "50");
    cfg.set("HOOKRELAY__AMQP__RECONNECT_MAX_MS", "300");
    cfg.set("HOOKRELAY__AMQP__HEARTBEAT_SECS", "2");
    cfg.set("HOOKRELAY__DURABILITY__ACK", mode);
    cfg
}

fn k_body(tag: &str, n: u64) -> Vec<u8> {
    format!(
        r#"{{"key":"{tag}-{n}","from":"user-{n}","groupId":42,"message":"seq {n}","timeStamp":1791969697000}}"#
    )
    .into_bytes()
}

/// Post one event; Some(id) on 200.
async fn post(
    client: &reqwest::Client,
    base: &str,
    body: Vec<u8>,
) -> Result<Option<String>, String> {
    let r = client
        .post(format!("{base}/webhooks/kommunicate"))
        .header("content-type", "application/json")
        .header("authentication", "Basic YWJjZGVm")
        .body(body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if r.status() == 200 {
        let v: Value = r.json().await.map_err(|e| e.to_string())?;
        Ok(Some(v["id"].as_str().unwrap().to_owned()))
    } else {
        Ok(None)
    }
}

/// Receive until every id in `want` has arrived; returns arrival counts and order.
async fn collect(
    tap: &mut Tap,
    want: &HashSet<String>,
    within: Duration,
) -> (HashMap<String, usize>, Vec<String>) {
    let deadline = Instant::now() + within;
    let mut counts: HashMap<String, usize> = HashMap::new();
    let mut order = vec![];
    while !want.iter().all(|id| counts.contains_key(id)) {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(d) = tap.next_within(left).await else {
            let missing: Vec<_> = want
                .iter()
                .filter(|id| !counts.contains_key(*id))
                .take(5)
                .collect();
            panic!(
                "{} of {} accepted events never arrived (e.g. {missing:?})",
                want.iter().filter(|id| !counts.contains_key(*id)).count(),
                want.len()
            );
        };
        let id = d.properties.message_id().as_ref().unwrap().to_string();
        assert_eq!(
            body_json(&d)["id"],
            id.as_str(),
            "message_id is the event id"
        );
        *counts.entry(id.clone()).or_default() += 1;
        order.push(id);
    }
    // Anything else still in flight (late duplicates) shows up here.
    while let Some(d) = tap.next_within(Duration::from_millis(700)).await {
        let id = d.properties.message_id().as_ref().unwrap().to_string();
        *counts.entry(id.clone()).or_default() += 1;
        order.push(id);
    }
    (counts, order)
}

async fn cut_and_restore(mode: &str) {
    let proxy = Proxy::start(broker_addr()).await;
    let cfg = outage_config("cut", mode, &proxy.uri());
    let app = spawn_app(&cfg).await;
    let mut tap = Tap::new(&cfg.exchange, "#").await;
    let client = reqwest::Client::new();
    let concurrency = 8u64;
    let mut accepted = HashSet::new();

    async fn burst(
        client: &reqwest::Client,
        base: &str,
        tag: &str,
        range: std::ops::Range<u64>,
        concurrency: u64,
    ) -> Vec<Option<String>> {
        let mut out = vec![];
        let ns: Vec<u64> = range.collect();
        for chunk in ns.chunks(concurrency as usize) {
            let futs = chunk.iter().map(|n| post(client, base, k_body(tag, *n)));
            for r in futures_util::future::join_all(futs).await {
                out.push(r.expect("request"));
            }
        }
        out
    }

    let tag = uuid::Uuid::new_v4().simple().to_string();
    for id in burst(&client, &app.base, &tag, 0..50, concurrency).await {
        accepted.insert(id.expect("200 before the cut"));
    }
    proxy.cut();
    for id in burst(&client, &app.base, &tag, 50..150, concurrency).await {
        accepted.insert(id.expect("200 during the cut: spooled"));
    }
    let ready: Value = app.get("/readyz").await.json().await.unwrap();
    assert_eq!(ready["status"], "degraded", "{ready}");
    assert!(ready["spool"]["depth"].as_u64().unwrap() > 0, "{ready}");
    proxy.restore();
    for id in burst(&client, &app.base, &tag, 150..200, concurrency).await {
        accepted.insert(id.expect("200 after the restore"));
    }
    assert_eq!(accepted.len(), 200);
    let (counts, _) = collect(&mut tap, &accepted, Duration::from_secs(30)).await;
    let extra: HashSet<_> = counts.keys().filter(|k| !accepted.contains(*k)).collect();
    assert!(
        extra.is_empty(),
        "only accepted events are published: {extra:?}"
    );
    let dups = counts.values().filter(|c| **c > 1).count() as u64;
    assert!(
        dups <= concurrency,
        "duplicates only for publishes unconfirmed at the cut: {dups}"
    );
    // The spool drains completely once the broker is back.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ready: Value = app.get("/readyz").await.json().await.unwrap();
        if ready["status"] == "ok" {
            break;
        }
        assert!(Instant::now() < deadline, "never ready again: {ready}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("hookrelay_broker_reconnects_total 1"),
        "{metrics}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_and_restore_loses_nothing_broker_mode() {
    cut_and_restore("broker").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_and_restore_loses_nothing_spool_mode() {
    cut_and_restore("spool").await;
}

async fn restart_on_a_spool(mode: &str) {
    let proxy = Proxy::start(broker_addr()).await;
    let mut cfg = outage_config("restart", mode, &proxy.uri());
    let mut tap = Tap::new(&cfg.exchange, "#").await;
    proxy.cut();
    let mut relay = RelayProcess::start(&cfg);
    let client = reqwest::Client::new();
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let mut ids = vec![];
    for n in 0..30 {
        ids.push(
            post(&client, &relay.base, k_body(&tag, n))
                .await
                .unwrap()
                .expect("200 while the broker is away"),
        );
    }
    relay.signal("-TERM");
    assert!(
        relay.wait(Duration::from_secs(20)).success(),
        "exit 0 on SIGTERM"
    );
    tap.expect_nothing().await;
    // Straight against the broker this time, same spool.
    cfg.set("HOOKRELAY__AMQP__URI", BROKER);
    let relay = RelayProcess::start(&cfg);
    let want: HashSet<String> = ids.iter().cloned().collect();
    let (counts, order) = collect(&mut tap, &want, Duration::from_secs(30)).await;
    assert!(counts.values().all(|c| *c == 1), "each exactly once");
    assert_eq!(order, ids, "published in arrival order");
    drop(relay);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_on_a_spool_publishes_everything_in_order_broker_mode() {
    restart_on_a_spool("broker").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_on_a_spool_publishes_everything_in_order_spool_mode() {
    restart_on_a_spool("spool").await;
}

/// 16 clients post for a while, then the relay is stopped by `signal`; every 200 must be
/// in the queue, or in the spool and published on the next start.
async fn stop_under_load(mode: &str, signal: &str) {
    let mut cfg = outage_config("load", mode, BROKER);
    let mut tap = Tap::new(&cfg.exchange, "#").await;
    let mut relay = RelayProcess::start(&cfg);
    let accepted = Arc::new(Mutex::new(HashSet::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let counter = Arc::new(AtomicU64::new(0));
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let mut clients = vec![];
    for _ in 0..16 {
        let (accepted, stop, counter, base, tag) = (
            accepted.clone(),
            stop.clone(),
            counter.clone(),
            relay.base.clone(),
            tag.clone(),
        );
        clients.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            while !stop.load(Ordering::Relaxed) {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                match post(&client, &base, k_body(&tag, n)).await {
                    Ok(Some(id)) => {
                        accepted.lock().unwrap().insert(id);
                    }
                    Ok(None) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    relay.signal(signal);
    let status = relay.wait(Duration::from_secs(30));
    if signal == "-TERM" {
        assert!(status.success(), "exit 0 on SIGTERM, got {status:?}");
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let want = accepted.lock().unwrap().clone();
    assert!(
        want.len() > 50,
        "load produced accepted events: {}",
        want.len()
    );
    // Whatever was spooled is published by the next start.
    let relay = RelayProcess::start(&cfg);
    let (counts, _) = collect(&mut tap, &want, Duration::from_secs(60)).await;
    assert!(want.iter().all(|id| counts.contains_key(id)));
    drop(relay);
    cfg.set("HOOKRELAY__AMQP__URI", BROKER);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_loses_nothing_broker_mode() {
    stop_under_load("broker", "-TERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_loses_nothing_spool_mode() {
    stop_under_load("spool", "-TERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_nothing_broker_mode() {
    stop_under_load("broker", "-KILL").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_nothing_spool_mode() {
    stop_under_load("spool", "-KILL").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_spool_answers_503_and_loses_nothing() {
    let proxy = Proxy::start(broker_addr()).await;
    let mut cfg = outage_config("full", "broker", &proxy.uri());
    // Room for a handful of events only.
    cfg.set("HOOKRELAY__SPOOL__MAX_BYTES", "6000");
    let app = spawn_app(&cfg).await;
    let mut tap = Tap::new(&cfg.exchange, "#").await;
    proxy.cut();
    let client = reqwest::Client::new();
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let mut accepted = HashSet::new();
    let mut refused = 0;
    for n in 0..20 {
        let r = client
            .post(format!("{}/webhooks/kommunicate", app.base))
            .header("content-type", "application/json")
            .header("authentication", "Basic YWJjZGVm")
            .body(k_body(&tag, n))
            .send()
            .await
            .unwrap();
        match r.status().as_u16() {
            200 => {
                let v: Value = r.json().await.unwrap();
                accepted.insert(v["id"].as_str().unwrap().to_owned());
            }
            503 => {
                assert!(r.headers().get("retry-after").is_some());
                let v: Value = r.json().await.unwrap();
                assert_eq!(v["error"], "unavailable");
                refused += 1;
            }
            s => panic!("unexpected status {s}"),
        }
    }
    assert!(
        !accepted.is_empty() && refused > 0,
        "accepted {} refused {refused}",
        accepted.len()
    );
    let ready = app.get("/readyz").await;
    assert_eq!(
        ready.status(),
        503,
        "a full spool with no broker is unavailable"
    );
    proxy.restore();
    let (counts, _) = collect(&mut tap, &accepted, Duration::from_secs(30)).await;
    assert_eq!(counts.len(), accepted.len(), "exactly the accepted events");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_list_skips_a_dead_node() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let uri = format!("amqp://guest:guest@{dead}/%2f, {BROKER}");
    let cfg = outage_config("nodes", "broker", &uri);
    let app = spawn_app(&cfg).await;
    let mut tap = Tap::new(&cfg.exchange, "#").await;
    let ready: Value = app.get("/readyz").await.json().await.unwrap();
    assert_eq!(ready["broker"], "connected");
    let r = app
        .post_signed("kommunicate", &fixture("kommunicate/message_group.json"))
        .await;
    assert_eq!(r.status(), 200);
    let d = tap.next().await;
    assert_eq!(d.routing_key.as_str(), "kommunicate.message.created");
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains(
        "hookrelay_events_published_total{routing_key=\"kommunicate.message.created\"} 1"
    ));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_ask_for_16_kib_frames_unless_the_uri_sets_frame_max() {
    // lapin's two I/O buffers hold 32 frames each: 16 KiB frames keep them at 1 MiB
    // instead of 8 MiB at RabbitMQ's default (128 KiB). A URI's own frame_max wins.
    let cfg = TestConfig::new("frames");
    let mut amqp = cfg.validated().raw.amqp;
    let conn = hookrelay_common::amqp::connect(&amqp, "frame test")
        .await
        .unwrap();
    assert_eq!(
        conn.configuration().frame_max(),
        hookrelay_common::amqp::DEFAULT_FRAME_MAX
    );
    let _ = conn.close(200, "done".into()).await;
    amqp.uri = vec![hookrelay_common::Secret::new(format!(
        "{BROKER}?frame_max=65536"
    ))];
    let conn = hookrelay_common::amqp::connect(&amqp, "frame test")
        .await
        .unwrap();
    assert_eq!(conn.configuration().frame_max(), 65536);
    let _ = conn.close(200, "done".into()).await;
}
