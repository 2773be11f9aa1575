//! The ActionCable protocol on `/cable`, against the real server.

use std::time::Duration;

use futures_util::SinkExt as _;
use reqwest::StatusCode;
use serde_json::json;
use tokio_tungstenite::tungstenite;

use crate::{
    cable_client::{ACTIONCABLE_PROTOCOLS, Cable, handshake, identifier, signed_stream_in},
    helpers::{Backend, TestApp, spawn},
};

/// A signed-in client on a room page, with a connected and subscribed cable.
async fn subscribed(app: &TestApp) -> (i64, String, Cable) {
    let room = app.signed_in_room().await;
    let signed = signed_stream_in(&app.get_html(&format!("/rooms/{room}")).await);
    let mut cable = Cable::connect(app).await;
    assert_eq!(cable.next().await, json!({"type": "welcome"}));
    let id = identifier(&signed);
    assert_eq!(
        cable.subscribe(&id).await,
        json!({"identifier": id, "type": "confirm_subscription"})
    );
    (room, id, cable)
}

#[tokio::test]
async fn the_handshake_selects_the_actioncable_subprotocol_and_welcomes() {
    let app = spawn(Backend::Sqlite).await;
    app.sign_in("Ada").await;
    let mut cable = Cable::connect(&app).await;
    assert_eq!(cable.protocol.as_deref(), Some("actioncable-v1-json"));
    assert_eq!(cable.next().await, json!({"type": "welcome"}));
}

#[tokio::test]
async fn the_server_pings_every_three_seconds() {
    let app = spawn(Backend::Sqlite).await;
    app.sign_in("Ada").await;
    let mut cable = Cable::connect(&app).await;
    assert_eq!(cable.next_frame().await.unwrap()["type"], "welcome");
    let started = std::time::Instant::now();
    let ping = tokio::time::timeout(Duration::from_secs(5), cable.next_frame())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ping["type"], "ping");
    assert!(
        ping["message"].as_u64().unwrap() > 1_700_000_000,
        "unix seconds"
    );
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(2500), "{waited:?}");
}

#[tokio::test]
async fn without_a_session_the_client_is_told_it_is_unauthorized() {
    let app = spawn(Backend::Sqlite).await;
    let mut cable = Cable::connect(&app).await;
    assert_eq!(
        cable.next().await,
        json!({"type": "disconnect", "reason": "unauthorized", "reconnect": false})
    );
    assert_eq!(cable.close_code().await, Some(1008));
}

#[tokio::test]
async fn a_foreign_or_missing_origin_is_refused_before_the_upgrade() {
    let app = spawn(Backend::Sqlite).await;
    app.sign_in("Ada").await;
    for origin in [Some("http://evil.example"), None] {
        match handshake(&app, "/cable", origin, Some(ACTIONCABLE_PROTOCOLS)).await {
            Err(tungstenite::Error::Http(response)) => {
                assert_eq!(
                    response.status(),
                    StatusCode::FORBIDDEN.as_u16(),
                    "{origin:?}"
                );
            }
            other => panic!("expected 403 for {origin:?}, got {:?}", other.map(|r| r.1)),
        }
    }
}

#[tokio::test]
async fn a_plain_get_of_the_cable_is_a_bad_request() {
    let app = spawn(Backend::Sqlite).await;
    let res = app
        .client
        .get(app.url("/cable"))
        .header("Origin", &app.address)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
}

crate::backend_tests! {
    async fn a_change_posted_by_someone_else_reaches_the_subscriber(app: TestApp) {
        let (room, id, mut cable) = subscribed(&app).await;
        let grace = app.new_visitor_signed_in("Grace").await;
        let task = grace.create_task(room, "From Grace").await;

        let frame = cable.next().await;
        assert_eq!(frame["identifier"], id);
        let html = frame["message"].as_str().unwrap();
        assert!(html.starts_with("<turbo-stream action=\"append\" target=\"tasks\">"), "{html}");
        assert!(html.contains(&format!("<div id=\"task_{task}\"")));
        assert!(html.contains(">From Grace</p>"));
        assert!(!html.contains("authenticity_token"), "no one's token is broadcast");
    }

    async fn every_kind_of_change_is_broadcast_with_the_bytes_the_poster_got(app: TestApp) {
        let (room, _id, mut cable) = subscribed(&app).await;
        let task = app.create_task(room, "Task").await;
        cable.next().await; // the append
        let path = format!("/rooms/{room}/tasks/{task}");
        let changes: Vec<(String, Vec<(&str, &str)>)> = vec![
            (path.clone(), vec![("_method", "patch"), ("task[title]", "Edited"), ("task[lock_version]", "0")]),
            (path.clone(), vec![("_method", "patch"), ("task[done]", "true"), ("task[lock_version]", "1")]),
            (format!("/rooms/{room}"), vec![("_method", "patch"), ("room[name]", "Renamed")]),
            (format!("/rooms/{room}/tasks/completed"), vec![("_method", "delete")]),
        ];
        for (path, fields) in changes {
            let res = app.post_turbo(&path, &fields).await;
            assert_eq!(res.status(), StatusCode::OK, "{path}");
            let response = res.text().await.unwrap();
            let frame = cable.next().await;
            assert_eq!(frame["message"].as_str().unwrap(), response, "{path}");
        }
        let second = app.create_task(room, "Second").await;
        cable.next().await;
        let res = app.post_turbo(&format!("/rooms/{room}/tasks/{second}"), &[("_method", "delete")]).await;
        let response = res.text().await.unwrap();
        assert_eq!(cable.next().await["message"].as_str().unwrap(), response);
    }

    async fn refused_changes_and_repeated_toggles_are_not_broadcast(app: TestApp) {
        let (room, _id, mut cable) = subscribed(&app).await;
        let task = app.create_task(room, "Task").await;
        cable.next().await;
        let path = format!("/rooms/{room}/tasks/{task}");
        let toggle = [("_method", "patch"), ("task[done]", "true"), ("task[lock_version]", "0")];
        app.post_turbo(&path, &toggle).await;
        cable.next().await;
        assert_eq!(app.post_turbo(&path, &toggle).await.status(), StatusCode::OK);
        let stale = [("_method", "patch"), ("task[title]", "Stale"), ("task[lock_version]", "0")];
        assert_eq!(app.post_turbo(&path, &stale).await.status(), StatusCode::CONFLICT);
        let invalid = [("task[title]", "")];
        assert_eq!(
            app.post_turbo(&format!("/rooms/{room}/tasks"), &invalid).await.status(),
            StatusCode::UNPROCESSABLE_ENTITY
        );
        cable.expect_silence(Duration::from_millis(500)).await;
    }
}

#[tokio::test]
async fn forged_altered_and_foreign_subscriptions_are_rejected() {
    let app = spawn(Backend::Sqlite).await;
    let (room, _id, mut cable) = subscribed(&app).await;
    let signed = signed_stream_in(&app.get_html(&format!("/rooms/{room}")).await);
    let (data, tag) = signed.split_once("--").unwrap();
    let other_room = app.create_room("Other").await;
    let other_signed = signed_stream_in(&app.get_html(&format!("/rooms/{other_room}")).await);
    let (other_data, _) = other_signed.split_once("--").unwrap();

    let bad = [
        identifier("forged--signature"),
        identifier(&format!("{data}--{}", "A".repeat(43))),
        identifier(&format!("{other_data}--{tag}")),
        identifier(&format!("{data}x--{tag}")),
        json!({"channel": "ChatChannel", "signed_stream_name": signed}).to_string(),
        json!({"channel": "Turbo::StreamsChannel"}).to_string(),
        "not json".to_owned(),
    ];
    for id in bad {
        assert_eq!(
            cable.subscribe(&id).await,
            json!({"identifier": id, "type": "reject_subscription"}),
            "{id}"
        );
    }
}

#[tokio::test]
async fn a_duplicate_subscribe_is_confirmed_and_delivers_once() {
    let app = spawn(Backend::Sqlite).await;
    let (room, id, mut cable) = subscribed(&app).await;
    assert_eq!(cable.subscribe(&id).await["type"], "confirm_subscription");
    app.create_task(room, "Once").await;
    assert!(cable.next().await["message"].is_string());
    cable.expect_silence(Duration::from_millis(400)).await;
}

#[tokio::test]
async fn after_unsubscribing_nothing_more_arrives() {
    let app = spawn(Backend::Sqlite).await;
    let (room, id, mut cable) = subscribed(&app).await;
    cable
        .send(json!({"command": "unsubscribe", "identifier": id}))
        .await;
    app.create_task(room, "Unheard").await;
    cable.expect_silence(Duration::from_millis(400)).await;
}

#[tokio::test]
async fn garbage_frames_are_dropped_and_the_socket_stays_up() {
    let app = spawn(Backend::Sqlite).await;
    let (room, id, mut cable) = subscribed(&app).await;
    for garbage in [
        "not json".to_owned(),
        "{}".to_owned(),
        json!({"command": "explode", "identifier": id}).to_string(),
        json!({"command": "message", "identifier": id, "data": "{\"action\":\"x\"}"}).to_string(),
        json!({"command": "unsubscribe", "identifier": "never subscribed"}).to_string(),
        "\u{0}\u{1}".to_owned(),
    ] {
        cable.send_text(garbage).await;
    }
    cable
        .ws
        .send(tungstenite::Message::binary(vec![0xff, 0x00, 0x13]))
        .await
        .unwrap();
    app.create_task(room, "Still here").await;
    let frame = cable.next().await;
    assert!(
        frame["message"].as_str().unwrap().contains("Still here"),
        "{frame}"
    );
}

#[tokio::test]
async fn an_oversized_frame_closes_the_socket_with_1009() {
    let app = spawn(Backend::Sqlite).await;
    let (_room, _id, mut cable) = subscribed(&app).await;
    let huge = json!({"command": "subscribe", "identifier": "x".repeat(64 * 1024)}).to_string();
    cable.send_text(huge).await;
    assert_eq!(cable.close_code().await, Some(1009));
}

#[tokio::test]
async fn subscriptions_per_connection_are_limited() {
    let app = spawn(Backend::Sqlite).await;
    let (room, _id, mut cable) = subscribed(&app).await;
    let signed = signed_stream_in(&app.get_html(&format!("/rooms/{room}")).await);
    // Distinct identifiers for the same stream, as extra data-* attributes would make.
    for n in 1..100 {
        let id = json!({"channel": "Turbo::StreamsChannel", "signed_stream_name": signed, "n": n})
            .to_string();
        assert_eq!(
            cable.subscribe(&id).await["type"],
            "confirm_subscription",
            "{n}"
        );
    }
    let id = json!({"channel": "Turbo::StreamsChannel", "signed_stream_name": signed, "n": 100})
        .to_string();
    assert_eq!(cable.subscribe(&id).await["type"], "reject_subscription");
}
