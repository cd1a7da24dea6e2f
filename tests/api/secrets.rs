//! No secret reaches the logs: the relay binary runs a full session at trace level with
//! JSON logs, and everything it wrote is searched for every configured secret.

use crate::helpers::*;
use hookrelay_common::Secret;
use hookrelay_vendors::{chatwoot, cometchat, kommunicate, Credentials, Vendor};
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

struct Relay {
    child: std::process::Child,
    log: std::path::PathBuf,
}

impl Drop for Relay {
    /// A failed assertion mid-session must not leave the relay running.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Relay {
    fn log_text(&self) -> String {
        let mut s = String::new();
        std::fs::File::open(&self.log)
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        s
    }

    /// Wait for the `listening on <addr>` line and return the address.
    fn wait_listening(&self) -> String {
        let started = Instant::now();
        loop {
            let text = self.log_text();
            if let Some(at) = text.find("listening on ") {
                let rest = &text[at + "listening on ".len()..];
                let end = rest.find(|c: char| c == '"' || c.is_whitespace()).unwrap();
                return rest[..end].to_owned();
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the relay did not start:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn terminate(mut self) -> String {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let started = Instant::now();
        while self.child.try_wait().unwrap().is_none() {
            if started.elapsed() > Duration::from_secs(20) {
                let _ = self.child.kill();
                panic!("the relay did not stop on SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.log_text()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_the_logs_even_at_trace_level() {
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let token = format!("tok{tag}");
    let hmac = format!("hmac{tag}");
    let user = format!("usr{}", &tag[..8]);
    let password = format!("pw{tag}");
    let file_token = format!("filetok{tag}");
    let amqp_password = format!("amqppw{tag}");
    let dir = std::env::temp_dir().join(format!("hookrelay-secrets-{tag}"));
    std::fs::create_dir_all(&dir).unwrap();
    let token_file = dir.join("acme-token");
    std::fs::write(&token_file, format!("{file_token}\n")).unwrap();
    let exchange = unique("secrets");
    // The first node has its own password and is down (connection refused): the path
    // most likely to log a URI. The second is the live broker.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let uri = format!("amqp://hookrelay:{amqp_password}@{dead}/%2f,{BROKER}");
    let log = dir.join("relay.log");

    let mut tap = Tap::new(&exchange, "#").await;
    let child = Command::new(env!("CARGO_BIN_EXE_hookrelay"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .arg("serve")
        .env_remove("HOOKRELAY_CONFIG")
        .env_remove("RUST_LOG")
        .env("HOOKRELAY__LOG__FORMAT", "json")
        .env("HOOKRELAY__LOG__LEVEL", "trace")
        .env("HOOKRELAY__SERVER__BIND", "127.0.0.1:0")
        .env("HOOKRELAY__SERVER__WORKERS", "1")
        .env("HOOKRELAY__AMQP__URI", &uri)
        // The down node first, always, so its refusal (and its password) is logged.
        .env("HOOKRELAY__AMQP__NODE_ORDER", "listed")
        .env("HOOKRELAY__AMQP__CONNECT_TIMEOUT_MS", "2000")
        .env("HOOKRELAY__AMQP__EXCHANGE", &exchange)
        .env("HOOKRELAY__SPOOL__DIR", {
            std::fs::create_dir_all(dir.join("spool")).unwrap();
            dir.join("spool")
        })
        .env("HOOKRELAY__SOURCES__KOMMUNICATE__TOKEN", &token)
        .env("HOOKRELAY__SOURCES__CHATWOOT__SECRET", &hmac)
        .env("HOOKRELAY__SOURCES__COMETCHAT__USERNAME", &user)
        .env("HOOKRELAY__SOURCES__COMETCHAT__PASSWORD", &password)
        .env("HOOKRELAY__SOURCES__ACME__VENDOR", "kommunicate")
        .env("HOOKRELAY__SOURCES__ACME__TOKEN_FILE", &token_file)
        .stdout(Stdio::from(std::fs::File::create(&log).unwrap()))
        .stderr(Stdio::from(
            std::fs::OpenOptions::new().append(true).open(&log).unwrap(),
        ))
        .spawn()
        .unwrap();
    let relay = Relay { child, log };
    let base = format!("http://{}", relay.wait_listening());
    let client = reqwest::Client::new();

    // This test's three sources, each with the credentials given to the relay above.
    let creds = |vendor: Vendor| {
        if vendor == kommunicate::VENDOR {
            Credentials::new(kommunicate::Token(Secret::new(token.clone())))
        } else if vendor == chatwoot::VENDOR {
            Credentials::new(chatwoot::HmacSecret {
                secret: Secret::new(hmac.clone()),
                tolerance: None,
            })
        } else {
            assert_eq!(
                vendor,
                cometchat::VENDOR,
                "this test configures three vendors"
            );
            Credentials::new(cometchat::Basic {
                username: Secret::new(user.clone()),
                password: Secret::new(password.clone()),
            })
        }
    };
    let mut basic_values = Vec::new();
    let post = |source: &str, headers: Vec<(String, String)>, body: Vec<u8>| {
        let mut req = client.post(format!("{base}/webhooks/{source}")).body(body);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        req.send()
    };
    let now = time::OffsetDateTime::now_utc();

    // Genuine deliveries of each vendor, and the file-configured source.
    for (source, vendor, file) in [
        (
            "kommunicate",
            kommunicate::VENDOR,
            "kommunicate/message_group.json",
        ),
        (
            "chatwoot",
            chatwoot::VENDOR,
            "chatwoot/message_created_incoming.json",
        ),
        (
            "cometchat",
            cometchat::VENDOR,
            "cometchat/message_sent_text.json",
        ),
        (
            "cometchat",
            cometchat::VENDOR,
            "cometchat/legacy_before_message.json",
        ),
        (
            "acme",
            kommunicate::VENDOR,
            "kommunicate/message_one_to_one.json",
        ),
    ] {
        let c = if source == "acme" {
            Credentials::new(kommunicate::Token(Secret::new(file_token.clone())))
        } else {
            creds(vendor)
        };
        let body = fixture(file);
        let headers = vendor.sign(&c, &body, now);
        for (k, v) in &headers {
            if k.eq_ignore_ascii_case("authentication") || k.eq_ignore_ascii_case("authorization") {
                basic_values.push(v.trim_start_matches("Basic ").to_owned());
            }
        }
        let r = post(source, headers, body).await.unwrap();
        assert_eq!(r.status(), 200, "{source} {file}");
        tap.next().await;
    }
    // The same delivery again (duplicate), then every refusal path.
    let k_body = fixture("kommunicate/message_group.json");
    let k_ok = kommunicate::VENDOR.sign(&creds(kommunicate::VENDOR), &k_body, now);
    assert_eq!(
        post("kommunicate", k_ok.clone(), k_body.clone())
            .await
            .unwrap()
            .status(),
        200
    );
    let json = || ("content-type".to_owned(), "application/json".to_owned());
    let wrong = |k: &str, v: &str| vec![json(), (k.to_owned(), v.to_owned())];
    let w_body = fixture("chatwoot/message_created_incoming.json");
    let w_ok = chatwoot::VENDOR.sign(&creds(chatwoot::VENDOR), &w_body, now);
    let mut w_bad = w_ok.clone();
    for (k, v) in &mut w_bad {
        if k.eq_ignore_ascii_case("x-chatwoot-signature") {
            *v = format!("sha256={}", "0".repeat(64));
        }
    }
    let stale = chatwoot::VENDOR.sign(
        &creds(chatwoot::VENDOR),
        &w_body,
        now - time::Duration::hours(1),
    );
    let c_body = fixture("cometchat/message_sent_text.json");
    let mut dup = k_ok.clone();
    dup.extend(k_ok.iter().filter(|(k, _)| k != "Content-Type").cloned());
    // (source, headers, body, expected status)
    type Refusal<'a> = (&'a str, Vec<(String, String)>, Vec<u8>, u16);
    let refusals: Vec<Refusal> = vec![
        (
            "kommunicate",
            wrong("authentication", "Basic d3Jvbmc="),
            k_body.clone(),
            401,
        ),
        (
            "kommunicate",
            wrong("authentication", "Basic ***"),
            k_body.clone(),
            401,
        ),
        ("kommunicate", dup, k_body.clone(), 401),
        ("kommunicate", vec![json()], k_body.clone(), 401),
        ("chatwoot", w_bad, w_body.clone(), 401),
        ("chatwoot", stale, w_body.clone(), 401),
        (
            "cometchat",
            wrong(
                "authorization",
                &format!("Basic {}", basic_values[2].to_lowercase()),
            ),
            c_body.clone(),
            401,
        ),
        ("kommunicate", k_ok.clone(), b"{not json".to_vec(), 400),
        (
            "kommunicate",
            vec![("content-type".to_owned(), "text/plain".to_owned())],
            k_body.clone(),
            415,
        ),
        ("nope", k_ok.clone(), k_body.clone(), 404),
    ];
    for (source, headers, body, status) in refusals {
        let r = post(source, headers, body).await.unwrap();
        assert_eq!(r.status().as_u16(), status, "{source}");
        let text = r.text().await.unwrap();
        for s in [&token, &hmac, &password, &user] {
            assert!(
                !text.contains(s.as_str()),
                "a response echoed a secret: {text}"
            );
        }
    }
    tap.expect_nothing().await;
    let logs = relay.terminate();

    // The session really was logged, at trace level, as JSON.
    for needle in [
        "listening on",
        "unauthorized webhook",
        "RabbitMQ node refused",
        "connected to RabbitMQ",
        r#""level":"TRACE""#,
        r#""level":"DEBUG""#,
    ] {
        assert!(logs.contains(needle), "the log lacks {needle:?}:\n{logs}");
    }
    let mut secrets = vec![
        ("kommunicate token", token.clone()),
        ("token from token_file", file_token.clone()),
        ("chatwoot HMAC secret", hmac.clone()),
        ("cometchat username", user.clone()),
        ("cometchat password", password.clone()),
        ("AMQP password (down node)", amqp_password.clone()),
        ("AMQP credentials (live node)", "guest:guest".to_owned()),
        (
            "AMQP user:password of the down node",
            format!("hookrelay:{amqp_password}"),
        ),
    ];
    // AMQP PLAIN's response ("\0user\0password"), as a byte list is how a frame dump shows it.
    let sasl = |user: &str, pass: &str| {
        let bytes: Vec<String> = [&[0_u8][..], user.as_bytes(), &[0], pass.as_bytes()]
            .concat()
            .iter()
            .map(u8::to_string)
            .collect();
        bytes.join(", ")
    };
    secrets.push((
        "AMQP SASL response (live node), as bytes",
        sasl("guest", "guest"),
    ));
    secrets.push((
        "AMQP password (down node), as bytes",
        sasl("hookrelay", &amqp_password),
    ));
    for b64 in &basic_values {
        secrets.push(("base64 of a Basic header", b64.clone()));
        secrets.push((
            "unpadded base64 of a Basic header",
            b64.trim_end_matches('=').to_owned(),
        ));
    }
    for (what, secret) in &secrets {
        if let Some(at) = logs.find(secret.as_str()) {
            let line_start = logs[..at].rfind('\n').map_or(0, |i| i + 1);
            let line_end = logs[at..].find('\n').map_or(logs.len(), |i| at + i);
            panic!(
                "the {what} appears in the log:\n{}",
                &logs[line_start..line_end]
            );
        }
    }
    assert!(logs.lines().count() > 50, "suspiciously little was logged");
}
