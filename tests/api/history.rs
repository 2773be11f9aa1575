//! Stream history: a page never misses a change made between its render and its subscription,
//! a client that comes back is replayed what it missed, in order and once, and one that was
//! away too long (or whose history was reset) is told to refresh.

use std::time::Duration;

use serde_json::{Value, json};
use tasksync::config::Settings;

use crate::{
    cable_client::{Cable, page_identifier},
    helpers::{Backend, TestApp, spawn, spawn_with, task_title},
};

/// A server whose history is kept in Redis, on a channel no other test uses (they share one
/// Redis). Fails, like every Redis test, when Redis is not there.
async fn spawn_with_redis(configure: impl FnOnce(&mut Settings)) -> TestApp {
    spawn_with(Backend::Postgres, |s| {
        s.pubsub_adapter = "redis".into();
        s.redis_url =
            std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
        s.pubsub_channel = format!("tasksync-test-{}", uuid::Uuid::new_v4().simple());
        configure(s);
    })
    .await
}

/// Every broadcast that arrives within `wait`, as HTML.
async fn received(cable: &mut Cable, wait: Duration) -> Vec<String> {
    let mut messages = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    while let Ok(frame) = tokio::time::timeout_at(deadline, cable.next()).await {
        if let Some(html) = frame["message"].as_str() {
            messages.push(html.to_owned());
        }
    }
    messages
}

fn appended_titles(messages: &[String]) -> Vec<String> {
    messages
        .iter()
        .filter(|m| m.starts_with("<turbo-stream action=\"append\""))
        .map(|m| task_title(m).unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_change_made_between_render_and_subscription_still_reaches_the_page() {
    a_change_made_between_render_and_subscription(spawn(Backend::Sqlite).await).await;
}

#[tokio::test]
async fn a_change_made_between_render_and_subscription_still_reaches_the_page_through_redis() {
    a_change_made_between_render_and_subscription(spawn_with_redis(|_| {}).await).await;
}

async fn a_change_made_between_render_and_subscription(app: TestApp) {
    let room = app.signed_in_room().await;
    let page = app.get_html(&format!("/rooms/{room}")).await;
    assert!(
        page.contains("data-epoch=\"") && page.contains("data-offset=\"0\""),
        "{page}"
    );

    let grace = app.new_visitor_signed_in("Grace").await;
    grace
        .create_task(room, "Between render and subscribe")
        .await;

    let mut cable = Cable::subscribed(&app, &page_identifier(&page)).await;
    let messages = received(&mut cable, Duration::from_millis(500)).await;
    assert_eq!(appended_titles(&messages), ["Between render and subscribe"]);
}

#[tokio::test]
async fn a_client_that_comes_back_is_replayed_what_it_missed_in_order_and_once() {
    a_client_that_comes_back(spawn(Backend::Sqlite).await).await;
}

#[tokio::test]
async fn a_client_that_comes_back_is_replayed_what_it_missed_in_order_and_once_through_redis() {
    a_client_that_comes_back(spawn_with_redis(|_| {}).await).await;
}

async fn a_client_that_comes_back(app: TestApp) {
    let room = app.signed_in_room().await;
    let page = app.get_html(&format!("/rooms/{room}")).await;
    let identifier = page_identifier(&page);
    let mut cable = Cable::subscribed(&app, &identifier).await;
    app.create_task(room, "one").await;
    assert_eq!(
        appended_titles(&received(&mut cable, Duration::from_millis(300)).await),
        ["one"]
    );

    // Away: the network drops; others carry on.
    drop(cable);
    for title in ["two", "three", "four"] {
        app.create_task(room, title).await;
    }
    // Back: the stock client subscribes again with the identifier it was created with.
    let mut cable = Cable::subscribed(&app, &identifier).await;
    app.create_task(room, "five").await;
    let titles = appended_titles(&received(&mut cable, Duration::from_millis(500)).await);
    assert_eq!(titles, ["one", "two", "three", "four", "five"]);
}

#[tokio::test]
async fn changes_made_during_a_replay_arrive_once_and_in_order() {
    changes_made_during_a_replay(spawn(Backend::Sqlite).await).await;
}

#[tokio::test]
async fn changes_made_during_a_replay_arrive_once_and_in_order_through_redis() {
    changes_made_during_a_replay(spawn_with_redis(|_| {}).await).await;
}

async fn changes_made_during_a_replay(app: TestApp) {
    let room = app.signed_in_room().await;
    let page = app.get_html(&format!("/rooms/{room}")).await;
    for i in 0..10 {
        app.create_task(room, &format!("before {i:02}")).await;
    }
    let poster = app.new_visitor_signed_in("Poster").await;
    let posting = {
        let poster = poster;
        tokio::spawn(async move {
            for i in 0..20 {
                poster.create_task(room, &format!("during {i:02}")).await;
            }
        })
    };
    let mut cable = Cable::subscribed(&app, &page_identifier(&page)).await;
    posting.await.unwrap();
    let titles = appended_titles(&received(&mut cable, Duration::from_millis(800)).await);
    let mut expected: Vec<String> = (0..10).map(|i| format!("before {i:02}")).collect();
    expected.extend((0..20).map(|i| format!("during {i:02}")));
    assert_eq!(titles, expected);
}

#[tokio::test]
async fn a_client_away_longer_than_the_window_is_told_to_refresh() {
    let app = spawn_with(Backend::Sqlite, |s| s.history_limit = 3).await;
    a_client_away_longer_than_a_window_of_3(app).await;
}

#[tokio::test]
async fn a_client_away_longer_than_the_window_is_told_to_refresh_through_redis() {
    a_client_away_longer_than_a_window_of_3(spawn_with_redis(|s| s.history_limit = 3).await).await;
}

async fn a_client_away_longer_than_a_window_of_3(app: TestApp) {
    let room = app.signed_in_room().await;
    let page = app.get_html(&format!("/rooms/{room}")).await;
    for i in 0..5 {
        app.create_task(room, &format!("task {i}")).await;
    }
    let mut cable = Cable::subscribed(&app, &page_identifier(&page)).await;
    let messages = received(&mut cable, Duration::from_millis(400)).await;
    assert_eq!(
        messages,
        ["<turbo-stream action=\"refresh\"></turbo-stream>\n"]
    );
}

#[tokio::test]
async fn a_page_from_before_a_restart_is_told_to_refresh() {
    a_page_from_another_epoch(spawn(Backend::Sqlite).await).await;
}

#[tokio::test]
async fn a_page_from_another_epoch_is_told_to_refresh_through_redis() {
    a_page_from_another_epoch(spawn_with_redis(|_| {}).await).await;
}

async fn a_page_from_another_epoch(app: TestApp) {
    let room = app.signed_in_room().await;
    let page = app.get_html(&format!("/rooms/{room}")).await;
    let mut identifier: Value = serde_json::from_str(&page_identifier(&page)).unwrap();
    identifier["epoch"] = json!("an-epoch-that-is-gone");
    let mut cable = Cable::subscribed(&app, &identifier.to_string()).await;
    let messages = received(&mut cable, Duration::from_millis(300)).await;
    assert_eq!(
        messages,
        ["<turbo-stream action=\"refresh\"></turbo-stream>\n"]
    );
}

#[tokio::test]
async fn a_malformed_offset_is_rejected_like_any_bad_identifier() {
    let app = spawn(Backend::Sqlite).await;
    let room = app.signed_in_room().await;
    let page = app.get_html(&format!("/rooms/{room}")).await;
    let mut identifier: Value = serde_json::from_str(&page_identifier(&page)).unwrap();
    for bad in [json!("-1"), json!("abc"), json!(1.5), json!({"x": 1})] {
        identifier["offset"] = bad.clone();
        let mut cable = Cable::connect(&app).await;
        cable.next().await;
        assert_eq!(
            cable.subscribe(&identifier.to_string()).await["type"],
            "reject_subscription",
            "{bad}"
        );
    }
}
