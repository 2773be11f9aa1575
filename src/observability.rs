//! The outermost HTTP middleware: gives every request an id, runs it inside a `tracing` span
//! that carries the id (so every log line of the request, and of the socket it may upgrade to,
//! names it), echoes the id in the `X-Request-Id` response header, writes one access log line,
//! and records the request in the metrics by route pattern.
//!
//! Only the method, the path (never the query string) and the status are logged: cookies, CSRF
//! tokens and form bodies never reach a log line from here.

use std::{fmt, time::Instant};

use actix_web::{
    Error, HttpMessage as _,
    body::MessageBody,
    dev::{ServiceRequest, ServiceResponse},
    error::InternalError,
    http::{
        Method,
        header::{HeaderMap, HeaderName, HeaderValue},
    },
    middleware::Next,
    web,
};
use tracing::Instrument as _;

use crate::startup::AppState;

pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// The id a proxy may pass in may be at most this long.
const MAX_ID_LEN: usize = 64;

/// A request's id: the `X-Request-Id` a proxy sent, when it is a plausible id, or a new one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(String);

impl RequestId {
    /// An incoming id is kept only if it is short and made of letters, digits, `-`, `_` and
    /// `.`, so that what a client sends cannot forge log lines or bloat them.
    pub fn from_headers(headers: &HeaderMap) -> Option<Self> {
        let value = headers.get(REQUEST_ID_HEADER)?.to_str().ok()?;
        let plausible = !value.is_empty()
            && value.len() <= MAX_ID_LEN
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        plausible.then(|| Self(value.to_owned()))
    }

    pub fn generate() -> Self {
        Self(format!("{:032x}", rand::random::<u128>()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The route label of a request: its matched pattern, or `unmatched`, so that paths nobody
/// routed (scanners, typos) cannot add time series.
fn route_label(pattern: Option<String>) -> String {
    pattern.unwrap_or_else(|| "unmatched".to_owned())
}

/// The method label: the standard methods by name, anything else as `OTHER`, for the same
/// reason.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let started = Instant::now();
    let id = RequestId::from_headers(req.headers()).unwrap_or_else(RequestId::generate);
    let method = method_label(req.method());
    // The app's route table answers this before routing has run; the request itself cannot be
    // kept for afterwards (routing needs it unshared).
    let route = route_label(req.match_pattern());
    let span = tracing::info_span!(
        "http",
        request_id = %id,
        method,
        path = %req.path(),
    );
    req.extensions_mut().insert(id.clone());
    let metrics = req.app_data::<web::Data<AppState>>().map(|state| {
        state.activity.record();
        state.metrics.clone()
    });
    let header = HeaderValue::from_str(id.as_str()).ok();

    let result = next.call(req).instrument(span.clone()).await;
    let status = match &result {
        Ok(res) => res.status(),
        Err(err) => err.as_response_error().status_code(),
    }
    .as_u16();
    let elapsed = started.elapsed();
    if let Some(metrics) = metrics {
        metrics.http_request(method, &route, status, elapsed.as_secs_f64());
    }
    let elapsed_ms = elapsed.as_secs_f64() * 1000.0;
    if status >= 500 {
        tracing::warn!(parent: &span, status, route, elapsed_ms, "request failed");
    } else {
        tracing::info!(parent: &span, status, route, elapsed_ms, "request");
    }
    match result {
        Ok(mut res) => {
            if let Some(value) = header {
                res.headers_mut().insert(REQUEST_ID_HEADER, value);
            }
            Ok(res)
        }
        // An error from an inner middleware (a bad CSRF token, a body too large) becomes its
        // response later; carrying that response in the error is how it gets the header too.
        Err(err) => {
            let mut res = err.error_response();
            if let Some(value) = header {
                res.headers_mut().insert(REQUEST_ID_HEADER, value);
            }
            Err(InternalError::from_response(err, res).into())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        io::Write,
        sync::{Arc, Mutex},
    };

    use actix_web::{
        App, HttpResponse, http::header, middleware::from_fn, test as actix_test, web,
    };

    use super::*;

    #[test]
    fn only_short_plain_ids_are_taken_from_the_client() {
        let headers = |value: &str| {
            let mut h = HeaderMap::new();
            h.insert(REQUEST_ID_HEADER, HeaderValue::from_str(value).unwrap());
            h
        };
        let kept = RequestId::from_headers(&headers("req-1_a.B")).unwrap();
        assert_eq!(kept.as_str(), "req-1_a.B");
        for bad in ["", "has space", "a\"b", "x=1", &"a".repeat(65)] {
            assert_eq!(RequestId::from_headers(&headers(bad)), None, "{bad:?}");
        }
        assert_eq!(RequestId::from_headers(&HeaderMap::new()), None);
        let fresh = RequestId::generate();
        assert_eq!(fresh.as_str().len(), 32);
        assert_ne!(fresh, RequestId::generate());
    }

    /// Collects what the subscriber writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[actix_web::test]
    async fn every_log_line_of_a_request_names_its_id_and_no_cookie_is_logged() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_writer(move || writer.clone())
            .with_max_level(tracing::Level::INFO)
            .finish();
        let _default = tracing::subscriber::set_default(subscriber);

        let app = actix_test::init_service(App::new().wrap(from_fn(middleware)).route(
            "/rooms/{room_id}",
            web::get().to(|| async {
                tracing::info!("inside the handler");
                HttpResponse::Ok().finish()
            }),
        ))
        .await;
        let req = actix_test::TestRequest::get()
            .uri("/rooms/42?authenticity_token=secret-token")
            .insert_header((REQUEST_ID_HEADER, "abc-123"))
            .insert_header((header::COOKIE, "_tasksync_session=secret-cookie"))
            .to_request();
        let res = actix_test::call_service(&app, req).await;
        assert_eq!(res.headers().get(REQUEST_ID_HEADER).unwrap(), "abc-123");

        let res = actix_test::call_service(
            &app,
            actix_test::TestRequest::get().uri("/nowhere").to_request(),
        )
        .await;
        let generated = res
            .headers()
            .get(REQUEST_ID_HEADER)
            .unwrap()
            .to_str()
            .unwrap();
        assert_eq!(generated.len(), 32);

        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3, "{text}");
        for line in &lines[..2] {
            assert_eq!(line["span"]["request_id"], "abc-123", "{line}");
        }
        assert_eq!(lines[0]["fields"]["message"], "inside the handler");
        assert_eq!(lines[1]["fields"]["route"], "/rooms/{room_id}");
        assert_eq!(lines[1]["fields"]["status"], 200);
        assert_eq!(lines[2]["span"]["request_id"], generated);
        assert_eq!(lines[2]["fields"]["route"], "unmatched");
        assert!(!text.contains("secret"), "{text}");
    }
}
