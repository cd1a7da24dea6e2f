//! The archive worker end to end: files per UTC day, no id twice (also across a restart
//! mid-stream), and a body that is not a CloudEvent parked at once.

use crate::helpers::*;
use hookrelay_worker::consume::{ATTEMPTS_HEADER, ERROR_HEADER};
use serde_json::Value;
use std::collections::HashSet;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_writes_one_line_per_event_per_utc_day_and_skips_duplicate_ids() {
    let names = Names::new("archive");
    let broker = Broker::connect().await;
    let dir = temp_dir();
    let s = settings(
        &names.exchange,
        &[("HOOKRELAY__WORKER__QUEUE", names.queue.as_str())],
    );
    let dir_s = dir.to_str().unwrap();
    let worker = start(
        &[
            "archive",
            "--dir",
            dir_s,
            "--bind",
            "chatwoot.#",
            "--bind",
            "kommunicate.#",
        ],
        s,
    );
    broker.wait_consumer(&names.queue).await;

    let e1 = event(
        "e1",
        "chatwoot",
        "message.created",
        "2026-03-01T23:59:59Z",
        "late",
    );
    let e2 = event(
        "e2",
        "kommunicate",
        "message.created",
        "2026-03-02T00:00:00Z",
        "midnight",
    );
    // 22:30 at UTC-3 is 01:30 UTC the next day: filed under the UTC day.
    let e3 = event(
        "e3",
        "chatwoot",
        "conversation.created",
        "2026-03-01T22:30:00-03:00",
        "tz",
    );
    let unbound = event(
        "e4",
        "cometchat",
        "message.created",
        "2026-03-01T10:00:00Z",
        "x",
    );
    broker
        .publish_events(
            &names.exchange,
            &[e1.clone(), e2.clone(), e1.clone(), e3.clone(), unbound],
        )
        .await;

    eventually(
        "3 archived lines and an empty queue",
        Duration::from_secs(15),
        || async {
            (archived(&dir).len() >= 3 && broker.ready(&names.queue).await == 0).then_some(())
        },
    )
    .await;
    worker.stop().await;

    let lines = archived(&dir);
    let got: Vec<(&str, &str)> = lines
        .iter()
        .map(|(f, v)| (f.as_str(), v["id"].as_str().unwrap()))
        .collect();
    assert_eq!(
        lines.len(),
        3,
        "duplicate or unbound event archived: {got:?}"
    );
    let by_id = |id: &str| lines.iter().find(|(_, v)| v["id"] == id).unwrap();
    assert_eq!(by_id("e1").0, "2026-03-01.jsonl");
    assert_eq!(by_id("e2").0, "2026-03-02.jsonl");
    assert_eq!(by_id("e3").0, "2026-03-02.jsonl");
    // The line is the event as published.
    assert_eq!(by_id("e1").1, e1);
    assert_eq!(by_id("e3").1, e3);
    assert_eq!(broker.ready(&names.parked()).await, 0);
    // The unbound event matched none of the worker's bindings: the relay's alternate
    // exchange kept it.
    assert_eq!(
        broker.ready(&format!("{}.unrouted", names.exchange)).await,
        1
    );
    broker.cleanup(&names).await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_restarted_mid_stream_writes_every_event_exactly_once() {
    const N: usize = 1500;
    let names = Names::new("archive");
    let broker = Broker::connect().await;
    let dir = temp_dir();
    let dir_s = dir.to_str().unwrap().to_owned();
    let env = [
        ("HOOKRELAY__WORKER__QUEUE", names.queue.as_str()),
        ("HOOKRELAY__WORKER__PREFETCH", "4"),
    ];
    let events: Vec<Value> = (0..N)
        .map(|i| {
            let day = 1 + i % 3;
            event(
                &format!("ev-{i:05}"),
                "chatwoot",
                "message.created",
                &format!("2026-04-0{day}T12:00:{:02}Z", i % 60),
                &format!("message {i}"),
            )
        })
        .collect();

    let first = start(
        &["archive", "--dir", &dir_s],
        settings(&names.exchange, &env),
    );
    broker.wait_consumer(&names.queue).await;
    broker.publish_events(&names.exchange, &events).await;
    eventually("100 archived lines", Duration::from_secs(30), || async {
        (archived(&dir).len() >= 100).then_some(())
    })
    .await;
    first.stop().await;

    let after_first = archived(&dir);
    let ready = broker.ready(&names.queue).await as usize;
    assert!(
        after_first.len() < N,
        "not stopped mid-stream ({N} archived already)"
    );
    // Everything acked is in the files and nothing in the files is still queued.
    assert_eq!(
        after_first.len() + ready,
        N,
        "archived + still queued != published"
    );

    // Redeliveries of events archived by the first run, as after a crash before the ack.
    let again: Vec<Value> = after_first
        .iter()
        .take(50)
        .map(|(_, v)| v.clone())
        .collect();
    broker.publish_events(&names.exchange, &again).await;

    let second = start(
        &["archive", "--dir", &dir_s],
        settings(&names.exchange, &env),
    );
    eventually(
        "every event archived and the queue empty",
        Duration::from_secs(60),
        || async {
            (archived(&dir).len() >= N && broker.ready(&names.queue).await == 0).then_some(())
        },
    )
    .await;
    second.stop().await;

    let lines = archived(&dir);
    let ids: Vec<&str> = lines
        .iter()
        .map(|(_, v)| v["id"].as_str().unwrap())
        .collect();
    let unique: HashSet<&str> = ids.iter().copied().collect();
    assert_eq!(ids.len(), unique.len(), "an event was archived twice");
    let expected: HashSet<String> = (0..N).map(|i| format!("ev-{i:05}")).collect();
    let unique: HashSet<String> = unique.into_iter().map(str::to_owned).collect();
    assert_eq!(unique, expected, "events missing from the archive");
    for (file, v) in &lines {
        let day = &v["time"].as_str().unwrap()[..10];
        assert_eq!(file, &format!("{day}.jsonl"));
    }
    assert_eq!(broker.ready(&names.parked()).await, 0);
    broker.cleanup(&names).await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_is_not_a_cloudevent_is_parked_at_once() {
    let names = Names::new("archive");
    let broker = Broker::connect().await;
    let dir = temp_dir();
    let worker = start(
        &["archive", "--dir", dir.to_str().unwrap()],
        settings(
            &names.exchange,
            &[
                ("HOOKRELAY__WORKER__QUEUE", names.queue.as_str()),
                ("HOOKRELAY__WORKER__MAX_ATTEMPTS", "5"),
            ],
        ),
    );
    broker.wait_consumer(&names.queue).await;
    broker
        .publish_raw(&names.exchange, "chatwoot.message.created", b"{not json")
        .await;
    let good = event(
        "good-1",
        "chatwoot",
        "message.created",
        "2026-05-01T00:00:00Z",
        "fine",
    );
    broker
        .publish_events(&names.exchange, std::slice::from_ref(&good))
        .await;

    eventually(
        "the bad message parked",
        Duration::from_secs(15),
        || async { (broker.ready(&names.parked()).await == 1).then_some(()) },
    )
    .await;
    eventually(
        "the good event archived",
        Duration::from_secs(15),
        || async { (archived(&dir).len() == 1).then_some(()) },
    )
    .await;
    worker.stop().await;

    let parked = broker.drain(&names.parked()).await;
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].data, b"{not json");
    // Parked on the first attempt, not after max_attempts, and it says why.
    assert_eq!(
        header(&parked[0].properties, ATTEMPTS_HEADER).as_deref(),
        Some("1")
    );
    let error = header(&parked[0].properties, ERROR_HEADER).unwrap();
    assert!(error.contains("not a CloudEvent"), "{error}");
    assert_eq!(broker.ready(&names.retry()).await, 0);
    assert_eq!(archived(&dir)[0].1, good);
    broker.cleanup(&names).await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_of_many_amqp_frames_is_archived_whole() {
    // Workers ask for 16 KiB frames (hookrelay_common::amqp): a 1.5 MB event arrives as
    // about a hundred body frames and must come out as the same JSON line.
    let names = Names::new("archive-big");
    let broker = Broker::connect().await;
    let dir = temp_dir();
    let s = settings(
        &names.exchange,
        &[("HOOKRELAY__WORKER__QUEUE", names.queue.as_str())],
    );
    let worker = start(
        &["archive", "--dir", dir.to_str().unwrap(), "--bind", "#"],
        s,
    );
    broker.wait_consumer(&names.queue).await;
    let text: String = (0..750_000u32)
        .map(|i| char::from(b'a' + (i * 11 % 26) as u8))
        .collect();
    let big = event(
        "big",
        "chatwoot",
        "message.created",
        "2026-03-01T12:00:00Z",
        &text,
    );
    broker
        .publish_events(&names.exchange, std::slice::from_ref(&big))
        .await;
    // Waits for the whole line by size: reading the file mid-write would see half a line.
    let line = serde_json::to_string(&big).unwrap().len() as u64 + 1;
    let written = || -> u64 {
        std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.path().extension().is_some_and(|x| x == "jsonl"))
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .sum()
    };
    eventually(
        "the big event archived",
        Duration::from_secs(15),
        || async { (written() >= line).then_some(()) },
    )
    .await;
    worker.stop().await;
    let lines = archived(&dir);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0].1, big);
    broker.cleanup(&names).await;
    std::fs::remove_dir_all(&dir).unwrap();
}
