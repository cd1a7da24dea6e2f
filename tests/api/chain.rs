//! One hookrelay relaying another's output: relay A's `forward` worker posts each event,
//! signed per Standard Webhooks, to a `standard-webhooks` source of relay B, which
//! verifies it and publishes it routed `<source>.<type>`. The real broker, both relays
//! and the worker in-process.

use crate::helpers::*;
use hookrelay_vendors::standard_webhooks;
use lapin::options::QueueDeleteOptions;
use lapin::{Connection, ConnectionProperties};
use std::time::Duration;

/// Not the demo secret: relay B's source refuses nothing else in this test.
const SECRET: &str = "whsec_Y2hhaW4tdGVzdC1zdGFuZGFyZC13ZWJob29rcy1rZXk=";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_forward_worker_feeds_a_standard_webhooks_source_of_another_relay() {
    let a_cfg = TestConfig::new("chain-a");
    let a = spawn_app(&a_cfg).await;
    let mut b_cfg = TestConfig::new("chain-b");
    b_cfg.set("HOOKRELAY__SOURCES__UPSTREAM__VENDOR", "standard-webhooks");
    // A rotation in progress on B's side: the old key first, A signs with the new one.
    b_cfg.set(
        "HOOKRELAY__SOURCES__UPSTREAM__SECRET",
        &format!("whsec_b2xkLWtleQ==,{SECRET}"),
    );
    let b = spawn_app(&b_cfg).await;
    let mut tap = Tap::new(&b_cfg.exchange, "upstream.#").await;

    // The forward worker on A's exchange, posting to B.
    let queue = unique("chain-forward");
    let worker_settings = hookrelay_worker::settings::Settings::load_with_env(
        None,
        [
            ("HOOKRELAY__AMQP__URI", BROKER),
            ("HOOKRELAY__AMQP__EXCHANGE", a_cfg.exchange.as_str()),
            ("HOOKRELAY__WORKER__QUEUE", queue.as_str()),
            ("HOOKRELAY__FORWARD__SECRET", SECRET),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
    )
    .expect("worker settings");
    let url = format!("{}/webhooks/upstream", b.base);
    let cli = <hookrelay_worker::cli::Cli as clap::Parser>::try_parse_from([
        "hookrelay-worker",
        "forward",
        "--url",
        &url,
    ])
    .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(hookrelay_worker::run(
        cli.command,
        worker_settings,
        async move {
            let _ = stopped.await;
        },
    ));
    wait_for_consumer(&queue).await;

    // A Chatwoot delivery into A ...
    let body = fixture("chatwoot/message_created_incoming.json");
    let resp = a.post_signed("chatwoot", &body).await;
    assert_eq!(resp.status(), 200);
    let answer: serde_json::Value = resp.json().await.unwrap();
    let a_id = answer["id"].as_str().unwrap().to_owned();

    // ... comes out of B as `upstream.chatwoot.message.created`, A's event as its raw.
    let d = tap
        .next_within(Duration::from_secs(20))
        .await
        .expect("B published the event");
    assert_eq!(d.routing_key.as_str(), "upstream.chatwoot.message.created");
    let ev = body_json(&d);
    assert_eq!(ev["type"], "upstream.chatwoot.message.created");
    assert_eq!(ev["source"], "/webhooks/upstream");
    assert_eq!(ev["vendor"], "standard-webhooks");
    let data = ev["data"].as_object().unwrap();
    let mut fields: Vec<&str> = data.keys().map(String::as_str).collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        [
            "event",
            "raw",
            "received_at",
            "source",
            "vendor",
            "vendor_event"
        ],
        "nothing invented"
    );
    assert_eq!(data["vendor"], "standard-webhooks");
    assert_eq!(data["source"], "upstream");
    assert_eq!(data["event"], "chatwoot.message.created");
    assert_eq!(data["vendor_event"], "chatwoot.message.created");
    assert_eq!(data["raw"]["id"], a_id.as_str());
    assert_eq!(data["raw"]["type"], "chatwoot.message.created");
    assert_eq!(data["raw"]["data"]["vendor"], "chatwoot");
    // B's id is of its source and the webhook-id A's worker sent (A's event id).
    assert_eq!(
        ev["id"],
        hookrelay::envelope::event_id("upstream", None, &a_id).as_str()
    );
    assert_eq!(ev["time"], data["raw"]["time"]);

    // A delivery signed with a key B does not hold is refused and publishes nothing.
    let stranger = hookrelay_vendors::Credentials::new(
        standard_webhooks::SigningKeys::new(&["whsec_c3RyYW5nZXI="], None).unwrap(),
    );
    let forged_body = serde_json::to_vec(&serde_json::json!({"type": "x.y"})).unwrap();
    let headers =
        standard_webhooks::VENDOR.sign(&stranger, &forged_body, time::OffsetDateTime::now_utc());
    let pairs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let resp = b.post_raw("upstream", &pairs, forged_body).await;
    assert_eq!(resp.status(), 401);
    tap.expect_nothing().await;

    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(20), worker)
        .await
        .expect("the worker stops")
        .expect("worker task")
        .expect("worker result");
    a.stop().await;
    b.stop().await;
    delete_queues(&queue).await;
    remove_relay_topology(&a_cfg.exchange).await;
    drop(tap);
}

/// Wait until the forward worker declared its queue and consumes from it.
async fn wait_for_consumer(queue: &str) {
    let conn = Connection::connect(BROKER, ConnectionProperties::default())
        .await
        .expect("RabbitMQ");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let ch = conn.create_channel().await.unwrap();
        let declared = ch
            .queue_declare(
                queue.into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                Default::default(),
            )
            .await;
        if let Ok(q) = declared {
            if q.consumer_count() > 0 {
                break;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the forward worker did not start consuming {queue} within 15 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = conn.close(200, "bye".into()).await;
}

/// The forward worker's queue family.
async fn delete_queues(queue: &str) {
    let conn = Connection::connect(BROKER, ConnectionProperties::default())
        .await
        .expect("RabbitMQ");
    let ch = conn.create_channel().await.unwrap();
    for q in [
        queue.to_owned(),
        format!("{queue}.retry"),
        format!("{queue}.parked"),
    ] {
        let _ = ch
            .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
    let _ = conn.close(200, "bye".into()).await;
}
