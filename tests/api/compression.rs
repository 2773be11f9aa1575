//! What a browser gets back when it says which encodings it takes. Pages and turbo-streams are
//! compressed as they are answered: zstd where the browser takes it, gzip where it does not,
//! never brotli (it cost a room page several times the CPU; README, Performance). Assets are
//! compressed at build time and come in brotli too (`assets.rs`).

use std::io::Read as _;

use reqwest::{StatusCode, header};

use crate::helpers::{Backend, TURBO_ACCEPT, TestApp, spawn};

/// What Chromium sends with every request (Firefox sends the same four).
const CHROMIUM: &str = "gzip, deflate, br, zstd";
/// What Safari sends.
const SAFARI: &str = "gzip, deflate, br";

const TITLES: [&str; 3] = ["Write the agenda", "Book the room", "Send the invitations"];

/// A response's status, its `Content-Encoding` and its body decoded by it.
async fn decoded(res: reqwest::Response) -> (StatusCode, Option<String>, usize, String) {
    let status = res.status();
    let encoding = res
        .headers()
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap().to_owned());
    if let Some(vary) = res.headers().get(header::VARY) {
        let vary = vary.to_str().unwrap().to_lowercase();
        assert!(vary.contains("accept-encoding"), "Vary: {vary}");
    } else {
        assert_eq!(encoding, None, "a compressed response says it varies");
    }
    let bytes = res.bytes().await.unwrap();
    let mut text = String::new();
    match encoding.as_deref() {
        None => text = String::from_utf8(bytes.to_vec()).unwrap(),
        Some("zstd") => {
            zstd::stream::read::Decoder::new(&bytes[..])
                .unwrap()
                .read_to_string(&mut text)
                .expect("a zstd body");
        }
        Some("gzip") => {
            flate2::read::GzDecoder::new(&bytes[..])
                .read_to_string(&mut text)
                .expect("a gzip body");
        }
        Some(other) => panic!("Content-Encoding {other}"),
    }
    (status, encoding, bytes.len(), text)
}

async fn page(app: &TestApp, path: &str, accept_encoding: Option<&str>) -> reqwest::Response {
    let mut req = app.client.get(app.url(path));
    if let Some(accept_encoding) = accept_encoding {
        req = req.header(header::ACCEPT_ENCODING, accept_encoding);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn a_page_comes_in_zstd_or_gzip_as_the_browser_takes_them_and_plain_otherwise() {
    let app = spawn(Backend::Sqlite).await;
    let room = app.signed_in_room().await;
    for title in TITLES {
        app.create_task(room, title).await;
    }
    let path = format!("/rooms/{room}");

    for (accept_encoding, expected) in [
        (Some(CHROMIUM), Some("zstd")),
        (Some(SAFARI), Some("gzip")),
        (Some("br"), None),
        (None, None),
    ] {
        let (status, encoding, sent, page) =
            decoded(page(&app, &path, accept_encoding).await).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(encoding.as_deref(), expected, "{accept_encoding:?}");
        for title in TITLES {
            assert!(page.contains(title), "{title} in the page");
        }
        if expected.is_some() {
            assert!(
                sent * 3 < page.len(),
                "{expected:?}: {sent} bytes for a page of {}",
                page.len()
            );
        }
    }
}

#[tokio::test]
async fn a_turbo_stream_answer_is_compressed_for_the_browser_too() {
    let app = spawn(Backend::Sqlite).await;
    let room = app.signed_in_room().await;
    let token = app.csrf().await;
    let res = app
        .client
        .post(app.url(&format!("/rooms/{room}/tasks")))
        .header(header::ACCEPT, TURBO_ACCEPT)
        .header(header::ACCEPT_ENCODING, CHROMIUM)
        .form(&[
            ("authenticity_token", token.as_str()),
            ("task[title]", "Order lunch"),
        ])
        .send()
        .await
        .unwrap();
    let (status, encoding, _, stream) = decoded(res).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(encoding.as_deref(), Some("zstd"));
    assert!(
        stream.contains("<turbo-stream action=\"append\"") && stream.contains("Order lunch"),
        "{stream}"
    );
}
