//! definitions.json against what the code really declares on the real RabbitMQ.
//!
//! How, with AMQP alone (no management plugin needed):
//!
//! 1. The code declares its topology (`hookrelay_common::topology::declare_events`,
//!    `declare_history` and `declare_worker_queue` for the compose workers) under unique
//!    names: every name gets
//!    a `deploycheck-<random>.` prefix, so tests run in parallel and never touch a real
//!    `hookrelay.*` object. definitions.json is read through the same renaming (names,
//!    and the arguments that hold names: `alternate-exchange`, dead-letter targets).
//! 2. Every exchange and queue of definitions.json is declared *passively* (it must
//!    exist: the code declared it), then declared again with the definitions' own type,
//!    flags and arguments. RabbitMQ answers PRECONDITION_FAILED when those differ from
//!    the existing object's (type, durable, auto-delete, internal, `alternate-exchange`,
//!    `x-queue-type`, dead-lettering, TTLs...), so success proves agreement.
//! 3. Bindings and routing: a message is published (with confirms) to every exchange with
//!    each of its binding keys and a few sample routing keys; the queues it actually
//!    reached must be exactly those definitions.json routes it to (topic matching, fanout,
//!    and the alternate exchange for what matches nothing). A binding missing from
//!    either side, or an extra one, lands a message in the wrong set of queues. A stream
//!    cannot be read with basic.get: the history stream is read from its first offset by
//!    a consumer instead, and must hold exactly the probes routed to it.
//!
//! What AMQP cannot show is an object the code declares under a name definitions.json
//! does not have; `definitions::definitions_are_the_code_topology_for_the_compose_workers`
//! covers that by comparing names and arguments from the code's own functions.
//! `the_broker_check_catches_drift` runs the same check against deliberately altered
//! definitions and requires each alteration to be reported.

use crate::support::*;
use futures_util::StreamExt;
use hookrelay_common::topology::{
    declare_events, declare_history, declare_worker_queue, HistoryDeclared,
};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// The broker the tests use (the documented default; override with HOOKRELAY_TEST_AMQP_URI).
fn amqp_uri() -> String {
    std::env::var("HOOKRELAY_TEST_AMQP_URI")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

/// Routing keys tried on every exchange besides its binding keys.
const SAMPLE_KEYS: &[&str] = &[
    "kommunicate.message.created",
    "chatwoot.conversation.status_changed",
    "cometchat.unmapped.some_event",
    "deploycheck",
];

/// The `deploycheck-<random>.` renaming of one test run.
struct Names {
    prefix: String,
}

impl Names {
    fn new() -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string();
        Names {
            prefix: format!("deploycheck-{}.", &id[..12]),
        }
    }

    fn map(&self, name: &str) -> String {
        // "" is the default exchange, which is not renamed.
        if name.is_empty() {
            String::new()
        } else {
            format!("{}{name}", self.prefix)
        }
    }

    fn map_str_arg(&self, args: &mut Args, key: &str) {
        if let Some(Arg::Str(v)) = args.get_mut(key) {
            *v = self.map(v);
        }
    }

    /// `t` with every object name, and every argument that names an object, renamed.
    fn topology(&self, t: &Topology) -> Topology {
        Topology {
            exchanges: t
                .exchanges
                .iter()
                .map(|x| {
                    let mut x = x.clone();
                    x.name = self.map(&x.name);
                    self.map_str_arg(&mut x.arguments, "alternate-exchange");
                    x
                })
                .collect(),
            queues: t
                .queues
                .iter()
                .map(|q| {
                    let mut q = q.clone();
                    q.name = self.map(&q.name);
                    // Through the default exchange the dead-letter routing key is a queue
                    // name; through a named exchange it is a routing key, left alone.
                    let via_default = match q.arguments.get("x-dead-letter-exchange") {
                        None => true,
                        Some(dlx) => *dlx == Arg::Str(String::new()),
                    };
                    self.map_str_arg(&mut q.arguments, "x-dead-letter-exchange");
                    if via_default {
                        self.map_str_arg(&mut q.arguments, "x-dead-letter-routing-key");
                    }
                    q
                })
                .collect(),
            bindings: t
                .bindings
                .iter()
                .map(|b| Binding {
                    source: self.map(&b.source),
                    destination: self.map(&b.destination),
                    destination_type: b.destination_type.clone(),
                    routing_key: b.routing_key.clone(),
                })
                .collect(),
        }
    }
}

fn exchange_kind(kind: &str) -> ExchangeKind {
    match kind {
        "topic" => ExchangeKind::Topic,
        "fanout" => ExchangeKind::Fanout,
        "direct" => ExchangeKind::Direct,
        "headers" => ExchangeKind::Headers,
        other => ExchangeKind::Custom(other.to_owned()),
    }
}

/// The code's topology for the compose setup, declared on the broker under unique names.
struct Fixture {
    conn: Connection,
    names: Names,
    /// The renamed objects the code declared, for clean-up.
    declared: Topology,
}

impl Fixture {
    async fn declare() -> Fixture {
        let uri = amqp_uri();
        let conn = tokio::time::timeout(
            Duration::from_secs(10),
            Connection::connect(&uri, ConnectionProperties::default()),
        )
        .await
        .unwrap_or_else(|_| panic!("RabbitMQ at {uri}: connect timed out"))
        .unwrap_or_else(|e| panic!("RabbitMQ at {uri}: {e} (these tests need the real broker)"));
        let names = Names::new();
        let services = services();
        let defaults = default_toml();
        let original_exchange = compose_exchange(&services, &defaults);
        let exchange = names.map(&original_exchange);
        let mut history = compose_history(&services, &defaults);
        history.stream = Some(names.map(&history.stream_name(&original_exchange)));
        let mut workers = worker_queues(&compose_workers(&services, &defaults));
        for w in &mut workers {
            w.name = names.map(&w.name);
        }
        let ch = conn.create_channel().await.expect("channel");
        declare_events(&ch, &exchange)
            .await
            .expect("declare_events on the broker");
        for w in &workers {
            declare_worker_queue(&ch, &exchange, w)
                .await
                .unwrap_or_else(|e| panic!("declare_worker_queue {}: {e}", w.name));
        }
        let _ = ch.close(200, "declared".into()).await;
        match declare_history(&conn, &exchange, &history)
            .await
            .expect("declare_history on the broker")
        {
            HistoryDeclared::Ready { .. } | HistoryDeclared::Off => {}
            refused => panic!("the broker refused the history stream: {refused:?}"),
        }
        let declared = code_topology(&exchange, &history, &workers);
        Fixture {
            conn,
            names,
            declared,
        }
    }

    /// Delete every renamed object either side knows of (best effort).
    async fn clean_up(self, extra: &Topology) {
        let queues: BTreeSet<&str> = self
            .declared
            .queues
            .iter()
            .chain(&extra.queues)
            .map(|q| q.name.as_str())
            .collect();
        let exchanges: BTreeSet<&str> = self
            .declared
            .exchanges
            .iter()
            .chain(&extra.exchanges)
            .map(|x| x.name.as_str())
            .collect();
        for q in queues
            .into_iter()
            .filter(|q| q.starts_with(&self.names.prefix))
        {
            if let Ok(ch) = self.conn.create_channel().await {
                let _ = ch
                    .queue_delete(q.into(), QueueDeleteOptions::default())
                    .await;
                let _ = ch.close(200, "".into()).await;
            }
        }
        for x in exchanges
            .into_iter()
            .filter(|x| x.starts_with(&self.names.prefix))
        {
            if let Ok(ch) = self.conn.create_channel().await {
                let _ = ch
                    .exchange_delete(x.into(), ExchangeDeleteOptions::default())
                    .await;
                let _ = ch.close(200, "".into()).await;
            }
        }
        let _ = self.conn.close(200, "done".into()).await;
    }
}

async fn channel(conn: &Connection) -> Channel {
    conn.create_channel().await.expect("a channel")
}

/// Close a channel that is still open (one a broker error closed is left alone).
async fn done(ch: Channel) {
    if ch.status().connected() {
        let _ = ch.close(200, "".into()).await;
    }
}

/// Everything in `defs` (already renamed) that the broker shows to differ.
async fn broker_problems(conn: &Connection, defs: &Topology) -> Vec<String> {
    let mut problems = Vec::new();
    let mut exchanges = BTreeSet::new();
    for x in &defs.exchanges {
        let ch = channel(conn).await;
        let passive = ExchangeDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let exists = ch
            .exchange_declare(
                x.name.as_str().into(),
                exchange_kind(&x.kind),
                passive,
                FieldTable::default(),
            )
            .await;
        done(ch).await;
        if let Err(e) = exists {
            problems.push(format!(
                "exchange {}: the code did not declare it ({e})",
                x.name
            ));
            continue;
        }
        let ch = channel(conn).await;
        let same = ch
            .exchange_declare(
                x.name.as_str().into(),
                exchange_kind(&x.kind),
                ExchangeDeclareOptions {
                    durable: x.durable,
                    auto_delete: x.auto_delete,
                    internal: x.internal,
                    ..Default::default()
                },
                args_table(&x.arguments),
            )
            .await;
        done(ch).await;
        match same {
            Ok(()) => {
                exchanges.insert(x.name.clone());
            }
            Err(e) => problems.push(format!("exchange {}: the broker's differs: {e}", x.name)),
        }
    }
    let mut queues = BTreeSet::new();
    for q in &defs.queues {
        let ch = channel(conn).await;
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let exists = ch
            .queue_declare(q.name.as_str().into(), passive, FieldTable::default())
            .await;
        done(ch).await;
        if let Err(e) = exists {
            problems.push(format!(
                "queue {}: the code did not declare it ({e})",
                q.name
            ));
            continue;
        }
        let ch = channel(conn).await;
        let same = ch
            .queue_declare(
                q.name.as_str().into(),
                QueueDeclareOptions {
                    durable: q.durable,
                    auto_delete: q.auto_delete,
                    ..Default::default()
                },
                args_table(&q.arguments),
            )
            .await;
        done(ch).await;
        match same {
            Ok(_) => {
                queues.insert(q.name.clone());
            }
            Err(e) => problems.push(format!("queue {}: the broker's differs: {e}", q.name)),
        }
    }
    problems.extend(routing_problems(conn, defs, &exchanges, &queues).await);
    problems
}

/// Take every message waiting in `queue`.
async fn drain(ch: &Channel, queue: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(m) = ch
        .basic_get(queue.into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap_or_else(|e| panic!("basic.get {queue}: {e}"))
    {
        out.push(m.delivery.data.clone());
    }
    out
}

async fn routing_problems(
    conn: &Connection,
    defs: &Topology,
    exchanges: &BTreeSet<String>,
    queues: &BTreeSet<String>,
) -> Vec<String> {
    let mut problems = Vec::new();
    let publisher = channel(conn).await;
    publisher
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm.select");
    let reader = channel(conn).await;
    // Streams are read by a consumer at the end; the other queues with basic.get.
    let streams: BTreeSet<String> = defs
        .queues
        .iter()
        .filter(|q| q.arguments.get("x-queue-type") == Some(&Arg::Str("stream".into())))
        .map(|q| q.name.clone())
        .filter(|q| queues.contains(q))
        .collect();
    let queues: BTreeSet<String> = queues.difference(&streams).cloned().collect();
    let queues = &queues;
    let mut stream_expected: BTreeMap<String, BTreeSet<Vec<u8>>> = BTreeMap::new();
    // Leftovers would be mistaken for routed probes.
    for q in queues {
        drain(&reader, q).await;
    }
    for x in exchanges {
        let mut keys: BTreeSet<String> = defs
            .bindings
            .iter()
            .filter(|b| &b.source == x)
            .map(|b| b.routing_key.clone())
            .collect();
        keys.extend(SAMPLE_KEYS.iter().map(|k| k.to_string()));
        for key in keys {
            let probe = uuid::Uuid::new_v4().to_string().into_bytes();
            let confirm = publisher
                .basic_publish(
                    x.as_str().into(),
                    key.as_str().into(),
                    BasicPublishOptions::default(),
                    &probe,
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await
                .expect("basic.publish")
                .await
                .expect("publisher confirm");
            assert!(confirm.is_ack(), "broker nacked a probe to {x}");
            let routed = defs.route(x, &key);
            for s in routed.intersection(&streams) {
                stream_expected
                    .entry(s.clone())
                    .or_default()
                    .insert(probe.clone());
            }
            let expected: BTreeSet<String> = routed.intersection(queues).cloned().collect();
            // After the confirm the message sits in every queue it was routed to; wait a
            // little anyway before calling an expected queue empty.
            let mut reached = BTreeSet::new();
            let deadline = Instant::now() + Duration::from_secs(1);
            loop {
                for q in queues {
                    for body in drain(&reader, q).await {
                        if body == probe {
                            reached.insert(q.clone());
                        } else {
                            problems.push(format!("queue {q}: a stray message arrived late"));
                        }
                    }
                }
                if expected.is_subset(&reached) || Instant::now() > deadline {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if reached != expected {
                problems.push(format!(
                    "publishing to {x} with key `{key}`: definitions.json routes it to {expected:?}, the broker delivered it to {reached:?}"
                ));
            }
        }
    }
    for s in &streams {
        let expected = stream_expected.remove(s).unwrap_or_default();
        let reached = read_stream(conn, s, expected.len()).await;
        if reached != expected {
            problems.push(format!(
                "stream {s}: definitions.json routes {} probes to it, the broker delivered {} ({} of them expected)",
                expected.len(),
                reached.len(),
                reached.intersection(&expected).count()
            ));
        }
    }
    done(publisher).await;
    done(reader).await;
    problems
}

/// Every message of a (fresh) stream, read from its first offset: at least `want`, then
/// whatever else arrives within a short wait (an unexpected extra must show).
async fn read_stream(conn: &Connection, stream: &str, want: usize) -> BTreeSet<Vec<u8>> {
    let ch = channel(conn).await;
    ch.basic_qos(100, BasicQosOptions::default())
        .await
        .expect("basic.qos");
    let mut args = FieldTable::default();
    args.insert(
        "x-stream-offset".into(),
        AMQPValue::LongString("first".into()),
    );
    let mut consumer = ch
        .basic_consume(
            stream.into(),
            "".into(),
            BasicConsumeOptions::default(),
            args,
        )
        .await
        .unwrap_or_else(|e| panic!("consume {stream}: {e}"));
    let mut got = BTreeSet::new();
    loop {
        let wait = if got.len() >= want {
            Duration::from_millis(300)
        } else {
            Duration::from_secs(3)
        };
        match tokio::time::timeout(wait, consumer.next()).await {
            Ok(Some(Ok(d))) => {
                d.ack(BasicAckOptions::default()).await.expect("ack");
                got.insert(d.data.clone());
            }
            _ => break,
        }
    }
    done(ch).await;
    got
}

#[tokio::test(flavor = "multi_thread")]
async fn code_topology_on_the_broker_agrees_with_definitions() {
    let fixture = Fixture::declare().await;
    let defs = fixture.names.topology(&definitions().topology());
    let problems = broker_problems(&fixture.conn, &defs).await;
    fixture.clean_up(&defs).await;
    assert_no_problems(
        "definitions.json vs the code's topology on RabbitMQ",
        &problems,
    );
}

fn edit_queue(t: &Topology, name: &str, f: impl FnOnce(&mut Queue)) -> Topology {
    let mut t = t.clone();
    let mut q = t
        .queues
        .iter()
        .find(|q| q.name == name)
        .cloned()
        .unwrap_or_else(|| panic!("no queue {name}"));
    t.queues.remove(&q);
    f(&mut q);
    t.queues.insert(q);
    t
}

fn edit_exchange(t: &Topology, name: &str, f: impl FnOnce(&mut Exchange)) -> Topology {
    let mut t = t.clone();
    let mut x = t
        .exchanges
        .iter()
        .find(|x| x.name == name)
        .cloned()
        .unwrap_or_else(|| panic!("no exchange {name}"));
    t.exchanges.remove(&x);
    f(&mut x);
    t.exchanges.insert(x);
    t
}

/// Proof that the check above can fail: each altered copy of definitions.json must be
/// reported against the same code-declared topology.
#[tokio::test(flavor = "multi_thread")]
async fn the_broker_check_catches_drift() {
    let fixture = Fixture::declare().await;
    let base = definitions().topology();
    let services = services();
    let defaults = default_toml();
    let exchange = compose_exchange(&services, &defaults);
    let unrouted = hookrelay_common::topology::unrouted_name(&exchange);
    let queue = compose_workers(&services, &defaults)[0].queue.clone();
    let retry = hookrelay_common::topology::retry_queue(&queue);
    let parked = hookrelay_common::topology::parked_queue(&queue);

    let mut extra_queue = base.clone();
    extra_queue.queues.insert(Queue {
        name: format!("{queue}.dlq"),
        durable: true,
        auto_delete: false,
        arguments: Args::new(),
    });
    let mut narrower_binding = base.clone();
    narrower_binding.bindings.retain(|b| b.destination != queue);
    narrower_binding.bindings.insert(Binding {
        source: exchange.clone(),
        destination: queue.clone(),
        destination_type: "queue".into(),
        routing_key: "chatwoot.#".into(),
    });
    let mut extra_binding = base.clone();
    extra_binding.bindings.insert(Binding {
        source: exchange.clone(),
        destination: parked.clone(),
        destination_type: "queue".into(),
        routing_key: "#".into(),
    });
    let stream = compose_history(&services, &defaults).stream_name(&exchange);
    let mut no_history_binding = base.clone();
    no_history_binding
        .bindings
        .retain(|b| b.destination != stream);
    let mut no_unrouted_binding = base.clone();
    no_unrouted_binding
        .bindings
        .retain(|b| b.source != unrouted);

    let drifted: Vec<(&str, Topology)> = vec![
        (
            "events exchange is fanout",
            edit_exchange(&base, &exchange, |x| x.kind = "fanout".into()),
        ),
        (
            "events exchange has no alternate exchange",
            edit_exchange(&base, &exchange, |x| {
                x.arguments.remove("alternate-exchange");
            }),
        ),
        (
            "unrouted exchange is not durable",
            edit_exchange(&base, &unrouted, |x| x.durable = false),
        ),
        (
            "unrouted queue is auto-delete",
            edit_queue(&base, &unrouted, |q| q.auto_delete = true),
        ),
        (
            "work queue is quorum",
            edit_queue(&base, &queue, |q| {
                q.arguments
                    .insert("x-queue-type".into(), Arg::Str("quorum".into()));
            }),
        ),
        (
            "retry queue does not dead-letter back",
            edit_queue(&base, &retry, |q| {
                q.arguments.remove("x-dead-letter-routing-key");
            }),
        ),
        (
            "retry queue dead-letters to the parked queue",
            edit_queue(&base, &retry, |q| {
                q.arguments
                    .insert("x-dead-letter-routing-key".into(), Arg::Str(parked.clone()));
            }),
        ),
        (
            "retry queue has a queue TTL",
            edit_queue(&base, &retry, |q| {
                q.arguments.insert("x-message-ttl".into(), Arg::Int(5000));
            }),
        ),
        ("a queue the code does not declare", extra_queue),
        ("a narrower binding key", narrower_binding),
        ("an extra binding", extra_binding),
        ("the unrouted binding missing", no_unrouted_binding),
        ("the history stream's binding missing", no_history_binding),
        (
            "the history stream keeps 30 days",
            edit_queue(&base, &stream, |q| {
                q.arguments
                    .insert("x-max-age".into(), Arg::Str("30D".into()));
            }),
        ),
        (
            "the history stream has no size bound",
            edit_queue(&base, &stream, |q| {
                q.arguments.remove("x-max-length-bytes");
            }),
        ),
    ];
    let mut undetected = Vec::new();
    for (what, t) in &drifted {
        if broker_problems(&fixture.conn, &fixture.names.topology(t))
            .await
            .is_empty()
        {
            undetected.push(what.to_string());
        }
    }
    let renamed_base = fixture.names.topology(&base);
    fixture.clean_up(&renamed_base).await;
    assert_no_problems("drift the broker check did not report", &undetected);
}
