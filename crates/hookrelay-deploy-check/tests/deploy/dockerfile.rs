//! The Dockerfile and .dockerignore, read as text: what the image must be (issue #5).

use crate::support::*;

#[derive(Debug)]
struct Instruction {
    stage: usize,
    op: String,
    args: String,
}

/// Instructions with continuation lines joined and comments dropped; `stage` counts FROMs.
fn instructions() -> Vec<Instruction> {
    let text = read("Dockerfile");
    let mut out = Vec::new();
    let mut stage = 0;
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        if let Some(head) = trimmed.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
            continue;
        }
        current.push_str(trimmed);
        let full = std::mem::take(&mut current);
        let (op, args) = full
            .split_once(char::is_whitespace)
            .unwrap_or((full.as_str(), ""));
        let op = op.to_uppercase();
        if op == "FROM" {
            stage += 1;
        }
        out.push(Instruction {
            stage,
            op,
            args: args.trim().to_owned(),
        });
    }
    out
}

fn last_stage(all: &[Instruction]) -> Vec<&Instruction> {
    let last = all.iter().map(|i| i.stage).max().unwrap_or(0);
    all.iter().filter(|i| i.stage == last).collect()
}

/// The value of `ENV name=value` in the given instructions.
fn env_value(ins: &[&Instruction], name: &str) -> Option<String> {
    ins.iter()
        .filter(|i| i.op == "ENV")
        .flat_map(|i| i.args.split_whitespace())
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")).map(str::to_owned))
}

#[test]
fn build_is_multi_stage_with_a_cached_dependency_layer() {
    let all = instructions();
    let froms: Vec<&Instruction> = all.iter().filter(|i| i.op == "FROM").collect();
    assert!(froms.len() >= 2, "multi-stage: {} FROM", froms.len());
    // In some stage, a `cargo build` runs before the full sources are copied in: that
    // build only sees manifests, so its layer survives source edits.
    let cached = (1..=froms.len()).any(|stage| {
        let ins: Vec<&Instruction> = all.iter().filter(|i| i.stage == stage).collect();
        let first_build = ins
            .iter()
            .position(|i| i.op == "RUN" && i.args.contains("cargo build"));
        let full_copy = ins.iter().position(|i| {
            i.op == "COPY" && i.args.split_whitespace().collect::<Vec<_>>() == [".", "."]
        });
        matches!((first_build, full_copy), (Some(b), Some(c)) if b < c)
    });
    assert!(
        cached,
        "no stage runs `cargo build` on the manifests before `COPY . .`"
    );
    for i in all
        .iter()
        .filter(|i| i.op == "RUN" && i.args.contains("cargo build"))
    {
        assert!(
            i.args.contains("--locked"),
            "builds must use Cargo.lock: {}",
            i.args
        );
        for p in ["hookrelay", "hookrelay-worker"] {
            assert!(
                i.args.contains(&format!("-p {p} ")) || i.args.ends_with(&format!("-p {p}")),
                "`{}` does not build {p}",
                i.args
            );
        }
    }
}

#[test]
fn runtime_is_small_non_root_with_both_binaries_and_the_default_config() {
    let all = instructions();
    let rt = last_stage(&all);
    let from = &rt[0].args;
    assert!(
        from.starts_with("debian:bookworm-slim"),
        "runtime image is `{from}`"
    );
    let user = rt
        .iter()
        .rev()
        .find(|i| i.op == "USER")
        .map(|i| i.args.clone())
        .expect("a USER in the runtime stage");
    let uid = user.split(':').next().unwrap_or_default();
    assert!(
        !["root", "0", ""].contains(&uid),
        "runtime runs as `{user}`"
    );

    let copies: Vec<&str> = rt
        .iter()
        .filter(|i| i.op == "COPY")
        .map(|i| i.args.as_str())
        .collect();
    for bin in [RELAY_BIN, WORKER_BIN] {
        assert!(
            copies.iter().any(|c| c.starts_with("--from=")
                && c.split_whitespace()
                    .any(|w| w.ends_with(&format!("/release/{bin}")))),
            "the runtime does not copy the release `{bin}` binary: {copies:?}"
        );
    }
    let workdir = rt
        .iter()
        .rev()
        .find(|i| i.op == "WORKDIR")
        .map(|i| i.args.clone())
        .expect("a WORKDIR");
    // The binaries read `config/default.toml` relative to the working directory.
    let want = format!("{}/config/default.toml", workdir.trim_end_matches('/'));
    assert!(
        copies
            .iter()
            .any(|c| c.split_whitespace().collect::<Vec<_>>()
                == ["config/default.toml", want.as_str()]),
        "config/default.toml is not copied to {want}: {copies:?}"
    );
    assert!(
        rt.iter().any(|i| i.op == "CMD"
            && i.args.contains("\"hookrelay\"")
            && i.args.contains("\"serve\"")),
        "CMD is not `hookrelay serve`"
    );
}

#[test]
fn runtime_health_is_hookrelay_healthcheck_and_the_spool_is_a_volume() {
    let all = instructions();
    let rt = last_stage(&all);
    let hc = rt
        .iter()
        .find(|i| i.op == "HEALTHCHECK")
        .expect("a HEALTHCHECK");
    assert!(
        hc.args.contains(r#"CMD ["hookrelay", "healthcheck"#),
        "HEALTHCHECK is `{}`",
        hc.args
    );
    let text = read("Dockerfile");
    for tool in ["curl", "wget"] {
        assert!(!text.contains(tool), "the image should not need {tool}");
    }
    let spool = env_value(&rt, "HOOKRELAY__SPOOL__DIR").expect("ENV HOOKRELAY__SPOOL__DIR");
    let volume = rt.iter().find(|i| i.op == "VOLUME").expect("a VOLUME");
    assert!(
        volume.args.contains(&format!("\"{spool}\"")),
        "VOLUME {} does not hold the spool {spool}",
        volume.args
    );
    let bind = env_value(&rt, "HOOKRELAY__SERVER__BIND").expect("ENV HOOKRELAY__SERVER__BIND");
    let port = bind.rsplit(':').next().unwrap_or_default();
    assert!(
        rt.iter()
            .any(|i| i.op == "EXPOSE" && i.args.split_whitespace().any(|p| p == port)),
        "EXPOSE {port}"
    );
}

#[test]
fn dockerignore_keeps_build_output_history_data_and_secrets_out() {
    let patterns: Vec<String> = read(".dockerignore")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.trim_end_matches('/').to_owned())
        .collect();
    for wanted in ["target", ".git", "data", ".env"] {
        assert!(
            patterns.iter().any(|p| p == wanted),
            ".dockerignore lacks `{wanted}`: {patterns:?}"
        );
    }
    // The build needs these; ignoring them would break it.
    for needed in [
        "Cargo.toml",
        "Cargo.lock",
        "config",
        "src",
        "crates",
        "workers",
    ] {
        assert!(
            !patterns.iter().any(|p| p == needed),
            ".dockerignore drops `{needed}`"
        );
    }
}
