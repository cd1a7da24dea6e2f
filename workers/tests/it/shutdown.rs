//! SIGTERM mid-work on the real binary: exit 0, the work in flight finished and acked,
//! nothing acked lost, nothing unfinished acked.

use crate::forward::SECRET;
use crate::helpers::*;
use crate::sink::{Answer, Sink};
use serde_json::Value;
use std::collections::HashSet;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_forward_finishes_in_flight_requests_and_exits_0() {
    const N: usize = 40;
    let names = Names::new("forward");
    let broker = Broker::connect().await;
    // A slow downstream: every request is in flight for 400 ms.
    let sink = Sink::start(|_, _| Answer::After(Duration::from_millis(400), 200)).await;
    let mut bin = Bin::spawn(
        &["forward", "--url", &sink.url],
        &[
            ("HOOKRELAY__AMQP__EXCHANGE", names.exchange.as_str()),
            ("HOOKRELAY__WORKER__QUEUE", names.queue.as_str()),
            ("HOOKRELAY__WORKER__PREFETCH", "4"),
            ("HOOKRELAY__FORWARD__SECRET", SECRET),
        ],
    );
    broker.wait_consumer(&names.queue).await;
    let events: Vec<Value> = (0..N)
        .map(|i| {
            event(
                &format!("st-{i}"),
                "chatwoot",
                "message.created",
                "2026-09-01T00:00:00Z",
                "x",
            )
        })
        .collect();
    broker.publish_events(&names.exchange, &events).await;

    // Requests are in flight (held by the sink) when the signal lands.
    let at_signal = sink
        .wait_until("requests in flight", Duration::from_secs(15), |r| {
            r.len() >= 2
        })
        .await
        .len();
    bin.sigterm();
    let status = bin.wait_exit(Duration::from_secs(20)).await;
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM");

    let received = sink.received();
    assert!(received.len() >= at_signal);
    assert!(received.len() < N, "not stopped mid-work");
    let delivered: HashSet<&str> = received.iter().map(|r| r.id()).collect();
    assert_eq!(delivered.len(), received.len(), "an event was sent twice");
    // Every request the sink answered was acked (not requeued), everything else is still
    // queued: delivered + queued is exactly what was published, with no overlap.
    let remaining = broker.drain(&names.queue).await;
    let queued: HashSet<String> = remaining
        .iter()
        .map(|d| {
            serde_json::from_slice::<Value>(&d.data).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(queued.len() + delivered.len(), N, "lost or duplicated work");
    assert!(
        delivered.iter().all(|id| !queued.contains(*id)),
        "a delivered event was not acked"
    );
    broker.cleanup(&names).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_archive_exits_0_with_everything_archived_or_queued() {
    const N: usize = 2000;
    let names = Names::new("archive");
    let broker = Broker::connect().await;
    let dir = temp_dir();
    let mut bin = Bin::spawn(
        &["archive", "--dir", dir.to_str().unwrap()],
        &[
            ("HOOKRELAY__AMQP__EXCHANGE", names.exchange.as_str()),
            ("HOOKRELAY__WORKER__QUEUE", names.queue.as_str()),
            ("HOOKRELAY__WORKER__PREFETCH", "2"),
            ("HOOKRELAY__LOG__FORMAT", "json"),
        ],
    );
    // JSON logs: every stderr line is a JSON object; this one says the worker consumes.
    let line = bin.stderr_until("consuming", Duration::from_secs(15)).await;
    let log: Value = serde_json::from_str(&line).expect("JSON log line");
    assert_eq!(log["queue"], names.queue.as_str());
    let events: Vec<Value> = (0..N)
        .map(|i| {
            event(
                &format!("sa-{i}"),
                "chatwoot",
                "message.created",
                "2026-09-02T00:00:00Z",
                "x",
            )
        })
        .collect();
    broker.publish_events(&names.exchange, &events).await;
    eventually("some events archived", Duration::from_secs(15), || async {
        (archived(&dir).len() >= 20).then_some(())
    })
    .await;
    bin.sigterm();
    let status = bin.wait_exit(Duration::from_secs(20)).await;
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM");

    let lines = archived(&dir);
    let ids: HashSet<String> = lines
        .iter()
        .map(|(_, v)| v["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), lines.len(), "an event archived twice");
    assert!(lines.len() < N, "not stopped mid-work");
    let queued: HashSet<String> = broker
        .drain(&names.queue)
        .await
        .iter()
        .map(|d| {
            serde_json::from_slice::<Value>(&d.data).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        ids.len() + queued.len(),
        N,
        "lost or unacked-but-archived work"
    );
    assert!(ids.is_disjoint(&queued));
    broker.cleanup(&names).await;
    std::fs::remove_dir_all(&dir).unwrap();
}
