//! A damaged spool, a missing or unwritable `spool.dir` at start (exit 1, one line,
//! nothing deleted), and the operator's `hookrelay spool` commands, all run as the real
//! binary.

use crate::helpers::*;
use crate::spool_faults::{
    get_json, k_body, outage_config, post, receive_all, relay_cmd, skip_or_fail, temp_dir, Relay,
    Tmpfs,
};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// A broker address nothing listens on: the relay spools everything.
fn dead_broker() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("amqp://guest:guest@127.0.0.1:{port}/%2f")
}

/// A spool directory holding `n` events (accepted while the broker was away), and their
/// ids in arrival order.
async fn spool_with_events(cfg: &TestConfig, n: u64) -> Vec<String> {
    let relay = Relay::start(cfg);
    let client = reqwest::Client::new();
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let mut ids = Vec::new();
    for i in 0..n {
        let (s, id) = post(&client, &relay.base, k_body(&tag, i, 2000)).await;
        assert_eq!(s, 200, "spooled while the broker is away");
        ids.push(id.unwrap());
    }
    relay.stop();
    ids
}

fn dead_config(tag: &str, dir: &Path) -> TestConfig {
    outage_config(tag, "broker", &dead_broker(), dir)
}

/// `hookrelay serve` on `cfg`, to its exit (bounded).
fn serve_to_exit(cfg: &TestConfig, wrap: Option<&[&str]>) -> Output {
    let mut cmd = match wrap {
        None => relay_cmd(&cfg.env),
        Some(prefix) => {
            let mut c = Command::new(prefix[0]);
            c.args(&prefix[1..]).arg(env!("CARGO_BIN_EXE_hookrelay"));
            c.current_dir(env!("CARGO_MANIFEST_DIR"))
                .env_remove("HOOKRELAY_CONFIG")
                .env("HOOKRELAY__LOG__FORMAT", "json");
            for (k, v) in &cfg.env {
                c.env(k, v);
            }
            c
        }
    };
    let mut child = cmd
        .arg("serve")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the relay started on a spool it should have refused");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// Exit 1 with exactly one line that contains each of `needles`, and no panic.
fn assert_refused(out: &Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(out.status.code(), Some(1), "exit 1: {stderr}");
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    assert!(!stderr.contains("panicked at"), "no panic: {stderr}");
    for n in needles {
        assert!(lines[0].contains(n), "the line names {n:?}: {}", lines[0]);
    }
}

fn digest(path: &Path) -> Vec<u8> {
    Sha256::digest(std::fs::read(path).unwrap()).to_vec()
}

fn spool_cmd(cfg: &TestConfig, args: &[&str]) -> Output {
    relay_cmd(&cfg.env)
        .arg("spool")
        .args(args)
        .output()
        .unwrap()
}

fn lines(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_spool_is_refused_at_start_with_one_line_and_nothing_deleted() {
    let dir = temp_dir("damaged");
    let cfg = dead_config("damaged", &dir);
    let ids = spool_with_events(&cfg, 40).await;
    let file = dir.join("spool.redb");
    let good = std::fs::read(&file).unwrap();
    let size = good.len();
    let mut rng = uuid::Uuid::new_v4().as_u128();
    let mut random = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                rng = rng
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (rng >> 64) as u8
            })
            .collect()
    };
    let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
    for cut in [100, 4096, size / 3, size / 2, size - 4096] {
        cases.push((format!("cut at {cut} of {size}"), good[..cut].to_vec()));
    }
    let mut header = good.clone();
    header[..4096].copy_from_slice(&random(4096));
    cases.push(("header page overwritten".into(), header));
    // Every place an event's record starts, overwritten: the pages holding the events.
    let mut data = good.clone();
    let starts: Vec<usize> = data
        .windows(7)
        .enumerate()
        .filter(|(_, w)| *w == b"{\"id\":\"")
        .map(|(i, _)| i)
        .collect();
    assert!(starts.len() >= 40, "the records are in the file");
    for at in starts {
        let end = (at + 256).min(size);
        let noise = random(end - at);
        data[at..end].copy_from_slice(&noise);
    }
    cases.push(("event pages overwritten with random bytes".into(), data));
    cases.push((
        "not a spool".into(),
        std::fs::read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap(),
    ));
    for (what, bytes) in &cases {
        std::fs::write(&file, bytes).unwrap();
        let before = digest(&file);
        let out = serve_to_exit(&cfg, None);
        assert_refused(&out, &[file.to_str().unwrap(), "hookrelay spool"]);
        assert!(file.exists(), "{what}: the file is still there");
        assert_eq!(digest(&file), before, "{what}: the file is untouched");
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(
            names.len(),
            1,
            "{what}: nothing added or removed: {names:?}"
        );
    }
    // The good file again: it starts and publishes everything.
    std::fs::write(&file, &good).unwrap();
    let mut cfg = cfg;
    cfg.set("HOOKRELAY__AMQP__URI", BROKER);
    let mut tap = Tap::new(&cfg.exchange, "#").await;
    let relay = Relay::start(&cfg);
    let want: HashSet<String> = ids.iter().cloned().collect();
    let got = receive_all(&mut tap, &want, Duration::from_secs(30)).await;
    assert_eq!(got, ids, "in order, once each");
    relay.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Root passes every permission check, so the unreadable file and the unwritable
/// directory are tried as another user (`setpriv`, from util-linux); a read-only file
/// system stands for an unwritable directory as root.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_file_a_missing_or_unwritable_spool_dir_are_refused() {
    // Missing.
    let parent = temp_dir("nodir");
    let missing = parent.join("typo");
    let cfg = dead_config("nodir", &missing);
    let out = serve_to_exit(&cfg, None);
    assert_refused(&out, &["spool.dir", missing.to_str().unwrap(), "mkdir -p"]);
    assert!(!missing.exists(), "not created behind the operator's back");

    // A read-only file system (as root). Without a mount, Tmpfs::mount failed the test
    // or said SKIPPED.
    if let Some(fs) = Tmpfs::mount("spool-ro", "1m", "ro") {
        let cfg = dead_config("rofs", &fs.path);
        let out = serve_to_exit(&cfg, None);
        assert_refused(&out, &["spool.dir", "not writable", "read-only"]);
    }

    let root = nix_id("-u") == 0;
    let setpriv = Command::new("setpriv").arg("--version").output().is_ok();
    if !(root && setpriv) {
        skip_or_fail(
            "unreadable spool file / unwritable spool.dir as another user: needs root and setpriv (util-linux)",
        );
        return;
    }
    let as_nobody: &[&str] = &[
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--",
    ];
    // Unwritable: a directory only root may write to.
    let locked = temp_dir("rootonly");
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o755)).unwrap();
    let cfg = dead_config("rootonly", &locked);
    let out = serve_to_exit(&cfg, Some(as_nobody));
    assert_refused(&out, &["spool.dir", "not writable", "permission denied"]);

    // Unreadable: the user's own directory, a spool file it may not read.
    let dir = temp_dir("unreadable");
    let cfg = dead_config("unreadable", &dir);
    spool_with_events(&cfg, 3).await;
    let file = dir.join("spool.redb");
    let before = digest(&file);
    Command::new("chown")
        .args(["-R", "65534:65534"])
        .arg(&dir)
        .status()
        .unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o200)).unwrap();
    let out = serve_to_exit(&cfg, Some(as_nobody));
    assert_refused(
        &out,
        &[
            file.to_str().unwrap(),
            "permission denied",
            "hookrelay spool",
        ],
    );
    assert_eq!(digest(&file), before, "untouched");
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&locked);
    let _ = std::fs::remove_dir_all(&parent);
}

fn nix_id(flag: &str) -> u32 {
    let out = Command::new("id").arg(flag).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spool_commands_status_verify_export_drain_quarantine() {
    let dir = temp_dir("ops");
    let mut cfg = dead_config("ops", &dir);
    let ids = spool_with_events(&cfg, 12).await;
    let d = dir.to_str().unwrap();

    let out = spool_cmd(&cfg, &["status", "--dir", d]);
    assert_eq!(out.status.code(), Some(0));
    let status = &lines(&out)[0];
    assert_eq!(status["depth"], 12, "{status}");
    assert_eq!(status["healthy"], true, "{status}");
    assert_eq!(status["dir"], d);
    assert!(status["bytes"].as_u64().unwrap() > 12 * 2000);
    assert!(
        status["oldest"].as_str().unwrap().ends_with('Z'),
        "{status}"
    );
    assert_eq!(status["error"], Value::Null);

    // Only the broker and spool keys matter: a configuration `serve` would refuse (demo
    // credentials on a public bind) still inspects its spool.
    let out = relay_cmd(&cfg.env)
        .env("HOOKRELAY__SERVER__BIND", "0.0.0.0:8080")
        .args(["spool", "status"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(lines(&out)[0]["depth"], 12);

    let out = spool_cmd(&cfg, &["verify", "--dir", d]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // `--dir` defaults to spool.dir.
    let out = spool_cmd(&cfg, &["export"]);
    assert_eq!(out.status.code(), Some(0));
    let events = lines(&out);
    let exported: Vec<String> = events
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(exported, ids, "every event, in spool order");
    assert_eq!(events[0]["specversion"], "1.0");
    assert_eq!(events[0]["type"], "kommunicate.message.created");

    // While a relay holds the spool: drain and quarantine refuse, status says why.
    let relay = Relay::start(&cfg);
    let out = spool_cmd(&cfg, &["drain"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("running relay"),
        "{out:?}"
    );
    let out = spool_cmd(&cfg, &["quarantine"]);
    assert_eq!(out.status.code(), Some(1));
    let out = spool_cmd(&cfg, &["status"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(lines(&out)[0]["error"]
        .as_str()
        .unwrap()
        .contains("running relay"));
    let (_, ready) = get_json(&relay.base, "/readyz").await;
    assert_eq!(ready["spool"]["depth"], 12, "{ready}");
    relay.stop();

    // Drained from "another host": the configured broker, with confirms.
    cfg.set("HOOKRELAY__AMQP__URI", BROKER);
    let mut tap = Tap::new(&cfg.exchange, "#").await;
    let out = spool_cmd(&cfg, &["drain"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want: HashSet<String> = ids.iter().cloned().collect();
    let got = receive_all(&mut tap, &want, Duration::from_secs(20)).await;
    assert_eq!(got, ids, "in order, once each");
    let out = spool_cmd(&cfg, &["status"]);
    assert_eq!(lines(&out)[0]["depth"], 0);

    // A damaged spool: verify fails, export salvages, quarantine sets it aside, export
    // still reads it, and a relay starts on a fresh spool.
    let dir2 = temp_dir("ops-damaged");
    let cfg2 = dead_config("ops-damaged", &dir2);
    let ids2 = spool_with_events(&cfg2, 20).await;
    let file = dir2.join("spool.redb");
    let len = std::fs::metadata(&file).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
    f.set_len(len / 2).unwrap();
    drop(f);
    let d2 = dir2.to_str().unwrap();
    let out = spool_cmd(&cfg2, &["verify", "--dir", d2]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("spool.redb"));
    let out = spool_cmd(&cfg2, &["status", "--dir", d2]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(lines(&out)[0]["healthy"], false);
    let out = spool_cmd(&cfg2, &["export", "--dir", d2]);
    assert_eq!(out.status.code(), Some(1), "some unreadable");
    assert!(String::from_utf8_lossy(&out.stderr).contains("unreadable"));
    let salvaged: Vec<String> = lines(&out)
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(!salvaged.is_empty(), "something salvaged from half a file");
    assert!(
        salvaged.iter().all(|id| ids2.contains(id)),
        "only real events"
    );
    let out = spool_cmd(&cfg2, &["quarantine", "--dir", d2]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!file.exists());
    let names: Vec<String> = std::fs::read_dir(&dir2)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    let stamp = names[0]
        .strip_prefix("spool.redb.damaged-")
        .expect("renamed");
    assert_eq!(stamp.len(), 16, "yyyymmddThhmmssZ: {stamp}");
    assert!(stamp.ends_with('Z') && &stamp[8..9] == "T", "{stamp}");
    let out = spool_cmd(&cfg2, &["export", "--dir", d2]);
    let again: Vec<String> = lines(&out)
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(again, salvaged, "export still reads the renamed file");
    let relay = Relay::start(&cfg2);
    let (s, ready) = get_json(&relay.base, "/readyz").await;
    assert_eq!(
        (s, &ready["spool"]["depth"]),
        (200, &Value::from(0)),
        "{ready}"
    );
    relay.stop();
    remove_relay_topology(&cfg2.exchange).await;
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&dir2);
}
