//! `POST /webhooks/{source}`: checks in the documented order (source 404, method 405),
//! then two optional abuse limits (see [`crate::limits`]): the source's IP allowlist
//! (403) and its rate limit (429). Then everything the headers decide, before a byte of
//! the body is read: declared size (413), content type (415), and the credentials of
//! vendors that authenticate by header (401; for Chatwoot, whose HMAC covers the body,
//! missing, malformed or stale signature headers). Only then is the body reserved in the
//! in-flight budget ([`crate::budget`]; 503 when there is no room) and read, within
//! `server.body_read_timeout_ms` (408), its size enforced while reading (413). A request
//! refused before its body was read is answered with `Connection: close`.
//!
//! Everything after the body is read is the pure [`process`], which the fuzz target and
//! property tests drive directly (through the `hookrelay-test-support` crate).

use crate::broker::Outgoing;
use crate::budget::{Reservation, Standing};
use crate::dedup::Claim;
use crate::envelope;
use crate::error::ApiError;
use crate::limits::Limits;
use crate::relay::Relay;
use crate::settings::Source;
use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::http::{header, Method};
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use futures_util::StreamExt;
use hookrelay_vendors::{AuthError, Headers};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
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
    mut payload: web::Payload,
    relay: web::Data<Relay>,
    limits: web::Data<Limits>,
) -> HttpResponse {
    let Some(source) = relay.sources.get(name) else {
        // Unknown names are not used as a metric label: that would let anyone grow it.
        relay.metrics.request("unknown", 404);
        return close_unread(ApiError::UnknownSource.error_response(), payload);
    };
    // The documented order first (404, then 405), then the optional abuse limits before
    // anything is read, so a wrong method never spends a rate-limit token.
    let outcome = if req.method() != Method::POST {
        Err(Refused::unread(ApiError::MethodNotAllowed))
    } else {
        match limits.admit(source, req.peer_addr(), req.headers()) {
            Ok(()) => handle(&req, source, &mut payload, &relay, &limits).await,
            Err(e) => Err(Refused::unread(e)),
        }
    };
    let resp = match outcome {
        Ok(resp) => resp,
        Err(Refused { error, body_unread }) => {
            match &error {
                ApiError::Unavailable => {
                    tracing::error!(source = %source.name, "answered 503: event could not be made durable")
                }
                // Logged where they are decided, with their reasons.
                ApiError::Unauthorized { .. }
                | ApiError::Forbidden
                | ApiError::RateLimited { .. } => {}
                other => tracing::debug!(source = %source.name, error = %other, "request refused"),
            }
            let resp = error.error_response();
            if body_unread {
                close_unread(resp, payload)
            } else {
                resp
            }
        }
    };
    relay.metrics.request(&source.name, resp.status().as_u16());
    resp
}

/// A refusal, and whether the body (or the rest of it) was left unread.
struct Refused {
    error: ApiError,
    body_unread: bool,
}

impl Refused {
    fn unread(error: ApiError) -> Self {
        Self {
            error,
            body_unread: true,
        }
    }
}

impl From<ApiError> for Refused {
    fn from(error: ApiError) -> Self {
        Self {
            error,
            body_unread: false,
        }
    }
}

/// A refusal answered before the body (or all of it) was read: the connection is closed
/// after the answer rather than the rest of the body read only to be thrown away. The
/// HTTP layer closes by itself when a body with a declared length is left unread, but
/// drains a chunked one (for as long as the client keeps it open) once the handler has
/// dropped it; so the unread payload is kept alive inside the answer's body until the
/// answer is written, which makes the HTTP layer close (`Connection: close`) in both
/// cases. A request without a body keeps its connection.
pub fn close_unread(resp: HttpResponse, payload: web::Payload) -> HttpResponse {
    resp.map_body(|_, body| match body.try_into_bytes() {
        Ok(bytes) => BoxBody::new(HoldsPayload {
            bytes: Some(bytes),
            _payload: payload,
        }),
        Err(body) => body,
    })
}

/// A response body that keeps the request's unread payload until it has been written.
struct HoldsPayload {
    bytes: Option<web::Bytes>,
    _payload: web::Payload,
}

impl MessageBody for HoldsPayload {
    type Error = std::convert::Infallible;

    fn size(&self) -> BodySize {
        BodySize::Sized(self.bytes.as_ref().map_or(0, |b| b.len() as u64))
    }

    fn poll_next(
        self: Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<web::Bytes, Self::Error>>> {
        std::task::Poll::Ready(self.get_mut().bytes.take().map(Ok))
    }
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

/// The declared `Content-Length`, if any.
fn declared_length(req: &HttpRequest) -> Result<Option<u64>, ApiError> {
    req.headers()
        .get(header::CONTENT_LENGTH)
        .map(|len| {
            len.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| ApiError::InvalidPayload("invalid Content-Length".into()))
        })
        .transpose()
}

/// Smallest step a body without a declared length grows its reservation by.
const GROWTH_STEP: usize = 64 * 1024;

/// Read the body into a buffer the reservation covers: the declared length was reserved
/// up front; a body without one (chunked) reserves before its buffer grows, doubling, so
/// the reservation is always at least the buffer's capacity.
async fn read_body(
    payload: &mut web::Payload,
    declared: Option<u64>,
    limit: usize,
    reservation: &mut Reservation,
    busy: impl Fn() -> ApiError,
) -> Result<Vec<u8>, ApiError> {
    // `declared <= limit` was checked before anything was reserved.
    let mut body = Vec::with_capacity(declared.map_or(0, |d| d as usize));
    while let Some(chunk) = payload.next().await {
        let chunk =
            chunk.map_err(|_| ApiError::InvalidPayload("the body could not be read".into()))?;
        let needed = body.len() + chunk.len();
        if needed > limit {
            return Err(ApiError::PayloadTooLarge);
        }
        if needed > body.capacity() {
            let cap = needed.max(body.capacity() * 2).max(GROWTH_STEP).min(limit);
            reservation.grow_to(cap as u64).await.map_err(|_| busy())?;
            body.reserve_exact(cap - body.len());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The credential checks the headers alone decide, made before any body is read: for
/// a vendor whose credentials do not cover the body this is the whole check; for one
/// whose MAC does, everything but the MAC itself (missing, repeated, malformed or stale
/// signature headers). Says what the budget should treat the sender as.
fn check_headers(
    source: &Source,
    headers: &Headers<'_>,
    client: Option<std::net::IpAddr>,
    now: OffsetDateTime,
) -> Result<Standing, ApiError> {
    if source.credentials.is_none() {
        // allow_unauthenticated: anyone may send, so nobody has proved anything.
        return Ok(Standing::Unproven(client));
    }
    let signs_body = source.vendor.signs_body();
    match source.vendor.verify(&source.credentials, headers, &[], now) {
        // The MAC is checked on the real body once it is read.
        Ok(_) | Err(AuthError::Mismatch) if signs_body => Ok(Standing::Unproven(client)),
        Ok(_) => Ok(Standing::Authenticated),
        Err(e) => {
            tracing::info!(source = %source.name, reason = %e, "unauthorized webhook (headers)");
            Err(ApiError::Unauthorized {
                basic: source.vendor.uses_basic_auth(),
            })
        }
    }
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

/// The checks on the whole request, in the documented order: content type (415),
/// credentials on the raw bytes (401), payload (400); then the envelope. (The first two
/// were already made on the headers before the body was read; they are repeated here so
/// this function is the whole rule for the fuzz targets.) Pure apart from
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
    payload: &mut web::Payload,
    relay: &Relay,
    limits: &Limits,
) -> Result<HttpResponse, Refused> {
    // The body's deadline runs from here (the head is in), waiting for room included:
    // a slow body holds its share of the budget at most this long.
    let deadline = tokio::time::Instant::now() + limits.body_read_timeout;
    let limit = relay.max_body_bytes;
    let declared = declared_length(req).map_err(Refused::unread)?;
    if declared.is_some_and(|d| d > limit as u64) {
        return Err(Refused::unread(ApiError::PayloadTooLarge));
    }
    let mut headers = Headers::with_capacity(req.headers().len());
    for (name, value) in req.headers() {
        headers.push(name.as_str(), value.as_bytes());
    }
    if let Some(ct) = headers.get(header::CONTENT_TYPE.as_str()) {
        if !is_json(ct) {
            return Err(Refused::unread(ApiError::UnsupportedMediaType));
        }
    }
    let client = limits.client_ip(req.peer_addr().map(|p| p.ip()), req.headers());
    let standing = check_headers(source, &headers, client, OffsetDateTime::now_utc())
        .map_err(Refused::unread)?;

    // Retry-After: by then every body being read now has arrived or been cut off.
    let retry_after_secs = limits.body_read_timeout.as_secs_f64().ceil().max(1.0) as u64;
    let busy = || {
        tracing::debug!(source = %source.name, "in-flight body budget exhausted");
        ApiError::Busy { retry_after_secs }
    };
    let mut reservation = limits
        .budget
        .reserve(declared.unwrap_or(0), standing, deadline)
        .await
        .map_err(|_| Refused::unread(busy()))?;
    // Held until the answer: the event built from the body is as large, and lives until
    // it is durable.
    let body = tokio::time::timeout_at(
        deadline,
        read_body(payload, declared, limit, &mut reservation, busy),
    )
    .await
    .map_err(|_| Refused::unread(ApiError::RequestTimeout))?
    .map_err(Refused::unread)?;
    let Accepted { msg, reply } = process(source, &headers, &body, OffsetDateTime::now_utc())?;
    drop(body);

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
            drop(reservation);
            Ok(answer(true))
        }
        Claim::New(guard) => {
            let durable = relay.make_durable(&msg).await;
            drop(reservation);
            match durable {
                Ok(_) => {
                    relay.dedup.succeeded(guard);
                    Ok(answer(false))
                }
                Err(e) => {
                    relay.dedup.failed(guard);
                    tracing::warn!(error = %e, id = %msg.id, "event not durable");
                    Err(ApiError::Unavailable.into())
                }
            }
        }
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
