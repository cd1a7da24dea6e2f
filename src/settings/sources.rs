//! `[sources.<name>]`: one configured sender each, its vendor and credentials, checked
//! against the vendor registry.

use super::server::parse_cidrs;
use hookrelay_common::settings::{string_or_list, SettingsError};
use hookrelay_vendors::keys::{self, Given};
use hookrelay_vendors::{Credentials, Vendor};
use ipnet::IpNet;
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::sync::Arc;

/// One configured sender, as written in the configuration: the keys every source takes,
/// and its vendor's own (credentials, options), which the vendor's contract reads.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SourceSettings {
    pub vendor: Option<String>,
    #[serde(default, deserialize_with = "bool_or_text")]
    pub allow_unauthenticated: bool,
    /// CIDRs (or single addresses) allowed to post to this source; empty: any address.
    #[serde(default, deserialize_with = "string_or_list")]
    pub allowed_ips: Vec<String>,
    /// Sustained requests per second this source may send; unset: no limit.
    #[serde(default, deserialize_with = "opt_number")]
    pub rate_limit_per_sec: Option<f64>,
    /// Requests that may arrive at once above the sustained rate (default: one second's worth).
    #[serde(default, deserialize_with = "opt_number")]
    pub rate_limit_burst: Option<f64>,
    /// Every other key: the vendor's (see `hookrelay_vendors::Contract::keys`).
    #[serde(flatten)]
    pub vendor_keys: BTreeMap<String, Given>,
}

/// A boolean as TOML gives it or as text (the environment's form; the flattened source
/// table loses `config`'s own conversion).
pub(super) fn bool_or_text<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    match Given::deserialize(d)? {
        Given::Bool(b) => Ok(b),
        Given::Text(t) => match t.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" | "" => Ok(false),
            other => Err(serde::de::Error::custom(format!(
                "{other:?} is not true or false"
            ))),
        },
        Given::Int(i) => Ok(i != 0),
        _ => Err(serde::de::Error::custom("must be true or false")),
    }
}

/// A number given as a TOML number or as text (the environment's form); empty text
/// counts as unset, like every other empty value.
pub(super) fn opt_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumOrText {
        Num(f64),
        Text(String),
    }
    match Option::<NumOrText>::deserialize(d)? {
        None => Ok(None),
        Some(NumOrText::Num(n)) => Ok(Some(n)),
        Some(NumOrText::Text(t)) if t.trim().is_empty() => Ok(None),
        Some(NumOrText::Text(t)) => t
            .trim()
            .parse::<f64>()
            .map(Some)
            .map_err(|_| serde::de::Error::custom(format!("{t:?} is not a number"))),
    }
}

/// A token bucket's shape: `per_sec` tokens refill each second, up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub per_sec: f64,
    pub burst: u32,
}

/// A source after validation: its vendor, usable credentials and access limits.
#[derive(Debug, Clone)]
pub struct Source {
    pub name: Arc<str>,
    pub vendor: Vendor,
    pub credentials: Credentials,
    /// Networks allowed to post; empty means any address.
    pub allowed_ips: Vec<IpNet>,
    /// `None`: no rate limit (the default: Chatwoot never retries a refused delivery).
    pub rate_limit: Option<RateLimit>,
}

impl Source {
    /// A source with no access limits (what tests, fuzz targets and tools build).
    pub fn new(name: &str, vendor: Vendor, credentials: Credentials) -> Self {
        Self {
            name: Arc::from(name),
            vendor,
            credentials,
            allowed_ips: Vec::new(),
            rate_limit: None,
        }
    }
}

pub(super) fn valid_source_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// The source, and the key of a demo credential it still holds (if any).
pub(super) fn validate_source(
    name: &str,
    s: &SourceSettings,
) -> Result<(Source, Option<&'static str>), SettingsError> {
    if !valid_source_name(name) {
        return Err(SettingsError::key(
            format!("sources.{name}"),
            "a source name may hold only a-z, 0-9, '_' and '-' (it is a URL segment)",
        ));
    }
    let vendor_name = s
        .vendor
        .as_deref()
        .filter(|v| !v.is_empty())
        .ok_or_else(|| SettingsError::key(format!("sources.{name}.vendor"), "is missing"))?;
    let vendor = Vendor::from_name(vendor_name).ok_or_else(|| {
        SettingsError::key(
            format!("sources.{name}.vendor"),
            format!(
                "unknown vendor {vendor_name:?} (known: {})",
                Vendor::ALL
                    .iter()
                    .map(|v| v.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
    })?;
    // The vendor's keys are read (and unknown ones refused) even for an unauthenticated
    // source, so a typo there is never silently ignored.
    let key_error =
        |e: keys::KeyError| SettingsError::key(format!("sources.{name}.{}", e.key), e.reason);
    let values = keys::resolve(vendor.keys(), &s.vendor_keys, keys::COMMON, &|p| {
        std::fs::read_to_string(p)
    })
    .map_err(key_error)?;
    let (credentials, demo) = if s.allow_unauthenticated {
        (Credentials::NONE, None)
    } else {
        (
            vendor.credentials(&values).map_err(key_error)?,
            values.demo_key(vendor.keys()),
        )
    };
    let allowed_ips = parse_cidrs(&format!("sources.{name}.allowed_ips"), &s.allowed_ips)?;
    let rate_limit = rate_limit(name, s)?;
    Ok((
        Source {
            name: Arc::from(name),
            vendor,
            credentials,
            allowed_ips,
            rate_limit,
        },
        demo,
    ))
}

pub(super) fn rate_limit(
    name: &str,
    s: &SourceSettings,
) -> Result<Option<RateLimit>, SettingsError> {
    let Some(per_sec) = s.rate_limit_per_sec else {
        if s.rate_limit_burst.is_some() {
            return Err(SettingsError::key(
                format!("sources.{name}.rate_limit_burst"),
                "is set but rate_limit_per_sec is not",
            ));
        }
        return Ok(None);
    };
    if !(per_sec.is_finite() && per_sec > 0.0) {
        return Err(SettingsError::key(
            format!("sources.{name}.rate_limit_per_sec"),
            "must be a number above 0 (leave it unset for no limit)",
        ));
    }
    let burst = match s.rate_limit_burst {
        None => per_sec.ceil().clamp(1.0, f64::from(u32::MAX)) as u32,
        Some(b) if b.fract() == 0.0 && (1.0..=f64::from(u32::MAX)).contains(&b) => b as u32,
        Some(_) => {
            return Err(SettingsError::key(
                format!("sources.{name}.rate_limit_burst"),
                "must be a whole number of requests, at least 1",
            ))
        }
    };
    Ok(Some(RateLimit { per_sec, burst }))
}
