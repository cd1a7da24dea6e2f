//! The dedup window shared through Redis (`dedup.backend = "redis"`): one delivery sent to
//! two relays is published once, racing copies never get a 200 for an event that did not
//! become durable, and a Redis outage falls back to each relay's own window. Each test
//! uses its own key prefix on the shared Redis (127.0.0.1:6379; `HOOKRELAY_TEST_REDIS_URL`
//! overrides), and the outage test its own redis-server on a free port.

use crate::helpers::*;
use serde_json::Value;
use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn redis_url() -> String {
    std::env::var("HOOKRELAY_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379/0".to_owned())
}

/// A connection to the test's Redis, or a loud failure saying how to get one.
async fn redis_conn(url: &str) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(url).expect("redis url");
    match tokio::time::timeout(
        Duration::from_secs(3),
        client.get_multiplexed_async_connection(),
    )
    .await
    {
        Ok(Ok(c)) => c,
        other => panic!(
            "Redis is not reachable at {url} ({other:?}): the test command \
             (scripts/test.sh) starts redis-server; install it with apt-get install redis-server"
        ),
    }
}

/// A relay sharing the window in `url` under `prefix`, on the test's exchange.
fn redis_config(exchange_of: Option<&TestConfig>, url: &str, prefix: &str) -> TestConfig {
    let mut cfg = TestConfig::new("dedup");
    if let Some(first) = exchange_of {
        cfg.set("HOOKRELAY__AMQP__EXCHANGE", &first.exchange);
        cfg.exchange = first.exchange.clone();
    }
    cfg.set("HOOKRELAY__DEDUP__BACKEND", "redis");
    cfg.set("HOOKRELAY__DEDUP__REDIS_URL", url);
    cfg.set("HOOKRELAY__DEDUP__REDIS_KEY_PREFIX", prefix);
    cfg.set("HOOKRELAY__DEDUP__REDIS_TIMEOUT_MS", "300");
    cfg
}

fn prefix() -> String {
    format!("hrtest:{}:", uuid::Uuid::new_v4().simple())
}

fn k_body(key: &str) -> Vec<u8> {
    format!(r#"{{"key":"{key}","from":"user-1","groupId":42,"message":"hello {key}","timeStamp":1791969697000}}"#)
        .into_bytes()
}

/// Post a Kommunicate delivery; (status, duplicate flag, id).
async fn post(app: &TestApp, body: &[u8]) -> (u16, Option<bool>, Option<String>) {
    let r = app.post_signed("kommunicate", body).await;
    let status = r.status().as_u16();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    (
        status,
        v["duplicate"].as_bool(),
        v["id"].as_str().map(str::to_owned),
    )
}

/// Every message on the tap within a quiet period, counted by id.
async fn drain_tap(tap: &mut Tap, quiet: Duration) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    while let Some(d) = tap.next_within(quiet).await {
        let id = d.properties.message_id().as_ref().unwrap().to_string();
        *counts.entry(id).or_default() += 1;
    }
    counts
}

async fn readyz_dedup(app: &TestApp) -> Value {
    let v: Value = app.get("/readyz").await.json().await.unwrap();
    v["dedup"].clone()
}

async fn metric_up(app: &TestApp) -> String {
    let m = app.get("/metrics").await.text().await.unwrap();
    m.lines()
        .find(|l| l.starts_with("hookrelay_dedup_backend_up "))
        .unwrap_or_else(|| panic!("no hookrelay_dedup_backend_up in /metrics"))
        .to_owned()
}

async fn delete_prefix(url: &str, prefix: &str) {
    let mut c = redis_conn(url).await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut c)
        .await
        .unwrap_or_default();
    if !keys.is_empty() {
        let _: Result<(), _> = redis::cmd("DEL").arg(keys).query_async(&mut c).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_delivery_on_two_relays_is_published_once() {
    let url = redis_url();
    let pfx = prefix();
    let _ = redis_conn(&url).await;
    let cfg_a = redis_config(None, &url, &pfx);
    let cfg_b = redis_config(Some(&cfg_a), &url, &pfx);
    let a = spawn_app(&cfg_a).await;
    let b = spawn_app(&cfg_b).await;
    let mut tap = Tap::new(&cfg_a.exchange, "#").await;
    assert_eq!(
        readyz_dedup(&a).await,
        serde_json::json!({"backend": "redis", "connected": true})
    );
    assert_eq!(metric_up(&b).await, "hookrelay_dedup_backend_up 1");

    let body = k_body("two-relays");
    let (s1, d1, id1) = post(&a, &body).await;
    assert_eq!((s1, d1), (200, Some(false)), "first copy, on relay A");
    let (s2, d2, id2) = post(&b, &body).await;
    assert_eq!(
        (s2, d2),
        (200, Some(true)),
        "the retry on relay B is a duplicate"
    );
    assert_eq!(id1, id2);
    let counts = drain_tap(&mut tap, Duration::from_secs(1)).await;
    assert_eq!(counts.len(), 1, "one event: {counts:?}");
    assert_eq!(counts[id1.as_ref().unwrap()], 1, "published once");
    let m = b.get("/metrics").await.text().await.unwrap();
    assert!(
        m.contains("hookrelay_duplicates_dropped_total{source=\"kommunicate\"} 1"),
        "B counts the duplicate"
    );
    // The key in Redis is done and expires with the window.
    let mut c = redis_conn(&url).await;
    let key = format!("{pfx}{}", id1.unwrap());
    let (v, ttl): (Option<String>, i64) = redis::pipe()
        .cmd("GET")
        .arg(&key)
        .cmd("PTTL")
        .arg(&key)
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(v.as_deref(), Some("d"));
    assert!(
        ttl > 590_000 && ttl <= 600_000,
        "expires after dedup.window_secs: {ttl} ms"
    );
    a.stop().await;
    b.stop().await;
    delete_prefix(&url, &pfx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_racing_to_two_relays_publish_once() {
    let url = redis_url();
    let pfx = prefix();
    let _ = redis_conn(&url).await;
    let cfg_a = redis_config(None, &url, &pfx);
    let cfg_b = redis_config(Some(&cfg_a), &url, &pfx);
    let a = spawn_app(&cfg_a).await;
    let b = spawn_app(&cfg_b).await;
    let mut tap = Tap::new(&cfg_a.exchange, "#").await;
    let n = 40;
    let mut ids = vec![];
    for i in 0..n {
        let body = k_body(&format!("race-{i}"));
        let ((sa, da, ida), (sb, db, idb)) = tokio::join!(post(&a, &body), post(&b, &body));
        assert_eq!((sa, sb), (200, 200), "both copies answered 200");
        assert_eq!(ida, idb);
        let mut flags = [da.unwrap(), db.unwrap()];
        flags.sort();
        assert_eq!(
            flags,
            [false, true],
            "exactly one copy is new, the other a duplicate (race {i})"
        );
        ids.push(ida.unwrap());
    }
    let counts = drain_tap(&mut tap, Duration::from_secs(1)).await;
    for id in &ids {
        assert_eq!(counts.get(id), Some(&1), "{id} published exactly once");
    }
    assert_eq!(counts.len(), n, "nothing else published");
    a.stop().await;
    b.stop().await;
    delete_prefix(&url, &pfx).await;
}

/// Relay A cannot make anything durable (its broker is a closed port, its spool is off):
/// every copy racing to A and B must end as B's own durable event, never as a duplicate
/// of A's failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_never_gets_200_for_the_other_relays_failure() {
    let url = redis_url();
    let pfx = prefix();
    let _ = redis_conn(&url).await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut cfg_a = redis_config(None, &url, &pfx);
    cfg_a.set(
        "HOOKRELAY__AMQP__URI",
        &format!("amqp://guest:guest@{dead}/%2f"),
    );
    cfg_a.set("HOOKRELAY__AMQP__CONNECT_TIMEOUT_MS", "200");
    cfg_a.set("HOOKRELAY__SPOOL__ENABLED", "false");
    let cfg_b = redis_config(Some(&cfg_a), &url, &pfx);
    let a = spawn_app(&cfg_a).await;
    let b = spawn_app(&cfg_b).await;
    let mut tap = Tap::new(&cfg_b.exchange, "#").await;
    let n = 30;
    let mut ids = vec![];
    let mut a_dups = 0;
    for i in 0..n {
        let body = k_body(&format!("fail-{i}"));
        let ((sa, da, _), (sb, db, idb)) = tokio::join!(post(&a, &body), post(&b, &body));
        // A's only possible 200 is a duplicate of what B made durable.
        assert!(
            sa == 503 || (sa == 200 && da == Some(true)),
            "A has nothing durable: {sa} duplicate={da:?} (race {i})"
        );
        a_dups += usize::from(sa == 200);
        assert_eq!(
            (sb, db),
            (200, Some(false)),
            "B's copy is processed by B, never answered duplicate for A's failure (race {i})"
        );
        ids.push(idb.unwrap());
    }
    let counts = drain_tap(&mut tap, Duration::from_secs(1)).await;
    for id in &ids {
        assert_eq!(counts.get(id), Some(&1), "{id} published once, by B");
    }
    eprintln!("{a_dups} of {n} copies on A came after B's and were answered duplicate");
    a.stop().await;
    b.stop().await;
    delete_prefix(&url, &pfx).await;
}

/// The waiting side, driven from Redis: a claim held by another relay is waited for, and
/// the copy then answers from what that relay did (done: duplicate; released or expired:
/// processed here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_claim_is_waited_for_until_done_released_or_expired() {
    let url = redis_url();
    let pfx = prefix();
    let mut c = redis_conn(&url).await;
    let cfg = redis_config(None, &url, &pfx);
    let app = spawn_app(&cfg).await;
    let mut tap = Tap::new(&cfg.exchange, "#").await;
    // Find the id of each body first with a throwaway relay on its own prefix, so the
    // claims can be planted before the copies arrive.
    let probe_cfg = redis_config(None, &url, &prefix());
    let probe = spawn_app(&probe_cfg).await;
    let mut ids = vec![];
    for what in ["done", "released", "expired"] {
        let (_, _, id) = post(&probe, &k_body(&format!("pending-{what}"))).await;
        ids.push(id.expect("an id"));
    }
    probe.stop().await;
    remove_relay_topology(&probe_cfg.exchange).await;

    for id in &ids {
        let _: () = redis::cmd("SET")
            .arg(format!("{pfx}{id}"))
            .arg("p:another-relay")
            .arg("PX")
            .arg(1500)
            .query_async(&mut c)
            .await
            .unwrap();
    }
    let t0 = Instant::now();
    let bodies = ["done", "released", "expired"].map(|w| k_body(&format!("pending-{w}")));
    let done = post(&app, &bodies[0]);
    let released = post(&app, &bodies[1]);
    let expired = post(&app, &bodies[2]);
    let settle = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut c = redis_conn(&url).await;
        let _: () = redis::cmd("SET")
            .arg(format!("{pfx}{}", ids[0]))
            .arg("d")
            .query_async(&mut c)
            .await
            .unwrap();
        let _: () = redis::cmd("DEL")
            .arg(format!("{pfx}{}", ids[1]))
            .query_async(&mut c)
            .await
            .unwrap();
    };
    let (done, released, expired, ()) = tokio::join!(done, released, expired, settle);
    let waited = t0.elapsed();
    assert_eq!(
        (done.0, done.1),
        (200, Some(true)),
        "done on the other relay: duplicate"
    );
    assert_eq!(
        (released.0, released.1),
        (200, Some(false)),
        "released: processed here"
    );
    assert_eq!(
        (expired.0, expired.1),
        (200, Some(false)),
        "expired: processed here"
    );
    assert!(
        waited >= Duration::from_millis(1200),
        "the expired claim was waited out ({waited:?})"
    );
    let counts = drain_tap(&mut tap, Duration::from_secs(1)).await;
    assert_eq!(
        counts.get(&ids[0]),
        None,
        "the done one is not published here"
    );
    assert_eq!(counts.get(&ids[1]), Some(&1));
    assert_eq!(counts.get(&ids[2]), Some(&1));
    app.stop().await;
    delete_prefix(&url, &pfx).await;
}

/// A redis-server of the test's own on a free port (so the shared one is never stopped).
struct PrivateRedis {
    child: Option<Child>,
    port: u16,
}

impl PrivateRedis {
    fn start(port: u16) -> Self {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run redis-server ({e}): install it (apt-get install redis-server); \
                     scripts/test.sh does"
                )
            });
        let until = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < until,
                "redis-server did not open port {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            child: Some(child),
            port,
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn wait_dedup_connected(app: &TestApp, want: bool) {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let d = readyz_dedup(app).await;
        if d["connected"] == want {
            assert_eq!(d["backend"], "redis");
            return;
        }
        assert!(
            Instant::now() < until,
            "/readyz dedup never became connected={want}: {d}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_mid_load_refuses_nothing_and_comes_back() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut redis_srv = PrivateRedis::start(port);
    let url = redis_srv.url();
    let pfx = prefix();
    let cfg_a = redis_config(None, &url, &pfx);
    let cfg_b = redis_config(Some(&cfg_a), &url, &pfx);
    let a = std::sync::Arc::new(spawn_app(&cfg_a).await);
    let b = spawn_app(&cfg_b).await;
    let mut tap = Tap::new(&cfg_a.exchange, "#").await;
    wait_dedup_connected(&a, true).await;

    // Load on A all along: every request must be answered 200.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (a, stop) = (a.clone(), stop.clone());
        tokio::spawn(async move {
            let mut answered = vec![];
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (s, d, id) = post(&a, &k_body(&format!("load-{i}"))).await;
                answered.push((i, s, d, id));
                i += 1;
            }
            answered
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (s, _, before_id) = post(&a, &k_body("before-outage")).await;
    assert_eq!(s, 200);

    redis_srv.kill();
    wait_dedup_connected(&a, false).await;
    assert_eq!(metric_up(&a).await, "hookrelay_dedup_backend_up 0");
    let ready: Value = a.get("/readyz").await.json().await.unwrap();
    assert_eq!(
        ready["status"], "ok",
        "Redis away does not make the relay less ready"
    );
    // Fallback: A's own window still answers its duplicates.
    let body = k_body("during-outage");
    assert_eq!(post(&a, &body).await.1, Some(false));
    assert_eq!(post(&a, &body).await.1, Some(true), "A's own window");
    assert_eq!(
        post(&a, &k_body("before-outage")).await.1,
        Some(true),
        "remembered from before the outage"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut redis_srv = PrivateRedis::start(port);
    wait_dedup_connected(&a, true).await;
    wait_dedup_connected(&b, true).await;
    assert_eq!(metric_up(&a).await, "hookrelay_dedup_backend_up 1");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let answered = load.await.unwrap();
    assert!(answered.len() > 20, "load ran: {} requests", answered.len());
    let refused: Vec<_> = answered.iter().filter(|r| r.1 != 200).collect();
    assert!(refused.is_empty(), "no webhook refused: {refused:?}");
    assert!(answered.iter().all(|r| r.2 == Some(false)), "all new");

    // Back on Redis: a delivery on A is a duplicate on B again.
    let body = k_body("after-outage");
    assert_eq!(post(&a, &body).await.1, Some(false));
    assert_eq!(post(&b, &body).await.1, Some(true), "shared again");

    let counts = drain_tap(&mut tap, Duration::from_secs(1)).await;
    let dups: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dups.is_empty(), "published more than once: {dups:?}");
    for (_, _, _, id) in &answered {
        assert!(
            counts.contains_key(id.as_ref().unwrap()),
            "every 200 published"
        );
    }
    assert!(counts.contains_key(before_id.as_ref().unwrap()));
    assert_eq!(
        counts.len(),
        answered.len() + 3,
        "the load, before, during and after"
    );
    b.stop().await;
    std::sync::Arc::try_unwrap(a)
        .ok()
        .expect("the load task is done")
        .stop()
        .await;
    redis_srv.kill();
}
