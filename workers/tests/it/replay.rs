//! `replay`: parked messages go back to the work queue with a fresh attempt count and are
//! processed; `--limit` bounds how many move.

use crate::forward::SECRET;
use crate::helpers::*;
use crate::sink::{Answer, Sink};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_moves_parked_messages_back_and_they_are_processed() {
    let names = Names::new("forward");
    let broker = Broker::connect().await;
    // Per event: requests 1-3 fail, the 4th succeeds. With max_attempts 2 the first two
    // park it; after a replay the 3rd fails and the 4th succeeds only if replay reset the
    // attempt count (carried over, the 3rd failure would park it again).
    let sink = Sink::start(|_, nth| Answer::Status(if nth <= 3 { 500 } else { 200 })).await;
    let env = [
        ("HOOKRELAY__WORKER__QUEUE", names.queue.as_str()),
        ("HOOKRELAY__WORKER__RETRY_DELAY_MS", "100"),
        ("HOOKRELAY__WORKER__MAX_ATTEMPTS", "2"),
        ("HOOKRELAY__FORWARD__SECRET", SECRET),
    ];
    let worker = start(
        &["forward", "--url", &sink.url],
        settings(&names.exchange, &env),
    );
    broker.wait_consumer(&names.queue).await;
    let events: Vec<_> = (0..3)
        .map(|i| {
            event(
                &format!("rp-{i}"),
                "kommunicate",
                "message.created",
                "2026-07-01T00:00:00Z",
                "replay me",
            )
        })
        .collect();
    broker.publish_events(&names.exchange, &events).await;
    eventually("3 parked", Duration::from_secs(20), || async {
        (broker.ready(&names.parked()).await == 3).then_some(())
    })
    .await;
    assert_eq!(sink.received().iter().filter(|r| r.ok()).count(), 0);

    // The binary, with a limit: moves 2 and says so.
    let mut bin = Bin::spawn(
        &["replay", "--queue", &names.queue, "--limit", "2"],
        &[("HOOKRELAY__AMQP__EXCHANGE", names.exchange.as_str())],
    );
    let out = bin.next_stdout(Duration::from_secs(15)).await;
    assert!(bin.wait_exit(Duration::from_secs(15)).await.success());
    assert_eq!(
        out,
        format!(
            "moved 2 messages from {} to {}",
            names.parked(),
            names.queue
        )
    );
    sink.wait_until(
        "2 replayed events delivered",
        Duration::from_secs(20),
        |r| r.iter().filter(|r| r.ok()).count() == 2,
    )
    .await;
    assert_eq!(
        broker.ready(&names.parked()).await,
        1,
        "the limit was not honoured"
    );

    // In-process, no limit: the rest.
    start(
        &["replay", "--queue", &names.queue],
        settings(&names.exchange, &env),
    )
    .finished()
    .await
    .expect("replay");
    let received = sink
        .wait_until("all 3 delivered", Duration::from_secs(20), |r| {
            r.iter().filter(|r| r.ok()).count() == 3
        })
        .await;
    eventually("queues empty", Duration::from_secs(10), || async {
        (broker.ready(&names.queue).await == 0 && broker.ready(&names.parked()).await == 0)
            .then_some(())
    })
    .await;
    worker.stop().await;
    for ev in &events {
        let id = ev["id"].as_str().unwrap();
        let statuses: Vec<u16> = received
            .iter()
            .filter(|r| r.id() == id)
            .map(|r| r.status)
            .collect();
        assert_eq!(statuses, vec![500, 500, 500, 200], "requests for {id}");
    }

    // A queue that does not exist is an error that says so, not a silent 0.
    let err = start(
        &["replay", "--queue", &format!("{}.nope", names.queue)],
        settings(&names.exchange, &env),
    )
    .finished()
    .await
    .expect_err("replay of a missing queue");
    assert!(err.to_string().contains("does not exist"), "{err}");
    broker.cleanup(&names).await;
}
