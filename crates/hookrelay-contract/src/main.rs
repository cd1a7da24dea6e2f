//! `hookrelay-contract [--check]`: rewrites docs/event.schema.json and docs/asyncapi.yaml
//! from the code, or with `--check` only reports (exit 1) which ones are out of date.

use std::process::ExitCode;

fn main() -> ExitCode {
    let check = match std::env::args().nth(1).as_deref() {
        None => false,
        Some("--check") => true,
        Some(other) => {
            eprintln!("usage: hookrelay-contract [--check]   (unknown argument {other:?})");
            return ExitCode::from(2);
        }
    };
    let root = hookrelay_contract::repo_root();
    let mut stale = 0;
    for (path, text) in hookrelay_contract::generated() {
        let file = root.join(path);
        let current = std::fs::read_to_string(&file).unwrap_or_default();
        if current == text {
            println!("{path}: up to date");
        } else if check {
            println!("{path}: out of date (run `cargo run -p hookrelay-contract`)");
            stale += 1;
        } else if let Err(e) = std::fs::write(&file, text) {
            eprintln!("{path}: cannot write: {e}");
            return ExitCode::FAILURE;
        } else {
            println!("{path}: written");
        }
    }
    if stale > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
