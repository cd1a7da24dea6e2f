//! The client subcommands: `send` (post a file as the vendor would) and `healthcheck`.

use crate::settings::Validated;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// The URL a local client reaches the relay at: a wildcard bind becomes loopback.
pub fn local_base_url(bind: SocketAddr) -> String {
    let ip = if bind.ip().is_unspecified() {
        if bind.is_ipv4() {
            "127.0.0.1".to_owned()
        } else {
            "[::1]".to_owned()
        }
    } else if bind.is_ipv6() {
        format!("[{}]", bind.ip())
    } else {
        bind.ip().to_string()
    };
    format!("http://{ip}:{}", bind.port())
}

/// POST `file` to `/webhooks/<source>` authenticated exactly as that source's vendor
/// would. Returns the status and body.
pub async fn send(
    settings: &Validated,
    source: &str,
    file: &Path,
    url: Option<&str>,
) -> Result<(u16, String), String> {
    let src = settings
        .sources
        .get(source)
        .ok_or_else(|| format!("no source named {source:?} in the configuration"))?;
    let body = std::fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let url = match url {
        Some(u) => u.to_owned(),
        None => format!("{}/webhooks/{source}", local_base_url(settings.bind)),
    };
    let headers = src
        .vendor
        .sign(&src.credentials, &body, time::OffsetDateTime::now_utc());
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| e.to_string())?;
    let mut req = client.post(&url).body(body);
    for (k, v) in headers {
        req = req.header(k, v);
    }
    let resp = req.send().await.map_err(|e| format!("POST {url}: {e}"))?;
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    Ok((status, text))
}

/// GET `/readyz`; Ok when it answers 200.
pub async fn healthcheck(settings: &Validated, url: Option<&str>) -> Result<String, String> {
    let url = match url {
        Some(u) => u.to_owned(),
        None => format!("{}/readyz", local_base_url(settings.bind)),
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| e.to_string())?;
    let resp = client
        .get(&url)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    if status.is_success() {
        Ok(text)
    } else {
        Err(format!("{url} answered {status}: {text}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_bind_becomes_loopback() {
        assert_eq!(
            local_base_url("0.0.0.0:8080".parse().unwrap()),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            local_base_url("127.0.0.1:9".parse().unwrap()),
            "http://127.0.0.1:9"
        );
        assert_eq!(
            local_base_url("[::]:80".parse().unwrap()),
            "http://[::1]:80"
        );
    }
}
