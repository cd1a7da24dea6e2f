//! `tail` run as the real binary: one readable line per matching event on stdout, `--json`
//! for whole events, nothing durable declared, SIGTERM exits 0.

use crate::helpers::*;
use serde_json::Value;
use std::time::Duration;

/// The server-named queue from the "consuming" log line (`queue=amq.gen-...`).
fn queue_from_log(line: &str) -> String {
    let start = line
        .find("amq.gen-")
        .expect("server-named queue in the log line");
    line[start..]
        .split(|c: char| c.is_whitespace() || c == '"' || c == ',')
        .next()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_prints_matching_events_and_leaves_nothing_behind() {
    let names = Names::new("tail");
    let broker = Broker::connect().await;
    let env = [("HOOKRELAY__AMQP__EXCHANGE", names.exchange.as_str())];
    let mut text = Bin::spawn(&["tail", "--bind", "chatwoot.message.*"], &env);
    let mut json = Bin::spawn(&["tail", "--json"], &env);
    let text_queue = queue_from_log(
        &text
            .stderr_until("consuming", Duration::from_secs(15))
            .await,
    );
    json.stderr_until("consuming", Duration::from_secs(15))
        .await;

    let long = "a rather long message ".repeat(10);
    let skipped = event(
        "t-0",
        "kommunicate",
        "message.created",
        "2026-08-01T10:00:00Z",
        "no",
    );
    let shown = event(
        "t-1",
        "chatwoot",
        "message.created",
        "2026-08-01T10:00:01Z",
        &long,
    );
    broker
        .publish_events(&names.exchange, &[skipped.clone(), shown.clone()])
        .await;

    // The first line is the matching event: the other did not match the binding.
    let line = text.next_stdout(Duration::from_secs(15)).await;
    assert!(
        line.starts_with(
            "2026-08-01T10:00:01Z  chatwoot.message.created  t-1  Ana Lima: a rather long message"
        ),
        "{line}"
    );
    assert!(line.ends_with('…'), "text not shortened: {line}");
    assert!(line.chars().count() < 200, "{line}");

    // --json: the whole event, one line each, in order, everything (`#`).
    let first: Value =
        serde_json::from_str(&json.next_stdout(Duration::from_secs(15)).await).unwrap();
    let second: Value =
        serde_json::from_str(&json.next_stdout(Duration::from_secs(15)).await).unwrap();
    assert_eq!(first, skipped);
    assert_eq!(second, shown);

    for bin in [&mut text, &mut json] {
        bin.sigterm();
        let status = bin.wait_exit(Duration::from_secs(15)).await;
        assert_eq!(status.code(), Some(0), "tail exit status");
    }
    // Its queue was exclusive and auto-delete: gone with it.
    assert!(
        broker.queue_state(&text_queue).await.is_none(),
        "{text_queue} left behind"
    );
    broker.cleanup(&names).await;
}
