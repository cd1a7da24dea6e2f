//! Readers for the repository's deployment files, and the topology model they are compared in.

use hookrelay_common::topology::{self, HistorySettings, QueueType, WorkerQueue};
use lapin::types::{AMQPValue, FieldTable};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

/// The workspace root (this crate lives in `crates/hookrelay-deploy-check`).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

pub fn read(rel: &str) -> String {
    let path = repo_root().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Fail with every problem found, not just the first.
pub fn assert_no_problems(what: &str, problems: &[String]) {
    assert!(
        problems.is_empty(),
        "{what}: {} problem(s):\n  - {}",
        problems.len(),
        problems.join("\n  - ")
    );
}

// ---------------------------------------------------------------------------------------
// The documented programs (README: the relay's commands, Workers): binary -> subcommand -> flags it takes.

pub const RELAY_BIN: &str = "hookrelay";
pub const WORKER_BIN: &str = "hookrelay-worker";

/// Flags each subcommand accepts per the README (`--config` is global to both binaries).
pub fn spec_flags(binary: &str, subcommand: &str) -> Option<&'static [&'static str]> {
    Some(match (binary, subcommand) {
        (RELAY_BIN, "serve") => &["--config"],
        (RELAY_BIN, "check-config") => &["--config"],
        (RELAY_BIN, "send") => &["--config", "--url"],
        (RELAY_BIN, "healthcheck") => &["--config", "--url"],
        (WORKER_BIN, "tail") => &["--config", "--bind", "--json"],
        (WORKER_BIN, "archive") => &["--config", "--dir", "--queue", "--bind"],
        (WORKER_BIN, "forward") => &["--config", "--url", "--queue", "--bind"],
        (WORKER_BIN, "replay") => &["--config", "--queue", "--limit"],
        _ => return None,
    })
}

// ---------------------------------------------------------------------------------------
// config/default.toml

/// A TOML value reduced to what the checks need.
#[derive(Debug, Clone, PartialEq)]
pub enum TomlValue {
    Str(String),
    Array(Vec<TomlValue>),
    Table(BTreeMap<String, TomlValue>),
    /// Numbers, booleans, dates: their source text.
    Scalar(String),
}

impl TomlValue {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            TomlValue::Str(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_table(&self) -> Option<&BTreeMap<String, TomlValue>> {
        match self {
            TomlValue::Table(t) => Some(t),
            _ => None,
        }
    }
    pub fn get(&self, dotted: &str) -> Option<&TomlValue> {
        dotted
            .split('.')
            .try_fold(self, |v, k| v.as_table().and_then(|t| t.get(k)))
    }
    pub fn str_at(&self, dotted: &str) -> String {
        self.get(dotted)
            .and_then(TomlValue::as_str)
            .unwrap_or_else(|| panic!("config/default.toml: `{dotted}` is not a string"))
            .to_owned()
    }
    pub fn strings_at(&self, dotted: &str) -> Vec<String> {
        match self.get(dotted) {
            Some(TomlValue::Array(items)) => items
                .iter()
                .map(|v| v.as_str().expect("a string").to_owned())
                .collect(),
            other => panic!("config/default.toml: `{dotted}` is not an array: {other:?}"),
        }
    }
}

fn from_de(v: &toml::de::DeValue<'_>) -> TomlValue {
    use toml::de::DeValue;
    match v {
        DeValue::String(s) => TomlValue::Str(s.to_string()),
        DeValue::Integer(i) => TomlValue::Scalar(i.as_str().to_owned()),
        DeValue::Float(f) => TomlValue::Scalar(f.as_str().to_owned()),
        DeValue::Boolean(b) => TomlValue::Scalar(b.to_string()),
        DeValue::Datetime(d) => TomlValue::Scalar(d.to_string()),
        DeValue::Array(a) => TomlValue::Array(a.iter().map(|v| from_de(v.get_ref())).collect()),
        DeValue::Table(t) => TomlValue::Table(
            t.iter()
                .map(|(k, v)| (k.get_ref().to_string(), from_de(v.get_ref())))
                .collect(),
        ),
    }
}

pub fn parse_toml(rel: &str) -> TomlValue {
    let text = read(rel);
    let table = toml::de::DeTable::parse(&text).unwrap_or_else(|e| panic!("{rel}: {e}"));
    from_de(&toml::de::DeValue::Table(table.into_inner()))
}

pub fn default_toml() -> TomlValue {
    parse_toml("config/default.toml")
}

/// Fields a source may have (README: Sources and credentials, and the comments of config/default.toml).
pub const SOURCE_FIELDS: &[&str] = &[
    "vendor",
    "token",
    "secret",
    "username",
    "password",
    "token_file",
    "secret_file",
    "password_file",
    "signature_tolerance_secs",
    "allow_unauthenticated",
];
/// The credential fields of a source: a demo value in any of them blocks a public bind.
pub const CREDENTIAL_FIELDS: &[&str] = &["token", "secret", "username", "password"];

/// Documented keys whose default.toml line is commented out (no default).
const KEYS_WITHOUT_DEFAULT: &[&str] = &["worker.queue", "forward.url"];

/// Every `section.key` that may be set through `HOOKRELAY__SECTION__KEY`, sources aside.
pub fn known_keys(defaults: &TomlValue) -> BTreeSet<String> {
    let mut keys: BTreeSet<String> = KEYS_WITHOUT_DEFAULT.iter().map(|k| k.to_string()).collect();
    for (section, value) in defaults.as_table().expect("a table") {
        if section == "sources" {
            continue;
        }
        for key in value.as_table().map(|t| t.keys()).into_iter().flatten() {
            keys.insert(format!("{section}.{key}"));
        }
    }
    keys
}

/// The configuration key an environment variable sets, if it is a `HOOKRELAY__` one
/// (README, Configuration: double underscores between levels, keys lower-cased).
pub fn env_to_key(name: &str) -> Option<String> {
    let rest = name.strip_prefix("HOOKRELAY__")?;
    Some(
        rest.split("__")
            .collect::<Vec<_>>()
            .join(".")
            .to_lowercase(),
    )
}

// ---------------------------------------------------------------------------------------
// docker-compose.yml

pub fn compose() -> serde_norway::Value {
    serde_norway::from_str(&read("docker-compose.yml")).expect("docker-compose.yml parses")
}

#[derive(Debug, Clone)]
pub struct Service {
    pub name: String,
    pub raw: serde_norway::Value,
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub profiles: Vec<String>,
}

impl Service {
    pub fn binary(&self) -> Option<&str> {
        self.command.first().map(String::as_str)
    }
    pub fn subcommand(&self) -> Option<&str> {
        self.command.get(1).map(String::as_str)
    }
    /// The values given to `flag` on the command line, in order.
    pub fn flag_values(&self, flag: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut args = self.command.iter();
        while let Some(arg) = args.next() {
            if arg == flag {
                out.extend(args.next().cloned());
            } else if let Some(v) = arg.strip_prefix(&format!("{flag}=")) {
                out.push(v.to_owned());
            }
        }
        out
    }
    /// An environment value with compose's `${VAR:-default}` interpolation applied;
    /// `None` if unset. A variable without a default resolves to `${VAR}` unchanged.
    pub fn env_resolved(&self, key: &str) -> Option<String> {
        self.env.get(key).map(|v| resolve_defaults(v))
    }
    pub fn get(&self, key: &str) -> Option<&serde_norway::Value> {
        self.raw.get(key)
    }
    pub fn is_hookrelay(&self) -> bool {
        matches!(self.binary(), Some(RELAY_BIN | WORKER_BIN))
    }
}

fn scalar(v: &serde_norway::Value) -> String {
    match v {
        serde_norway::Value::String(s) => s.clone(),
        serde_norway::Value::Number(n) => n.to_string(),
        serde_norway::Value::Bool(b) => b.to_string(),
        serde_norway::Value::Null => String::new(),
        other => panic!("expected a scalar, got {other:?}"),
    }
}

pub fn string_list(v: Option<&serde_norway::Value>) -> Vec<String> {
    match v {
        None => Vec::new(),
        Some(serde_norway::Value::Sequence(items)) => items.iter().map(scalar).collect(),
        Some(other) => vec![scalar(other)],
    }
}

pub fn services() -> Vec<Service> {
    let doc = compose();
    let map = doc
        .get("services")
        .and_then(|s| s.as_mapping())
        .expect("docker-compose.yml has services");
    map.iter()
        .map(|(name, raw)| {
            let name = scalar(name);
            let command = match raw.get("command") {
                None => Vec::new(),
                Some(serde_norway::Value::Sequence(items)) => items.iter().map(scalar).collect(),
                Some(other) => {
                    panic!("service {name}: write `command` as a list (exec form), not {other:?}")
                }
            };
            let env = match raw.get("environment") {
                None => BTreeMap::new(),
                Some(serde_norway::Value::Mapping(m)) => {
                    m.iter().map(|(k, v)| (scalar(k), scalar(v))).collect()
                }
                Some(serde_norway::Value::Sequence(items)) => items
                    .iter()
                    .map(|item| {
                        let s = scalar(item);
                        let (k, v) = s.split_once('=').unwrap_or((s.as_str(), ""));
                        (k.to_owned(), v.to_owned())
                    })
                    .collect(),
                Some(other) => panic!("service {name}: unexpected environment {other:?}"),
            };
            let profiles = string_list(raw.get("profiles"));
            Service {
                name,
                raw: raw.clone(),
                command,
                env,
                profiles,
            }
        })
        .collect()
}

pub fn service<'a>(services: &'a [Service], name: &str) -> &'a Service {
    services
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("docker-compose.yml has no service `{name}`"))
}

/// One `${...}` reference in a compose value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VarRef {
    pub name: String,
    /// `${VAR:?msg}` / `${VAR?msg}`: compose refuses to run without it.
    pub required: bool,
    /// `${VAR:-x}` / `${VAR-x}`.
    pub default: Option<String>,
}

/// The `${...}` references in `s` (`$$` is an escaped dollar).
pub fn var_refs(s: &str) -> Vec<VarRef> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            rest = tail;
            continue;
        }
        if let Some(body) = after.strip_prefix('{') {
            let end = body.find('}').expect("unclosed ${ in docker-compose.yml");
            let inner = &body[..end];
            let name_end = inner
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(inner.len());
            let (name, op) = inner.split_at(name_end);
            let op = op.strip_prefix(':').unwrap_or(op);
            out.push(VarRef {
                name: name.to_owned(),
                required: op.starts_with('?'),
                default: op.strip_prefix('-').map(str::to_owned),
            });
            rest = &body[end + 1..];
        } else {
            let name_end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            out.push(VarRef {
                name: after[..name_end].to_owned(),
                required: false,
                default: None,
            });
            rest = &after[name_end..];
        }
    }
    out
}

/// `s` with every `${VAR:-default}` replaced by its default (what an empty `.env` gives).
pub fn resolve_defaults(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let body = &rest[i + 2..];
        let end = body.find('}').expect("closed ${");
        let inner = &body[..end];
        match inner.split_once(":-").or_else(|| inner.split_once('-')) {
            Some((_, default)) => out.push_str(default),
            None => {
                out.push_str("${");
                out.push_str(inner);
                out.push('}');
            }
        }
        rest = &body[end + 1..];
    }
    out.push_str(rest);
    out
}

/// Every string anywhere in the compose document (for collecting `${VAR}` references).
pub fn all_strings(v: &serde_norway::Value, out: &mut Vec<String>) {
    match v {
        serde_norway::Value::String(s) => out.push(s.clone()),
        serde_norway::Value::Sequence(items) => items.iter().for_each(|i| all_strings(i, out)),
        serde_norway::Value::Mapping(m) => m.iter().for_each(|(k, v)| {
            all_strings(k, out);
            all_strings(v, out);
        }),
        serde_norway::Value::Tagged(t) => all_strings(&t.value, out),
        _ => {}
    }
}

/// A worker service of the compose file, with the settings its process ends up with
/// (flags over `HOOKRELAY__*` env over config/default.toml, as the README's Workers section says).
#[derive(Debug, Clone)]
pub struct ComposeWorker {
    pub service: String,
    pub exchange: String,
    pub queue: String,
    pub bindings: Vec<String>,
    pub queue_type: QueueType,
}

fn literal(service: &Service, key: &str) -> Option<String> {
    let v = service.env_resolved(key)?;
    assert!(
        !v.contains("${"),
        "service {}: {key} decides the topology; give it a literal value (or a default) so it can be checked against definitions.json",
        service.name
    );
    Some(v)
}

pub fn parse_queue_type(s: &str) -> QueueType {
    match s {
        "classic" => QueueType::Classic,
        "quorum" => QueueType::Quorum,
        other => panic!("queue type `{other}` is neither classic nor quorum"),
    }
}

/// The durable-queue workers compose runs (`tail` declares nothing durable, `replay` is
/// a one-off).
pub fn compose_workers(services: &[Service], defaults: &TomlValue) -> Vec<ComposeWorker> {
    services
        .iter()
        .filter(|s| s.binary() == Some(WORKER_BIN))
        .filter(|s| matches!(s.subcommand(), Some("archive" | "forward")))
        .map(|s| {
            let kind = s.subcommand().expect("a subcommand").to_owned();
            let queue = s
                .flag_values("--queue")
                .pop()
                .or_else(|| literal(s, "HOOKRELAY__WORKER__QUEUE"))
                .unwrap_or_else(|| format!("hookrelay.{kind}"));
            let mut bindings = s.flag_values("--bind");
            if bindings.is_empty() {
                bindings = match literal(s, "HOOKRELAY__WORKER__BIND") {
                    Some(list) => list
                        .split(',')
                        .map(str::trim)
                        .filter(|k| !k.is_empty())
                        .map(str::to_owned)
                        .collect(),
                    None => defaults.strings_at("worker.bind"),
                };
            }
            let queue_type = parse_queue_type(
                &literal(s, "HOOKRELAY__WORKER__QUEUE_TYPE")
                    .unwrap_or_else(|| defaults.str_at("worker.queue_type")),
            );
            let exchange = literal(s, "HOOKRELAY__AMQP__EXCHANGE")
                .unwrap_or_else(|| defaults.str_at("amqp.exchange"));
            ComposeWorker {
                service: s.name.clone(),
                exchange,
                queue,
                bindings,
                queue_type,
            }
        })
        .collect()
}

/// The events exchange compose configures (the relay's, which the workers must share).
pub fn compose_exchange(services: &[Service], defaults: &TomlValue) -> String {
    let relay = services
        .iter()
        .find(|s| s.binary() == Some(RELAY_BIN) && s.subcommand() == Some("serve"))
        .expect("a service runs `hookrelay serve`");
    literal(relay, "HOOKRELAY__AMQP__EXCHANGE").unwrap_or_else(|| defaults.str_at("amqp.exchange"))
}

/// The compose relay's `[history]`: its `HOOKRELAY__HISTORY__*` values, else
/// config/default.toml's, else the code's defaults.
pub fn compose_history(services: &[Service], defaults: &TomlValue) -> HistorySettings {
    let relay = services
        .iter()
        .find(|s| s.binary() == Some(RELAY_BIN) && s.subcommand() == Some("serve"))
        .expect("a service runs `hookrelay serve`");
    let key = |k: &str| {
        literal(relay, &format!("HOOKRELAY__HISTORY__{}", k.to_uppercase())).or_else(|| {
            defaults.get(&format!("history.{k}")).map(|v| match v {
                TomlValue::Str(s) | TomlValue::Scalar(s) => s.clone(),
                other => panic!("config/default.toml: history.{k} is {other:?}"),
            })
        })
    };
    let code = HistorySettings::default();
    HistorySettings {
        enabled: key("enabled").map_or(code.enabled, |v| {
            v.parse()
                .unwrap_or_else(|_| panic!("history.enabled = {v}"))
        }),
        stream: key("stream"),
        max_age: key("max_age").unwrap_or(code.max_age),
        max_bytes: key("max_bytes").map_or(code.max_bytes, |v| {
            v.parse()
                .unwrap_or_else(|_| panic!("history.max_bytes = {v}"))
        }),
    }
}

// ---------------------------------------------------------------------------------------
// config/rabbitmq/definitions.json

#[derive(Debug, Clone, Deserialize)]
pub struct Definitions {
    pub users: Vec<User>,
    pub vhosts: Vec<Vhost>,
    pub permissions: Vec<Permission>,
    #[serde(default)]
    pub policies: Vec<serde_json::Value>,
    #[serde(default)]
    pub parameters: Vec<serde_json::Value>,
    pub queues: Vec<QueueDef>,
    pub exchanges: Vec<ExchangeDef>,
    pub bindings: Vec<BindingDef>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct User {
    pub name: String,
    pub password_hash: String,
    pub hashing_algorithm: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Vhost {
    pub name: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Permission {
    pub user: String,
    pub vhost: String,
    pub configure: String,
    pub write: String,
    pub read: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct QueueDef {
    pub name: String,
    pub vhost: String,
    pub durable: bool,
    pub auto_delete: bool,
    pub arguments: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ExchangeDef {
    pub name: String,
    pub vhost: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub durable: bool,
    pub auto_delete: bool,
    pub internal: bool,
    pub arguments: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct BindingDef {
    pub source: String,
    pub vhost: String,
    pub destination: String,
    pub destination_type: String,
    pub routing_key: String,
    pub arguments: BTreeMap<String, serde_json::Value>,
}

pub const DEFINITIONS: &str = "config/rabbitmq/definitions.json";

pub fn definitions() -> Definitions {
    serde_json::from_str(&read(DEFINITIONS)).expect("definitions.json parses")
}

// ---------------------------------------------------------------------------------------
// The comparable model: the same shape whether built from definitions.json or from code.

/// An argument value: RabbitMQ's arguments here are strings, integers or booleans.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Arg {
    Str(String),
    Int(i64),
    Bool(bool),
}

pub type Args = BTreeMap<String, Arg>;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Exchange {
    pub name: String,
    pub kind: String,
    pub durable: bool,
    pub auto_delete: bool,
    pub internal: bool,
    pub arguments: Args,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Queue {
    pub name: String,
    pub durable: bool,
    pub auto_delete: bool,
    pub arguments: Args,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Binding {
    pub source: String,
    pub destination: String,
    pub destination_type: String,
    pub routing_key: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Topology {
    pub exchanges: BTreeSet<Exchange>,
    pub queues: BTreeSet<Queue>,
    pub bindings: BTreeSet<Binding>,
}

fn json_arg(key: &str, v: &serde_json::Value) -> Arg {
    match v {
        serde_json::Value::String(s) => Arg::Str(s.clone()),
        serde_json::Value::Bool(b) => Arg::Bool(*b),
        serde_json::Value::Number(n) => Arg::Int(
            n.as_i64()
                .unwrap_or_else(|| panic!("argument {key}: {n} is not an integer")),
        ),
        other => panic!("argument {key}: unsupported value {other}"),
    }
}

fn json_args(args: &BTreeMap<String, serde_json::Value>) -> Args {
    args.iter()
        .map(|(k, v)| (k.clone(), json_arg(k, v)))
        .collect()
}

/// What `lapin` sends, in the model's terms.
pub fn table_args(table: &FieldTable) -> Args {
    table
        .inner()
        .iter()
        .map(|(k, v)| {
            let arg = match v {
                AMQPValue::LongString(s) => Arg::Str(s.to_string()),
                AMQPValue::ShortString(s) => Arg::Str(s.as_str().to_owned()),
                AMQPValue::Boolean(b) => Arg::Bool(*b),
                AMQPValue::ShortShortInt(i) => Arg::Int((*i).into()),
                AMQPValue::ShortInt(i) => Arg::Int((*i).into()),
                AMQPValue::LongInt(i) => Arg::Int((*i).into()),
                AMQPValue::LongLongInt(i) => Arg::Int(*i),
                AMQPValue::ShortShortUInt(i) => Arg::Int((*i).into()),
                AMQPValue::ShortUInt(i) => Arg::Int((*i).into()),
                AMQPValue::LongUInt(i) => Arg::Int((*i).into()),
                other => panic!("argument {k}: unsupported AMQP value {other:?}"),
            };
            (k.as_str().to_owned(), arg)
        })
        .collect()
}

/// The model's arguments as an AMQP table (for re-declaring with the definitions' own).
pub fn args_table(args: &Args) -> FieldTable {
    let mut table = FieldTable::default();
    for (k, v) in args {
        let value = match v {
            Arg::Str(s) => AMQPValue::LongString(s.as_str().into()),
            Arg::Int(i) => AMQPValue::LongLongInt(*i),
            Arg::Bool(b) => AMQPValue::Boolean(*b),
        };
        table.insert(k.as_str().into(), value);
    }
    table
}

impl Definitions {
    pub fn topology(&self) -> Topology {
        Topology {
            exchanges: self
                .exchanges
                .iter()
                .map(|e| Exchange {
                    name: e.name.clone(),
                    kind: e.kind.clone(),
                    durable: e.durable,
                    auto_delete: e.auto_delete,
                    internal: e.internal,
                    arguments: json_args(&e.arguments),
                })
                .collect(),
            queues: self
                .queues
                .iter()
                .map(|q| Queue {
                    name: q.name.clone(),
                    durable: q.durable,
                    auto_delete: q.auto_delete,
                    arguments: json_args(&q.arguments),
                })
                .collect(),
            bindings: self
                .bindings
                .iter()
                .map(|b| {
                    assert!(
                        b.arguments.is_empty(),
                        "binding {} -> {}: binding arguments are not used by hookrelay",
                        b.source,
                        b.destination
                    );
                    Binding {
                        source: b.source.clone(),
                        destination: b.destination.clone(),
                        destination_type: b.destination_type.clone(),
                        routing_key: b.routing_key.clone(),
                    }
                })
                .collect(),
        }
    }
}

/// The topology `hookrelay_common::topology` declares for `exchange`, its history stream
/// and these workers,
/// built from the functions the declaring code itself calls (names and arguments).
/// Object flags (durable, not auto-delete, not internal) and exchange types are what
/// `declare_events`/`declare_worker_queue` pass; the broker test proves those on a
/// real declaration.
pub fn code_topology(
    exchange: &str,
    history: &HistorySettings,
    workers: &[WorkerQueue],
) -> Topology {
    let unrouted = topology::unrouted_name(exchange);
    let mut t = Topology::default();
    if history.enabled {
        let stream = history.stream_name(exchange);
        t.queues.insert(Queue {
            name: stream.clone(),
            durable: true,
            auto_delete: false,
            arguments: table_args(&topology::history_stream_arguments(history)),
        });
        t.bindings.insert(Binding {
            source: exchange.to_owned(),
            destination: stream,
            destination_type: "queue".into(),
            routing_key: "#".into(),
        });
    }
    t.exchanges.insert(Exchange {
        name: exchange.to_owned(),
        kind: "topic".into(),
        durable: true,
        auto_delete: false,
        internal: false,
        arguments: table_args(&topology::events_exchange_arguments(exchange)),
    });
    t.exchanges.insert(Exchange {
        name: unrouted.clone(),
        kind: "fanout".into(),
        durable: true,
        auto_delete: false,
        internal: false,
        arguments: Args::new(),
    });
    t.queues.insert(Queue {
        name: unrouted.clone(),
        durable: true,
        auto_delete: false,
        arguments: Args::new(),
    });
    t.bindings.insert(Binding {
        source: unrouted.clone(),
        destination: unrouted,
        destination_type: "queue".into(),
        routing_key: String::new(),
    });
    for wq in workers {
        let work_args = table_args(&topology::work_queue_arguments(wq.queue_type));
        for (name, arguments) in [
            (wq.name.clone(), work_args.clone()),
            (
                topology::retry_queue(&wq.name),
                table_args(&topology::retry_queue_arguments(&wq.name, wq.queue_type)),
            ),
            (topology::parked_queue(&wq.name), work_args),
        ] {
            t.queues.insert(Queue {
                name,
                durable: true,
                auto_delete: false,
                arguments,
            });
        }
        for key in &wq.bindings {
            t.bindings.insert(Binding {
                source: exchange.to_owned(),
                destination: wq.name.clone(),
                destination_type: "queue".into(),
                routing_key: key.clone(),
            });
        }
    }
    t
}

/// The differences between two topologies, one line each.
pub fn diff(
    expected_label: &str,
    expected: &Topology,
    actual_label: &str,
    actual: &Topology,
) -> Vec<String> {
    fn sets<T: Ord + std::fmt::Debug>(
        what: &str,
        el: &str,
        e: &BTreeSet<T>,
        al: &str,
        a: &BTreeSet<T>,
        out: &mut Vec<String>,
    ) {
        for x in e.difference(a) {
            out.push(format!("{what} in {el} but not in {al}: {x:?}"));
        }
        for x in a.difference(e) {
            out.push(format!("{what} in {al} but not in {el}: {x:?}"));
        }
    }
    let mut out = Vec::new();
    sets(
        "exchange",
        expected_label,
        &expected.exchanges,
        actual_label,
        &actual.exchanges,
        &mut out,
    );
    sets(
        "queue",
        expected_label,
        &expected.queues,
        actual_label,
        &actual.queues,
        &mut out,
    );
    sets(
        "binding",
        expected_label,
        &expected.bindings,
        actual_label,
        &actual.bindings,
        &mut out,
    );
    out
}

/// AMQP topic matching: `*` is one word, `#` zero or more.
pub fn topic_matches(pattern: &str, key: &str) -> bool {
    fn go(p: &[&str], k: &[&str]) -> bool {
        match p.split_first() {
            None => k.is_empty(),
            Some((&"#", rest)) => (0..=k.len()).any(|i| go(rest, &k[i..])),
            Some((&w, rest)) => match k.split_first() {
                Some((kw, krest)) => (w == "*" || w == *kw) && go(rest, krest),
                None => false,
            },
        }
    }
    let p: Vec<&str> = if pattern.is_empty() {
        vec![]
    } else {
        pattern.split('.').collect()
    };
    let k: Vec<&str> = if key.is_empty() {
        vec![]
    } else {
        key.split('.').collect()
    };
    go(&p, &k)
}

impl Topology {
    /// The queues a message published to `exchange` with `key` lands in, by RabbitMQ's
    /// rules for the exchange types used here, including the alternate exchange.
    pub fn route(&self, exchange: &str, key: &str) -> BTreeSet<String> {
        self.route_depth(exchange, key, 0)
    }

    fn route_depth(&self, exchange: &str, key: &str, depth: usize) -> BTreeSet<String> {
        assert!(depth < 8, "exchange-to-exchange loop at {exchange}");
        let Some(x) = self.exchanges.iter().find(|x| x.name == exchange) else {
            return BTreeSet::new();
        };
        let mut out = BTreeSet::new();
        for b in self.bindings.iter().filter(|b| b.source == exchange) {
            let hit = match x.kind.as_str() {
                "fanout" => true,
                "direct" => b.routing_key == key,
                "topic" => topic_matches(&b.routing_key, key),
                other => panic!("exchange type {other} is not modelled"),
            };
            if !hit {
                continue;
            }
            match b.destination_type.as_str() {
                "queue" => {
                    out.insert(b.destination.clone());
                }
                _ => out.extend(self.route_depth(&b.destination, key, depth + 1)),
            }
        }
        if out.is_empty() {
            if let Some(Arg::Str(ae)) = x.arguments.get("alternate-exchange") {
                out = self.route_depth(ae, key, depth + 1);
            }
        }
        out
    }
}

/// `WorkerQueue`s for the compose workers.
pub fn worker_queues(workers: &[ComposeWorker]) -> Vec<WorkerQueue> {
    workers
        .iter()
        .map(|w| WorkerQueue {
            name: w.queue.clone(),
            bindings: w.bindings.clone(),
            queue_type: w.queue_type,
        })
        .collect()
}

/// Verify a RabbitMQ `rabbit_password_hashing_sha256` hash: base64(salt(4) ++ sha256(salt ++ password)).
pub fn password_matches(hash_b64: &str, password: &str) -> bool {
    use base64::Engine as _;
    use sha2::Digest as _;
    let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(hash_b64) else {
        return false;
    };
    if raw.len() != 4 + 32 {
        return false;
    }
    let (salt, digest) = raw.split_at(4);
    let mut h = sha2::Sha256::new();
    h.update(salt);
    h.update(password.as_bytes());
    h.finalize().as_slice() == digest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_matching_follows_rabbitmq() {
        assert!(topic_matches("#", "chatwoot.message.created"));
        assert!(topic_matches("#", ""));
        assert!(topic_matches("chatwoot.#", "chatwoot.message.created"));
        assert!(topic_matches("chatwoot.#", "chatwoot"));
        assert!(topic_matches(
            "*.message.created",
            "kommunicate.message.created"
        ));
        assert!(!topic_matches(
            "*.message.created",
            "kommunicate.message.updated"
        ));
        assert!(!topic_matches("*", "a.b"));
        assert!(topic_matches("a.*.c", "a.*.c"));
    }

    #[test]
    fn compose_interpolation_is_read_like_compose() {
        assert_eq!(
            var_refs("${A:?set A} x ${B:-d} $C $$D"),
            vec![
                VarRef {
                    name: "A".into(),
                    required: true,
                    default: None
                },
                VarRef {
                    name: "B".into(),
                    required: false,
                    default: Some("d".into())
                },
                VarRef {
                    name: "C".into(),
                    required: false,
                    default: None
                },
            ]
        );
        assert_eq!(resolve_defaults("${P:-8080}:8080"), "8080:8080");
        assert_eq!(resolve_defaults("${T:?x}"), "${T:?x}");
    }

    #[test]
    fn password_hash_check_knows_guest() {
        // definitions.json's guest hash; RabbitMQ accepted it (`rabbitmqctl
        // authenticate_user` after importing the file into a scratch vhost).
        assert!(password_matches(
            "kI3GCrswBLNZQzHJJ95QLoyfAVooYhnvf7jbqiW9BjOYUloe",
            "guest"
        ));
        assert!(!password_matches(
            "kI3GCrswBLNZQzHJJ95QLoyfAVooYhnvf7jbqiW9BjOYUloe",
            "guests"
        ));
    }
}
