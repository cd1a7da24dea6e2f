//! Settings tests: loading, layering, validation and the errors that name the key.

use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn default_configuration_is_valid() {
    let v = Settings::load_with_env(None, vec![])
        .unwrap()
        .validate()
        .unwrap();
    assert_eq!(v.bind.to_string(), "127.0.0.1:8080");
    assert_eq!(v.sources.len(), 3);
    assert_eq!(v.raw.server.max_body_bytes, 2_097_152);
    assert_eq!(v.raw.durability.ack, AckMode::Broker);
}

#[test]
fn history_defaults_env_overrides_and_a_bad_max_age_names_its_key() {
    let v = Settings::load_with_env(None, vec![])
        .unwrap()
        .validate()
        .unwrap();
    let h = &v.raw.history;
    assert!(h.enabled);
    assert_eq!(
        h.stream_name("hookrelay.events"),
        "hookrelay.events.history"
    );
    assert_eq!((h.max_age.as_str(), h.max_bytes), ("7D", 5_000_000_000));
    let v = Settings::load_with_env(
        None,
        env(&[
            ("HOOKRELAY__HISTORY__ENABLED", "false"),
            ("HOOKRELAY__HISTORY__STREAM", "kept"),
            ("HOOKRELAY__HISTORY__MAX_BYTES", "123"),
        ]),
    )
    .unwrap()
    .validate()
    .unwrap();
    assert!(!v.raw.history.enabled);
    assert_eq!(v.raw.history.stream_name("x"), "kept");
    assert_eq!(v.raw.history.max_bytes, 123);
    let e = Settings::load_with_env(None, env(&[("HOOKRELAY__HISTORY__MAX_AGE", "7days")]))
        .unwrap()
        .validate()
        .unwrap_err();
    assert!(e.to_string().contains("history.max_age"), "{e}");
}

#[test]
fn empty_credential_counts_as_missing_and_names_the_key() {
    let e = Settings::load_with_env(None, env(&[("HOOKRELAY__SOURCES__KOMMUNICATE__TOKEN", "")]))
        .unwrap()
        .validate()
        .unwrap_err();
    assert!(e.to_string().contains("sources.kommunicate.token"), "{e}");
}

#[test]
fn demo_credentials_refused_on_public_bind() {
    let e = Settings::load_with_env(None, env(&[("HOOKRELAY__SERVER__BIND", "0.0.0.0:8080")]))
        .unwrap()
        .validate()
        .unwrap_err();
    let text = e.to_string();
    assert!(text.contains("sources.") && text.contains("demo"), "{text}");
    assert!(
        !text.contains("abcdef"),
        "the message must not echo the secret: {text}"
    );
}

#[test]
fn public_bind_with_real_credentials_is_fine() {
    let v = Settings::load_with_env(
        None,
        env(&[
            ("HOOKRELAY__SERVER__BIND", "0.0.0.0:8080"),
            ("HOOKRELAY__SOURCES__KOMMUNICATE__TOKEN", "t0k3n-real"),
            ("HOOKRELAY__SOURCES__CHATWOOT__SECRET", "real-secret"),
            ("HOOKRELAY__SOURCES__COMETCHAT__PASSWORD", "realpass"),
        ]),
    )
    .unwrap()
    .validate();
    assert!(v.is_ok(), "{v:?}");
}

#[test]
fn new_source_from_env_and_unknown_vendor_named() {
    let v = Settings::load_with_env(
        None,
        env(&[
            ("HOOKRELAY__SOURCES__ACME_CHAT__VENDOR", "kommunicate"),
            ("HOOKRELAY__SOURCES__ACME_CHAT__TOKEN", "zzz"),
        ]),
    )
    .unwrap()
    .validate()
    .unwrap();
    assert_eq!(
        v.sources["acme_chat"].vendor,
        hookrelay_vendors::kommunicate::VENDOR
    );
    let e = Settings::load_with_env(None, env(&[("HOOKRELAY__SOURCES__ODD__VENDOR", "slack")]))
        .unwrap()
        .validate()
        .unwrap_err();
    assert!(e.to_string().contains("sources.odd.vendor"), "{e}");
}

#[test]
fn a_standard_webhooks_source_takes_a_list_of_secrets_and_refuses_the_demo_one_in_public() {
    let demo = hookrelay_vendors::standard_webhooks::DEMO_SECRET;
    let pairs = [
        ("HOOKRELAY__SOURCES__BILLING__VENDOR", "standard-webhooks"),
        (
            "HOOKRELAY__SOURCES__BILLING__SECRET",
            "whsec_b2xkLWtleQ==, whsec_bmV3LWtleQ==",
        ),
    ];
    let v = Settings::load_with_env(None, env(&pairs))
        .unwrap()
        .validate()
        .unwrap();
    let keys = v.sources["billing"]
        .credentials
        .get::<hookrelay_vendors::standard_webhooks::SigningKeys>()
        .expect("signing keys");
    assert_eq!(keys.tolerance, Some(std::time::Duration::from_secs(300)));
    let e = invalid(&[
        ("HOOKRELAY__SOURCES__BILLING__VENDOR", "standard-webhooks"),
        ("HOOKRELAY__SOURCES__BILLING__SECRET", "whsec_!!"),
    ]);
    assert!(
        e.contains("sources.billing.secret") && !e.contains("!!"),
        "{e}"
    );
    let e = invalid(&[
        ("HOOKRELAY__SERVER__BIND", "0.0.0.0:8080"),
        ("HOOKRELAY__SOURCES__KOMMUNICATE__TOKEN", "t0k3n-real"),
        ("HOOKRELAY__SOURCES__CHATWOOT__SECRET", "real-secret"),
        ("HOOKRELAY__SOURCES__COMETCHAT__PASSWORD", "realpass"),
        ("HOOKRELAY__SOURCES__BILLING__VENDOR", "standard-webhooks"),
        (
            "HOOKRELAY__SOURCES__BILLING__SECRET",
            &format!("whsec_bmV3LWtleQ==,{demo}"),
        ),
    ]);
    assert!(
        e.contains("sources.billing.secret") && e.contains("demo"),
        "{e}"
    );
}

#[test]
fn a_typo_anywhere_is_refused_naming_the_key_and_the_nearest_one() {
    let e = Settings::load_with_env(None, env(&[("HOOKRELAY__SERVER__BNID", "0.0.0.0:1")]))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("server.bnid")
            && e.contains("set by HOOKRELAY__SERVER__BNID")
            && e.contains("did you mean `server.bind`?"),
        "{e}"
    );
    let dir = std::env::temp_dir().join(format!("hookrelay-typo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("relay.toml");
    std::fs::write(&file, "[spool]\nmax_byte = 5\n").unwrap();
    let e = Settings::load_with_env(Some(&file), vec![])
        .unwrap_err()
        .to_string();
    assert!(e.contains("did you mean `spool.max_bytes`?"), "{e}");
    std::fs::write(&file, "[servr]\nbind = \"x\"\n").unwrap();
    let e = Settings::load_with_env(Some(&file), vec![])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("servr") && e.contains("did you mean `server`?"),
        "{e}"
    );
    // The workers' sections are theirs to check.
    assert!(Settings::load_with_env(None, env(&[("HOOKRELAY__FORWARD__URL", "http://x")])).is_ok());
}

#[test]
fn a_typo_in_a_source_key_is_refused_naming_the_nearest_key() {
    let e = invalid(&[("HOOKRELAY__SOURCES__CHATWOOT__SECRET_FLIE", "/run/secret")]);
    assert!(
        e.contains("sources.chatwoot.secret_flie") && e.contains("did you mean `secret_file`"),
        "{e}"
    );
    let e = invalid(&[("HOOKRELAY__SOURCES__KOMMUNICATE__ALLOWED_IP", "10.0.0.0/8")]);
    assert!(e.contains("did you mean `allowed_ips`"), "{e}");
    // Another vendor's key is not this vendor's.
    let e = invalid(&[("HOOKRELAY__SOURCES__KOMMUNICATE__PASSWORD", "x")]);
    assert!(e.contains("sources.kommunicate.password"), "{e}");
}

#[test]
fn allow_unauthenticated_needs_no_credentials() {
    let v = Settings::load_with_env(
        None,
        env(&[
            ("HOOKRELAY__SOURCES__OPEN__VENDOR", "chatwoot"),
            ("HOOKRELAY__SOURCES__OPEN__ALLOW_UNAUTHENTICATED", "true"),
        ]),
    )
    .unwrap()
    .validate()
    .unwrap();
    assert!(v.sources["open"].credentials.is_none());
}

#[test]
fn secret_from_file() {
    let dir = std::env::temp_dir().join(format!("hookrelay-secret-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("token");
    std::fs::write(&f, "from-file\n").unwrap();
    let v = Settings::load_with_env(
        None,
        env(&[
            ("HOOKRELAY__SOURCES__KOMMUNICATE__TOKEN", ""),
            (
                "HOOKRELAY__SOURCES__KOMMUNICATE__TOKEN_FILE",
                f.to_str().unwrap(),
            ),
        ]),
    )
    .unwrap()
    .validate()
    .unwrap();
    let token = v.sources["kommunicate"]
        .credentials
        .get::<hookrelay_vendors::kommunicate::Token>()
        .expect("a Kommunicate token");
    assert_eq!(token.0.expose(), "from-file");
}

fn invalid(pairs: &[(&str, &str)]) -> String {
    Settings::load_with_env(None, env(pairs))
        .unwrap()
        .validate()
        .unwrap_err()
        .to_string()
}

#[test]
fn allowlists_and_trusted_proxies_parse_from_lists_and_name_bad_entries() {
    let v = Settings::load_with_env(
        None,
        env(&[
            (
                "HOOKRELAY__SOURCES__CHATWOOT__ALLOWED_IPS",
                "203.0.113.0/24, 2001:db8::/32,198.51.100.7",
            ),
            ("HOOKRELAY__SERVER__TRUSTED_PROXIES", "10.0.0.0/8"),
            ("HOOKRELAY__SERVER__FORWARDED_HEADER", "forwarded"),
        ]),
    )
    .unwrap()
    .validate()
    .unwrap();
    let nets: Vec<String> = v.sources["chatwoot"]
        .allowed_ips
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(nets, ["203.0.113.0/24", "2001:db8::/32", "198.51.100.7/32"]);
    assert!(v.sources["kommunicate"].allowed_ips.is_empty());
    assert_eq!(v.trusted_proxies.len(), 1);
    assert_eq!(v.raw.server.forwarded_header, ForwardedHeader::Forwarded);
    // Defaults: nothing trusted, no allowlist, no rate limit, no TLS.
    let d = Settings::load_with_env(None, vec![])
        .unwrap()
        .validate()
        .unwrap();
    assert!(d.trusted_proxies.is_empty() && d.tls.is_none());
    assert!(d
        .sources
        .values()
        .all(|s| s.allowed_ips.is_empty() && s.rate_limit.is_none()));

    let e = invalid(&[("HOOKRELAY__SOURCES__CHATWOOT__ALLOWED_IPS", "10.0.0.0/33")]);
    assert!(
        e.contains("sources.chatwoot.allowed_ips") && e.contains("10.0.0.0/33"),
        "{e}"
    );
    let e = invalid(&[("HOOKRELAY__SERVER__TRUSTED_PROXIES", "proxy.internal")]);
    assert!(e.contains("server.trusted_proxies"), "{e}");
    assert_eq!(
        parse_cidr("::ffff:10.0.0.0/104").map(|n| n.to_string()),
        Some("10.0.0.0/8".into())
    );
}

#[test]
fn rate_limit_is_off_by_default_and_checked_when_set() {
    let v = Settings::load_with_env(
        None,
        env(&[
            ("HOOKRELAY__SOURCES__CHATWOOT__RATE_LIMIT_PER_SEC", "2.5"),
            ("HOOKRELAY__SOURCES__COMETCHAT__RATE_LIMIT_PER_SEC", "5"),
            ("HOOKRELAY__SOURCES__COMETCHAT__RATE_LIMIT_BURST", "20"),
            ("HOOKRELAY__SOURCES__KOMMUNICATE__RATE_LIMIT_PER_SEC", ""),
        ]),
    )
    .unwrap()
    .validate()
    .unwrap();
    assert_eq!(
        v.sources["chatwoot"].rate_limit,
        Some(RateLimit {
            per_sec: 2.5,
            burst: 3
        })
    );
    assert_eq!(
        v.sources["cometchat"].rate_limit,
        Some(RateLimit {
            per_sec: 5.0,
            burst: 20
        })
    );
    assert_eq!(v.sources["kommunicate"].rate_limit, None);
    let e = invalid(&[("HOOKRELAY__SOURCES__CHATWOOT__RATE_LIMIT_PER_SEC", "0")]);
    assert!(e.contains("sources.chatwoot.rate_limit_per_sec"), "{e}");
    let e = invalid(&[("HOOKRELAY__SOURCES__CHATWOOT__RATE_LIMIT_BURST", "4")]);
    assert!(e.contains("sources.chatwoot.rate_limit_burst"), "{e}");
    let e = invalid(&[
        ("HOOKRELAY__SOURCES__CHATWOOT__RATE_LIMIT_PER_SEC", "1"),
        ("HOOKRELAY__SOURCES__CHATWOOT__RATE_LIMIT_BURST", "1.5"),
    ]);
    assert!(e.contains("sources.chatwoot.rate_limit_burst"), "{e}");
    let e = Settings::load_with_env(
        None,
        env(&[("HOOKRELAY__SOURCES__CHATWOOT__RATE_LIMIT_PER_SEC", "fast")]),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("sources.chatwoot.rate_limit_per_sec"), "{e}");
}

#[test]
fn cometchat_username_with_a_colon_is_refused_naming_the_key() {
    let e = invalid(&[("HOOKRELAY__SOURCES__COMETCHAT__USERNAME", "relay:user")]);
    assert!(e.contains("sources.cometchat.username"), "{e}");
    assert!(
        !e.contains("relay:user"),
        "the message must not echo the secret: {e}"
    );
}

#[test]
fn tls_needs_both_files_and_names_the_missing_or_bad_one() {
    let e = invalid(&[("HOOKRELAY__SERVER__TLS__CERT_FILE", "/nonexistent/cert.pem")]);
    assert!(
        e.contains("server.tls.key_file") && e.contains("missing"),
        "{e}"
    );
    let e = invalid(&[("HOOKRELAY__SERVER__TLS__KEY_FILE", "/nonexistent/key.pem")]);
    assert!(
        e.contains("server.tls.cert_file") && e.contains("missing"),
        "{e}"
    );
    let e = invalid(&[
        ("HOOKRELAY__SERVER__TLS__CERT_FILE", "/nonexistent/cert.pem"),
        ("HOOKRELAY__SERVER__TLS__KEY_FILE", "/nonexistent/key.pem"),
    ]);
    assert!(
        e.contains("server.tls.cert_file") && e.contains("/nonexistent/cert.pem"),
        "{e}"
    );
    let dir = std::env::temp_dir().join(format!("hookrelay-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let junk = dir.join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").unwrap();
    let e = invalid(&[
        ("HOOKRELAY__SERVER__TLS__CERT_FILE", junk.to_str().unwrap()),
        ("HOOKRELAY__SERVER__TLS__KEY_FILE", junk.to_str().unwrap()),
    ]);
    assert!(
        e.contains("server.tls.cert_file") && e.contains("no PEM certificate"),
        "{e}"
    );
    // Empty values count as missing: plain HTTP.
    let v = Settings::load_with_env(
        None,
        env(&[
            ("HOOKRELAY__SERVER__TLS__CERT_FILE", ""),
            ("HOOKRELAY__SERVER__TLS__KEY_FILE", ""),
        ]),
    )
    .unwrap()
    .validate()
    .unwrap();
    assert!(v.tls.is_none());
}
