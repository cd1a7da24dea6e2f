//! Shared test plumbing: settings per test, spawning the app in-process or as a process,
//! a consumer bound to the test's exchange, and vendor-authentic requests.

use futures_util::StreamExt;
use hookrelay::settings::{Settings, Validated};
use hookrelay::startup::Application;
use hookrelay_common::topology;
use hookrelay_vendors::{Credentials, Vendor};
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use std::time::Instant;
use tokio::sync::oneshot;

pub const BROKER: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

pub fn unique(tag: &str) -> String {
    format!("test.{tag}.{}", uuid::Uuid::new_v4().simple())
}

pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub fn fixture(path: &str) -> Vec<u8> {
    std::fs::read(fixtures_dir().join(path)).unwrap_or_else(|e| panic!("fixture {path}: {e}"))
}

pub fn manifest() -> Value {
    serde_json::from_slice(&fixture("manifest.json")).unwrap()
}

/// Settings for one test: default config, own exchange and spool dir, port 0.
pub struct TestConfig {
    pub env: Vec<(String, String)>,
    pub exchange: String,
}

impl TestConfig {
    pub fn new(tag: &str) -> Self {
        let exchange = unique(tag);
        let spool_dir =
            std::env::temp_dir().join(format!("hookrelay-test-{}", uuid::Uuid::new_v4().simple()));
        // The relay refuses a missing spool.dir (a typo must not start an empty spool).
        std::fs::create_dir_all(&spool_dir).expect("create the test's spool dir");
        let mut c = Self {
            env: vec![],
            exchange: exchange.clone(),
        };
        c.set("HOOKRELAY__SERVER__BIND", "127.0.0.1:0");
        c.set("HOOKRELAY__SERVER__WORKERS", "2");
        c.set("HOOKRELAY__AMQP__URI", BROKER);
        c.set("HOOKRELAY__AMQP__EXCHANGE", &exchange);
        c.set("HOOKRELAY__SPOOL__DIR", spool_dir.to_str().unwrap());
        // A history stream per test would keep its disk on the shared broker until
        // deleted: off here; the history tests switch it on and delete their stream.
        c.set("HOOKRELAY__HISTORY__ENABLED", "false");
        c
    }

    pub fn set(&mut self, k: &str, v: &str) -> &mut Self {
        self.env.retain(|(key, _)| key != k);
        self.env.push((k.to_owned(), v.to_owned()));
        self
    }

    pub fn validated(&self) -> Validated {
        Settings::load_with_env(None, self.env.clone())
            .expect("load settings")
            .validate()
            .expect("valid settings")
    }
}

pub struct TestApp {
    pub base: String,
    pub settings: Validated,
    pub client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

/// `TEST_LOG=1` shows the app's logs (off by default: the tests assert, not print).
pub fn init_test_log() {
    if std::env::var_os("TEST_LOG").is_some() {
        hookrelay_common::logging::init(&hookrelay_common::logging::LogSettings {
            format: hookrelay_common::logging::LogFormat::Text,
            level: "debug".into(),
        });
    }
}

pub async fn spawn_app(cfg: &TestConfig) -> TestApp {
    init_test_log();
    let settings = cfg.validated();
    let app = Application::build(settings.clone())
        .await
        .expect("build app");
    let base = format!("http://127.0.0.1:{}", app.port());
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(app.run_until_stopped(async move {
        let _ = rx.await;
    }));
    TestApp {
        base,
        settings,
        client: reqwest::Client::new(),
        stop: Some(tx),
        task: Some(task),
    }
}

impl TestApp {
    /// Graceful shutdown, as on SIGTERM; returns once the app has fully stopped.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("join").expect("server result");
        }
    }

    pub fn credentials(&self, source: &str) -> (Vendor, Credentials) {
        let s = &self.settings.sources[source];
        (s.vendor, s.credentials.clone())
    }

    /// POST `body` to `source` with the headers its vendor would send.
    pub async fn post_signed(&self, source: &str, body: &[u8]) -> reqwest::Response {
        let (vendor, creds) = self.credentials(source);
        let headers = vendor.sign(&creds, body, time::OffsetDateTime::now_utc());
        let mut req = self
            .client
            .post(format!("{}/webhooks/{source}", self.base))
            .body(body.to_vec());
        for (k, v) in headers {
            req = req.header(k, v);
        }
        req.send().await.expect("request")
    }

    pub async fn post_raw(
        &self,
        source: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> reqwest::Response {
        let mut req = self
            .client
            .post(format!("{}/webhooks/{source}", self.base))
            .body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send().await.expect("request")
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("request")
    }
}

/// A consumer on a fresh exclusive queue bound to the test's exchange.
pub struct Tap {
    conn: Connection,
    consumer: lapin::Consumer,
    exchange: String,
}

impl Drop for Tap {
    /// Remove what the test's relay declared durably, so repeated runs leave the broker
    /// clean.
    fn drop(&mut self) {
        let ex = self.exchange.clone();
        tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(async {
                remove_topology_on(&self.conn, &ex).await;
                let _ = self.conn.close(200, "bye".into()).await;
            })
        });
    }
}

/// Delete a test relay's exchange, its alternate exchange, its unrouted queue and its
/// history stream.
async fn remove_topology_on(conn: &Connection, exchange: &str) {
    let unrouted = topology::unrouted_name(exchange);
    let Ok(ch) = conn.create_channel().await else {
        return;
    };
    let _ = ch
        .queue_delete(unrouted.as_str().into(), Default::default())
        .await;
    let _ = ch
        .queue_delete(
            topology::history_name(exchange).as_str().into(),
            Default::default(),
        )
        .await;
    let _ = ch
        .exchange_delete(unrouted.as_str().into(), Default::default())
        .await;
    let _ = ch
        .exchange_delete(exchange.into(), Default::default())
        .await;
}

/// For a test without a [`Tap`] (which does this when dropped): remove what its relay
/// declared, once the relay has stopped.
pub async fn remove_relay_topology(exchange: &str) {
    if let Ok(conn) = Connection::connect(BROKER, ConnectionProperties::default()).await {
        remove_topology_on(&conn, exchange).await;
        let _ = conn.close(200, "bye".into()).await;
    }
}

impl Tap {
    pub async fn new(exchange: &str, binding: &str) -> Self {
        let conn = Connection::connect(BROKER, ConnectionProperties::default())
            .await
            .expect("RabbitMQ must be running on 127.0.0.1:5672 (see README: the test command starts it)");
        let ch = conn.create_channel().await.unwrap();
        topology::declare_events(&ch, exchange).await.unwrap();
        let queue = unique("tap");
        ch.queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
        ch.queue_bind(
            queue.as_str().into(),
            exchange.into(),
            binding.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        let consumer = ch
            .basic_consume(
                queue.as_str().into(),
                "tap".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        Self {
            conn,
            consumer,
            exchange: exchange.to_owned(),
        }
    }

    /// The next message, or None after `wait`.
    pub async fn next_within(&mut self, wait: Duration) -> Option<Delivery> {
        match tokio::time::timeout(wait, self.consumer.next()).await {
            Ok(Some(Ok(d))) => {
                d.ack(BasicAckOptions::default()).await.unwrap();
                Some(d)
            }
            _ => None,
        }
    }

    pub async fn next(&mut self) -> Delivery {
        self.next_within(Duration::from_secs(10))
            .await
            .expect("an event should arrive within 10 s")
    }

    /// Assert nothing arrives for a short while (used after refused requests).
    pub async fn expect_nothing(&mut self) {
        if let Some(d) = self.next_within(Duration::from_millis(500)).await {
            panic!(
                "nothing should have been published, got {:?}",
                String::from_utf8_lossy(&d.data)
            );
        }
    }
}

/// The value of header `name` among the headers `Vendor::sign` produced.
pub fn signed_header(headers: &[(String, String)], name: &str) -> String {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .unwrap_or_else(|| panic!("no {name} header"))
        .1
        .clone()
}

pub fn body_json(d: &Delivery) -> Value {
    serde_json::from_slice(&d.data).expect("event is JSON")
}

pub fn header_str(d: &Delivery, key: &str) -> Option<String> {
    let headers = d.properties.headers().as_ref()?;
    match headers.inner().get(key)? {
        lapin::types::AMQPValue::LongString(s) => {
            Some(String::from_utf8_lossy(s.as_bytes()).into_owned())
        }
        lapin::types::AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// The relay as a real process (for signals and its log), its stderr (JSON log lines)
/// collected.
pub struct RelayProcess {
    child: Child,
    pub base: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl RelayProcess {
    pub fn start(cfg: &TestConfig) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_hookrelay"));
        cmd.arg("serve")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env_remove("HOOKRELAY_CONFIG")
            .env("HOOKRELAY__LOG__FORMAT", "json")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in &cfg.env {
            cmd.env(k, v);
        }
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

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    }

    pub fn wait(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("relay did not exit in time: {:?}", self.log.lock().unwrap());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// The first log line containing `needle`, waiting up to `within`.
    pub fn log_line(&self, needle: &str, within: Duration) -> Option<String> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(l) = self.log().into_iter().find(|l| l.contains(needle)) {
                return Some(l);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
