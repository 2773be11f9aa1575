//! The Origin check for WebSocket upgrades. Browsers send cookies with cross-site WebSocket
//! requests, so without this any page on the web could open a socket as the signed-in person.

use actix_web::{HttpRequest, http::header};

/// Origins allowed to open sockets. Empty means only the app's own origin (same scheme, host
/// and port as the request).
#[derive(Debug, Clone, Default)]
pub struct AllowedOrigins(Vec<String>);

impl AllowedOrigins {
    /// Parses a comma-separated list such as `https://tasks.example.com,https://example.com`.
    pub fn parse(list: &str) -> Self {
        Self(
            list.split(',')
                .map(|o| o.trim().trim_end_matches('/').to_owned())
                .filter(|o| !o.is_empty())
                .collect(),
        )
    }

    pub fn allows(&self, req: &HttpRequest) -> bool {
        let Some(origin) = req
            .headers()
            .get(header::ORIGIN)
            .and_then(|v| v.to_str().ok())
        else {
            return false;
        };
        if self.0.is_empty() {
            let info = req.connection_info();
            origin == format!("{}://{}", info.scheme(), info.host())
        } else {
            self.0.iter().any(|allowed| allowed == origin)
        }
    }
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;

    use super::*;

    #[test]
    fn by_default_only_the_apps_own_origin_may_connect() {
        let allowed = AllowedOrigins::default();
        let req = |origin: Option<&str>| {
            let mut r = TestRequest::default().insert_header((header::HOST, "localhost:3000"));
            if let Some(origin) = origin {
                r = r.insert_header((header::ORIGIN, origin));
            }
            r.to_http_request()
        };
        assert!(allowed.allows(&req(Some("http://localhost:3000"))));
        assert!(!allowed.allows(&req(Some("http://evil.example"))));
        assert!(!allowed.allows(&req(Some("http://localhost:3001"))));
        assert!(!allowed.allows(&req(None)));
    }

    #[test]
    fn a_configured_list_replaces_the_default() {
        let allowed = AllowedOrigins::parse(" https://a.example/ , https://b.example ");
        let req = |origin: &str| {
            TestRequest::default()
                .insert_header((header::HOST, "internal:3000"))
                .insert_header((header::ORIGIN, origin))
                .to_http_request()
        };
        assert!(allowed.allows(&req("https://a.example")));
        assert!(allowed.allows(&req("https://b.example")));
        assert!(!allowed.allows(&req("http://internal:3000")));
    }
}
