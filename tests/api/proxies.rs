//! `TRUSTED_PROXIES`: forwarded headers decide the app's own origin for the WebSocket Origin
//! check only when they come from a listed proxy. Here the test client is the "proxy", at
//! 127.0.0.1, pretending a foreign origin is the app's.

use reqwest::StatusCode;
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest as _, http::HeaderValue};

use crate::helpers::{Backend, TestApp, spawn_with};

/// The status of a cable handshake that claims, through forwarded headers, that the app lives at
/// `https://tasks.example.com`, from a page of that origin.
async fn forwarded_handshake(app: &TestApp) -> StatusCode {
    let url = format!("{}/cable", app.address.replacen("http", "ws", 1));
    let mut request = url.into_client_request().unwrap();
    let headers = request.headers_mut();
    headers.insert(
        "Origin",
        HeaderValue::from_static("https://tasks.example.com"),
    );
    headers.insert(
        "X-Forwarded-Host",
        HeaderValue::from_static("tasks.example.com"),
    );
    headers.insert("X-Forwarded-Proto", HeaderValue::from_static("https"));
    match tokio_tungstenite::connect_async(request).await {
        Ok((_, response)) => StatusCode::from_u16(response.status().as_u16()).unwrap(),
        Err(tungstenite::Error::Http(response)) => {
            StatusCode::from_u16(response.status().as_u16()).unwrap()
        }
        Err(err) => panic!("handshake failed: {err}"),
    }
}

#[tokio::test]
async fn forwarded_headers_from_an_unlisted_peer_are_ignored() {
    let app = spawn_with(Backend::Sqlite, |s| s.trusted_proxies = "10.0.0.0/8".into()).await;
    assert_eq!(forwarded_handshake(&app).await, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn forwarded_headers_from_a_trusted_proxy_decide_the_origin() {
    let app = spawn_with(Backend::Sqlite, |s| {
        s.trusted_proxies = "127.0.0.1, ::1".into()
    })
    .await;
    assert_eq!(
        forwarded_handshake(&app).await,
        StatusCode::SWITCHING_PROTOCOLS
    );
}

#[tokio::test]
async fn a_bad_trusted_proxies_entry_stops_start_up() {
    let (_database, url) = crate::helpers::TestDatabase::create(Backend::Sqlite).await;
    let mut settings = crate::helpers::test_settings(url);
    settings.trusted_proxies = "nginx.internal".into();
    let err = tasksync::startup::Application::build(&settings)
        .await
        .err()
        .expect("refused");
    assert!(format!("{err:#}").contains("TRUSTED_PROXIES"), "{err:#}");
}
