//! Seeds for the fuzz corpus (`fuzz/seed.sh`) and the regression corpus
//! (`fuzz/regressions/webhook/`), for every vendor of the registry, in the fuzz target's
//! format ([`crate::frame`] around [`crate::decode`]'s).

use crate::{source, FUZZ_NOW};
use hookrelay_vendors::Vendor;
use serde_json::Map;
use std::path::Path;
use time::OffsetDateTime;

/// A minimal complete payload of `vendor` (its first sample event), and its name.
pub fn minimal(vendor: Vendor) -> (String, String) {
    let samples = vendor.contract().samples();
    let mut obj = Map::new();
    (samples.complete)(&mut obj, samples.events[0], "seed-1", Map::new());
    let body = serde_json::to_string(&obj).expect("a JSON object serializes");
    (format!("{}-minimal", vendor.name()), body)
}

/// The vendor's own headers for `body`, signed with its demo credentials at the fuzz
/// clock, written out as header lines (so the fuzzer mutates real credentials).
fn literal_headers(vendor: Vendor, body: &[u8]) -> String {
    let now = OffsetDateTime::from_unix_timestamp(FUZZ_NOW).expect("a valid time");
    let creds = source(vendor, true).credentials;
    vendor
        .sign(&creds, body, now)
        .into_iter()
        .map(|(n, v)| format!("{n}: {v}\n"))
        .collect()
}

/// [`crate::decode`]'s format: the control byte, header lines, an empty line, the body.
fn input(control: u8, headers: &str, body: &[u8]) -> Vec<u8> {
    [&[control][..], headers.as_bytes(), b"\n", body].concat()
}

/// Per fixture of every vendor: `signed-*` (control 0x01: the vendor's own valid headers),
/// `open-*` (0x04: an allow_unauthenticated source) and `raw-*` (0x00: the genuine
/// headers written out literally).
pub fn corpus(fixtures: &Path) -> std::io::Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    for &vendor in Vendor::ALL {
        let dir = fixtures.join(vendor.contract().fixtures_dir());
        let mut files: Vec<_> = std::fs::read_dir(&dir)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        for f in files {
            let stem = f
                .file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            let body = std::fs::read(&f)?;
            let v = vendor.name();
            let framed =
                |control, headers: &str| crate::frame(vendor, &input(control, headers, &body));
            out.push((format!("{v}-signed-{stem}"), framed(0x01, "")));
            out.push((format!("{v}-open-{stem}"), framed(0x04, "")));
            out.push((
                format!("{v}-raw-{stem}"),
                framed(0x00, &literal_headers(vendor, &body)),
            ));
        }
    }
    Ok(out)
}

/// The minimized regression seeds of every vendor: a minimal genuine request (signed and
/// literal), the same with a forged credential, signed just outside the replay window,
/// from an unauthenticated source, and a body that is not an object.
pub fn regressions() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for &vendor in Vendor::ALL {
        let (name, body) = minimal(vendor);
        let body = body.as_bytes();
        let header = vendor.contract().samples().credential_header;
        let framed = |control, headers: &str, body: &[u8]| {
            crate::frame(vendor, &input(control, headers, body))
        };
        out.push((format!("{name}-signed"), framed(0x01, "", body)));
        out.push((
            format!("{name}-raw"),
            framed(0x00, &literal_headers(vendor, body), body),
        ));
        // Replace the credential header (bit 1) with a wrong value.
        out.push((
            format!("{name}-forged"),
            framed(0x03, &format!("{header}: Basic Zm9yZ2Vk\n"), body),
        ));
        // Signed 301 s before the check (skew index 4).
        out.push((format!("{name}-skewed"), framed(0x01 | (4 << 3), "", body)));
        out.push((format!("{name}-open"), framed(0x04, "", body)));
        out.push((
            format!("{name}-not-an-object"),
            framed(0x01, "", b"[1,2,3]"),
        ));
    }
    out
}
