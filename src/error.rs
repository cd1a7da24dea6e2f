//! The HTTP boundary's errors: each maps to one status and a small JSON body that never
//! says anything internal or secret (the log has the details).

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("unknown source")]
    UnknownSource,
    #[error("client address not allowed for this source")]
    Forbidden,
    #[error("rate limit of this source exceeded")]
    RateLimited { retry_after_secs: u64 },
    #[error("the body did not arrive in time")]
    RequestTimeout,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("payload too large")]
    PayloadTooLarge,
    #[error("unsupported media type")]
    UnsupportedMediaType,
    #[error("unauthorized")]
    Unauthorized { basic: bool },
    #[error("invalid payload: {0}")]
    InvalidPayload(String),
    #[error("not durable: broker unreachable and spool unavailable")]
    Unavailable,
    /// The in-flight body budget has no room for this body (a flood, or a burst).
    #[error("no room in the in-flight body budget")]
    Busy { retry_after_secs: u64 },
    #[error("not found")]
    NotFound,
    /// A bug of ours, never the sender's fault: 500, details only in the log.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::UnknownSource | ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::Forbidden => StatusCode::FORBIDDEN,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            ApiError::InvalidPayload(_) => StatusCode::BAD_REQUEST,
            ApiError::Unavailable | ApiError::Busy { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let body = match self {
            ApiError::UnknownSource => json!({"error": "unknown_source"}),
            ApiError::NotFound => json!({"error": "not_found"}),
            ApiError::Forbidden => json!({"error": "forbidden"}),
            ApiError::RateLimited { .. } => json!({"error": "rate_limited"}),
            ApiError::RequestTimeout => json!({"error": "request_timeout"}),
            ApiError::MethodNotAllowed => json!({"error": "method_not_allowed"}),
            ApiError::PayloadTooLarge => json!({"error": "payload_too_large"}),
            ApiError::UnsupportedMediaType => json!({"error": "unsupported_media_type"}),
            ApiError::Unauthorized { .. } => json!({"error": "unauthorized"}),
            ApiError::InvalidPayload(detail) => {
                json!({"error": "invalid_payload", "detail": detail})
            }
            ApiError::Unavailable | ApiError::Busy { .. } => json!({"error": "unavailable"}),
            ApiError::Internal(_) => json!({"error": "internal"}),
        };
        let mut resp = HttpResponse::build(self.status_code()).json(body);
        let headers = resp.headers_mut();
        match self {
            ApiError::Unauthorized { basic: true } => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"hookrelay\""),
                );
            }
            ApiError::MethodNotAllowed => {
                headers.insert(header::ALLOW, HeaderValue::from_static("POST"));
            }
            ApiError::Unavailable => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            ApiError::Busy { retry_after_secs } => {
                // The connection is closed too: the body is left unread (see
                // `routes::webhook::close_unread`).
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            ApiError::RateLimited { retry_after_secs } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            ApiError::RequestTimeout => {
                // The rest of the body may still be on its way: do not read it.
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        resp
    }
}
