//! Errors that end a request, and the short page each one answers with. Validation errors and
//! edit conflicts are not here: controllers answer those by re-rendering the form (422, 409).

use actix_http::ws::HandshakeError;
use actix_web::{
    HttpResponse, ResponseError,
    http::{StatusCode, header},
};

use crate::{assets, cable::CommitError, store::StoreError};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("The page you were looking for doesn't exist.")]
    NotFound,
    #[error("The request was malformed: {0}.")]
    BadRequest(&'static str),
    #[error("The request was malformed: the {0} field is missing.")]
    MissingParam(&'static str),
    #[error("The request was malformed: {0} is not valid.")]
    InvalidParam(&'static str),
    #[error("The request is too large.")]
    PayloadTooLarge,
    #[error("The form has expired or was not sent from this site. Reload the page and try again.")]
    InvalidAuthenticityToken,
    #[error("Too many changes at once. Please wait a moment and try again.")]
    TooManyRequests(u64),
    #[error("Too many connections from this address.")]
    TooManyConnections,
    #[error("This origin may not open a socket here.")]
    ForbiddenOrigin,
    #[error("Please sign in first.")]
    SignInRequired { return_to: Option<String> },
    #[error("The service is temporarily unavailable. Please try again in a moment.")]
    Unavailable,
    #[error("Something went wrong on our side.")]
    Internal(#[source] anyhow::Error),
}

impl AppError {
    pub fn internal(msg: impl std::fmt::Display) -> Self {
        Self::Internal(anyhow::anyhow!("{msg}"))
    }
}

impl From<StoreError> for AppError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound => Self::NotFound,
            StoreError::Unavailable(_) => Self::Unavailable,
            other => Self::Internal(other.into()),
        }
    }
}

impl From<CommitError> for AppError {
    fn from(err: CommitError) -> Self {
        match err {
            CommitError::Store(err) => err.into(),
            CommitError::Publish(_) => Self::Unavailable,
        }
    }
}

/// A WebSocket handshake the socket endpoints cannot take, and what was wrong with it.
impl From<HandshakeError> for AppError {
    fn from(err: HandshakeError) -> Self {
        Self::BadRequest(match err {
            HandshakeError::GetMethodRequired => "a WebSocket upgrade must be a GET",
            HandshakeError::NoWebsocketUpgrade => "expected a WebSocket upgrade",
            HandshakeError::NoConnectionUpgrade => "a WebSocket upgrade needs Connection: Upgrade",
            HandshakeError::NoVersionHeader => "a WebSocket upgrade needs Sec-WebSocket-Version",
            HandshakeError::UnsupportedVersion => "only WebSocket version 13 is spoken here",
            HandshakeError::BadWebsocketKey => "the Sec-WebSocket-Key is not valid",
        })
    }
}

impl From<tera::Error> for AppError {
    fn from(err: tera::Error) -> Self {
        Self::Internal(err.into())
    }
}

impl ResponseError for AppError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::BadRequest(_) | Self::MissingParam(_) | Self::InvalidParam(_) => {
                StatusCode::BAD_REQUEST
            }
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::InvalidAuthenticityToken => StatusCode::UNPROCESSABLE_ENTITY,
            Self::ForbiddenOrigin => StatusCode::FORBIDDEN,
            Self::TooManyRequests(_) | Self::TooManyConnections => StatusCode::TOO_MANY_REQUESTS,
            Self::SignInRequired { .. } => StatusCode::SEE_OTHER,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            Self::SignInRequired { return_to } => {
                let location = match return_to {
                    Some(path) => format!(
                        "/session/new?return_to={}",
                        percent_encoding::utf8_percent_encode(
                            path,
                            percent_encoding::NON_ALPHANUMERIC
                        )
                    ),
                    None => "/session/new".to_owned(),
                };
                return HttpResponse::SeeOther()
                    .insert_header((header::LOCATION, location))
                    .finish();
            }
            Self::Internal(err) => tracing::error!(error = ?err, "request failed"),
            Self::Unavailable => tracing::warn!("request failed: database unavailable"),
            _ => {}
        }
        let status = self.status_code();
        let mut res = HttpResponse::build(status);
        if status == StatusCode::SERVICE_UNAVAILABLE {
            res.insert_header((header::RETRY_AFTER, "5"));
        }
        match self {
            Self::TooManyRequests(seconds) => {
                res.insert_header((header::RETRY_AFTER, seconds.to_string()));
            }
            Self::TooManyConnections => {
                let seconds = crate::limits::CONNECTION_RETRY_AFTER.as_secs();
                res.insert_header((header::RETRY_AFTER, seconds.to_string()));
            }
            _ => {}
        }
        res.content_type("text/html; charset=utf-8")
            .body(error_page(status, &self.to_string()))
    }
}

/// A page that needs no template engine, so it renders even when everything else is broken.
/// `message` comes from the variants above, never from user input.
fn error_page(status: StatusCode, message: &str) -> String {
    let code = status.as_u16();
    let reason = status.canonical_reason().unwrap_or("Error");
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{reason} · tasksync</title>\
         <link rel=\"stylesheet\" href=\"{css}\"></head>\
         <body><main class=\"error-page\"><h1>{code} {reason}</h1><p>{message}</p>\
         <p><a href=\"/rooms\">Back to the rooms</a></p></main></body></html>\n",
        css = assets::path("application.css"),
    )
}
