//! Optional TLS (`server.tls`): a webhook over HTTPS to a client that trusts the relay's
//! self-signed certificate; bad TLS settings stop start-up with a message naming the key.

use crate::helpers::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A fresh self-signed certificate for 127.0.0.1 and localhost: (cert file, key file,
/// cert PEM).
fn self_signed(dir: &Path, tag: &str) -> (PathBuf, PathBuf, String) {
    let ck =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .expect("generate a certificate");
    let cert_pem = ck.cert.pem();
    let cert = dir.join(format!("{tag}.crt"));
    let key = dir.join(format!("{tag}.key"));
    std::fs::write(&cert, &cert_pem).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    (cert, key, cert_pem)
}

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hookrelay-tls-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_is_served_over_tls() {
    let dir = temp_dir();
    let (cert, key, cert_pem) = self_signed(&dir, "relay");
    let mut cfg = TestConfig::new("tls");
    cfg.set("HOOKRELAY__SERVER__TLS__CERT_FILE", cert.to_str().unwrap());
    cfg.set("HOOKRELAY__SERVER__TLS__KEY_FILE", key.to_str().unwrap());
    let app = spawn_app(&cfg).await;
    let mut tap = Tap::new(&cfg.exchange, "#").await;
    let https = app.base.replace("http://", "https://");

    let trusting = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(cert_pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let body = fixture("kommunicate/message_group.json");
    let (vendor, creds) = app.credentials("kommunicate");
    let mut req = trusting
        .post(format!("{https}/webhooks/kommunicate"))
        .body(body.clone());
    for (k, v) in vendor.sign(&creds, &body, time::OffsetDateTime::now_utc()) {
        req = req.header(k, v);
    }
    let r = req.send().await.expect("an HTTPS request to the relay");
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    assert_eq!(
        tap.next().await.routing_key.as_str(),
        "kommunicate.message.created"
    );
    assert_eq!(
        trusting
            .get(format!("{https}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // A client that does not trust the certificate gets no answer at all.
    let wary = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .build()
        .unwrap();
    assert!(wary.get(format!("{https}/healthz")).send().await.is_err());
    // Neither does plain HTTP on the TLS port.
    let plain = reqwest::Client::new()
        .get(format!("{}/healthz", app.base))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(plain.map(|r| r.status() != 200).unwrap_or(true));
    tap.expect_nothing().await;
    app.stop().await;
}

/// `hookrelay <args>` with `env`; fails the test instead of hanging if it keeps running.
fn run_relay(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hookrelay"));
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("HOOKRELAY_CONFIG")
        .args(args)
        .env("HOOKRELAY__SERVER__BIND", "127.0.0.1:0")
        .env("HOOKRELAY__SPOOL__ENABLED", "false")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let started = Instant::now();
    loop {
        if let Some(_status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            return (out.status.code(), text);
        }
        if started.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("hookrelay {args:?} kept running: a bad TLS setting was accepted");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn bad_tls_settings_stop_start_up_naming_the_key() {
    let dir = temp_dir();
    let (cert, _, _) = self_signed(&dir, "one");
    let (_, other_key, _) = self_signed(&dir, "two");
    let junk = dir.join("junk.pem");
    std::fs::write(
        &junk,
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let missing = dir.join("missing.pem");
    let c = cert.to_str().unwrap();
    type Case<'a> = (&'a str, &'a str, &'a str, &'a str);
    let cases: Vec<Case> = vec![
        (
            c,
            other_key.to_str().unwrap(),
            "server.tls.key_file",
            "a key that is not the certificate's",
        ),
        (c, "", "server.tls.key_file", "a certificate without a key"),
        ("", c, "server.tls.cert_file", "a key without a certificate"),
        (
            missing.to_str().unwrap(),
            other_key.to_str().unwrap(),
            "server.tls.cert_file",
            "a missing file",
        ),
        (
            c,
            junk.to_str().unwrap(),
            "server.tls.key_file",
            "a key file with no key",
        ),
    ];
    for (cert_file, key_file, key, what) in cases {
        let env = [
            ("HOOKRELAY__SERVER__TLS__CERT_FILE", cert_file),
            ("HOOKRELAY__SERVER__TLS__KEY_FILE", key_file),
        ];
        for args in [&["serve"][..], &["check-config"][..]] {
            let (code, text) = run_relay(args, &env);
            assert_eq!(code, Some(1), "{what} ({args:?}): {text}");
            assert!(
                text.contains(key),
                "{what} ({args:?}) must name {key}: {text}"
            );
            assert!(!text.contains("listening on"), "{what}: {text}");
        }
    }
}
