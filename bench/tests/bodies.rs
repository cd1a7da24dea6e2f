//! Generated webhooks are authentic (they pass the vendor's own check with the relay's
//! default credentials), normalize cleanly, and carry distinct vendor ids that give
//! distinct dedup keys, so the relay sees every request as a new event.

use hookrelay_bench::bodies::Generator;
use hookrelay_bench::config::RelayConfig;
use hookrelay_vendors::Credentials;
use hookrelay_vendors::{chatwoot, cometchat, Headers, Vendor};
use std::collections::HashSet;
use time::OffsetDateTime;

#[test]
fn generated_bodies_verify_normalize_and_are_distinct() {
    let cfg: RelayConfig = hookrelay_common::settings::load_with_env(None, vec![]).unwrap();
    let now = OffsetDateTime::now_utc();
    // Every vendor of the registry has a load template; a source of the default
    // configuration where there is one, else the vendor's demo credentials.
    for &vendor in Vendor::ALL {
        let source = cfg.source(vendor.name(), Some(vendor)).unwrap_or_else(|_| {
            hookrelay_bench::config::Source {
                name: vendor.name().to_owned(),
                vendor,
                credentials: vendor.demo_credentials(),
            }
        });
        // Check Chatwoot's signature with the relay's replay window on.
        let check_creds = source.credentials.clone();
        let generator = Generator::new(vendor, source.credentials.clone(), 0xBEEF);
        let mut vendor_ids = HashSet::new();
        let mut dedup_keys = HashSet::new();
        let mut deliveries = HashSet::new();
        for n in 0..200 {
            let hook = generator.make(n, now);
            let headers = Headers::from_pairs(&hook.headers);
            let verified = vendor
                .verify(&check_creds, &headers, &hook.body, now)
                .unwrap_or_else(|e| panic!("{}: request {n} not authentic: {e}", vendor.name()));
            let normalized = vendor
                .normalize(&verified, now)
                .unwrap_or_else(|e| panic!("{}: request {n} refused: {e}", vendor.name()));
            assert_eq!(normalized.event, "message.created", "{}", vendor.name());
            assert!(
                !normalized.dedup_key.starts_with("sha256:"),
                "{}: the dedup key must come from the vendor id, not the body hash",
                vendor.name()
            );
            if let Some(d) = headers.get("x-chatwoot-delivery") {
                deliveries.insert(d.to_vec());
            }
            vendor_ids.insert(hook.vendor_id);
            dedup_keys.insert(normalized.dedup_key);
        }
        assert_eq!(vendor_ids.len(), 200, "{}", vendor.name());
        assert_eq!(dedup_keys.len(), 200, "{}", vendor.name());
        if vendor == chatwoot::VENDOR {
            assert_eq!(deliveries.len(), 200);
        }
    }
}

#[test]
fn two_runs_do_not_share_ids() {
    let now = OffsetDateTime::now_utc();
    let a = Generator::new(cometchat::VENDOR, Credentials::NONE, 1);
    let b = Generator::new(cometchat::VENDOR, Credentials::NONE, 2);
    assert_ne!(a.make(0, now).vendor_id, b.make(0, now).vendor_id);
}
