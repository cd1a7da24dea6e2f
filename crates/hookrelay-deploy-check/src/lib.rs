//! Checks that hookrelay's deployment files agree with the documented interface (README, docs/) and with the code.
//!
//! # Layout
//!
//! The crate has no library code; `cargo test -p hookrelay-deploy-check` runs one test
//! binary, `tests/deploy/`:
//!
//! - `compose`: `docker-compose.yml` parses, runs the documented binaries and subcommands
//!   with the documented `HOOKRELAY__*` names, takes the relay's credentials from `.env`
//!   (documented in `.env.example`), mounts files that exist, has healthchecks and
//!   waits for a healthy broker.
//! - `dockerfile`: multi-stage with a cached dependency layer, a non-root
//!   `debian:bookworm-slim` runtime with both binaries, `hookrelay healthcheck` as
//!   `HEALTHCHECK`, the spool as a volume; `.dockerignore` keeps `target/` out.
//! - `definitions`: `config/rabbitmq/definitions.json` is exactly the topology the code
//!   builds (`hookrelay_common::topology`) for the workers compose runs, and its user can
//!   log in with the URI compose gives the relay.
//! - `broker`: against the real RabbitMQ on 127.0.0.1:5672, the code declares its
//!   topology under unique names and the broker confirms that every object and binding
//!   of definitions.json matches it (see that module for how).
