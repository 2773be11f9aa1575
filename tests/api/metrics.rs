//! `GET /metrics`: hidden without a token, guarded by it otherwise, and counting what the issue
//! asks for: sockets, subscriptions, broadcasts from publish to socket write, HTTP requests by
//! route pattern, the database pool and the adapter's health. Also the request id header.

use std::time::Duration;

use reqwest::{StatusCode, header};

use crate::{
    backend_tests,
    cable_client::{Cable, identifier, presence, signed_stream_in},
    helpers::{Backend, TestApp, spawn, spawn_with},
};

const TOKEN: &str = "scrape-token-0123456789";

async fn spawn_scrapeable(backend: Backend) -> TestApp {
    spawn_with(backend, |s| s.metrics_token = Some(TOKEN.into())).await
}

async fn scrape(app: &TestApp) -> String {
    let res = app
        .client
        .get(app.url("/metrics"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(res.status(), StatusCode::OK);
    let content_type = res.headers()[header::CONTENT_TYPE].to_str().unwrap();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    res.text().await.unwrap()
}

/// The value of the sample named exactly `series` (name and labels), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|value| value.trim().parse().expect("a number"))
}

/// Scrapes until `series` reaches `want`, since some values are recorded just after the client
/// has seen the effect (a frame is timed once written).
async fn scrape_until(app: &TestApp, series: &str, want: f64) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let text = scrape(app).await;
        if sample(&text, series) == Some(want) {
            return text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{series} never reached {want}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn without_a_token_metrics_are_not_served() {
    let app = spawn(Backend::Sqlite).await;
    let res = app
        .client
        .get(app.url("/metrics"))
        .bearer_auth("anything")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);

    let app = spawn_with(Backend::Sqlite, |s| s.metrics_token = Some(String::new())).await;
    assert_eq!(
        app.get("/metrics").await.status(),
        StatusCode::NOT_FOUND,
        "empty means unset"
    );
}

#[tokio::test]
async fn metrics_want_the_bearer_token() {
    let app = spawn_scrapeable(Backend::Sqlite).await;
    let res = app.get("/metrics").await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        res.headers()[header::WWW_AUTHENTICATE],
        "Bearer realm=\"metrics\""
    );
    for wrong in [
        "wrong",
        "scrape-token-012345678",
        "scrape-token-01234567890",
    ] {
        let res = app
            .client
            .get(app.url("/metrics"))
            .bearer_auth(wrong)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{wrong}");
    }
    let res = app
        .client
        .get(app.url("/metrics"))
        .header(header::AUTHORIZATION, TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        StatusCode::UNAUTHORIZED,
        "the Bearer scheme is required"
    );
    let text = scrape(&app).await;
    assert!(
        text.contains("# TYPE tasksync_http_requests_total counter"),
        "{text}"
    );
}

backend_tests! {
    async fn a_broadcast_is_counted_and_timed_from_publish_to_socket_write(_app: TestApp) {
        let app = spawn_scrapeable(_app.backend).await;
        let room = app.signed_in_room().await;
        let signed = signed_stream_in(&app.get_html(&format!("/rooms/{room}")).await);
        let mut cable = Cable::subscribed(&app, &identifier(&signed)).await;
        let _presence = presence(&app, room).await;

        app.create_task(room, "Count me").await;
        let frame = cable.next().await;
        assert!(frame["message"].as_str().unwrap().contains("Count me"), "{frame}");

        let text = scrape_until(&app, "tasksync_broadcast_delivery_seconds_count", 1.0).await;
        let expect = |series: &str, want: f64| {
            assert_eq!(sample(&text, series), Some(want), "{series} in\n{text}");
        };
        expect("tasksync_broadcasts_published_total", 1.0);
        expect("tasksync_broadcasts_delivered_total", 1.0);
        expect(r#"tasksync_sockets_open{kind="cable"}"#, 1.0);
        expect(r#"tasksync_sockets_open{kind="presence"}"#, 1.0);
        expect("tasksync_cable_subscriptions", 1.0);
        expect(r#"tasksync_slow_client_disconnects_total{kind="cable"}"#, 0.0);
        expect("tasksync_pubsub_healthy", 1.0);
        expect("tasksync_pubsub_reconnects_total", 0.0);
        // DATABASE_POOL_SIZE, and SQLite's one writer connection beside its readers.
        let max = if app.backend == Backend::Sqlite { 6.0 } else { 5.0 };
        expect("tasksync_db_pool_max_connections", max);
        expect(
            r#"tasksync_http_requests_total{method="POST",route="/rooms/{room_id}/tasks",status="200"}"#,
            1.0,
        );
        expect(
            r#"tasksync_http_request_duration_seconds_count{method="POST",route="/rooms/{room_id}/tasks",status="200"}"#,
            1.0,
        );
        expect(r#"tasksync_http_requests_total{method="GET",route="/cable",status="101"}"#, 1.0);
        assert!(sample(&text, "tasksync_db_pool_connections").unwrap() >= 1.0, "{text}");
        assert!(
            !text.contains(&format!("route=\"/rooms/{room}")),
            "raw paths must never become labels:\n{text}"
        );

        // Unrouted paths share one label, whatever they are.
        app.get("/no/such/page/1").await;
        app.get("/no/such/page/2").await;
        let text = scrape(&app).await;
        assert_eq!(
            sample(&text, r#"tasksync_http_requests_total{method="GET",route="unmatched",status="404"}"#),
            Some(2.0),
            "{text}"
        );

        drop(cable);
        scrape_until(&app, r#"tasksync_sockets_open{kind="cable"}"#, 0.0).await;
    }
    // The room page keeps each task's markup; deleting tasks, one or all the completed ones,
    // takes theirs out once committed, so deleted tasks do not sit in the cache.
    async fn deleted_tasks_leave_the_task_markup_cache(_app: TestApp) {
        let app = spawn_scrapeable(_app.backend).await;
        let room = app.signed_in_room().await;
        let mut tasks = Vec::new();
        for title in ["One", "Two", "Three", "Four"] {
            tasks.push(app.create_task(room, title).await);
        }
        app.get_html(&format!("/rooms/{room}")).await;
        let cached = |text: &str| sample(text, "tasksync_task_markup_cached_tasks");
        let text = scrape(&app).await;
        assert_eq!(cached(&text), Some(4.0), "{text}");
        assert!(sample(&text, "tasksync_task_markup_cached_bytes").unwrap() > 100.0, "{text}");

        let res = app
            .post_turbo(&format!("/rooms/{room}/tasks/{}", tasks[0]), &[("_method", "delete")])
            .await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(cached(&scrape(&app).await), Some(3.0));

        for task in &tasks[1..3] {
            let done = [("_method", "patch"), ("task[done]", "true"), ("task[lock_version]", "0")];
            let res = app.post_turbo(&format!("/rooms/{room}/tasks/{task}"), &done).await;
            assert_eq!(res.status(), StatusCode::OK);
        }
        let res = app
            .post_turbo(&format!("/rooms/{room}/tasks/completed"), &[("_method", "delete")])
            .await;
        assert_eq!(res.status(), StatusCode::OK);
        // Only "Four" is left, in the cache as on the page.
        assert_eq!(cached(&scrape(&app).await), Some(1.0));
        app.get_html(&format!("/rooms/{room}")).await;
        assert_eq!(cached(&scrape(&app).await), Some(1.0));
    }
}

#[tokio::test]
async fn every_response_carries_a_request_id_and_a_plausible_one_is_kept() {
    let app = spawn(Backend::Sqlite).await;
    let res = app.get("/up").await;
    let generated = res.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(generated.len(), 32);
    assert!(generated.bytes().all(|b| b.is_ascii_hexdigit()));

    let res = app
        .client
        .get(app.url("/rooms"))
        .header("X-Request-Id", "lb-7f3a.1")
        .send()
        .await;
    assert_eq!(
        res.unwrap().headers()["x-request-id"],
        "lb-7f3a.1",
        "redirects too"
    );

    let res = app
        .client
        .get(app.url("/up"))
        .header("X-Request-Id", "not a valid id")
        .send()
        .await
        .unwrap();
    assert_ne!(res.headers()["x-request-id"], "not a valid id");

    // Refused by an inner middleware (no CSRF token): the error response carries it as well.
    let res = app
        .client
        .post(app.url("/rooms"))
        .header("X-Request-Id", "refused-1")
        .form(&[("room[name]", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(res.headers()["x-request-id"], "refused-1");
}
