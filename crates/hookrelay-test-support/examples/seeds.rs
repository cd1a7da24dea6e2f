//! Writes seed files for the fuzz target: `seeds corpus <fixtures dir> <out dir>` (every
//! fixture of every vendor, see `fuzz/seed.sh`) or `seeds regressions <out dir>` (the
//! minimized per-vendor regression corpus, `fuzz/regressions/webhook/`). Only adds or
//! overwrites files of the same name.

use std::path::PathBuf;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (seeds, out) = match args.as_slice() {
        [kind, fixtures, out] if kind == "corpus" => (
            hookrelay_test_support::seeds::corpus(&PathBuf::from(fixtures))
                .unwrap_or_else(|e| panic!("{fixtures}: {e}")),
            PathBuf::from(out),
        ),
        [kind, out] if kind == "regressions" => (
            hookrelay_test_support::seeds::regressions(),
            PathBuf::from(out),
        ),
        _ => {
            eprintln!("usage: seeds corpus <fixtures dir> <out dir> | seeds regressions <out dir>");
            std::process::exit(2);
        }
    };
    std::fs::create_dir_all(&out).unwrap_or_else(|e| panic!("{}: {e}", out.display()));
    for (name, data) in &seeds {
        let path = out.join(name);
        std::fs::write(&path, data).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
    println!("{}: {} seeds", out.display(), seeds.len());
}
