//! The headers every page carries: the Content-Security-Policy and the anti-sniffing,
//! anti-framing and referrer headers. A WebSocket's `101 Switching Protocols` carries none of
//! them: it has no body for them to govern, and they were most of its bytes.
//!
//! The policy: pages load scripts and styles only from
//! this origin; the one inline thing the app needs, the `<style>` Turbo's progress bar injects at
//! start-up, is allowed by its hash rather than with `'unsafe-inline'` or a nonce. A per-response
//! nonce does not survive Turbo Drive: a visit swaps the `<meta name="csp-nonce">` for the new
//! page's nonce while the document keeps the policy of its first load, so the next progress
//! bar would be blocked.

use actix_web::{
    body::MessageBody,
    dev::{ServiceRequest, ServiceResponse},
    error::InternalError,
    http::{
        StatusCode,
        header::{
            CONTENT_SECURITY_POLICY, HeaderMap, HeaderName, HeaderValue, REFERRER_POLICY,
            X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
        },
    },
    middleware::Next,
    web,
};

use crate::startup::AppState;

/// SHA-256 of `ProgressBar.defaultCSS` in the Turbo build we serve (Turbo 8). A Turbo upgrade
/// that changes that CSS makes Chromium log the new hash; `bin/turbo-style-hash` prints it, and
/// the browser tests fail on the console error until it is updated here.
pub const TURBO_PROGRESS_BAR_STYLE: &str = "'sha256-WAyOw4V+FqDc35lQPyRADLBWbuNK8ahvYEaQIYF1+Ps='";

/// The policy for a page served from `origin` (`http://host:port`). `'self'` covers this origin's
/// `ws:`/`wss:` in CSP Level 3 browsers, but Safari before 15.4 and older engines match `'self'`
/// against the page's own scheme only, so the socket origin is named explicitly.
pub fn content_security_policy(origin: &str) -> String {
    let socket = socket_origin(origin)
        .map(|o| format!(" {o}"))
        .unwrap_or_default();
    format!(
        "default-src 'self'; script-src 'self'; style-src 'self' {TURBO_PROGRESS_BAR_STYLE}; \
         img-src 'self' data:; font-src 'self'; connect-src 'self'{socket}; object-src 'none'; \
         base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
    )
}

/// `ws://host` for `http://host`, `wss://host` for `https://host`; `None` for anything that is
/// not a plain origin, so a hostile `Host` header cannot smuggle a directive in.
fn socket_origin(origin: &str) -> Option<String> {
    let (scheme, host) = origin.split_once("://")?;
    let scheme = match scheme {
        "http" => "ws",
        "https" => "wss",
        _ => return None,
    };
    let plain = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b));
    plain.then(|| format!("{scheme}://{host}"))
}

/// The headers beside the policy, the same on every page.
const STATIC: [(HeaderName, &str); 3] = [
    (X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (X_FRAME_OPTIONS, "DENY"),
    (REFERRER_POLICY, "strict-origin-when-cross-origin"),
];

/// Middleware: adds the headers to every response but a 101, each unless the response set its
/// own; error pages included, those an inner middleware answers (a bad CSRF token, a body too
/// large) as well as the handlers'.
pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    // Read now: an error's response is made where the request is no longer at hand.
    let origin = req
        .app_data::<web::Data<AppState>>()
        .and_then(|state| state.allowed_origins.own_origin(req.request()));
    let origin = origin.as_deref().unwrap_or("");
    match next.call(req).await {
        Ok(mut res) => {
            if res.status() != StatusCode::SWITCHING_PROTOCOLS {
                secure(res.headers_mut(), origin);
            }
            Ok(res)
        }
        // The error becomes its response later, outside every middleware; carrying the
        // response in the error is how it gets the headers (as `observability` does its id).
        Err(err) => {
            let mut res = err.error_response();
            secure(res.headers_mut(), origin);
            Err(InternalError::from_response(err, res).into())
        }
    }
}

fn secure(headers: &mut HeaderMap, origin: &str) {
    for (name, value) in STATIC {
        if !headers.contains_key(&name) {
            headers.insert(name, HeaderValue::from_static(value));
        }
    }
    if headers.contains_key(CONTENT_SECURITY_POLICY) {
        return;
    }
    if let Ok(value) = HeaderValue::from_str(&content_security_policy(origin)) {
        headers.insert(CONTENT_SECURITY_POLICY, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_socket_origin_follows_the_page_scheme() {
        let csp = content_security_policy("http://127.0.0.1:3000");
        assert!(
            csp.contains("connect-src 'self' ws://127.0.0.1:3000;"),
            "{csp}"
        );
        let csp = content_security_policy("https://tasks.example.com");
        assert!(
            csp.contains("connect-src 'self' wss://tasks.example.com;"),
            "{csp}"
        );
    }

    #[test]
    fn a_hostile_host_adds_nothing_to_the_policy() {
        for origin in ["http://x; script-src *", "http://", "javascript://x", ""] {
            let csp = content_security_policy(origin);
            assert!(csp.contains("connect-src 'self'; "), "{origin}: {csp}");
            assert_eq!(csp.matches("script-src").count(), 1, "{csp}");
        }
    }
}
