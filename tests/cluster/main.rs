//! Scale-out on a real 3-node RabbitMQ cluster (scripts/cluster.sh), with load: two relays
//! given all three nodes, two competing archive workers and a forward worker on quorum
//! queues, one node stopped and started, the test queue's leader killed with SIGKILL and
//! restarted; and connections spread over the nodes by `amqp.node_order`. Slow (about
//! three minutes), so it runs as its own CI step: scripts/cluster-test.sh.

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Connection, ConnectionProperties};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The cluster of this test run, torn down when dropped.
struct Cluster {
    dir: PathBuf,
    port: u16,
}

impl Cluster {
    fn cmd(&self, args: &[&str]) -> std::process::Output {
        Command::new(repo().join("scripts/cluster.sh"))
            .args(args)
            .env("CLUSTER_DIR", &self.dir)
            .env("CLUSTER_PORT", self.port.to_string())
            .env("CLUSTER_NAME", format!("hrtest{}-", self.port))
            .stdin(Stdio::null())
            .output()
            .expect("run scripts/cluster.sh")
    }

    fn run(&self, args: &[&str]) -> String {
        let out = self.cmd(args);
        assert!(
            out.status.success(),
            "scripts/cluster.sh {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    fn start() -> Self {
        // A free block of AMQP ports (+10000 management, +20000 distribution).
        let port = (0..50)
            .map(|i| 5700 + i * 3)
            .find(|p| {
                (0..3).all(|k| {
                    [p + k, p + k + 10000, p + k + 20000]
                        .iter()
                        .all(|q| std::net::TcpListener::bind(("127.0.0.1", *q)).is_ok())
                })
            })
            .expect("a free block of ports for the cluster");
        let dir = std::env::temp_dir().join(format!("hookrelay-cluster-{port}"));
        let c = Self { dir, port };
        let t = Instant::now();
        c.run(&["start"]);
        eprintln!("cluster: 3 nodes up and joined in {:?}", t.elapsed());
        c
    }

    fn amqp_port(&self, n: usize) -> u16 {
        self.port + n as u16 - 1
    }

    fn node(&self, n: usize) -> String {
        self.run(&["node", &n.to_string()])
    }

    fn uris(&self) -> String {
        self.run(&["uris"])
    }

    fn uri(&self, n: usize) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.amqp_port(n))
    }

    /// `rabbitmqctl` against a running node (any: they share one view).
    fn ctl_json(&self, on: usize, args: &[&str]) -> Value {
        let out = Command::new("rabbitmqctl")
            .args(["-q", "-n", &self.node(on)])
            .args(args)
            .args(["--formatter", "json"])
            .output()
            .expect("rabbitmqctl");
        assert!(
            out.status.success(),
            "rabbitmqctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "rabbitmqctl {args:?} output is not JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// Node number (1-3) of each connection whose name contains `marker`.
    fn connections(&self, on: usize, marker: &str) -> Vec<(String, usize)> {
        // The client's connection name is among its client properties.
        let v = self.ctl_json(on, &["list_connections", "port", "client_properties"]);
        v.as_array()
            .expect("a list")
            .iter()
            .filter_map(|c| {
                let name = c["client_properties"].to_string();
                let port = c["port"].as_u64()? as u16;
                name.contains(marker)
                    .then(|| (name, (port - self.port + 1) as usize))
            })
            .collect()
    }

    fn leader(&self, on: usize, queue: &str) -> usize {
        let v = self.ctl_json(on, &["list_queues", "name", "leader"]);
        let leader = v
            .as_array()
            .unwrap()
            .iter()
            .find(|q| q["name"] == queue)
            .and_then(|q| q["leader"].as_str().map(str::to_owned))
            .unwrap_or_else(|| panic!("no leader for {queue}: {v}"));
        (1..=3)
            .find(|n| self.node(*n) == leader)
            .unwrap_or_else(|| panic!("leader {leader} is not one of the nodes"))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let out = self.cmd(&["down"]);
        if !out.status.success() {
            eprintln!(
                "cluster down failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// A relay or worker process of the test; its log goes to a file. Killed if dropped.
struct Proc {
    what: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(what: &str, mut cmd: Command, dir: &Path) -> Self {
        let log = dir.join(format!("{what}.log"));
        let f = std::fs::File::create(&log).unwrap();
        cmd.stdout(f.try_clone().unwrap())
            .stderr(f)
            .stdin(Stdio::null());
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        Self {
            what: what.to_owned(),
            child,
            log,
        }
    }

    /// SIGTERM, and the exit status within `within`.
    fn terminate(&mut self, within: Duration) -> ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let until = Instant::now() + within;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            if Instant::now() > until {
                let _ = self.child.kill();
                panic!(
                    "{} did not exit within {within:?} of SIGTERM; log {}",
                    self.what,
                    self.log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn worker_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("HOOKRELAY_WORKER_BIN") {
        return p.into();
    }
    // Beside the relay binary cargo built for this test (same target dir and profile).
    let p = Path::new(env!("CARGO_BIN_EXE_hookrelay")).with_file_name("hookrelay-worker");
    assert!(
        p.exists(),
        "{} is missing: build it first (cargo build -p hookrelay-worker), as \
         scripts/cluster-test.sh does",
        p.display()
    );
    p
}

/// Settings every process of the test shares: all three nodes, quick failure detection.
fn common_env(cmd: &mut Command, uris: &str, exchange: &str) {
    cmd.env("HOOKRELAY__AMQP__URI", uris)
        .env("HOOKRELAY__AMQP__EXCHANGE", exchange)
        .env("HOOKRELAY__AMQP__HEARTBEAT_SECS", "2")
        .env("HOOKRELAY__AMQP__CONNECT_TIMEOUT_MS", "1000")
        .env("HOOKRELAY__AMQP__CONFIRM_TIMEOUT_MS", "2000")
        .env("HOOKRELAY__AMQP__RECONNECT_INITIAL_MS", "100")
        .env("HOOKRELAY__AMQP__RECONNECT_MAX_MS", "1000")
        .env("HOOKRELAY__LOG__FORMAT", "text")
        .current_dir(repo());
}

struct Relay {
    proc: Proc,
    base: String,
}

fn start_relay(
    name: &str,
    env: &[(&str, String)],
    uris: &str,
    exchange: &str,
    dir: &Path,
) -> Relay {
    let port = free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hookrelay"));
    common_env(&mut cmd, uris, exchange);
    cmd.env("HOOKRELAY__SERVER__BIND", format!("127.0.0.1:{port}"))
        .env("HOOKRELAY__SERVER__WORKERS", "2")
        .env("HOOKRELAY__SPOOL__DIR", dir.join(format!("{name}-spool")))
        // The connection name the cluster shows: "hookrelay relay (<HOSTNAME>)".
        .env("HOSTNAME", name);
    for (k, v) in env {
        cmd.env(k, v);
    }
    Relay {
        proc: Proc::spawn(name, cmd, dir),
        base: format!("http://127.0.0.1:{port}"),
    }
}

async fn readyz(client: &reqwest::Client, base: &str) -> Option<Value> {
    let r = client.get(format!("{base}/readyz")).send().await.ok()?;
    r.json().await.ok()
}

async fn wait_status(client: &reqwest::Client, base: &str, want: &str, within: Duration) -> Value {
    let until = Instant::now() + within;
    loop {
        let v = readyz(client, base).await;
        if let Some(v) = &v {
            if v["status"] == want {
                return v.clone();
            }
        }
        assert!(
            Instant::now() < until,
            "{base}/readyz never said {want} within {within:?}: {v:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn metric(client: &reqwest::Client, base: &str, name: &str) -> f64 {
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {base}/metrics"))
}

fn k_body(key: &str) -> Vec<u8> {
    format!(r#"{{"key":"{key}","from":"user-1","groupId":42,"message":"load {key}","timeStamp":1791969697000}}"#)
        .into_bytes()
}

/// The forward worker's downstream: counts each `webhook-id` it is given.
async fn start_sink() -> (String, Arc<Mutex<HashMap<String, usize>>>) {
    let seen: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let data = web::Data::new(seen.clone());
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/events", l.local_addr().unwrap());
    let server = HttpServer::new(move || {
        App::new().app_data(data.clone()).route(
            "/events",
            web::post().to(
                |req: HttpRequest, seen: web::Data<Arc<Mutex<HashMap<String, usize>>>>| async move {
                    if let Some(id) = req
                        .headers()
                        .get("webhook-id")
                        .and_then(|v| v.to_str().ok())
                    {
                        *seen.lock().unwrap().entry(id.to_owned()).or_default() += 1;
                    }
                    HttpResponse::Ok().finish()
                },
            ),
        )
    })
    .workers(1)
    .disable_signals()
    .listen(l)
    .unwrap()
    .run();
    tokio::spawn(server);
    (url, seen)
}

/// Ids in every archive file under `dir`, counted.
fn archived(dir: &Path, into: &mut HashMap<String, usize>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let Ok(text) = std::fs::read_to_string(e.path()) else {
            continue;
        };
        for line in text.lines() {
            if let Ok(v) = serde_json::from_str::<Value>(line) {
                if let Some(id) = v["id"].as_str() {
                    *into.entry(id.to_owned()).or_default() += 1;
                }
            }
        }
    }
}

/// One load request: status (0: no answer), event id, latency.
type Answer = (u16, Option<String>, Duration);

fn duplicates(counts: &HashMap<String, usize>) -> usize {
    counts.values().map(|n| n.saturating_sub(1)).sum()
}

fn missing<'a>(want: &'a HashSet<String>, have: &HashMap<String, usize>) -> Vec<&'a String> {
    want.iter().filter(|id| !have.contains_key(*id)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_out_on_a_three_node_cluster() {
    let cluster = Cluster::start();
    let uris = cluster.uris();
    let id = uuid::Uuid::new_v4().simple().to_string();
    let base = format!("hrcluster.{}", &id[..10]);
    let exchange = format!("{base}.events");
    let dir = std::env::temp_dir().join(format!("hookrelay-cluster-test-{}", &id[..10]));
    std::fs::create_dir_all(&dir).unwrap();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();

    // Two relays with every node listed (shuffled, the default), Redis dedup shared.
    let redis_prefix = format!("{base}:dedup:");
    let relay_env = |ack: &str| {
        vec![
            ("HOOKRELAY__DURABILITY__ACK", ack.to_owned()),
            ("HOOKRELAY__DEDUP__BACKEND", "redis".to_owned()),
            ("HOOKRELAY__DEDUP__REDIS_KEY_PREFIX", redis_prefix.clone()),
        ]
    };
    let relays = [
        start_relay(
            &format!("{base}-relay-a"),
            &relay_env("broker"),
            &uris,
            &exchange,
            &dir,
        ),
        start_relay(
            &format!("{base}-relay-b"),
            &relay_env("spool"),
            &uris,
            &exchange,
            &dir,
        ),
    ];
    for r in &relays {
        wait_status(&client, &r.base, "ok", Duration::from_secs(30)).await;
    }

    // Connections spread: more relays, shuffled and listed, and where each one landed.
    let mut idle = vec![];
    for i in 0..8 {
        idle.push(start_relay(
            &format!("{base}-shuffled-{i}"),
            &[],
            &uris,
            &exchange,
            &dir,
        ));
    }
    for i in 0..3 {
        idle.push(start_relay(
            &format!("{base}-listed-{i}"),
            &[("HOOKRELAY__AMQP__NODE_ORDER", "listed".to_owned())],
            &uris,
            &exchange,
            &dir,
        ));
    }
    for r in &idle {
        wait_status(&client, &r.base, "ok", Duration::from_secs(30)).await;
    }
    let conns = cluster.connections(1, &base);
    let node_of = |marker: &str| -> Vec<usize> {
        conns
            .iter()
            .filter(|(n, _)| n.contains(marker))
            .map(|(_, node)| *node)
            .collect()
    };
    let shuffled: Vec<usize> = [node_of("-shuffled-"), node_of("-relay-")].concat();
    let listed = node_of("-listed-");
    eprintln!("connections by node: shuffled {shuffled:?}, listed {listed:?}");
    assert_eq!(
        shuffled.len(),
        10,
        "every shuffled relay connected: {conns:?}"
    );
    assert_eq!(listed, vec![1, 1, 1], "listed: all on the first node");
    let distinct: HashSet<_> = shuffled.iter().collect();
    assert!(
        distinct.len() > 1,
        "10 shuffled processes all landed on node {:?}",
        shuffled[0]
    );
    assert!(
        shuffled.iter().any(|n| *n != 1),
        "shuffled processes must not all land on the first node"
    );
    for mut r in idle {
        assert!(r.proc.terminate(Duration::from_secs(20)).success());
    }
    let node_a = node_of(&format!("{base}-relay-a"))[0];
    let node_b = node_of(&format!("{base}-relay-b"))[0];
    eprintln!("relay a on node {node_a}, relay b on node {node_b}");

    // The test's own quorum queue, declared through relay b's node, which makes that node
    // its leader: killing the leader then reaches relay b too.
    let conn = Connection::connect(&cluster.uri(node_b), ConnectionProperties::default())
        .await
        .expect("connect to the cluster");
    let ch = conn.create_channel().await.unwrap();
    hookrelay_common::topology::declare_events(&ch, &exchange)
        .await
        .unwrap();
    let check_q = format!("{base}.check");
    let mut args = FieldTable::default();
    args.insert(
        ShortString::from("x-queue-type"),
        AMQPValue::LongString("quorum".into()),
    );
    ch.queue_declare(
        check_q.as_str().into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        args,
    )
    .await
    .unwrap();
    ch.queue_bind(
        check_q.as_str().into(),
        exchange.as_str().into(),
        "#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let _ = conn.close(200, "declared".into()).await;
    eprintln!("test queue leader: node {}", cluster.leader(1, &check_q));

    // Workers: two competing archivers on one quorum queue family, one forwarder.
    let (sink_url, sink) = start_sink().await;
    let archive_q = format!("{base}.archive");
    let forward_q = format!("{base}.forward");
    let worker = |name: &str, args: &[&str], queue: &str| {
        let mut cmd = Command::new(worker_bin());
        common_env(&mut cmd, &uris, &exchange);
        cmd.args(args)
            .env("HOOKRELAY__WORKER__QUEUE", queue)
            .env("HOOKRELAY__WORKER__QUEUE_TYPE", "quorum")
            .env("HOOKRELAY__WORKER__RETRY_DELAY_MS", "500")
            .env("HOOKRELAY__WORKER__MAX_ATTEMPTS", "1000");
        Proc::spawn(name, cmd, &dir)
    };
    let archive_dirs = [dir.join("archive-1"), dir.join("archive-2")];
    let mut workers = vec![
        worker(
            "archive-1",
            &["archive", "--dir", archive_dirs[0].to_str().unwrap()],
            &archive_q,
        ),
        worker(
            "archive-2",
            &["archive", "--dir", archive_dirs[1].to_str().unwrap()],
            &archive_q,
        ),
        worker("forward", &["forward", "--url", &sink_url], &forward_q),
    ];
    // The workers are consuming once their queues have consumers.
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let v = cluster.ctl_json(1, &["list_queues", "name", "consumers"]);
        let consumers = |q: &str| {
            v.as_array()
                .unwrap()
                .iter()
                .find(|x| x["name"] == q)
                .and_then(|x| x["consumers"].as_u64())
                .unwrap_or(0)
        };
        if consumers(&archive_q) == 2 && consumers(&forward_q) == 1 {
            break;
        }
        assert!(
            Instant::now() < until,
            "workers did not start consuming: {v}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // Load: 4 clients alternating between the relays, ~25 requests/s each, for 45 s.
    let stop = Arc::new(AtomicBool::new(false));
    let answers: Arc<Mutex<Vec<Answer>>> = Arc::default();
    let mut clients = vec![];
    for c in 0..4 {
        let (stop, answers, client) = (stop.clone(), answers.clone(), client.clone());
        let bases = [relays[0].base.clone(), relays[1].base.clone()];
        let run = id.clone();
        clients.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let r = client
                    .post(format!(
                        "{}/webhooks/kommunicate",
                        bases[(i as usize + c) % 2]
                    ))
                    .header("content-type", "application/json")
                    .header("authentication", "Basic YWJjZGVm")
                    .body(k_body(&format!("{run}-{c}-{i}")))
                    .send()
                    .await;
                let answer = match r {
                    Ok(r) => {
                        let s = r.status().as_u16();
                        let v: Value = r.json().await.unwrap_or(Value::Null);
                        (s, v["id"].as_str().map(str::to_owned), t.elapsed())
                    }
                    Err(_) => (0, None, t.elapsed()),
                };
                answers.lock().unwrap().push(answer);
                i += 1;
                tokio::time::sleep(Duration::from_millis(40).saturating_sub(t.elapsed())).await;
            }
        }));
    }
    let load_start = Instant::now();
    tokio::time::sleep(Duration::from_secs(5)).await;

    // Fault 1: relay a's node stopped gracefully, then started again.
    let t = Instant::now();
    cluster.run(&["stop-node", &node_a.to_string()]);
    eprintln!(
        "{:>5.1}s stopped node {node_a} gracefully",
        load_start.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    cluster.run(&["start-node", &node_a.to_string()]);
    eprintln!(
        "{:>5.1}s node {node_a} running again ({:?} down)",
        load_start.elapsed().as_secs_f64(),
        t.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Fault 2: the node holding the test queue's leader killed with SIGKILL, restarted.
    let up = if node_a == 1 { 2 } else { 1 };
    let leader = cluster.leader(up, &check_q);
    let t = Instant::now();
    cluster.run(&["kill-node", &leader.to_string()]);
    eprintln!(
        "{:>5.1}s killed node {leader} (test queue leader) with SIGKILL",
        load_start.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.run(&["start-node", &leader.to_string()]);
    eprintln!(
        "{:>5.1}s node {leader} running again ({:?} down)",
        load_start.elapsed().as_secs_f64(),
        t.elapsed()
    );
    let rest = Duration::from_secs(45).saturating_sub(load_start.elapsed());
    tokio::time::sleep(rest.max(Duration::from_secs(5))).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let load_secs = load_start.elapsed().as_secs_f64();

    // Every request answered 200.
    let answers = std::mem::take(&mut *answers.lock().unwrap());
    let not_200: Vec<_> = answers.iter().filter(|a| a.0 != 200).collect();
    let mut lat: Vec<Duration> = answers.iter().map(|a| a.2).collect();
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    eprintln!(
        "load: {} requests in {load_secs:.1}s, latency p50 {:?} p99 {:?} max {:?}",
        answers.len(),
        pct(0.5),
        pct(0.99),
        lat[lat.len() - 1]
    );
    assert!(
        not_200.is_empty(),
        "{} of {} requests not answered 200, e.g. {:?}",
        not_200.len(),
        answers.len(),
        &not_200[..not_200.len().min(5)]
    );
    assert!(load_secs >= 40.0);
    let accepted: HashSet<String> = answers.iter().filter_map(|a| a.1.clone()).collect();
    assert_eq!(
        accepted.len(),
        answers.len(),
        "every load event is distinct"
    );

    // Both relays back to ok (spools drained), and the faults reached them.
    for r in &relays {
        wait_status(&client, &r.base, "ok", Duration::from_secs(90)).await;
    }
    for (r, name) in relays.iter().zip(["a", "b"]) {
        let reconnects = metric(&client, &r.base, "hookrelay_broker_reconnects_total").await;
        let spooled = metric(&client, &r.base, "hookrelay_events_spooled_total").await;
        eprintln!("relay {name}: {reconnects} reconnects, {spooled} events spooled");
        assert!(
            reconnects >= 1.0,
            "relay {name} never reconnected: the fault did not reach it"
        );
    }

    // Every 200 in the test queue.
    let conn = Connection::connect(&cluster.uri(up), ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.basic_qos(500, Default::default()).await.unwrap();
    let mut consumer = ch
        .basic_consume(
            check_q.as_str().into(),
            "check".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut in_queue: HashMap<String, usize> = HashMap::new();
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let all = accepted.iter().all(|id| in_queue.contains_key(id));
        let wait = if all {
            Duration::from_secs(1)
        } else {
            Duration::from_secs(5)
        };
        match tokio::time::timeout(wait, consumer.next()).await {
            Ok(Some(Ok(d))) => {
                let id = d.properties.message_id().as_ref().map(|s| s.to_string());
                *in_queue.entry(id.unwrap_or_default()).or_default() += 1;
                d.ack(BasicAckOptions::default()).await.unwrap();
            }
            _ if all || Instant::now() > until => break,
            _ => {}
        }
    }
    let _ = conn.close(200, "checked".into()).await;
    let lost = missing(&accepted, &in_queue);
    eprintln!(
        "test queue: {} distinct of {} accepted, {} duplicates, {} missing",
        in_queue.len(),
        accepted.len(),
        duplicates(&in_queue),
        lost.len()
    );
    assert!(
        lost.is_empty(),
        "accepted but not in the test queue: {:?}",
        &lost[..lost.len().min(5)]
    );

    // Every 200 in the archives (two competing workers) and at the forward sink.
    let until = Instant::now() + Duration::from_secs(90);
    let (mut arch, mut per_worker) = (HashMap::new(), vec![]);
    loop {
        arch.clear();
        per_worker.clear();
        for d in &archive_dirs {
            let mut one = HashMap::new();
            archived(d, &mut one);
            per_worker.push(one.len());
            for (k, v) in one {
                *arch.entry(k).or_default() += v;
            }
        }
        let fwd_done = missing(&accepted, &sink.lock().unwrap()).is_empty();
        if (missing(&accepted, &arch).is_empty() && fwd_done) || Instant::now() > until {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let forwarded = sink.lock().unwrap().clone();
    eprintln!(
        "archives: {} distinct (per worker {per_worker:?}), {} duplicates, {} missing; \
         forwarded: {} distinct, {} duplicates, {} missing",
        arch.len(),
        duplicates(&arch),
        missing(&accepted, &arch).len(),
        forwarded.len(),
        duplicates(&forwarded),
        missing(&accepted, &forwarded).len()
    );
    assert!(
        missing(&accepted, &arch).is_empty(),
        "accepted but never archived"
    );
    assert!(
        per_worker.iter().all(|n| *n > 0),
        "both archive workers took a share"
    );
    assert!(
        missing(&accepted, &forwarded).is_empty(),
        "accepted but never forwarded"
    );

    // Every worker (and relay) exits 0 on SIGTERM.
    for w in &mut workers {
        let s = w.terminate(Duration::from_secs(30));
        assert!(
            s.success(),
            "{} exited {s:?} on SIGTERM (log {})",
            w.what,
            w.log.display()
        );
    }
    for mut r in relays {
        let s = r.proc.terminate(Duration::from_secs(30));
        assert!(s.success(), "{} exited {s:?}", r.proc.what);
    }
    drop(cluster);
    let _ = std::fs::remove_dir_all(&dir);
}
