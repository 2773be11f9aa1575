//! Rotating `SECRET_KEY_BASE`: with the old secret in `SECRET_KEY_BASE_PREVIOUS`, nobody is
//! signed out, their cookie is signed again with the new secret, and pages rendered before the
//! rotation keep their streams; without it, old cookies are signed-out visitors.

use std::sync::Arc;

use reqwest::{StatusCode, header};
use serde_json::json;
use tasksync::startup::Application;

use crate::{
    cable_client::{Cable, identifier, signed_stream_in},
    helpers::{Backend, TestApp, TestDatabase, test_settings},
};

const OLD: &str = "old-secret-0123456789abcdef0123456789abcdef";
const NEW: &str = "new-secret-fedcba9876543210fedcba9876543210";

/// A server on `url` signing with `secret` and still accepting `previous`.
async fn server(url: &str, secret: &str, previous: Option<&str>) -> String {
    let mut settings = test_settings(url.to_owned());
    settings.secret_key_base = Some(secret.into());
    settings.secret_key_base_previous = previous.map(str::to_owned);
    let app = Application::build(&settings).await.expect("app builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until(std::future::pending()));
    address
}

#[tokio::test]
async fn a_secret_rotation_signs_nobody_out_and_keeps_open_pages_streaming() {
    let (database, url) = TestDatabase::create(Backend::Sqlite).await;
    let database = Arc::new(database);
    let before = TestApp::at(
        server(&url, OLD, None).await,
        Backend::Sqlite,
        database.clone(),
    );
    let room = before.signed_in_room().await;
    let old_cookie = before.cookie_header().expect("signed in");
    let old_page = before.get_html(&format!("/rooms/{room}")).await;

    // The rotated server: new secret, old one still accepted.
    let rotated = server(&url, NEW, Some(OLD)).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let res = client
        .get(format!("{rotated}/rooms/{room}"))
        .header(header::COOKIE, &old_cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK, "still signed in");
    let renewed = res.headers()[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .to_owned();
    let renewed = renewed.split(';').next().unwrap().to_owned();
    assert_ne!(
        renewed, old_cookie,
        "the cookie is signed again with the new secret"
    );

    // The renewed cookie works where only the new secret is known.
    let new_only = server(&url, NEW, None).await;
    let res = client
        .get(format!("{new_only}/rooms/{room}"))
        .header(header::COOKIE, &renewed)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    // ...while a cookie from before, without the old secret, is a signed-out visitor.
    let res = client
        .get(format!("{new_only}/rooms/{room}"))
        .header(header::COOKIE, &old_cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);

    // A page rendered before the rotation still subscribes to its room on the rotated server.
    let visitor = TestApp::at(rotated, Backend::Sqlite, database.clone());
    visitor.sign_in("Grace").await;
    let mut cable = Cable::connect(&visitor).await;
    assert_eq!(cable.next().await["type"], "welcome");
    let id = identifier(&signed_stream_in(&old_page));
    assert_eq!(
        cable.subscribe(&id).await,
        json!({"identifier": id, "type": "confirm_subscription"})
    );
}
