//! The relay and its history stream: every event lands on `<exchange>.history` (so the
//! alternate exchange gets nothing while it is on, and does again with it off), and a
//! stream declared earlier with other arguments is reported while publishing goes on.

use crate::helpers::*;
use futures_util::StreamExt;
use hookrelay_common::topology;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Connection, ConnectionProperties};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

async fn connect() -> Connection {
    Connection::connect(BROKER, ConnectionProperties::default())
        .await
        .expect("RabbitMQ on 127.0.0.1:5672")
}

/// The ids of the first `n` messages of `stream`, read from its start.
async fn stream_ids(conn: &Connection, stream: &str, n: usize) -> Vec<String> {
    let ch = conn.create_channel().await.unwrap();
    ch.basic_qos(50, BasicQosOptions::default()).await.unwrap();
    let mut args = FieldTable::default();
    args.insert(
        "x-stream-offset".into(),
        AMQPValue::LongString("first".into()),
    );
    let mut consumer = ch
        .basic_consume(
            stream.into(),
            "".into(),
            BasicConsumeOptions::default(),
            args,
        )
        .await
        .unwrap();
    let mut ids = Vec::new();
    while ids.len() < n {
        let d = tokio::time::timeout(Duration::from_secs(10), consumer.next())
            .await
            .unwrap_or_else(|_| panic!("only {ids:?} on {stream} after 10 s"))
            .unwrap()
            .unwrap();
        ids.push(d.properties.message_id().as_ref().unwrap().to_string());
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
    let _ = ch.close(200, "".into()).await;
    ids
}

/// Messages ready in a classic queue.
async fn ready(conn: &Connection, queue: &str) -> u32 {
    let ch = conn.create_channel().await.unwrap();
    let q = ch
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("{queue}: {e}"));
    let _ = ch.close(200, "".into()).await;
    q.message_count()
}

async fn post_ok(app: &TestApp, source: &str, file: &str) -> String {
    let r = app.post_signed(source, &fixture(file)).await;
    assert_eq!(r.status(), 200, "{file}");
    let v: serde_json::Value = r.json().await.unwrap();
    v["id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_is_kept_on_the_history_stream_and_the_alternate_exchange_gets_none() {
    let conn = connect().await;
    let mut cfg = TestConfig::new("history-on");
    cfg.set("HOOKRELAY__HISTORY__ENABLED", "true");
    let app = spawn_app(&cfg).await;
    let mut ids = Vec::new();
    for (source, file) in [
        ("kommunicate", "kommunicate/message_group.json"),
        ("chatwoot", "chatwoot/message_created_incoming.json"),
        ("cometchat", "cometchat/message_sent_text.json"),
    ] {
        ids.push(post_ok(&app, source, file).await);
    }
    let stream = topology::history_name(&cfg.exchange);
    assert_eq!(
        stream_ids(&conn, &stream, 3).await,
        ids,
        "all three, in order"
    );
    // Routed to the stream, so nothing went to the alternate exchange.
    assert_eq!(
        ready(&conn, &topology::unrouted_name(&cfg.exchange)).await,
        0
    );
    app.stop().await;
    remove_relay_topology(&cfg.exchange).await;

    // With history off (and nothing else bound), the alternate exchange keeps it.
    let cfg = TestConfig::new("history-off");
    let app = spawn_app(&cfg).await;
    post_ok(&app, "kommunicate", "kommunicate/message_group.json").await;
    let unrouted = topology::unrouted_name(&cfg.exchange);
    let deadline = Instant::now() + Duration::from_secs(10);
    while ready(&conn, &unrouted).await < 1 {
        assert!(
            Instant::now() < deadline,
            "the event never reached {unrouted}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ch = conn.create_channel().await.unwrap();
    let missing = ch
        .queue_declare(
            topology::history_name(&cfg.exchange).as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await;
    assert!(missing.is_err(), "history off must declare no stream");
    app.stop().await;
    remove_relay_topology(&cfg.exchange).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_declared_with_other_arguments_is_reported_and_publishing_goes_on() {
    let conn = connect().await;
    let mut cfg = TestConfig::new("history-clash");
    cfg.set("HOOKRELAY__HISTORY__ENABLED", "true");
    let stream = topology::history_name(&cfg.exchange);
    let _guard = DeleteOnDrop(stream.clone());
    // Someone declared it before, with a one-day retention.
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("stream".into()),
    );
    args.insert("x-max-age".into(), AMQPValue::LongString("1D".into()));
    let ch = conn.create_channel().await.unwrap();
    ch.queue_declare(
        stream.as_str().into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        args,
    )
    .await
    .unwrap();

    let relay = RelayProcess::start(&cfg);
    relay
        .log_line("refused the history stream", Duration::from_secs(20))
        .map(|l| assert!(l.contains(&stream) && l.contains("inequivalent arg"), "{l}"))
        .unwrap_or_else(|| panic!("no report of the refusal: {:?}", relay.log()));
    let mut tap = Tap::new(&cfg.exchange, "#").await;
    let client = reqwest::Client::new();
    let body = fixture("kommunicate/message_group.json");
    let app_settings = cfg.validated();
    let s = &app_settings.sources["kommunicate"];
    let headers = s
        .vendor
        .sign(&s.credentials, &body, time::OffsetDateTime::now_utc());
    let mut req = client
        .post(format!("{}/webhooks/kommunicate", relay.base))
        .body(body);
    for (k, v) in headers {
        req = req.header(k, v);
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), 200);
    let id = r.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let d = tap.next().await;
    assert_eq!(d.properties.message_id().as_ref().unwrap().as_str(), id);
    // The refused channel did not take the connection down with it.
    let metrics = client
        .get(format!("{}/metrics", relay.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let reconnects: BTreeSet<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("hookrelay_broker_reconnects_total"))
        .collect();
    assert!(
        reconnects.iter().all(|l| l.ends_with(" 0")),
        "{reconnects:?}"
    );
    assert!(
        metrics.contains("hookrelay_broker_connected 1"),
        "{metrics}"
    );
    drop(relay);
    drop(tap);
    let ch = conn.create_channel().await.unwrap();
    let _ = ch
        .queue_delete(stream.as_str().into(), Default::default())
        .await;
}

/// Deletes a stream when dropped, also when the test failed before its clean-up: a
/// stream keeps its disk on the shared broker until deleted.
struct DeleteOnDrop(String);

impl Drop for DeleteOnDrop {
    fn drop(&mut self) {
        let name = self.0.clone();
        // Its own thread and runtime: works while a panic unwinds the test's.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(conn) = Connection::connect(BROKER, ConnectionProperties::default()).await
                {
                    if let Ok(ch) = conn.create_channel().await {
                        let _ = ch
                            .queue_delete(name.as_str().into(), Default::default())
                            .await;
                    }
                    let _ = conn.close(200, "bye".into()).await;
                }
            });
        })
        .join();
    }
}
