//! Requests a browser would never send: missing or foreign CSRF tokens, unknown method
//! overrides, oversized and undecodable bodies. Each gets a clear status and changes nothing.

use reqwest::{StatusCode, header};

use crate::helpers::{Backend, TURBO_ACCEPT, csrf_from, spawn, spawn_with};

crate::backend_tests! {
    async fn posts_without_a_valid_csrf_token_are_refused_and_change_nothing(app: TestApp) {
        let room = app.signed_in_room().await;
        let path = format!("/rooms/{room}/tasks");
        let res = app.post_raw(&path, &[("task[title]", "forged")], Some(TURBO_ACCEPT)).await;
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert!(res.text().await.unwrap().contains("The form has expired"));

        let res = app
            .post_raw(&path, &[("authenticity_token", "garbage"), ("task[title]", "forged")], None)
            .await;
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);

        // A token from someone else's session is worthless here.
        let other = app.new_visitor();
        let foreign = other.csrf().await;
        let res = app
            .post_raw(&path, &[("authenticity_token", &foreign), ("task[title]", "forged")], None)
            .await;
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert!(app.task_ids(room).await.is_empty());
    }

    async fn the_csrf_token_may_come_in_the_header_as_turbo_sends_it(app: TestApp) {
        let room = app.signed_in_room().await;
        let token = csrf_from(&app.get_html(&format!("/rooms/{room}")).await);
        let res = app
            .client
            .post(app.url(&format!("/rooms/{room}/tasks")))
            .header("X-CSRF-Token", token)
            .header(header::ACCEPT, TURBO_ACCEPT)
            .form(&[("task[title]", "From Turbo")])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(app.task_ids(room).await.len(), 1);
    }

    async fn signing_in_renews_the_csrf_token(app: TestApp) {
        let before = app.csrf().await;
        app.sign_in("Ada").await;
        let res = app
            .post_raw("/rooms", &[("authenticity_token", &before), ("room[name]", "x")], None)
            .await;
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    }

    async fn an_unknown_method_override_is_a_bad_request(app: TestApp) {
        let room = app.signed_in_room().await;
        let res = app.post(&format!("/rooms/{room}"), &[("_method", "explode")]).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    }

    async fn a_route_without_that_method_is_not_found_or_not_allowed(app: TestApp) {
        let room = app.signed_in_room().await;
        let res = app.post(&format!("/rooms/{room}"), &[("room[name]", "x")]).await;
        assert!(matches!(res.status(), StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED), "{}", res.status());
        let res = app.post("/nowhere", &[]).await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
        let body = res.text().await.unwrap();
        assert!(body.contains("404 Not Found"), "{body}");
    }

    async fn oversized_bodies_are_refused_with_413(app: TestApp) {
        let room = app.signed_in_room().await;
        let huge = "x".repeat(300 * 1024);
        let res = app.post(&format!("/rooms/{room}/tasks"), &[("task[title]", "big"), ("task[notes]", &huge)]).await;
        assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert!(res.text().await.unwrap().contains("The request is too large."));
        assert!(app.task_ids(room).await.is_empty());
    }

    async fn form_fields_that_are_not_utf8_are_a_bad_request(app: TestApp) {
        let room = app.signed_in_room().await;
        let token = app.csrf().await;
        let body = format!("authenticity_token={token}&task%5Btitle%5D=%FF%FEbad");
        let res = app
            .client
            .post(app.url(&format!("/rooms/{room}/tasks")))
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
        assert!(res.text().await.unwrap().contains("form fields must be UTF-8"));
        assert!(app.task_ids(room).await.is_empty());
    }

    async fn a_body_that_is_not_a_form_is_a_bad_request(app: TestApp) {
        let room = app.signed_in_room().await;
        let token = app.csrf().await;
        let res = app
            .client
            .post(app.url(&format!("/rooms/{room}/tasks")))
            .header("X-CSRF-Token", token)
            .header(header::CONTENT_TYPE, "application/json")
            .body(r#"{"task":{"title":"json"}}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
        assert!(app.task_ids(room).await.is_empty());
    }

    async fn pages_carry_security_headers(app: TestApp) {
        let res = app.get("/session/new").await;
        assert_eq!(res.headers()["x-content-type-options"], "nosniff");
        assert_eq!(res.headers()["x-frame-options"], "DENY");
        assert_eq!(res.headers()["referrer-policy"], "strict-origin-when-cross-origin");
        let port = app.address.rsplit(':').next().unwrap();
        let csp = res.headers()["content-security-policy"].to_str().unwrap();
        for directive in [
            "default-src 'self'",
            "script-src 'self';",
            &format!("style-src 'self' {};", tasksync::headers::TURBO_PROGRESS_BAR_STYLE),
            &format!("connect-src 'self' ws://127.0.0.1:{port};"),
            "object-src 'none'",
            "base-uri 'self'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(directive), "{directive} missing from {csp}");
        }
        assert!(!csp.contains("unsafe"), "{csp}");
        // Error pages carry them too: a handler's (404), and those the middleware answers
        // before any handler runs (a form without its CSRF token, 422; a body too large, 413).
        let no_token = app
            .client
            .post(app.url("/rooms"))
            .form(&[("room[name]", "Launch")])
            .send()
            .await
            .unwrap();
        let too_large = app
            .client
            .post(app.url("/rooms"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(vec![b'x'; 2 * 1024 * 1024])
            .send()
            .await
            .unwrap();
        for (res, status) in [
            (app.get("/nowhere").await, StatusCode::NOT_FOUND),
            (no_token, StatusCode::UNPROCESSABLE_ENTITY),
            (too_large, StatusCode::PAYLOAD_TOO_LARGE),
        ] {
            assert_eq!(res.status(), status);
            for header in ["content-security-policy", "x-content-type-options", "x-frame-options"] {
                assert!(res.headers().contains_key(header), "{status}: {header}");
            }
            assert!(res.headers().contains_key("x-request-id"), "{status}");
        }
    }
}

#[tokio::test]
async fn the_body_limit_is_configurable() {
    let app = spawn_with(Backend::Sqlite, |s| s.max_body_bytes = 2048).await;
    let room = app.signed_in_room().await;
    let notes = "n".repeat(4096);
    let res = app
        .post(
            &format!("/rooms/{room}/tasks"),
            &[("task[title]", "t"), ("task[notes]", &notes)],
        )
        .await;
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn every_page_has_a_csrf_meta_tag_and_every_form_a_token() {
    let app = spawn(Backend::Sqlite).await;
    let room = app.signed_in_room().await;
    app.create_task(room, "a task").await;
    for path in [
        "/session/new".to_owned(),
        "/rooms".to_owned(),
        format!("/rooms/{room}"),
    ] {
        let html = app.get_html(&path).await;
        assert!(
            html.contains("<meta name=\"csrf-token\" content=\""),
            "{path}"
        );
        let forms = html.matches("<form").count();
        let tokens = html.matches("name=\"authenticity_token\"").count();
        assert!(forms > 0);
        assert_eq!(forms, tokens, "{path}: every form carries a token");
    }
}
