//! `POST /webhooks/{source}`: checks in the documented order (README, HTTP API) (source 404, method 405, size
//! 413 while reading, content type 415, credentials 401, payload 400), then makes the
//! event durable and answers 200, or 503 when it cannot be. Two optional abuse limits
//! sit between the 405 and the 413, before anything is read (see [`crate::limits`]):
//! the source's IP allowlist (403) and its rate limit (429). A body that does not
//! arrive within `server.body_read_timeout_ms` is answered 408.
//!
//! Everything after the body is read is the pure [`process`], which the fuzz target and
//! property tests drive directly (through the `hookrelay-test-support` crate).

use crate::broker::Outgoing;
use crate::dedup::Claim;
use crate::envelope;
use crate::error::ApiError;
use crate::limits::Limits;
use crate::relay::Relay;
use crate::settings::Source;
use actix_web::http::{header, Method};
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use futures_util::StreamExt;
use hookrelay_vendors::Headers;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;

/// `/webhooks/{source}` for a name that is not a configured source (configured ones
/// have static routes, see [`webhook_for`]): 404.
pub async fn webhook(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    relay: web::Data<Relay>,
    limits: web::Data<Limits>,
) -> HttpResponse {
    serve(&path.into_inner(), req, payload, relay, limits).await
}

/// The handler of one configured source's static route `/webhooks/<name>`: a string
/// comparison in the router instead of a pattern match per request.
pub fn webhook_for(
    name: Arc<str>,
) -> impl Fn(HttpRequest, web::Payload, web::Data<Relay>, web::Data<Limits>) -> Answering + Clone + 'static
{
    move |req, payload, relay, limits| {
        let name = name.clone();
        Box::pin(async move { serve(&name, req, payload, relay, limits).await })
    }
}

/// The future a source's static route answers with.
pub type Answering = Pin<Box<dyn Future<Output = HttpResponse>>>;

async fn serve(
    name: &str,
    req: HttpRequest,
    payload: web::Payload,
    relay: web::Data<Relay>,
    limits: web::Data<Limits>,
) -> HttpResponse {
    let Some(source) = relay.sources.get(name) else {
        // Unknown names are not used as a metric label: that would let anyone grow it.
        relay.metrics.request("unknown", 404);
        return ApiError::UnknownSource.error_response();
    };
    // The documented order first (404, then 405), then the optional abuse limits before
    // anything is read, so a wrong method never spends a rate-limit token.
    let outcome = if req.method() != Method::POST {
        Err(ApiError::MethodNotAllowed)
    } else {
        match limits.admit(source, req.peer_addr(), req.headers()) {
            Ok(()) => handle(&req, source, payload, &relay, limits.body_read_timeout).await,
            Err(e) => Err(e),
        }
    };
    let resp = match outcome {
        Ok(resp) => resp,
        Err(e) => {
            match &e {
                ApiError::Unavailable => {
                    tracing::error!(source = %source.name, "answered 503: event could not be made durable")
                }
                // Logged where they are decided, with their reasons.
                ApiError::Unauthorized { .. }
                | ApiError::Forbidden
                | ApiError::RateLimited { .. } => {}
                other => tracing::debug!(source = %source.name, error = %other, "request refused"),
            }
            e.error_response()
        }
    };
    relay.metrics.request(&source.name, resp.status().as_u16());
    resp
}

fn is_json(content_type: &[u8]) -> bool {
    let Ok(ct) = std::str::from_utf8(content_type) else {
        return false;
    };
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
    deadline: Duration,
) -> Result<web::BytesMut, ApiError> {
    if let Some(len) = req.headers().get(header::CONTENT_LENGTH) {
        let declared = len
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .ok_or_else(|| ApiError::InvalidPayload("invalid Content-Length".into()))?;
        if declared > limit as u64 {
            return Err(ApiError::PayloadTooLarge);
        }
    }
    let read = async {
        let mut body = web::BytesMut::new();
        while let Some(chunk) = payload.next().await {
            let chunk =
                chunk.map_err(|_| ApiError::InvalidPayload("the body could not be read".into()))?;
            if body.len() + chunk.len() > limit {
                return Err(ApiError::PayloadTooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    };
    // A client trickling its body would otherwise hold the request open indefinitely
    // (the head has its own limit, server.client_request_timeout_ms).
    tokio::time::timeout(deadline, read)
        .await
        .map_err(|_| ApiError::RequestTimeout)?
}

/// The usual answer to an accepted request.
#[derive(serde::Serialize)]
struct Answer<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    ty: &'a str,
    duplicate: bool,
}

/// What an accepted request becomes: the message to make durable, and the body a
/// synchronous vendor expects instead of the usual answer (CometChat `before_message`).
#[derive(Debug)]
pub struct Accepted {
    pub msg: Outgoing,
    pub reply: Option<serde_json::Value>,
}

/// The checks that need the whole body, in the documented order: content type (415),
/// credentials on the raw bytes (401), payload (400); then the envelope. Pure apart from
/// logging: no I/O, the clock passed in.
pub fn process(
    source: &Source,
    headers: &Headers<'_>,
    body: &[u8],
    now: OffsetDateTime,
) -> Result<Accepted, ApiError> {
    if let Some(ct) = headers.get(header::CONTENT_TYPE.as_str()) {
        if !is_json(ct) {
            return Err(ApiError::UnsupportedMediaType);
        }
    }
    let verified = source
        .vendor
        .verify(&source.credentials, headers, body, now)
        .map_err(|e| {
            tracing::info!(source = %source.name, reason = %e, "unauthorized webhook");
            ApiError::Unauthorized {
                basic: source.vendor.uses_basic_auth(),
            }
        })?;
    let normalized = source
        .vendor
        .normalize(&verified, now)
        .map_err(|e| ApiError::InvalidPayload(e.to_string()))?;
    let reply = normalized.reply.clone();
    let msg = envelope::build(source, normalized, body, now).map_err(|e| {
        tracing::error!(source = %source.name, error = %e, "envelope failed");
        ApiError::Internal(e.to_string())
    })?;
    Ok(Accepted { msg, reply })
}

async fn handle(
    req: &HttpRequest,
    source: &Source,
    payload: web::Payload,
    relay: &Relay,
    body_deadline: Duration,
) -> Result<HttpResponse, ApiError> {
    if req.method() != Method::POST {
        return Err(ApiError::MethodNotAllowed);
    }
    let body = read_body(req, payload, relay.max_body_bytes, body_deadline).await?;
    let mut headers = Headers::with_capacity(req.headers().len());
    for (name, value) in req.headers() {
        headers.push(name.as_str(), value.as_bytes());
    }
    let Accepted { msg, reply } = process(source, &headers, &body, OffsetDateTime::now_utc())?;

    let answer = |duplicate: bool| match &reply {
        Some(obj) => HttpResponse::Ok().json(obj),
        None => HttpResponse::Ok().json(Answer {
            id: &msg.id,
            ty: &msg.routing_key,
            duplicate,
        }),
    };
    match relay.dedup.claim(&msg.id).await {
        Claim::Duplicate => {
            relay.metrics.duplicate(&source.name);
            Ok(answer(true))
        }
        Claim::New(guard) => match relay.make_durable(&msg).await {
            Ok(_) => {
                relay.dedup.succeeded(guard);
                Ok(answer(false))
            }
            Err(e) => {
                relay.dedup.failed(guard);
                tracing::warn!(error = %e, id = %msg.id, "event not durable");
                Err(ApiError::Unavailable)
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::is_json;

    #[test]
    fn json_content_types() {
        assert!(is_json(b"application/json"));
        assert!(is_json(b"application/json; charset=UTF-8"));
        assert!(is_json(b"Application/JSON;charset=utf-8"));
        assert!(is_json(b"application/cloudevents+json"));
        assert!(!is_json(b"text/plain"));
        assert!(!is_json(b"application/x-www-form-urlencoded"));
        assert!(!is_json(b"\xff"));
    }
}
