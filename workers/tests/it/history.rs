//! The history stream on the real broker: retention arguments as declared, `history`
//! windows (`--since` as a time and as a duration, `--until`, filters), republishing,
//! an empty window, a missing stream, `tail --since` across the switch to live, and the
//! topic matcher against the broker's own routing. Every test deletes its stream.

use crate::helpers::*;
use hookrelay_common::topology::{self, HistoryDeclared, HistorySettings};
use hookrelay_worker::history::REPLAYED_AT_HEADER;
use hookrelay_worker::topic;
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, ExchangeKind};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// `n` events `<prefix>-<i>`, cycling through a few vendors and event types.
fn events(prefix: &str, n: usize) -> Vec<Value> {
    let kinds = [
        ("chatwoot", "message.created"),
        ("kommunicate", "message.created"),
        ("cometchat", "message.deleted"),
        ("chatwoot", "conversation.status_changed"),
    ];
    (0..n)
        .map(|i| {
            let (vendor, ev) = kinds[i % kinds.len()];
            event(
                &format!("{prefix}-{i}"),
                vendor,
                ev,
                "2026-08-01T10:00:00Z",
                &format!("text {i}"),
            )
        })
        .collect()
}

fn ids(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect()
}

/// What a finished `hookrelay-worker` run printed, and how it exited.
struct Output {
    code: Option<i32>,
    stdout: Vec<String>,
    stderr: Vec<String>,
}

async fn run_bin(args: &[&str], exchange: &str) -> Output {
    let mut bin = Bin::spawn(args, &[("HOOKRELAY__AMQP__EXCHANGE", exchange)]);
    let status = bin.wait_exit(Duration::from_secs(60)).await;
    let mut stdout = Vec::new();
    while let Ok(Some(l)) = tokio::time::timeout(Duration::from_secs(5), bin.stdout.recv()).await {
        stdout.push(l);
    }
    let mut stderr = Vec::new();
    while let Ok(Some(l)) = tokio::time::timeout(Duration::from_secs(5), bin.stderr.recv()).await {
        stderr.push(l);
    }
    Output {
        code: status.code(),
        stdout,
        stderr,
    }
}

impl Output {
    /// The ids of the JSON lines on stdout, in order.
    fn ids(&self) -> Vec<String> {
        self.stdout
            .iter()
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
                v["id"].as_str().unwrap().to_owned()
            })
            .collect()
    }

    /// N of the final `history: N events ...` line (which must be there).
    fn count(&self) -> u64 {
        let line = self
            .stderr
            .iter()
            .find(|l| l.starts_with("history: "))
            .unwrap_or_else(|| panic!("no count line on stderr: {:?}", self.stderr));
        line["history: ".len()..]
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    }

    fn ok(&self) -> &Self {
        assert_eq!(self.code, Some(0), "exit status; stderr: {:?}", self.stderr);
        self
    }
}

fn text(s: &str) -> lapin::types::AMQPValue {
    lapin::types::AMQPValue::LongString(s.into())
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap()
}

/// Wait until the clock has passed the next whole second; returns that second. Publishes
/// confirmed before the call are in chunks written before it, publishes after in chunks
/// written at or after it (the stream's time index counts whole seconds).
async fn next_second() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    let boundary = OffsetDateTime::from_unix_timestamp(now.unix_timestamp() + 1).unwrap();
    let wait = boundary - now;
    tokio::time::sleep(Duration::from_secs_f64(wait.as_seconds_f64() + 0.05)).await;
    boundary
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_is_declared_with_the_retention_arguments_and_other_arguments_are_refused() {
    let names = Names::new("hist-args");
    let broker = Broker::connect().await;
    let stream = broker.declare_history(&names.exchange).await;
    let _guard = DeleteOnDrop(stream.clone());
    assert_eq!(stream, format!("{}.history", names.exchange));

    // Same arguments: RabbitMQ accepts the redeclaration (it compares every argument).
    let mut same = FieldTable::default();
    same.insert("x-queue-type".into(), text("stream"));
    same.insert("x-max-age".into(), text("7D"));
    same.insert(
        "x-max-length-bytes".into(),
        lapin::types::AMQPValue::LongLongInt(5_000_000_000),
    );
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    broker
        .channel()
        .await
        .queue_declare(stream.as_str().into(), durable, same.clone())
        .await
        .expect("redeclaring with 7D / 5 GB is accepted: those are the stream's arguments");
    // Any other retention is refused: the arguments really are 7D and 5000000000.
    for (k, v) in [
        ("x-max-age", text("8D")),
        (
            "x-max-length-bytes",
            lapin::types::AMQPValue::LongLongInt(4_000_000_000),
        ),
    ] {
        let mut other = same.clone();
        other.insert(k.into(), v);
        let e = broker
            .channel()
            .await
            .queue_declare(stream.as_str().into(), durable, other)
            .await
            .expect_err("another retention must be refused");
        assert!(e.to_string().contains("PRECONDITION_FAILED"), "{k}: {e}");
    }

    // The code meeting a stream of other arguments reports it and leaves the connection
    // usable (the relay goes on publishing).
    let other = HistorySettings {
        max_age: "1D".into(),
        ..Default::default()
    };
    match topology::declare_history(broker.connection(), &names.exchange, &other)
        .await
        .expect("a refusal is not a connection error")
    {
        HistoryDeclared::Refused { stream: s, reason } => {
            assert_eq!(s, stream);
            assert!(reason.contains("x-max-age"), "{reason}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(broker.connection().status().connected());
    broker
        .publish_events(&names.exchange, &events("a", 1))
        .await;
    // history.enabled = false declares nothing.
    let off = HistorySettings {
        enabled: false,
        ..Default::default()
    };
    assert_eq!(
        topology::declare_history(broker.connection(), "hrtest.none", &off)
            .await
            .unwrap(),
        HistoryDeclared::Off
    );
    broker.cleanup(&names).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_reads_a_window_by_time_or_duration_until_a_time_with_filters() {
    let names = Names::new("hist-window");
    let broker = Broker::connect().await;
    let _guard = DeleteOnDrop(broker.declare_history(&names.exchange).await);
    let started = OffsetDateTime::now_utc() - time::Duration::seconds(2);

    let first = events("w1", 12);
    broker.publish_events(&names.exchange, &first).await;
    let split = next_second().await;
    let second = events("w2", 8);
    broker.publish_events(&names.exchange, &second).await;
    let all: Vec<Value> = first.iter().chain(&second).cloned().collect();

    // --since as a duration: everything, in order, each event exactly as published.
    let out = run_bin(&["history", "--since", "10m"], &names.exchange).await;
    out.ok();
    assert_eq!(out.ids(), ids(&all));
    assert_eq!(out.count(), all.len() as u64);
    let printed: Vec<Value> = out
        .stdout
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(printed, all, "the events are printed as published");

    // --since as an RFC 3339 time, --until the split: exactly the first batch.
    let out = run_bin(
        &[
            "history",
            "--since",
            &rfc3339(started),
            "--until",
            &rfc3339(split),
        ],
        &names.exchange,
    )
    .await;
    out.ok();
    assert_eq!(out.ids(), ids(&first));
    // ...and --since the split: exactly the second. Adjacent windows meet without a gap.
    let out = run_bin(&["history", "--since", &rfc3339(split)], &names.exchange).await;
    out.ok();
    assert_eq!(out.ids(), ids(&second));

    // Filters with topic semantics, several --bind meaning "any of".
    let out = run_bin(
        &[
            "history",
            "--since",
            "1h",
            "--bind",
            "kommunicate.#",
            "--bind",
            "*.message.deleted",
        ],
        &names.exchange,
    )
    .await;
    out.ok();
    let expected: Vec<String> = all
        .iter()
        .filter(|e| {
            let t = e["type"].as_str().unwrap();
            t.starts_with("kommunicate.") || t.ends_with(".message.deleted")
        })
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(!expected.is_empty());
    assert_eq!(out.ids(), expected);
    assert_eq!(out.count(), expected.len() as u64);

    // An empty window: before anything was published. Nothing printed, count 0, exit 0.
    let out = run_bin(
        &["history", "--since", "2h", "--until", "1h"],
        &names.exchange,
    )
    .await;
    out.ok();
    assert!(out.stdout.is_empty(), "{:?}", out.stdout);
    assert_eq!(out.count(), 0);
    // After the stream's end: empty too.
    let out = run_bin(
        &[
            "history",
            "--since",
            &rfc3339(split + time::Duration::hours(1)),
        ],
        &names.exchange,
    )
    .await;
    out.ok();
    assert_eq!(out.count(), 0);

    broker.cleanup(&names).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_republishes_to_a_fresh_queue_and_an_exchange_with_confirms() {
    let names = Names::new("hist-republish");
    let broker = Broker::connect().await;
    let _guard = DeleteOnDrop(broker.declare_history(&names.exchange).await);
    let all = events("r", 30);
    broker.publish_events(&names.exchange, &all).await;
    let target = format!("{}.backfill", names.queue);
    broker
        .channel()
        .await
        .queue_declare(
            target.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();

    let before = OffsetDateTime::now_utc() - time::Duration::seconds(1);
    let out = run_bin(
        &[
            "history",
            "--since",
            "1h",
            "--bind",
            "chatwoot.#",
            "--to-queue",
            &target,
            "--prefetch",
            "4",
        ],
        &names.exchange,
    )
    .await;
    out.ok();
    assert!(
        out.stdout.is_empty(),
        "republishing prints nothing on stdout"
    );
    let expected: Vec<&Value> = all
        .iter()
        .filter(|e| e["type"].as_str().unwrap().starts_with("chatwoot."))
        .collect();
    assert_eq!(out.count(), expected.len() as u64);
    let got = broker.drain(&target).await;
    assert_eq!(
        got.len(),
        expected.len(),
        "the queue holds exactly the matching events"
    );
    for (d, ev) in got.iter().zip(&expected) {
        assert_eq!(d.data, serde_json::to_vec(ev).unwrap(), "same body");
        let p = &d.properties;
        assert_eq!(
            p.message_id().as_ref().unwrap().as_str(),
            ev["id"].as_str().unwrap()
        );
        assert_eq!(
            p.kind().as_ref().unwrap().as_str(),
            ev["type"].as_str().unwrap()
        );
        assert_eq!(
            p.content_type().as_ref().unwrap().as_str(),
            "application/cloudevents+json"
        );
        assert_eq!(p.app_id().as_ref().unwrap().as_str(), "hookrelay");
        assert_eq!(*p.timestamp(), Some(1_700_000_000));
        assert_eq!(*p.delivery_mode(), Some(2));
        assert_eq!(header(p, "vendor").as_deref(), Some("chatwoot"));
        assert_eq!(
            header(p, "x-stream-offset"),
            None,
            "broker metadata is not copied"
        );
        let at = header(p, REPLAYED_AT_HEADER).expect("x-hookrelay-replayed-at");
        let at = OffsetDateTime::parse(&at, &Rfc3339).unwrap();
        assert!(at >= before && at <= OffsetDateTime::now_utc(), "{at}");
    }

    // To an exchange: each event keeps its routing key, so the target's bindings apply.
    let exchange = format!("{}.replay-x", names.exchange);
    let ch = broker.channel().await;
    ch.exchange_declare(
        exchange.as_str().into(),
        ExchangeKind::Topic,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_bind(
        target.as_str().into(),
        exchange.as_str().into(),
        "*.message.created".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let out = run_bin(
        &[
            "history",
            "--since",
            "1h",
            "--bind",
            "*.message.created",
            "--to-exchange",
            &exchange,
        ],
        &names.exchange,
    )
    .await;
    out.ok();
    let created: Vec<String> = all
        .iter()
        .filter(|e| e["type"].as_str().unwrap().ends_with(".message.created"))
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    let got: Vec<String> = broker
        .drain(&target)
        .await
        .iter()
        .map(|d| d.properties.message_id().as_ref().unwrap().to_string())
        .collect();
    assert_eq!(got, created);

    // A target that does not exist: a clear error, non-zero, nothing read.
    let out = run_bin(
        &[
            "history",
            "--since",
            "1h",
            "--to-queue",
            "hrtest.no-such-queue",
        ],
        &names.exchange,
    )
    .await;
    assert_ne!(out.code, Some(0));
    assert!(
        out.stderr
            .iter()
            .any(|l| l.contains("hrtest.no-such-queue") && l.contains("does not exist")),
        "{:?}",
        out.stderr
    );

    let _ = ch
        .queue_delete(target.as_str().into(), QueueDeleteOptions::default())
        .await;
    let _ = ch
        .exchange_delete(exchange.as_str().into(), Default::default())
        .await;
    broker.cleanup(&names).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_stream_is_a_clear_error_and_bad_times_are_refused() {
    let names = Names::new("hist-missing");
    let out = run_bin(&["history", "--since", "1h"], &names.exchange).await;
    assert_ne!(out.code, Some(0), "a missing stream must fail");
    let stream = format!("{}.history", names.exchange);
    assert!(
        out.stderr
            .iter()
            .any(|l| l.contains(&stream) && l.contains("does not exist")),
        "{:?}",
        out.stderr
    );
    let out = run_bin(&["tail", "--since", "1h"], &names.exchange).await;
    assert_ne!(out.code, Some(0), "tail --since without a stream must fail");
    assert!(
        out.stderr.iter().any(|l| l.contains("does not exist")),
        "{:?}",
        out.stderr
    );

    for (args, needle) in [
        (vec!["history", "--since", "yesterday"], "--since yesterday"),
        (
            vec!["history", "--since", "1h", "--until", "2h"],
            "before --since",
        ),
    ] {
        let out = run_bin(&args, &names.exchange).await;
        assert_ne!(out.code, Some(0), "{args:?}");
        assert!(
            out.stderr.iter().any(|l| l.contains(needle)),
            "{args:?}: {:?}",
            out.stderr
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_since_prints_history_then_live_without_gap_or_repeat_at_the_switch() {
    let names = Names::new("hist-tail");
    let broker = Broker::connect().await;
    let _guard = DeleteOnDrop(broker.declare_history(&names.exchange).await);
    let before = events("old", 300);
    broker.publish_events(&names.exchange, &before).await;

    let mut tail = Bin::spawn(
        &["tail", "--since", "1h", "--json"],
        &[("HOOKRELAY__AMQP__EXCHANGE", names.exchange.as_str())],
    );
    // Publish while tail starts, reads the history and catches up: the switch from
    // stored to live happens somewhere in here.
    let during = events("new", 300);
    for chunk in during.chunks(10) {
        broker.publish_events(&names.exchange, chunk).await;
    }
    let mut seen = Vec::new();
    for _ in 0..(before.len() + during.len()) {
        let line = tail.next_stdout(Duration::from_secs(30)).await;
        let v: Value = serde_json::from_str(&line).unwrap();
        seen.push(v["id"].as_str().unwrap().to_owned());
    }
    let expected: Vec<String> = ids(&before).into_iter().chain(ids(&during)).collect();
    assert_eq!(seen, expected, "every event once, in order");
    // And it stays live.
    let after = events("live", 1);
    broker.publish_events(&names.exchange, &after).await;
    let line = tail.next_stdout(Duration::from_secs(15)).await;
    assert!(line.contains("\"live-0\""), "{line}");
    assert!(
        tokio::time::timeout(Duration::from_millis(300), tail.stdout.recv())
            .await
            .is_err(),
        "nothing after the last event"
    );
    tail.sigterm();
    assert_eq!(
        tail.wait_exit(Duration::from_secs(15)).await.code(),
        Some(0)
    );
    broker.cleanup(&names).await;
}

/// The matcher used for `--bind` on the stream routes exactly as RabbitMQ's topic
/// exchange does, for the same binding keys and routing keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_topic_matcher_agrees_with_the_broker() {
    let names = Names::new("topic");
    let broker = Broker::connect().await;
    let patterns = [
        "#",
        "*",
        "chatwoot.#",
        "*.message.created",
        "#.created",
        "chatwoot.*.created",
        "a.#.b",
        "a.*.#",
        "#.a.#",
        "*.*",
        "a.b",
        "#.#",
        "a..b",
        "a.*.b",
        "",
        "*.#.*",
    ];
    let keys = [
        "",
        "a",
        "a.b",
        "a..b",
        "a.b.b",
        "a.x.b",
        "a.x.y.b",
        "b.a.c",
        "chatwoot",
        "chatwoot.message.created",
        "kommunicate.message.created",
        "chatwoot.a.b.created",
        "created",
        "x.created",
        "a.",
        ".a",
        "..",
        "chatwoot.message.updated",
    ];
    let ch = broker.channel().await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    ch.exchange_declare(
        names.exchange.as_str().into(),
        ExchangeKind::Topic,
        ExchangeDeclareOptions {
            auto_delete: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    let mut queues = BTreeMap::new();
    for p in patterns {
        let q = ch
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        let qn = q.name().as_str().to_owned();
        ch.queue_bind(
            qn.as_str().into(),
            names.exchange.as_str().into(),
            p.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        queues.insert(p, qn);
    }
    for k in keys {
        let c = ch
            .basic_publish(
                names.exchange.as_str().into(),
                k.into(),
                BasicPublishOptions::default(),
                k.as_bytes(),
                BasicProperties::default(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(c.is_ack());
    }
    let mut disagreements = Vec::new();
    for p in patterns {
        let broker_says: BTreeSet<String> = broker
            .drain(&queues[p])
            .await
            .iter()
            .map(|d| String::from_utf8(d.data.clone()).unwrap())
            .collect();
        let we_say: BTreeSet<String> = keys
            .iter()
            .filter(|k| topic::matches(p, k))
            .map(|k| k.to_string())
            .collect();
        if broker_says != we_say {
            disagreements.push(format!("{p:?}: broker {broker_says:?}, matcher {we_say:?}"));
        }
    }
    assert!(disagreements.is_empty(), "{disagreements:#?}");
    let _ = ch
        .exchange_delete(names.exchange.as_str().into(), Default::default())
        .await;
}
