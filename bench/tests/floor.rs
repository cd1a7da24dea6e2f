//! The floor relay does what `compare --floor` counts on: a 200 only once the broker
//! confirmed, with the id it answered as the message's `message_id`, the body as it came
//! (padded to the event size) on the relay-shaped exchange, persistent.

use futures_util::StreamExt;
use hookrelay_bench::config::RelayConfig;
use hookrelay_bench::floor::{self, FloorOpts};
use hookrelay_common::amqp;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{FieldTable, ShortString};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_floor_publish_is_confirmed_with_the_answered_id_and_the_body_it_got() {
    let cfg = RelayConfig::load(None).unwrap();
    let id = hookrelay_bench::short_id();
    let exchange = format!("test.floor.{id}");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let opts = FloorOpts {
        amqp: cfg.amqp.clone(),
        exchange: exchange.clone(),
        port,
        workers: 1,
        channels: 2,
        size: 600,
    };
    let server = tokio::spawn(floor::start(&opts).await.unwrap());

    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let until = Instant::now() + Duration::from_secs(20);
    while !http
        .get(format!("{base}/readyz"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(!server.is_finished(), "the floor relay stopped: {server:?}");
        assert!(Instant::now() < until, "the floor relay never got ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The exchange exists now (the floor declared it): bind a queue of our own.
    let conn = amqp::connect(&cfg.amqp, "floor test").await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    let queue = format!("test.floor.{id}.q");
    ch.queue_declare(
        ShortString::from(queue.as_str()),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_bind(
        ShortString::from(queue.as_str()),
        ShortString::from(exchange.as_str()),
        ShortString::from("#"),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();

    let body = br#"{"key":"floor-test","message":"hi"}"#;
    let resp = http
        .post(format!("{base}/webhooks/anything"))
        .header("content-type", "application/json")
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let answer: serde_json::Value = resp.json().await.unwrap();
    let answered = answer["id"].as_str().unwrap().to_owned();

    let mut consumer = ch
        .basic_consume(
            ShortString::from(queue.as_str()),
            ShortString::from("floor-test"),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let delivery = tokio::time::timeout(Duration::from_secs(10), consumer.next())
        .await
        .expect("the confirmed message reached the queue")
        .unwrap()
        .unwrap();
    assert_eq!(
        delivery
            .properties
            .message_id()
            .as_ref()
            .map(|s| s.as_str()),
        Some(answered.as_str())
    );
    assert_eq!(*delivery.properties.delivery_mode(), Some(2));
    assert_eq!(delivery.data.len(), 600);
    assert!(delivery.data.starts_with(body));
    let v: serde_json::Value = serde_json::from_slice(&delivery.data).unwrap();
    assert_eq!(v["key"], "floor-test");
    delivery.ack(BasicAckOptions::default()).await.unwrap();

    server.abort();
    ch.queue_delete(
        ShortString::from(queue.as_str()),
        QueueDeleteOptions::default(),
    )
    .await
    .unwrap();
    let _ = hookrelay_bench::compare::delete_relay_topology(&cfg.amqp, &exchange).await;
    let _ = ch
        .exchange_delete(
            ShortString::from(exchange.as_str()),
            ExchangeDeleteOptions::default(),
        )
        .await;
}
