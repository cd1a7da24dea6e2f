//! Spool faults: a disk that really fills up (a small tmpfs), recovery without a
//! restart, damaged spool files at start, and the `hookrelay spool` commands. Every case
//! checks the statuses, `/readyz`, the metrics, and that every 200 reaches the queue.

use crate::helpers::*;
use crate::proxy::Proxy;
use serde_json::Value;
use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub(crate) fn broker_addr() -> std::net::SocketAddr {
    "127.0.0.1:5672".parse().unwrap()
}

pub(crate) fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("hookrelay-{tag}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A tmpfs of a given size, unmounted (and its mount point removed) when dropped, even
/// when the test fails.
pub(crate) struct Tmpfs {
    pub(crate) path: PathBuf,
}

impl Tmpfs {
    /// None (after a loud SKIPPED line) where mounting is impossible (not root).
    pub(crate) fn mount(tag: &str, size: &str, options: &str) -> Option<Self> {
        let path = temp_dir(tag);
        let opts = if options.is_empty() {
            format!("size={size}")
        } else {
            format!("size={size},{options}")
        };
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &opts, "tmpfs"])
            .arg(&path)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Self { path }),
            other => {
                let _ = std::fs::remove_dir(&path);
                let why = format!(
                    "{tag}: cannot mount a {size} tmpfs (needs root; CI runs as root): {:?}",
                    other.map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
                );
                skip_or_fail(&why);
                None
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        let _ = std::fs::remove_dir(&self.path);
    }
}

/// A test that cannot run here fails, unless `HOOKRELAY_TESTS_ALLOW_SKIP=1` says that
/// skipping is fine on this machine; then it says so loudly on stderr.
pub(crate) fn skip_or_fail(why: &str) {
    if std::env::var_os("HOOKRELAY_TESTS_ALLOW_SKIP").is_some_and(|v| v == "1") {
        eprintln!("SKIPPED: {why}");
    } else {
        panic!("{why} (set HOOKRELAY_TESTS_ALLOW_SKIP=1 to skip this test instead)");
    }
}

/// The relay as a process, its log lines (JSON) collected.
pub(crate) struct Relay {
    child: Child,
    pub(crate) base: String,
    log: Arc<Mutex<Vec<String>>>,
}

pub(crate) fn relay_cmd(env: &[(String, String)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hookrelay"));
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("HOOKRELAY_CONFIG")
        .env("HOOKRELAY__LOG__FORMAT", "json");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

impl Relay {
    pub(crate) fn start(cfg: &TestConfig) -> Self {
        let mut cmd = relay_cmd(&cfg.env);
        cmd.arg("serve")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn hookrelay");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let log2 = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(i) = line.find("listening on ") {
                    let addr: String = line[i + 13..]
                        .chars()
                        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
                        .collect();
                    let _ = tx.send(addr);
                }
                log2.lock().unwrap().push(line);
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("relay did not start: {:?}", log.lock().unwrap()));
        Self {
            child,
            base: format!("http://{addr}"),
            log,
        }
    }

    /// Log lines containing `needle`.
    fn lines_with(&self, needle: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    pub(crate) fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                assert!(status.success(), "exit 0 on SIGTERM, got {status:?}");
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("relay did not stop: {:?}", self.log.lock().unwrap());
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn outage_config(tag: &str, mode: &str, uri: &str, spool_dir: &Path) -> TestConfig {
    let mut cfg = TestConfig::new(tag);
    cfg.set("HOOKRELAY__AMQP__URI", uri);
    cfg.set("HOOKRELAY__AMQP__CONFIRM_TIMEOUT_MS", "1000");
    cfg.set("HOOKRELAY__AMQP__CONNECT_TIMEOUT_MS", "1000");
    cfg.set("HOOKRELAY__AMQP__RECONNECT_INITIAL_MS", "50");
    cfg.set("HOOKRELAY__AMQP__RECONNECT_MAX_MS", "300");
    cfg.set("HOOKRELAY__AMQP__HEARTBEAT_SECS", "2");
    cfg.set("HOOKRELAY__DURABILITY__ACK", mode);
    cfg.set("HOOKRELAY__SPOOL__DIR", spool_dir.to_str().unwrap());
    cfg
}

/// A Kommunicate webhook of about `pad` bytes.
pub(crate) fn k_body(tag: &str, n: u64, pad: usize) -> Vec<u8> {
    format!(
        r#"{{"key":"{tag}-{n}","from":"user-{n}","groupId":42,"message":"{}","timeStamp":1791969697000}}"#,
        "x".repeat(pad)
    )
    .into_bytes()
}

/// Post one event: the status and, on 200, the event id.
pub(crate) async fn post(
    client: &reqwest::Client,
    base: &str,
    body: Vec<u8>,
) -> (u16, Option<String>) {
    let r = client
        .post(format!("{base}/webhooks/kommunicate"))
        .header("content-type", "application/json")
        .header("authentication", "Basic YWJjZGVm")
        .body(body)
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    if status == 200 {
        let v: Value = r.json().await.unwrap();
        (200, Some(v["id"].as_str().unwrap().to_owned()))
    } else {
        if status == 503 {
            assert!(r.headers().get("retry-after").is_some());
        }
        (status, None)
    }
}

pub(crate) async fn get_json(base: &str, path: &str) -> (u16, Value) {
    let r = reqwest::get(format!("{base}{path}")).await.expect("GET");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn metric(base: &str, name: &str) -> f64 {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no metric {name} in:\n{text}"))
}

/// Poll `/readyz` until `pred` holds.
async fn await_ready(base: &str, within: Duration, pred: impl Fn(u16, &Value) -> bool) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let (status, v) = get_json(base, "/readyz").await;
        if pred(status, &v) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "readyz never got there: {status} {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Receive until every id of `want` arrived; everything received, in order.
pub(crate) async fn receive_all(
    tap: &mut Tap,
    want: &HashSet<String>,
    within: Duration,
) -> Vec<String> {
    let deadline = Instant::now() + within;
    let mut got: Vec<String> = Vec::new();
    let mut seen = HashSet::new();
    while !want.iter().all(|id| seen.contains(id)) {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(d) = tap.next_within(left).await else {
            let missing = want.iter().filter(|id| !seen.contains(*id)).count();
            panic!("{missing} of {} accepted events never arrived", want.len());
        };
        let id = d.properties.message_id().as_ref().unwrap().to_string();
        seen.insert(id.clone());
        got.push(id);
    }
    while let Some(d) = tap.next_within(Duration::from_millis(500)).await {
        got.push(d.properties.message_id().as_ref().unwrap().to_string());
    }
    got
}

/// Post until the spool refuses: (ids answered 200 in order, ids of all posted bodies'
/// keys, how many 503).
async fn fill(
    client: &reqwest::Client,
    base: &str,
    tag: &str,
    from: u64,
    pad: usize,
    max: u64,
) -> (Vec<String>, u64, u64) {
    let mut ok = Vec::new();
    let mut refused = 0u64;
    let mut n = from;
    while n < from + max && refused < 5 {
        match post(client, base, k_body(tag, n, pad)).await {
            (200, Some(id)) => ok.push(id),
            (503, _) => refused += 1,
            (s, _) => panic!("unexpected status {s}"),
        }
        n += 1;
    }
    (ok, refused, n)
}

/// Broker away, the spool's disk fills up: 503 and a truthful /readyz. Broker back with
/// the disk still full: the relay reopens the spool, drains it (deletions give room
/// back inside the file), takes new events meanwhile (published directly) and becomes
/// healthy again, without a restart.
async fn disk_full_then_broker_back(mode: &str) {
    let Some(fs) = Tmpfs::mount("spool-enospc", "24m", "") else {
        return;
    };
    let proxy = Proxy::start(broker_addr()).await;
    let cfg = outage_config("enospc", mode, &proxy.uri(), &fs.path);
    let mut tap = Tap::new(&cfg.exchange, "#").await;
    let relay = Relay::start(&cfg);
    let client = reqwest::Client::new();
    let tag = uuid::Uuid::new_v4().simple().to_string();
    proxy.cut();
    await_ready(&relay.base, Duration::from_secs(10), |_, v| {
        v["broker"] == "disconnected"
    })
    .await;
    let (mut accepted, refused, next) = fill(&client, &relay.base, &tag, 0, 60_000, 700).await;
    assert!(
        accepted.len() > 20 && refused > 0,
        "a 24 MiB disk takes some 60 KB events and then refuses: {} accepted, {refused} refused",
        accepted.len()
    );
    let (status, ready) = get_json(&relay.base, "/readyz").await;
    assert_eq!(status, 503, "{ready}");
    assert_eq!(ready["status"], "unavailable", "{ready}");
    assert_eq!(ready["spool"]["healthy"], false, "{ready}");
    let why = ready["spool"]["error"].as_str().unwrap_or_default();
    assert!(why.contains("disk full"), "the reason is given: {ready}");
    assert_eq!(metric(&relay.base, "hookrelay_spool_healthy").await, 0.0);
    assert!(metric(&relay.base, "hookrelay_spool_errors_total").await >= 1.0);
    // The relay keeps running and keeps refusing while it cannot store.
    assert_eq!(
        post(&client, &relay.base, k_body(&tag, next, 10)).await.0,
        503
    );

    proxy.restore();
    await_ready(&relay.base, Duration::from_secs(15), |s, v| {
        s == 200 && v["broker"] == "connected"
    })
    .await;
    // New events are taken at once: the spool's trouble is no outage while the broker
    // is up (published directly, or spooled once the spool is healthy again).
    for n in next + 1..next + 21 {
        let (s, id) = post(&client, &relay.base, k_body(&tag, n, 1000)).await;
        assert_eq!(s, 200, "accepted while the broker is up");
        accepted.push(id.unwrap());
    }
    let want: HashSet<String> = accepted.iter().cloned().collect();
    let got = receive_all(&mut tap, &want, Duration::from_secs(90)).await;
    assert!(
        got.iter().all(|id| id.len() > 10),
        "only real events are published"
    );
    let ready = await_ready(&relay.base, Duration::from_secs(60), |s, v| {
        s == 200 && v["status"] == "ok"
    })
    .await;
    assert_eq!(ready["spool"]["healthy"], true, "{ready}");
    assert_eq!(ready["spool"]["error"], Value::Null, "{ready}");
    assert_eq!(metric(&relay.base, "hookrelay_spool_healthy").await, 1.0);
    assert_eq!(metric(&relay.base, "hookrelay_spool_depth").await, 0.0);
    assert_eq!(metric(&relay.base, "hookrelay_spool_bytes").await, 0.0);
    // Healthy again: a new event while the broker is away is spooled (200) again.
    proxy.cut();
    await_ready(&relay.base, Duration::from_secs(10), |_, v| {
        v["broker"] == "disconnected"
    })
    .await;
    let (s, id) = post(&client, &relay.base, k_body(&tag, next + 100, 1000)).await;
    assert_eq!(s, 200, "the spool takes events again without a restart");
    proxy.restore();
    let last: HashSet<String> = [id.unwrap()].into();
    receive_all(&mut tap, &last, Duration::from_secs(30)).await;
    // One line per change of state, not one per retry.
    assert_eq!(
        relay.lines_with("spool write failed"),
        1,
        "{:?}",
        relay.log.lock().unwrap()
    );
    assert_eq!(relay.lines_with("spool writable again"), 1);
    assert!(relay.lines_with("spool drain paused") <= 3);
    relay.stop();
    drop(fs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_answers_503_and_recovers_when_the_broker_is_back_broker_mode() {
    disk_full_then_broker_back("broker").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_answers_503_and_recovers_when_the_broker_is_back_spool_mode() {
    disk_full_then_broker_back("spool").await;
}

/// Broker away, disk filled (by something else and the spool): 503. Space freed: the
/// spool takes events again, and everything is published in arrival order once the
/// broker is back.
async fn disk_full_then_space_freed(mode: &str) {
    let Some(fs) = Tmpfs::mount("spool-freed", "16m", "") else {
        return;
    };
    let spool_dir = fs.path.join("spool");
    std::fs::create_dir_all(&spool_dir).unwrap();
    let filler = fs.path.join("filler");
    std::fs::write(&filler, vec![1u8; 8 << 20]).unwrap();
    let proxy = Proxy::start(broker_addr()).await;
    let cfg = outage_config("freed", mode, &proxy.uri(), &spool_dir);
    let mut tap = Tap::new(&cfg.exchange, "#").await;
    proxy.cut();
    let relay = Relay::start(&cfg);
    let client = reqwest::Client::new();
    let tag = uuid::Uuid::new_v4().simple().to_string();
    await_ready(&relay.base, Duration::from_secs(10), |_, v| {
        v["broker"] == "disconnected"
    })
    .await;
    let (mut accepted, refused, next) = fill(&client, &relay.base, &tag, 0, 30_000, 700).await;
    assert!(
        !accepted.is_empty() && refused > 0,
        "{} / {refused}",
        accepted.len()
    );
    let (status, ready) = get_json(&relay.base, "/readyz").await;
    assert_eq!(
        (status, &ready["status"]),
        (503, &Value::from("unavailable")),
        "{ready}"
    );
    assert_eq!(metric(&relay.base, "hookrelay_spool_healthy").await, 0.0);

    std::fs::remove_file(&filler).unwrap();
    let ready = await_ready(&relay.base, Duration::from_secs(30), |s, v| {
        s == 200 && v["spool"]["healthy"] == true
    })
    .await;
    assert_eq!(ready["status"], "degraded", "{ready}");
    assert_eq!(metric(&relay.base, "hookrelay_spool_healthy").await, 1.0);
    for n in next..next + 10 {
        let (s, id) = post(&client, &relay.base, k_body(&tag, n, 1000)).await;
        assert_eq!(s, 200, "spooled again once there is room");
        accepted.push(id.unwrap());
    }
    proxy.restore();
    let want: HashSet<String> = accepted.iter().cloned().collect();
    let got = receive_all(&mut tap, &want, Duration::from_secs(60)).await;
    let mut firsts = Vec::new();
    let mut seen = HashSet::new();
    for id in &got {
        if seen.insert(id.clone()) {
            firsts.push(id.clone());
        }
    }
    assert_eq!(firsts, accepted, "published once each, in arrival order");
    await_ready(&relay.base, Duration::from_secs(30), |s, v| {
        s == 200 && v["status"] == "ok"
    })
    .await;
    assert_eq!(relay.lines_with("spool write failed"), 1);
    relay.stop();
    drop(fs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_recovers_when_space_is_freed_broker_mode() {
    disk_full_then_space_freed("broker").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_recovers_when_space_is_freed_spool_mode() {
    disk_full_then_space_freed("spool").await;
}

/// The spool's disk is full (filled by something else) and stays full, the broker is
/// up: new events are published directly, answered 200, and `/readyz` says `degraded`
/// with the spool's reason, instead of refusing everything for a disk problem.
async fn failed_spool_with_the_broker_up(mode: &str) {
    let Some(fs) = Tmpfs::mount("spool-direct", "4m", "") else {
        return;
    };
    let spool_dir = fs.path.join("spool");
    std::fs::create_dir_all(&spool_dir).unwrap();
    let proxy = Proxy::start(broker_addr()).await;
    let cfg = outage_config("direct", mode, &proxy.uri(), &spool_dir);
    let mut tap = Tap::new(&cfg.exchange, "#").await;
    let relay = Relay::start(&cfg);
    // Fill the disk to the last byte once the relay's store exists.
    let filler = fs.path.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let chunk = vec![7u8; 64 << 10];
    while std::io::Write::write_all(&mut f, &chunk).is_ok() {}
    while std::io::Write::write_all(&mut f, &[7u8]).is_ok() {}
    drop(f);
    let client = reqwest::Client::new();
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let mut accepted = Vec::new();
    let mut n = 0;
    if mode == "broker" {
        // Broker mode only writes to the spool while the broker is away.
        proxy.cut();
        await_ready(&relay.base, Duration::from_secs(10), |_, v| {
            v["broker"] == "disconnected"
        })
        .await;
        let mut refused = 0;
        while refused == 0 {
            match post(&client, &relay.base, k_body(&tag, n, 20_000)).await {
                (200, Some(id)) => accepted.push(id),
                (503, _) => refused += 1,
                (s, _) => panic!("unexpected {s}"),
            }
            n += 1;
            assert!(n < 500, "the full disk never refused");
        }
        proxy.restore();
        await_ready(&relay.base, Duration::from_secs(15), |_, v| {
            v["broker"] == "connected"
        })
        .await;
    }
    let spooled_before = metric(&relay.base, "hookrelay_events_spooled_total").await;
    for _ in 0..30 {
        let (s, id) = post(&client, &relay.base, k_body(&tag, n, 20_000)).await;
        assert_eq!(s, 200, "the broker takes it while the spool cannot");
        accepted.push(id.unwrap());
        n += 1;
    }
    let (status, ready) = get_json(&relay.base, "/readyz").await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["status"], "degraded", "{ready}");
    assert_eq!(ready["spool"]["healthy"], false, "{ready}");
    assert!(
        ready["spool"]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("disk full"),
        "{ready}"
    );
    assert_eq!(metric(&relay.base, "hookrelay_spool_healthy").await, 0.0);
    assert_eq!(
        metric(&relay.base, "hookrelay_events_spooled_total").await,
        spooled_before,
        "published directly, not spooled"
    );
    let want: HashSet<String> = accepted.iter().cloned().collect();
    receive_all(&mut tap, &want, Duration::from_secs(30)).await;
    assert_eq!(
        relay.lines_with("spool write failed"),
        1,
        "one line, not one per request"
    );
    // Room again: the spool heals by itself.
    std::fs::remove_file(&filler).unwrap();
    await_ready(&relay.base, Duration::from_secs(30), |s, v| {
        s == 200 && v["status"] == "ok" && v["spool"]["healthy"] == true
    })
    .await;
    relay.stop();
    drop(fs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_spool_with_the_broker_up_publishes_directly_broker_mode() {
    failed_spool_with_the_broker_up("broker").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_spool_with_the_broker_up_publishes_directly_spool_mode() {
    failed_spool_with_the_broker_up("spool").await;
}
