//! The methods each URL takes, as RFC 9110 asks: HEAD wherever GET is, answered as GET but
//! without the body (link checkers, monitors and caches ask with it); any other method a 405
//! with the `Allow` list.

use reqwest::{Method, StatusCode, header};

use crate::helpers::{Backend, TestApp, asset_url, spawn};

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
    let asset = asset_url(&page, "/assets/application-");

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
    for path in ["/cable", &format!("/rooms/{room}/presence")] {
        let (status, headers, _) = head(&app, path).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "HEAD {path}");
        assert_eq!(headers[header::ALLOW], "GET", "HEAD {path}");
    }
}

/// A `method` request to `path` with a valid CSRF token, as Turbo would send it.
async fn request(app: &TestApp, method: Method, path: &str, token: &str) -> reqwest::Response {
    app.client
        .request(method, app.url(path))
        .header("x-csrf-token", token)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn another_method_gets_405_with_the_methods_the_url_takes() {
    let app = spawn(Backend::Sqlite).await;
    let room = app.signed_in_room().await;
    let task = app.create_task(room, "Write the agenda").await;
    let page = app.get_html(&format!("/rooms/{room}")).await;
    let asset = asset_url(&page, "/assets/application-");

    for (path, allow) in [
        // Outside the session: health, assets and the two sockets.
        ("/up".to_owned(), "GET, HEAD"),
        (asset, "GET, HEAD"),
        ("/cable".to_owned(), "GET"),
        (format!("/rooms/{room}/presence"), "GET"),
        ("/".to_owned(), "GET, HEAD"),
        ("/session/new".to_owned(), "GET, HEAD"),
        ("/session".to_owned(), "POST, DELETE"),
        ("/rooms".to_owned(), "GET, HEAD, POST"),
        (format!("/rooms/{room}"), "GET, HEAD, PATCH"),
        (format!("/rooms/{room}/tasks"), "POST"),
        (format!("/rooms/{room}/tasks/completed"), "DELETE"),
        (format!("/rooms/{room}/tasks/{task}"), "PATCH, DELETE"),
    ] {
        // Signed in afresh for each URL: DELETE /session, below, signs out.
        app.sign_in("Ada").await;
        let token = app.csrf().await;
        // PUT is no one's, GET and OPTIONS (which pass the CSRF check) only some.
        for method in [Method::PUT, Method::GET, Method::OPTIONS] {
            if allow.split(", ").any(|m| m == method.as_str()) {
                continue;
            }
            let res = request(&app, method.clone(), &path, &token).await;
            assert_eq!(
                res.status(),
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path}"
            );
            assert_eq!(res.headers()[header::ALLOW], allow, "{method} {path}");
        }
        // And every method the list names is taken (whatever the answer, it is not 405).
        for method in allow.split(", ") {
            let method = Method::from_bytes(method.as_bytes()).unwrap();
            let res = request(&app, method.clone(), &path, &token).await;
            assert_ne!(
                res.status(),
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path}"
            );
        }
    }
}

/// A form method to a path that no route has is a 404, with or without a CSRF token: nothing
/// would run there for the token to protect, and a form posted to a mistyped action should say
/// that, not that its token was wrong. A path that does route still needs the token.
#[tokio::test]
async fn a_form_method_to_no_route_is_not_found_whatever_its_token() {
    let app = spawn(Backend::Sqlite).await;
    let room = app.signed_in_room().await;
    let token = app.csrf().await;

    for method in [Method::POST, Method::PATCH, Method::DELETE, Method::PUT] {
        for path in ["/nope", "/rooms/1/tasks/2/nope", "/session/new/x"] {
            let with_token = request(&app, method.clone(), path, &token).await;
            assert_eq!(
                with_token.status(),
                StatusCode::NOT_FOUND,
                "{method} {path}"
            );
            let without = app
                .client
                .request(method.clone(), app.url(path))
                .send()
                .await
                .unwrap();
            assert_eq!(without.status(), StatusCode::NOT_FOUND, "{method} {path}");
        }
    }
    let unguarded = app
        .client
        .post(app.url(&format!("/rooms/{room}/tasks")))
        .form(&[("task[title]", "No token")])
        .send()
        .await
        .unwrap();
    assert_eq!(unguarded.status(), StatusCode::UNPROCESSABLE_ENTITY);
}
