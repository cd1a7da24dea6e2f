//! The forward worker end to end against a local HTTP sink: Standard Webhooks signatures,
//! recovery from 5xx and timeouts with each event delivered once, parking after
//! max_attempts, and the same on quorum queues.

use crate::helpers::*;
use crate::sink::{signature_valid, Answer, Sink};
use hookrelay_worker::consume::{ATTEMPTS_HEADER, ERROR_HEADER};
use serde_json::Value;
use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const SECRET: &str = "whsec_dGVzdC1mb3J3YXJkLXNlY3JldC1rZXktMTIzNDU2";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_recovers_from_errors_and_timeouts_delivering_each_event_once_signed() {
    let names = Names::new("forward");
    let broker = Broker::connect().await;
    // Per event: a 500, then a response slower than the timeout, then a 200.
    let sink = Sink::start(|_, nth| match nth {
        1 => Answer::Status(500),
        2 => Answer::After(Duration::from_millis(1500), 504),
        _ => Answer::Status(200),
    })
    .await;
    let worker = start(
        &["forward", "--url", &sink.url],
        settings(
            &names.exchange,
            &[
                ("HOOKRELAY__WORKER__QUEUE", names.queue.as_str()),
                ("HOOKRELAY__WORKER__RETRY_DELAY_MS", "100"),
                ("HOOKRELAY__WORKER__MAX_ATTEMPTS", "5"),
                ("HOOKRELAY__FORWARD__SECRET", SECRET),
                ("HOOKRELAY__FORWARD__TIMEOUT_MS", "300"),
            ],
        ),
    );
    broker.wait_consumer(&names.queue).await;
    let events: Vec<Value> = (0..5)
        .map(|i| {
            event(
                &format!("fw-{i}"),
                "cometchat",
                "message.created",
                "2026-06-01T08:00:00Z",
                &format!("hello {i}"),
            )
        })
        .collect();
    broker.publish_events(&names.exchange, &events).await;

    sink.wait_until("a 2xx for every event", Duration::from_secs(20), |r| {
        r.iter().filter(|r| r.ok()).count() >= events.len()
    })
    .await;
    eventually("the work queue empty", Duration::from_secs(10), || async {
        (broker.ready(&names.queue).await == 0 && broker.ready(&names.retry()).await == 0)
            .then_some(())
    })
    .await;
    worker.stop().await;

    let received = sink.received();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let mut per_id: HashMap<&str, Vec<u16>> = HashMap::new();
    for r in &received {
        per_id.entry(r.id()).or_default().push(r.status);
        assert!(signature_valid(r, SECRET), "bad signature on {}", r.id());
        assert_eq!(r.headers["content-type"], "application/json");
        let ts: i64 = r.headers["webhook-timestamp"].parse().unwrap();
        assert!((now - ts).abs() < 120, "timestamp {ts} is not now");
    }
    for ev in &events {
        let id = ev["id"].as_str().unwrap();
        // Exactly: a 500, a timeout, one 200, and then never again.
        assert_eq!(
            per_id.get(id),
            Some(&vec![500, 504, 200]),
            "requests for {id}"
        );
        let delivered: Vec<_> = received.iter().filter(|r| r.id() == id).collect();
        // The body is the message body, byte for byte.
        let expected = serde_json::to_vec(ev).unwrap();
        assert!(
            delivered.iter().all(|r| r.body == expected),
            "body of {id} changed"
        );
    }
    assert_eq!(
        broker.ready(&names.parked()).await,
        0,
        "something was parked"
    );
    broker.cleanup(&names).await;
}

async fn always_failing_parks(queue_type: &str) {
    let names = Names::new("forward");
    let broker = Broker::connect().await;
    let sink = Sink::start(|_, _| Answer::Status(503)).await;
    let worker = start(
        &["forward", "--url", &sink.url],
        settings(
            &names.exchange,
            &[
                ("HOOKRELAY__WORKER__QUEUE", names.queue.as_str()),
                ("HOOKRELAY__WORKER__QUEUE_TYPE", queue_type),
                ("HOOKRELAY__WORKER__RETRY_DELAY_MS", "100"),
                ("HOOKRELAY__WORKER__MAX_ATTEMPTS", "3"),
                ("HOOKRELAY__FORWARD__SECRET", SECRET),
            ],
        ),
    );
    broker.wait_consumer(&names.queue).await;
    let events = vec![
        event(
            "bad-1",
            "chatwoot",
            "message.created",
            "2026-06-01T08:00:00Z",
            "a",
        ),
        event(
            "bad-2",
            "chatwoot",
            "message.updated",
            "2026-06-01T08:00:01Z",
            "b",
        ),
    ];
    broker.publish_events(&names.exchange, &events).await;

    eventually("both events parked", Duration::from_secs(20), || async {
        (broker.ready(&names.parked()).await == 2).then_some(())
    })
    .await;
    worker.stop().await;

    let parked = broker.drain(&names.parked()).await;
    assert_eq!(parked.len(), 2);
    for m in &parked {
        let body: Value = serde_json::from_slice(&m.data).unwrap();
        let id = body["id"].as_str().unwrap();
        assert!(events.iter().any(|e| e == &body), "parked body changed");
        assert_eq!(m.properties.message_id().as_ref().unwrap().as_str(), id);
        assert_eq!(header(&m.properties, ATTEMPTS_HEADER).as_deref(), Some("3"));
        let error = header(&m.properties, ERROR_HEADER).unwrap();
        assert!(error.contains("503"), "error header: {error}");
        assert_eq!(
            sink.received().iter().filter(|r| r.id() == id).count(),
            3,
            "attempts for {id}"
        );
    }
    assert_eq!(broker.ready(&names.queue).await, 0);
    assert_eq!(broker.ready(&names.retry()).await, 0);
    broker.cleanup(&names).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_always_failing_is_parked_after_max_attempts_with_the_error() {
    always_failing_parks("classic").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_and_park_work_on_quorum_queues() {
    always_failing_parks("quorum").await;
}
