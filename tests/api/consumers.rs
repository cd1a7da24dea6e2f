//! The example consumers (examples/python: pika + the CloudEvents SDK; examples/node:
//! amqplib + the CloudEvents JS SDK), run as a user runs them against the real broker,
//! print vendor, sender and text of each new message sent through the relay, and ack it.
//! Their packages come from scripts/examples-env.sh (./scripts/test.sh runs it first).

use crate::helpers::*;
use lapin::{Connection, ConnectionProperties};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// An installed interpreter in target/examples-env; missing is a failure, saying how to
/// install it.
fn installed(path: &str) -> PathBuf {
    let p = repo().join("target/examples-env").join(path);
    assert!(
        p.exists(),
        "{} is missing: run ./scripts/examples-env.sh (./scripts/test.sh does)",
        p.display()
    );
    p
}

/// Runs `program script <queue> 3` against a relay, posts three new messages (one per
/// vendor) and one event its `*.message.created` binding does not match, and checks it
/// printed exactly the three messages, acked them, and stopped.
async fn run_consumer(tag: &str, program: &Path, script: &Path, env: &[(&str, String)]) {
    let cfg = TestConfig::new(tag);
    let app = spawn_app(&cfg).await;
    // Also proves every event was published; removes the test's topology when dropped.
    let mut tap = Tap::new(&cfg.exchange, "#").await;
    let queue = unique(tag);
    let mut cmd = Command::new(program);
    cmd.arg(script)
        .args([queue.as_str(), "3"])
        .env("AMQP_URL", BROKER)
        .env("HOOKRELAY_EXCHANGE", &cfg.exchange)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("start the consumer");

    // It says so once its queue is declared and bound.
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let ready = tokio::time::timeout(Duration::from_secs(60), stderr.next_line())
        .await
        .expect("the consumer is ready within 60 s")
        .unwrap();
    assert_eq!(
        ready.as_deref(),
        Some(format!("consuming {queue}").as_str())
    );

    let mut expected = Vec::new();
    for (source, file) in [
        ("chatwoot", "chatwoot/message_created_incoming.json"),
        ("chatwoot", "chatwoot/conversation_created.json"),
        ("kommunicate", "kommunicate/message_group.json"),
        ("cometchat", "cometchat/message_sent_text.json"),
    ] {
        let resp = app.post_signed(source, &fixture(file)).await;
        assert_eq!(resp.status(), 200, "{file}");
        let ev = body_json(&tap.next().await);
        if ev["type"].as_str().unwrap().ends_with(".message.created") {
            let msg = &ev["data"]["message"];
            let sender = &msg["sender"];
            let who = sender["name"].as_str().or(sender["id"].as_str()).unwrap();
            let text = msg["text"].as_str().unwrap_or("");
            expected.push(format!("{}\t{who}\t{text}", ev["vendor"].as_str().unwrap()));
        }
    }
    assert_eq!(expected.len(), 3);
    assert_eq!(
        expected[0],
        "chatwoot\tMaya Lindqvist\tHi! My invoice INV-2026-0912 shows the wrong VAT number."
    );

    // It stops by itself after three events.
    let mut stdout = child.stdout.take().unwrap();
    let mut out = String::new();
    let status = tokio::time::timeout(Duration::from_secs(60), async {
        stdout.read_to_string(&mut out).await.unwrap();
        child.wait().await.unwrap()
    })
    .await
    .unwrap_or_else(|_| panic!("the consumer did not print three events within 60 s: {out}"));
    let mut rest = String::new();
    while let Ok(Some(line)) = stderr.next_line().await {
        rest.push_str(&line);
        rest.push('\n');
    }
    assert!(status.success(), "consumer exit {status}: {rest}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines, expected, "stderr: {rest}");

    // Everything was acked: the queue is empty. Then remove it.
    let conn = Connection::connect(BROKER, ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let left = ch
        .queue_delete(queue.as_str().into(), Default::default())
        .await
        .unwrap();
    assert_eq!(left, 0, "messages left in {queue}");
    let _ = conn.close(200, "bye".into()).await;
    tap.expect_nothing().await;
    drop(tap);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_consumer_prints_each_new_message() {
    let python = installed("venv/bin/python");
    let script = repo().join("examples/python/consumer.py");
    run_consumer("consumer-py", &python, &script, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_consumer_prints_each_new_message() {
    installed("node/node_modules");
    let script = repo().join("examples/node/consumer.mjs");
    // An ES module resolves packages from its own directory upwards, not NODE_PATH: the
    // script runs from a copy beside the installed node_modules.
    let copy = repo().join("target/examples-env/node/consumer.mjs");
    std::fs::copy(&script, &copy).unwrap();
    run_consumer("consumer-node", Path::new("node"), &copy, &[]).await;
}
