//! docker-compose.yml against the documented programs and configuration names (README), and the repository.

use crate::support::*;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

/// The relay's own sections (README: Configuration, Durability); workers read amqp, log and their own (README: Workers).
const RELAY_SECTIONS: &[&str] = &[
    "server",
    "amqp",
    "durability",
    "spool",
    "dedup",
    "log",
    "sources",
];
const WORKER_SECTIONS: &[&str] = &["amqp", "log", "worker", "archive", "forward"];

#[test]
fn services_are_rabbitmq_relay_and_workers_with_forward_behind_a_profile() {
    let services = services();
    let names: BTreeSet<&str> = services.iter().map(|s| s.name.as_str()).collect();
    for wanted in ["rabbitmq", "relay", "archive", "forward"] {
        assert!(names.contains(wanted), "no `{wanted}` service in {names:?}");
    }
    assert_eq!(service(&services, "forward").profiles, vec!["forward"]);
    for always in ["rabbitmq", "relay", "archive"] {
        assert!(
            service(&services, always).profiles.is_empty(),
            "{always} must start with a plain `docker compose up`"
        );
    }
}

#[test]
fn images_are_pinned_and_hookrelay_services_build_the_dockerfile() {
    let services = services();
    let mut problems = Vec::new();
    let rabbit = service(&services, "rabbitmq");
    let image = rabbit.get("image").and_then(|v| v.as_str()).unwrap_or("");
    let tag = image.strip_prefix("rabbitmq:").unwrap_or("");
    if !(tag.ends_with("-management") && tag.starts_with(|c: char| c.is_ascii_digit())) {
        problems.push(format!(
            "rabbitmq: image `{image}` is not a pinned rabbitmq:<version>-management tag"
        ));
    }
    let mut images = BTreeSet::new();
    for s in services.iter().filter(|s| s.is_hookrelay()) {
        let context = match s.get("build") {
            Some(serde_norway::Value::String(c)) => c.clone(),
            Some(b) => b
                .get("context")
                .and_then(|c| c.as_str())
                .unwrap_or(".")
                .to_owned(),
            None => {
                problems.push(format!(
                    "{}: no `build:` (the image comes from the Dockerfile)",
                    s.name
                ));
                continue;
            }
        };
        if !repo_root().join(&context).join("Dockerfile").is_file() {
            problems.push(format!(
                "{}: build context `{context}` has no Dockerfile",
                s.name
            ));
        }
        images.insert(
            s.get("image")
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_owned(),
        );
    }
    if images.len() != 1 || images.contains("") {
        problems.push(format!(
            "relay and workers should share one named image built once, got {images:?}"
        ));
    }
    assert_no_problems("images", &problems);
}

/// The package or `[[bin]]` names the workspace builds.
fn workspace_binaries() -> BTreeSet<String> {
    let root = parse_toml("Cargo.toml");
    let mut bins = BTreeSet::new();
    let members = match root.get("workspace.members") {
        Some(TomlValue::Array(m)) => m
            .iter()
            .filter_map(|v| v.as_str())
            .map(str::to_owned)
            .collect(),
        _ => vec![".".to_owned()],
    };
    for member in members {
        let manifest = parse_toml(&format!("{member}/Cargo.toml"));
        let explicit: Vec<String> = match manifest.get("bin") {
            Some(TomlValue::Array(b)) => b
                .iter()
                .filter_map(|t| t.get("name").and_then(|n| n.as_str()))
                .map(str::to_owned)
                .collect(),
            _ => Vec::new(),
        };
        let has_main = repo_root().join(&member).join("src/main.rs").is_file();
        if has_main {
            if let Some(name) = manifest.get("package.name").and_then(|n| n.as_str()) {
                bins.insert(name.to_owned());
            }
        }
        bins.extend(explicit);
    }
    bins
}

#[test]
fn commands_are_spec_binaries_subcommands_and_flags() {
    let services = services();
    let built = workspace_binaries();
    let mut problems = Vec::new();
    for s in services.iter().filter(|s| s.name != "rabbitmq") {
        let Some(binary) = s.binary() else {
            problems.push(format!(
                "{}: no `command` (say which program and subcommand run)",
                s.name
            ));
            continue;
        };
        if !built.contains(binary) {
            problems.push(format!(
                "{}: `{binary}` is not a binary of the workspace ({built:?})",
                s.name
            ));
        }
        let sub = s.subcommand().unwrap_or("");
        let Some(flags) = spec_flags(binary, sub) else {
            problems.push(format!(
                "{}: `{binary} {sub}` is not a documented subcommand",
                s.name
            ));
            continue;
        };
        for arg in s.command.iter().skip(2).filter(|a| a.starts_with("--")) {
            let flag = arg.split('=').next().unwrap_or(arg);
            if !flags.contains(&flag) {
                problems.push(format!(
                    "{}: `{binary} {sub}` takes no `{flag}` (documented: {flags:?})",
                    s.name
                ));
            }
        }
    }
    let runs = |b: &str, sub: &str| {
        services
            .iter()
            .any(|s| s.binary() == Some(b) && s.subcommand() == Some(sub))
    };
    for (b, sub) in [
        (RELAY_BIN, "serve"),
        (WORKER_BIN, "archive"),
        (WORKER_BIN, "forward"),
    ] {
        if !runs(b, sub) {
            problems.push(format!("no service runs `{b} {sub}`"));
        }
    }
    assert_eq!(
        service(&services, "relay").command,
        vec!["hookrelay", "serve"]
    );
    assert_no_problems("commands", &problems);
}

#[test]
fn environment_uses_spec_names_only() {
    let services = services();
    let defaults = default_toml();
    let known = known_keys(&defaults);
    let mut problems = Vec::new();
    for s in &services {
        for (name, value) in &s.env {
            if s.name == "rabbitmq" {
                if !name.starts_with("RABBITMQ_") {
                    problems.push(format!("rabbitmq: `{name}` is not a RabbitMQ variable"));
                }
                continue;
            }
            if name == "HOOKRELAY_CONFIG" {
                continue;
            }
            let Some(key) = env_to_key(name) else {
                problems.push(format!(
                    "{}: `{name}` is not a HOOKRELAY__ variable",
                    s.name
                ));
                continue;
            };
            if name != &name.to_uppercase() {
                problems.push(format!("{}: write `{name}` upper-case", s.name));
            }
            let section = key.split('.').next().unwrap_or_default();
            let allowed = if s.binary() == Some(RELAY_BIN) {
                RELAY_SECTIONS
            } else {
                WORKER_SECTIONS
            };
            if !allowed.contains(&section) {
                problems.push(format!(
                    "{}: `{name}` belongs to no section this program reads",
                    s.name
                ));
            }
            let parts: Vec<&str> = key.split('.').collect();
            let ok = match parts.as_slice() {
                ["sources", _name, field] => SOURCE_FIELDS.contains(field),
                _ => known.contains(&key),
            };
            if !ok {
                problems.push(format!(
                    "{}: `{name}` (key `{key}`) is not a configuration key",
                    s.name
                ));
            }
            let v = resolve_defaults(value);
            let bad_value = match key.as_str() {
                "log.format" => !["text", "json"].contains(&v.as_str()),
                "worker.queue_type" => !["classic", "quorum"].contains(&v.as_str()),
                "server.bind" => v.parse::<SocketAddr>().is_err(),
                "amqp.uri" => v
                    .split(',')
                    .any(|u| !u.trim().starts_with("amqp://") && !u.trim().starts_with("amqps://")),
                _ => false,
            };
            if bad_value {
                problems.push(format!("{}: `{name}` has an invalid value `{v}`", s.name));
            }
        }
    }
    assert_no_problems("environment", &problems);
}

/// README, Sources and credentials: a non-loopback bind is refused while any source keeps a demo credential, so
/// every credential of every default source must come from `.env`, with no default.
#[test]
fn relay_takes_every_source_credential_from_env_without_a_default() {
    let services = services();
    let relay = service(&services, "relay");
    let defaults = default_toml();
    let bind: SocketAddr = relay
        .env_resolved("HOOKRELAY__SERVER__BIND")
        .unwrap_or_else(|| defaults.str_at("server.bind"))
        .parse()
        .expect("server.bind is an address");
    assert!(
        !bind.ip().is_loopback(),
        "a relay in a container must listen beyond loopback, got {bind}"
    );

    let mut problems = Vec::new();
    let mut demo_values = BTreeSet::new();
    let sources = defaults
        .get("sources")
        .and_then(TomlValue::as_table)
        .expect("default sources");
    for (source, table) in sources {
        for field in CREDENTIAL_FIELDS {
            let Some(demo) = table.get(field).and_then(TomlValue::as_str) else {
                continue;
            };
            demo_values.insert(demo.to_owned());
            let name = format!(
                "HOOKRELAY__SOURCES__{}__{}",
                source.to_uppercase(),
                field.to_uppercase()
            );
            match relay.env.get(&name) {
                None => problems.push(format!(
                    "relay: `{name}` is not set, so the demo value stays"
                )),
                Some(v) => {
                    let refs = var_refs(v);
                    let from_env = refs.len() == 1
                        && refs[0].required
                        && refs[0].default.is_none()
                        && v.starts_with("${")
                        && v.ends_with('}');
                    if !from_env {
                        problems.push(format!("relay: `{name}` must be exactly `${{VAR:?message}}` (from .env, no default), got `{v}`"));
                    }
                }
            }
        }
    }
    for s in &services {
        for (name, v) in &s.env {
            if demo_values.iter().any(|d| v.contains(d.as_str())) {
                problems.push(format!(
                    "{}: `{name}` carries a demo credential from config/default.toml",
                    s.name
                ));
            }
        }
    }
    let example = read(".env.example");
    for line in example.lines().filter(|l| !l.trim_start().starts_with('#')) {
        if let Some((k, v)) = line.split_once('=') {
            if demo_values.contains(v.trim()) {
                problems.push(format!(".env.example: `{k}` holds a demo credential"));
            }
        }
    }
    assert_no_problems("relay credentials", &problems);
}

/// `KEY=value` lines of .env.example.
fn env_example() -> BTreeMap<String, String> {
    read(".env.example")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l
                .split_once('=')
                .unwrap_or_else(|| panic!(".env.example: `{l}` is not KEY=value"));
            (k.trim().to_owned(), v.trim().to_owned())
        })
        .collect()
}

#[test]
fn env_example_documents_exactly_the_variables_compose_reads() {
    let mut strings = Vec::new();
    all_strings(&compose(), &mut strings);
    let refs: Vec<VarRef> = strings.iter().flat_map(|s| var_refs(s)).collect();
    let used: BTreeSet<&str> = refs.iter().map(|r| r.name.as_str()).collect();
    let example = env_example();
    let documented: BTreeSet<&str> = example.keys().map(String::as_str).collect();
    let mut problems = Vec::new();
    for v in used.difference(&documented) {
        problems.push(format!(
            "docker-compose.yml reads `{v}` but .env.example does not document it"
        ));
    }
    // COMPOSE_* variables (the project name) are read by compose itself, not the file.
    for v in documented
        .difference(&used)
        .filter(|v| !v.starts_with("COMPOSE_"))
    {
        problems.push(format!(
            ".env.example documents `{v}` but docker-compose.yml never reads it"
        ));
    }
    for r in refs.iter().filter(|r| r.required) {
        if example.get(&r.name).is_some_and(|v| !v.is_empty()) {
            problems.push(format!(
                ".env.example: leave the required `{}` empty, so an unedited copy stops `docker compose up` instead of running with a placeholder",
                r.name
            ));
        }
    }
    assert_no_problems(".env.example", &problems);
}

/// A host path (bind mount) rather than a named volume.
fn is_bind_mount(src: &str) -> bool {
    src.starts_with("./") || src.starts_with('/')
}

/// `source:target[:mode]` of a short-syntax volume.
fn volumes(s: &Service) -> Vec<(String, String, bool)> {
    string_list(s.get("volumes"))
        .into_iter()
        .map(|v| {
            let parts: Vec<&str> = v.split(':').collect();
            let ro = parts
                .get(2)
                .is_some_and(|m| m.split(',').any(|o| o == "ro"));
            (
                parts[0].to_owned(),
                parts.get(1).copied().unwrap_or("").to_owned(),
                ro,
            )
        })
        .collect()
}

#[test]
fn mounted_files_exist_and_rabbitmq_loads_the_definitions() {
    let services = services();
    let mut problems = Vec::new();
    for s in &services {
        for (src, _, _) in volumes(s) {
            if is_bind_mount(&src) {
                let path = repo_root().join(src.trim_start_matches("./"));
                if !path.exists() {
                    problems.push(format!(
                        "{}: mounts `{src}`, which is not in the repository",
                        s.name
                    ));
                }
            }
        }
    }
    let rabbit = service(&services, "rabbitmq");
    let mounts = volumes(rabbit);
    let mounted_at = |target: &str| mounts.iter().find(|(_, t, _)| t == target).cloned();
    match mounted_at("/etc/rabbitmq/rabbitmq.conf") {
        Some((src, _, ro)) => {
            if src != "./config/rabbitmq/rabbitmq.conf" || !ro {
                problems.push(format!("rabbitmq.conf: mount ./config/rabbitmq/rabbitmq.conf read-only, got `{src}` ro={ro}"));
            }
        }
        None => problems.push(
            "rabbitmq: config/rabbitmq/rabbitmq.conf is not mounted at /etc/rabbitmq/rabbitmq.conf"
                .into(),
        ),
    }
    let conf = read("config/rabbitmq/rabbitmq.conf");
    let load = conf
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix("load_definitions"))
        .and_then(|rest| rest.trim().strip_prefix('='))
        .map(|p| p.trim().to_owned());
    match load {
        None => problems.push("rabbitmq.conf: no `load_definitions = ...`".into()),
        Some(path) => match mounted_at(&path) {
            Some((src, _, ro)) if src == format!("./{DEFINITIONS}") && ro => {}
            other => problems.push(format!("rabbitmq: load_definitions = {path}, but ./{DEFINITIONS} is not mounted there read-only ({other:?})")),
        },
    }
    // Importing definitions at boot skips creating the default user (so definitions.json
    // has its own), and guest is loopback-only unless told otherwise.
    if !conf
        .lines()
        .any(|l| l.trim() == "loopback_users = none" || l.trim() == "loopback_users.guest = false")
    {
        problems.push(
            "rabbitmq.conf: guest must be allowed from other containers (loopback_users = none)"
                .into(),
        );
    }
    if mounted_at("/var/lib/rabbitmq").is_none() {
        problems.push(
            "rabbitmq: no volume at /var/lib/rabbitmq (messages would not survive re-creation)"
                .into(),
        );
    }
    assert_no_problems("mounts", &problems);
}

#[test]
fn state_lives_in_declared_named_volumes() {
    let services = services();
    let doc = compose();
    let declared: BTreeSet<String> = doc
        .get("volumes")
        .and_then(|v| v.as_mapping())
        .map(|m| {
            m.keys()
                .filter_map(|k| k.as_str())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let mut problems = Vec::new();
    for s in &services {
        for (src, target, _) in volumes(s) {
            if !is_bind_mount(&src) && !declared.contains(&src) {
                problems.push(format!(
                    "{}: volume `{src}` ({target}) is not declared under top-level volumes",
                    s.name
                ));
            }
        }
    }
    let named_at = |s: &Service, dir: &str| {
        volumes(s)
            .iter()
            .any(|(src, t, ro)| t == dir && declared.contains(src) && !ro)
    };
    let relay = service(&services, "relay");
    let spool = relay
        .env_resolved("HOOKRELAY__SPOOL__DIR")
        .expect("relay sets HOOKRELAY__SPOOL__DIR");
    if !named_at(relay, &spool) {
        problems.push(format!(
            "relay: the spool ({spool}) is not a writable named volume"
        ));
    }
    for s in services
        .iter()
        .filter(|s| s.subcommand() == Some("archive"))
    {
        let dir = s
            .flag_values("--dir")
            .pop()
            .or_else(|| s.env_resolved("HOOKRELAY__ARCHIVE__DIR"))
            .expect("archive worker names its directory");
        if !named_at(s, &dir) {
            problems.push(format!(
                "{}: the archive directory ({dir}) is not a writable named volume",
                s.name
            ));
        }
    }
    assert_no_problems("volumes", &problems);
}

fn published_container_ports(s: &Service) -> BTreeSet<u16> {
    string_list(s.get("ports"))
        .iter()
        .filter_map(|p| {
            resolve_defaults(p)
                .rsplit(':')
                .next()
                .and_then(|c| c.split('/').next())
                .and_then(|c| c.parse().ok())
        })
        .collect()
}

#[test]
fn ports_publish_amqp_the_ui_and_the_relay() {
    let services = services();
    let rabbit = published_container_ports(service(&services, "rabbitmq"));
    assert!(
        rabbit.contains(&5672) && rabbit.contains(&15672),
        "rabbitmq publishes {rabbit:?}"
    );
    let relay = service(&services, "relay");
    let bind: SocketAddr = relay
        .env_resolved("HOOKRELAY__SERVER__BIND")
        .expect("bind")
        .parse()
        .expect("an address");
    let published = published_container_ports(relay);
    assert!(
        published.contains(&bind.port()),
        "relay listens on {} but publishes {published:?}",
        bind.port()
    );
}

fn healthcheck_test(s: &Service) -> Option<Vec<String>> {
    let hc = s.get("healthcheck")?;
    if hc.get("disable").and_then(|d| d.as_bool()) == Some(true) {
        return None;
    }
    Some(string_list(hc.get("test")))
}

#[test]
fn healthchecks_exist_and_dependencies_wait_for_a_healthy_broker() {
    let services = services();
    let mut problems = Vec::new();
    let rabbit = healthcheck_test(service(&services, "rabbitmq"));
    if rabbit.as_deref()
        != Some(&["CMD", "rabbitmq-diagnostics", "-q", "ping"].map(String::from)[..])
    {
        problems.push(format!(
            "rabbitmq: healthcheck should be `rabbitmq-diagnostics -q ping`, got {rabbit:?}"
        ));
    }
    let relay = healthcheck_test(service(&services, "relay"));
    let relay_ok = relay.as_ref().is_some_and(|t| {
        let args: Vec<&str> = t
            .iter()
            .map(String::as_str)
            .skip_while(|a| a.starts_with("CMD"))
            .collect();
        args.starts_with(&[RELAY_BIN, "healthcheck"])
    });
    if !relay_ok {
        problems.push(format!("relay: healthcheck should run `hookrelay healthcheck` (no curl in the image), got {relay:?}"));
    }
    for s in services.iter().filter(|s| s.binary() == Some(WORKER_BIN)) {
        // The image's HEALTHCHECK probes a relay's /readyz; a worker container has none,
        // so it must switch it off (or bring its own probe).
        if s.get("healthcheck").is_none() {
            problems.push(format!("{}: inherits the image's relay HEALTHCHECK; set `healthcheck: {{disable: true}}` or a worker probe", s.name));
        }
    }
    for s in services.iter().filter(|s| s.is_hookrelay()) {
        let deps = s.get("depends_on").and_then(|d| d.as_mapping());
        let on_rabbit = deps
            .and_then(|m| m.get("rabbitmq"))
            .and_then(|r| r.get("condition"))
            .and_then(|c| c.as_str());
        if on_rabbit != Some("service_healthy") {
            problems.push(format!(
                "{}: depends_on rabbitmq must be `condition: service_healthy`",
                s.name
            ));
        }
        for (dep, spec) in deps.into_iter().flatten() {
            let dep = dep.as_str().unwrap_or_default();
            let condition = spec.get("condition").and_then(|c| c.as_str());
            if dep != "rabbitmq" && condition != Some("service_healthy") {
                problems.push(format!(
                    "{}: depends_on {dep} without `condition: service_healthy`",
                    s.name
                ));
            }
            if services
                .iter()
                .find(|d| d.name == dep)
                .and_then(healthcheck_test)
                .is_none()
            {
                problems.push(format!(
                    "{}: waits for {dep} to be healthy, but {dep} has no healthcheck",
                    s.name
                ));
            }
        }
    }
    assert_no_problems("healthchecks", &problems);
}

/// Every hookrelay service talks to the compose broker, as a user definitions.json
/// creates, on the events exchange the relay publishes to.
#[test]
fn amqp_settings_reach_the_compose_broker_as_a_defined_user() {
    let services = services();
    let defaults = default_toml();
    let defs = definitions();
    let exchange = compose_exchange(&services, &defaults);
    let rabbit = service(&services, "rabbitmq");
    let rabbit_host = rabbit
        .get("hostname")
        .and_then(|h| h.as_str())
        .unwrap_or("rabbitmq");
    let mut problems = Vec::new();
    for s in services.iter().filter(|s| s.is_hookrelay()) {
        let own = s
            .env_resolved("HOOKRELAY__AMQP__EXCHANGE")
            .unwrap_or_else(|| defaults.str_at("amqp.exchange"));
        if own != exchange {
            problems.push(format!(
                "{}: exchange `{own}` differs from the relay's `{exchange}`",
                s.name
            ));
        }
        let Some(uris) = s.env_resolved("HOOKRELAY__AMQP__URI") else {
            problems.push(format!(
                "{}: HOOKRELAY__AMQP__URI unset (the default points at 127.0.0.1, not the broker)",
                s.name
            ));
            continue;
        };
        for uri in uris.split(',').map(str::trim) {
            let parsed: lapin::uri::AMQPUri = match uri.parse() {
                Ok(u) => u,
                Err(e) => {
                    problems.push(format!(
                        "{}: HOOKRELAY__AMQP__URI does not parse: {e}",
                        s.name
                    ));
                    continue;
                }
            };
            let host = parsed.authority.host.as_str();
            if host != "rabbitmq" && host != rabbit_host {
                problems.push(format!(
                    "{}: AMQP host `{host}` is not the rabbitmq service",
                    s.name
                ));
            }
            let user = &parsed.authority.userinfo.username;
            let pass = &parsed.authority.userinfo.password;
            match defs.users.iter().find(|u| &u.name == user) {
                None => problems.push(format!(
                    "{}: AMQP user `{user}` is not in definitions.json",
                    s.name
                )),
                Some(u) => {
                    if u.hashing_algorithm != "rabbit_password_hashing_sha256"
                        || !password_matches(&u.password_hash, pass)
                    {
                        problems.push(format!("{}: the AMQP password does not match `{user}`'s hash in definitions.json", s.name));
                    }
                }
            }
            let vhost = parsed.vhost.as_str();
            if !defs.permissions.iter().any(|p| {
                &p.user == user
                    && p.vhost == vhost
                    && p.configure == ".*"
                    && p.write == ".*"
                    && p.read == ".*"
            }) {
                problems.push(format!(
                    "{}: `{user}` has no full permissions on vhost `{vhost}` in definitions.json",
                    s.name
                ));
            }
        }
    }
    assert_no_problems("AMQP settings", &problems);
}
