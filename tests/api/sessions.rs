use reqwest::{StatusCode, header};

use crate::helpers::{Backend, location, new_client, spawn_with};

crate::backend_tests! {
    async fn signed_out_visitors_are_sent_to_sign_in_and_back(app: TestApp) {
        let res = app.get("/rooms/1").await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER);
        assert_eq!(location(&res), "/session/new?return_to=%2Frooms%2F1");

        let page = app.get_html("/session/new?return_to=%2Frooms%2F1").await;
        assert!(page.contains("name=\"return_to\" value=\"&#x2F;rooms&#x2F;1\""), "{page}");
        let res = app.post("/session", &[("name", "Ada"), ("return_to", "/rooms/1")]).await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER);
        assert_eq!(location(&res), "/rooms/1");
    }

    async fn signing_in_sets_a_signed_http_only_same_site_cookie(app: TestApp) {
        let token = app.csrf().await;
        let res = app
            .post_raw("/session", &[("authenticity_token", &token), ("name", "  Grace  ")], None)
            .await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER);
        assert_eq!(location(&res), "/rooms");
        let cookie = res.headers().get(header::SET_COOKIE).unwrap().to_str().unwrap().to_owned();
        assert!(cookie.starts_with("_tasksync_session="), "{cookie}");
        assert!(cookie.contains("HttpOnly"), "{cookie}");
        assert!(cookie.contains("SameSite=Lax"), "{cookie}");
        assert!(!cookie.contains("Secure"), "{cookie}");
        let page = app.get_html("/rooms").await;
        assert!(page.contains("Signed in as <strong>Grace</strong>"), "{page}");
    }

    async fn names_that_break_the_rules_are_refused_with_the_reason(app: TestApp) {
        for (name, reason) in [
            ("   ", "Name can&#x27;t be blank"),
            (&"n".repeat(41), "Name is too long (maximum is 40 characters)"),
            ("bell\u{7}", "Name contains control characters"),
        ] {
            let res = app.post("/session", &[("name", name)]).await;
            assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY, "{name:?}");
            let body = res.text().await.unwrap();
            assert!(body.contains(reason), "{reason}: {body}");
        }
        assert_eq!(app.get("/rooms").await.status(), StatusCode::SEE_OTHER);
    }

    async fn a_missing_name_field_is_a_bad_request(app: TestApp) {
        let res = app.post("/session", &[]).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    }

    async fn signing_out_forgets_the_person(app: TestApp) {
        app.sign_in("Ada").await;
        assert_eq!(app.get("/rooms").await.status(), StatusCode::OK);
        let res = app.post("/session", &[("_method", "delete")]).await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER);
        assert_eq!(location(&res), "/session/new");
        assert_eq!(app.get("/rooms").await.status(), StatusCode::SEE_OTHER);
    }

    async fn an_altered_cookie_is_a_signed_out_visitor_not_an_error(app: TestApp) {
        let client = new_client();
        let forged = "_tasksync_session=eyJjc3JmIjoiQUFBQSIsInVzZXIiOnsiaWQiOjEsIm5hbWUiOiJFdmUifX0--AAAA";
        let res = client
            .get(app.url("/rooms"))
            .header(header::COOKIE, forged)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::SEE_OTHER);
        let res = client
            .get(app.url("/session/new"))
            .header(header::COOKIE, "_tasksync_session=%%%garbage")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }
}

#[tokio::test]
async fn the_cookie_is_marked_secure_when_configured() {
    let app = spawn_with(Backend::Sqlite, |s| s.secure_cookies = true).await;
    let res = app.get("/session/new").await;
    let cookie = res
        .headers()
        .get(header::SET_COOKIE)
        .unwrap()
        .to_str()
        .unwrap();
    assert!(cookie.contains("Secure"), "{cookie}");
}
