//! config/rabbitmq/definitions.json against the code's topology, without a broker.

use crate::support::*;

/// The objects RabbitMQ imports at boot are exactly what `hookrelay_common::topology`
/// declares for the compose relay's exchange and history stream and the compose workers'
/// queues, bindings and queue type: no object missing, none extra, same names, types, flags and arguments.
#[test]
fn definitions_are_the_code_topology_for_the_compose_workers() {
    let services = services();
    let defaults = default_toml();
    let exchange = compose_exchange(&services, &defaults);
    let workers = compose_workers(&services, &defaults);
    assert!(!workers.is_empty(), "compose runs no durable-queue worker");
    for w in &workers {
        assert_eq!(
            w.exchange, exchange,
            "{}: bound to another exchange",
            w.service
        );
    }
    let history = compose_history(&services, &defaults);
    let code = code_topology(&exchange, &history, &worker_queues(&workers));
    let defs = definitions().topology();
    assert_no_problems(
        "definitions.json vs the code's topology for the compose workers",
        &diff("the code's topology", &code, DEFINITIONS, &defs),
    );
}

/// Everything is in the one vhost the URIs name, and nothing in the file changes queue
/// behaviour behind the code's back (a policy could add TTLs or dead-lettering).
#[test]
fn definitions_use_one_vhost_and_no_policies() {
    let defs = definitions();
    let vhosts: Vec<&str> = defs.vhosts.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(vhosts, ["/"], "definitions.json vhosts");
    let mut problems = Vec::new();
    let objects = defs
        .queues
        .iter()
        .map(|q| (&q.name, &q.vhost))
        .chain(defs.exchanges.iter().map(|x| (&x.name, &x.vhost)))
        .chain(defs.bindings.iter().map(|b| (&b.destination, &b.vhost)));
    for (name, vhost) in objects {
        if vhost != "/" {
            problems.push(format!("{name}: vhost `{vhost}`"));
        }
    }
    if !defs.policies.is_empty() {
        problems.push(
            "policies: the code declares every argument itself; a policy would drift from it"
                .into(),
        );
    }
    if !defs.parameters.is_empty() {
        problems.push("parameters: not used by hookrelay".into());
    }
    assert_no_problems("definitions.json", &problems);
}

/// A boot import skips the default user, so the file must bring one that can log in.
#[test]
fn definitions_bring_a_user_with_permissions() {
    let defs = definitions();
    assert!(!defs.users.is_empty(), "no users: nobody could log in");
    for u in &defs.users {
        assert_eq!(
            u.hashing_algorithm, "rabbit_password_hashing_sha256",
            "{}",
            u.name
        );
        assert!(
            defs.permissions.iter().any(|p| p.user == u.name),
            "user {} has no permissions",
            u.name
        );
    }
}
