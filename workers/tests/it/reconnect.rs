//! The consume loop reconnects when its connection is cut (a TCP proxy between the worker
//! and the broker), and goes on without losing or duplicating work.

use crate::helpers::*;
use serde_json::Value;
use std::collections::HashSet;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Forwards 127.0.0.1:<port> to the broker; `cut()` drops every open connection.
struct Proxy {
    port: u16,
    cut: watch::Sender<u64>,
    /// Connections accepted so far.
    accepted: watch::Receiver<u64>,
}

impl Proxy {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (cut, _) = watch::channel(0u64);
        let (count, accepted) = watch::channel(0u64);
        let cuts = cut.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                count.send_modify(|n| *n += 1);
                let mut cut_rx = cuts.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect("127.0.0.1:5672").await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut_rx.changed() => {}
                    }
                });
            }
        });
        Self {
            port,
            cut,
            accepted,
        }
    }

    fn cut(&self) {
        self.cut.send_modify(|n| *n += 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_reconnects_after_the_connection_is_cut() {
    let names = Names::new("archive");
    let broker = Broker::connect().await;
    let proxy = Proxy::start().await;
    let dir = temp_dir();
    let uri = format!("amqp://guest:guest@127.0.0.1:{}/%2f", proxy.port);
    let worker = start(
        &["archive", "--dir", dir.to_str().unwrap()],
        settings(
            &names.exchange,
            &[
                ("HOOKRELAY__AMQP__URI", uri.as_str()),
                ("HOOKRELAY__WORKER__QUEUE", names.queue.as_str()),
            ],
        ),
    );
    broker.wait_consumer(&names.queue).await;
    let batch = |from: usize| -> Vec<Value> {
        (from..from + 10)
            .map(|i| {
                event(
                    &format!("rc-{i}"),
                    "chatwoot",
                    "message.created",
                    "2026-10-01T00:00:00Z",
                    "x",
                )
            })
            .collect()
    };
    broker.publish_events(&names.exchange, &batch(0)).await;
    eventually("10 archived", Duration::from_secs(15), || async {
        (archived(&dir).len() == 10).then_some(())
    })
    .await;

    assert_eq!(*proxy.accepted.borrow(), 1);
    proxy.cut();
    broker.publish_events(&names.exchange, &batch(10)).await;
    // The worker connects again by itself (through the proxy: a second connection) and
    // archives what came meanwhile.
    let mut accepted = proxy.accepted.clone();
    tokio::time::timeout(Duration::from_secs(15), accepted.wait_for(|n| *n >= 2))
        .await
        .expect("no reconnect within 15 s")
        .unwrap();
    eventually(
        "20 archived after reconnecting",
        Duration::from_secs(20),
        || async {
            (archived(&dir).len() >= 20 && broker.ready(&names.queue).await == 0).then_some(())
        },
    )
    .await;
    worker.stop().await;

    let ids: Vec<String> = archived(&dir)
        .iter()
        .map(|(_, v)| v["id"].as_str().unwrap().to_owned())
        .collect();
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(ids.len(), 20, "{ids:?}");
    assert_eq!(unique.len(), 20);
    broker.cleanup(&names).await;
    std::fs::remove_dir_all(&dir).unwrap();
}
