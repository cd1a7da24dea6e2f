//! Operational endpoints and the client subcommands.

use crate::helpers::*;
use serde_json::Value;
use std::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_ready_and_metrics() {
    let cfg = TestConfig::new("ops");
    let app = spawn_app(&cfg).await;
    let mut tap = Tap::new(&cfg.exchange, "#").await;
    assert_eq!(app.get("/healthz").await.status(), 200);
    let r = app.get("/readyz").await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status"], "ok");
    assert_eq!(v["broker"], "connected");
    assert_eq!(v["spool"]["depth"], 0);
    app.post_signed("kommunicate", &fixture("kommunicate/message_group.json"))
        .await;
    app.post_signed("kommunicate", &fixture("kommunicate/message_group.json"))
        .await;
    app.post_raw("kommunicate", &[], b"{}".to_vec()).await;
    tap.next().await;
    let text = app.get("/metrics").await.text().await.unwrap();
    for needle in [
        "hookrelay_http_requests_total{source=\"kommunicate\",status=\"200\"} 2",
        "hookrelay_http_requests_total{source=\"kommunicate\",status=\"401\"} 1",
        "hookrelay_events_published_total{routing_key=\"kommunicate.message.created\"} 1",
        "hookrelay_duplicates_dropped_total{source=\"kommunicate\"} 1",
        "hookrelay_publish_latency_seconds_count 1",
        "hookrelay_broker_connected 1",
        "hookrelay_spool_depth 0",
    ] {
        assert!(text.contains(needle), "metrics lack {needle}:\n{text}");
    }
    assert!(!text.contains("abcdef"));
    app.stop().await;
}

fn relay_bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_hookrelay"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    c.env_remove("HOOKRELAY_CONFIG");
    c
}

#[test]
fn check_config_accepts_defaults_and_names_the_bad_key() {
    let out = relay_bin().arg("check-config").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("configuration OK"));
    assert!(stdout.contains("kommunicate"));
    for secret in [
        "abcdef",
        "test-chatwoot-webhook-secret",
        "s3cretPa55",
        "guest:guest",
    ] {
        assert!(!stdout.contains(secret), "check-config printed a secret");
    }

    let out = relay_bin()
        .arg("check-config")
        .env("HOOKRELAY__SOURCES__CHATWOOT__SECRET", "")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("sources.chatwoot.secret"));

    let out = relay_bin()
        .arg("check-config")
        .env("HOOKRELAY__SERVER__BIND", "0.0.0.0:8080")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("demo") && err.contains("sources."), "{err}");

    let dir = std::env::temp_dir().join(format!("hookrelay-cfg-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("extra.toml");
    std::fs::write(
        &file,
        "[sources.acme]\nvendor = \"kommunicate\"\ntoken = \"t\"\n",
    )
    .unwrap();
    let out = relay_bin()
        .args(["check-config", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("acme: vendor kommunicate"));
    let out = relay_bin()
        .arg("check-config")
        .env("HOOKRELAY_CONFIG", &file)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("acme"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_and_healthcheck_subcommands_talk_to_a_running_relay() {
    let cfg = TestConfig::new("send");
    let app = spawn_app(&cfg).await;
    let mut tap = Tap::new(&cfg.exchange, "#").await;
    for (source, file, rk) in [
        (
            "chatwoot",
            "chatwoot/conversation_created.json",
            "chatwoot.conversation.created",
        ),
        (
            "cometchat",
            "cometchat/message_sent_text.json",
            "cometchat.message.created",
        ),
        (
            "kommunicate",
            "kommunicate/message_one_to_one.json",
            "kommunicate.message.created",
        ),
    ] {
        let out = relay_bin()
            .args(["send", source])
            .arg(fixtures_dir().join(file))
            .args(["--url", &format!("{}/webhooks/{source}", app.base)])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).starts_with("200 "));
        assert_eq!(tap.next().await.routing_key.as_str(), rk);
    }
    let out = relay_bin()
        .args(["healthcheck", "--url", &format!("{}/readyz", app.base)])
        .output()
        .unwrap();
    assert!(out.status.success());
    let base = app.base.clone();
    app.stop().await;
    let out = relay_bin()
        .args(["healthcheck", "--url", &format!("{base}/readyz")])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "healthcheck fails when the relay is gone"
    );
}
