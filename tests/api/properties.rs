//! Property tests of the webhook path, every CI run: generated JSON objects, raw bytes,
//! mutated fixtures and hostile header sets go through the endpoint's pure path
//! (`routes::webhook::process`) and must keep every invariant the fuzz targets check
//! (`hookrelay_test_support`): no panic, accepted ⇒ genuine credentials and `data.raw`
//! equal to the body, rejected ⇒ no envelope. Every vendor of the registry takes part
//! (payload samples and credential oracles come from each vendor's own file). Also
//! replays the fuzz seeds and the regression corpus in `fuzz/regressions/webhook/`.
//! No broker needed.

use crate::helpers::{fixture, fixtures_dir, manifest};
use hookrelay_test_support::{self as invariants, FuzzInput, Verdict, FUZZ_NOW};
use hookrelay_vendors::Vendor;
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::{Map, Value};
use time::OffsetDateTime;

/// Modest: CI has two cores. `PROPTEST_CASES` raises it for a longer local run.
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(cases),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn vendor() -> impl Strategy<Value = Vendor> {
    prop::sample::select(Vendor::ALL)
}

/// Text with the awkward parts of Unicode: control characters, U+2028, astral planes.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9_ .-]{0,12}",
        any::<String>(),
        Just("\u{0}\u{2028}\u{2029}😀\u{10FFFF}\"\\/".to_owned()),
        Just("__proto__".to_owned()),
    ]
}

fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        text().prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            btree_map(text(), inner, 0..6).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A JSON object that carries what `vendor` always sends, most of the time.
fn vendor_object(vendor: Vendor) -> impl Strategy<Value = Map<String, Value>> {
    let samples = vendor.contract().samples();
    let events: Vec<&'static str> = samples.events.to_vec();
    (
        btree_map(text(), json(), 0..8),
        prop::sample::select(events),
        "[a-zA-Z0-9-]{0,24}",
        btree_map(text(), json(), 0..6),
        any::<bool>(),
    )
        .prop_map(move |(extra, event, id, data, complete)| {
            let mut obj: Map<String, Value> = extra.into_iter().collect();
            if complete {
                (samples.complete)(&mut obj, event, &id, data.into_iter().collect());
            }
            obj
        })
}

/// The same object as the bytes a sender might really put on the wire.
fn serialize(obj: &Map<String, Value>, pretty: bool, pad: &str) -> Vec<u8> {
    let text = if pretty {
        serde_json::to_string_pretty(obj).unwrap()
    } else {
        serde_json::to_string(obj).unwrap()
    };
    format!("{pad}{text}{pad}").into_bytes()
}

fn body(vendor: Vendor) -> impl Strategy<Value = Vec<u8>> {
    let fixtures = fixture_bodies(vendor);
    prop_oneof![
        6 => (vendor_object(vendor), any::<bool>(), prop::sample::select(vec!["", " ", "\n", "\t\r\n"]))
            .prop_map(|(o, pretty, pad)| serialize(&o, pretty, pad)),
        2 => vec(any::<u8>(), 0..256),
        2 => (prop::sample::select(fixtures), vec((any::<prop::sample::Index>(), any::<u8>()), 1..4))
            .prop_map(|(mut f, edits)| {
                for (at, byte) in edits {
                    if !f.is_empty() {
                        let i = at.index(f.len());
                        f[i] = byte;
                    }
                }
                f
            }),
    ]
}

fn header_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"application/json".to_vec()),
        Just(b"text/plain".to_vec()),
        Just(b"Basic YWJjZGVm".to_vec()),
        Just(b"Basic cmVsYXl1c2VyOnMzY3JldFBhNTU".to_vec()),
        Just(b"1791969697".to_vec()),
        Just(b"sha256=".to_vec()),
        "(Basic |basic |sha256=)?[A-Za-z0-9+/=]{0,48}".prop_map(String::into_bytes),
        vec(any::<u8>(), 0..64),
    ]
}

fn headers() -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
    let name = prop_oneof![
        Just("Content-Type".to_owned()),
        Just("Authentication".to_owned()),
        Just("authorization".to_owned()),
        Just("X-Chatwoot-Timestamp".to_owned()),
        Just("x-chatwoot-signature".to_owned()),
        Just("X-Chatwoot-Delivery".to_owned()),
        "[A-Za-z-]{1,12}",
    ];
    vec((name, header_value()), 0..4)
}

fn request(vendor: Vendor) -> impl Strategy<Value = FuzzInput> {
    (
        prop::bool::weighted(0.8),
        any::<bool>(),
        prop::bool::weighted(0.15),
        prop::sample::select(vec![
            0_i64,
            0,
            0,
            1,
            -1,
            300,
            301,
            -300,
            -301,
            1_000_000_000,
        ]),
        prop_oneof![3 => Just(vec![]), 2 => headers()],
        body(vendor),
    )
        .prop_map(
            |(sign, replace, unauthenticated, skew, headers, body)| FuzzInput {
                sign,
                replace,
                unauthenticated,
                skew,
                headers,
                body,
            },
        )
}

fn now() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(FUZZ_NOW).unwrap()
}

fn run(vendor: Vendor, input: &FuzzInput) -> Result<Verdict, TestCaseError> {
    let source = invariants::source(vendor, !input.unauthenticated);
    let headers = invariants::assemble(&source, input, now());
    invariants::check(&source, &headers, &input.body, now()).map_err(TestCaseError::fail)
}

fn fixture_bodies(vendor: Vendor) -> Vec<Vec<u8>> {
    let dir = fixtures_dir().join(vendor.contract().fixtures_dir());
    let mut out: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    out.sort();
    out
}

proptest! {
    #![proptest_config(config(256))]

    /// Anything at all: the invariants hold (and nothing panics).
    #[test]
    fn every_request_keeps_the_invariants((vendor, input) in vendor().prop_flat_map(|v| (Just(v), request(v)))) {
        run(vendor, &input)?;
    }
}

proptest! {
    #![proptest_config(config(128))]

    /// Not vacuous: a genuine delivery of any object with the vendor's required fields
    /// is accepted, and its `data.raw` is the body (checked inside `run`).
    #[test]
    fn genuine_deliveries_are_accepted(
        (vendor, obj) in vendor().prop_flat_map(|v| (Just(v), vendor_object(v)))
            .prop_filter("has the required fields", |(v, o)| {
                v.contract().samples().required.iter().all(|f| o.contains_key(*f))
            }),
        pretty in any::<bool>(),
    ) {
        let input = FuzzInput { sign: true, body: serialize(&obj, pretty, "\n"), ..FuzzInput::default() };
        let verdict = run(vendor, &input)?;
        prop_assert!(matches!(verdict, Verdict::Accepted(_)), "{verdict:?}");
    }

    /// The same body with a credential that is not the source's is never accepted.
    #[test]
    fn forged_credentials_are_refused(
        (vendor, obj) in vendor().prop_flat_map(|v| (Just(v), vendor_object(v))),
        forged in header_value(),
    ) {
        let name = vendor.contract().samples().credential_header;
        let input = FuzzInput {
            sign: true,
            replace: true,
            headers: vec![(name.to_owned(), forged)],
            body: serialize(&obj, false, ""),
            ..FuzzInput::default()
        };
        let source = invariants::source(vendor, true);
        let genuine = vendor.sign(&source.credentials, &input.body, now());
        // CometChat takes any case of "Basic " and optional padding: those are genuine.
        let loose = |v: &[u8]| {
            let mut v = v.to_vec();
            let n = v.len().min(6);
            v[..n].make_ascii_lowercase();
            while v.last() == Some(&b'=') {
                v.pop();
            }
            v
        };
        let forged_is_genuine = genuine.iter().any(|(n, v)| {
            n.eq_ignore_ascii_case(name) && loose(v.as_bytes()) == loose(&input.headers[0].1)
        });
        prop_assume!(!forged_is_genuine);
        let verdict = run(vendor, &input)?;
        prop_assert_eq!(verdict, Verdict::Rejected(401));
    }
}

/// The fuzz seeds (every fixture, framed as `fuzz/seed.sh` frames them) replay cleanly;
/// each signed fixture is accepted with its manifest's routing key.
#[test]
fn fuzz_seeds_replay_cleanly() {
    let m = manifest();
    let mut checked = 0;
    for entry in m["fixtures"].as_array().unwrap() {
        let vendor = Vendor::from_name(entry["vendor"].as_str().unwrap()).unwrap();
        let body = fixture(entry["file"].as_str().unwrap());
        for control in [0x01_u8, 0x04] {
            let data = [&[control, b'\n'][..], &body].concat();
            let verdict = invariants::run_fuzz_input(vendor, &data)
                .unwrap_or_else(|e| panic!("{}: {e}", entry["file"]));
            if entry["expected_status"] == 200 {
                let key = entry["expected_routing_key"].as_str().unwrap();
                assert_eq!(
                    verdict,
                    Verdict::Accepted(key.to_owned()),
                    "{}",
                    entry["file"]
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 60, "only {checked} seeds");
    // The corpus seed.sh writes: every fixture of every vendor, three framings each.
    let corpus = hookrelay_test_support::seeds::corpus(&fixtures_dir()).unwrap();
    assert!(corpus.len() >= 3 * m["fixtures"].as_array().unwrap().len());
    for (name, data) in &corpus {
        match invariants::run_fuzz_bytes(data) {
            Ok(Some(_)) => {}
            Ok(None) => panic!("{name}: names no vendor"),
            Err(e) => panic!("{name}: {e}"),
        }
    }
}

/// The regression corpus (`fuzz/regressions/webhook/`: every crash the fuzz target ever
/// found, and minimized seeds of each vendor) replays through the invariants. It fails
/// when the corpus is empty, when a vendor of the registry has no input there, or when a
/// vendor's inputs are not both accepted and refused somewhere (a corpus that exercises
/// only one side is not a regression suite).
#[test]
fn the_regression_corpus_replays_and_covers_every_vendor() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions/webhook");
    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|f| f.unwrap().path())
        .filter(|p| p.file_name().is_some_and(|n| n != "README.md"))
        .collect();
    assert!(
        !files.is_empty(),
        "{}: the regression corpus is empty",
        dir.display()
    );
    let mut seen: std::collections::BTreeMap<&str, (usize, usize)> = Default::default();
    for path in &files {
        let data = std::fs::read(path).unwrap();
        match invariants::run_fuzz_bytes(&data) {
            Ok(Some((vendor, verdict))) => {
                let e = seen.entry(vendor.name()).or_default();
                match verdict {
                    Verdict::Accepted(_) => e.0 += 1,
                    Verdict::Rejected(_) => e.1 += 1,
                }
            }
            // A crash input need not name a vendor; it must still not break anything.
            Ok(None) => {}
            Err(e) => panic!("{}: {e}", path.display()),
        }
    }
    for vendor in Vendor::ALL {
        let (accepted, refused) = seen.get(vendor.name()).copied().unwrap_or_default();
        assert!(
            accepted > 0 && refused > 0,
            "fuzz/regressions/webhook has {accepted} accepted and {refused} refused inputs \
             for vendor {}: run `fuzz/seed.sh --regressions`",
            vendor.name()
        );
    }
}
