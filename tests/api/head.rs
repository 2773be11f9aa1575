//! HEAD is answered wherever GET is, as GET would be but without the body (RFC 9110, 9.3.2):
//! link checkers, monitors and caches ask with it.

use reqwest::{StatusCode, header};

use crate::helpers::{Backend, TestApp, spawn};

/// The status, headers and body length of a HEAD request to `path`.
async fn head(app: &TestApp, path: &str) -> (StatusCode, header::HeaderMap, usize) {
    let res = app.client.head(app.url(path)).send().await.unwrap();
    let (status, headers) = (res.status(), res.headers().clone());
    (status, headers, res.bytes().await.unwrap().len())
}

#[tokio::test]
async fn head_answers_as_get_without_the_body() {
    let app = spawn(Backend::Sqlite).await;
    let room = app.signed_in_room().await;
    app.create_task(room, "Write the agenda").await;

    let page_path = format!("/rooms/{room}");
    let page = app.get_html(&page_path).await;
    let asset = {
        let start = page.find("/assets/application-").expect("the stylesheet");
        page[start..].split('"').next().unwrap().to_owned()
    };

    for path in ["/up", "/session/new", "/rooms", &page_path, &asset] {
        let (status, headers, body) = head(&app, path).await;
        assert_eq!(status, StatusCode::OK, "HEAD {path}");
        assert_eq!(body, 0, "HEAD {path} has no body");
        let length: usize = headers[header::CONTENT_LENGTH]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(length > 0, "HEAD {path} says how long GET's body is");
    }
    // The page's length is the length of the page a GET gets (its CSRF token is as long).
    let (_, headers, _) = head(&app, &page_path).await;
    assert_eq!(headers[header::CONTENT_LENGTH], page.len().to_string());
    assert!(
        headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );

    // A redirect is a redirect either way.
    let (status, headers, _) = head(&app, "/").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers[header::LOCATION], "/rooms");

    // A socket's route is a handshake, which is a GET.
    let (status, _, _) = head(&app, "/cable").await;
    assert!(!status.is_success(), "HEAD /cable: {status}");
}
