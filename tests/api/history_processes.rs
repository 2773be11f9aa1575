//! Stream history kept in PostgreSQL, across two processes: a page rendered by one process and
//! subscribed on the other misses nothing, and a client that reconnects to the other process
//! after its own went away is replayed what it missed.

use std::{sync::Arc, time::Duration};

use crate::{
    cable_client::{Cable, page_identifier},
    helpers::{Backend, TestApp, TestDatabase},
    processes,
};

async fn appended_titles(cable: &mut Cable, wait: Duration) -> Vec<String> {
    let mut titles = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    while let Ok(frame) = tokio::time::timeout_at(deadline, cable.next()).await {
        let html = frame["message"].as_str().unwrap_or_default();
        if let Some(start) = html
            .starts_with("<turbo-stream action=\"append\"")
            .then(|| html.find("<p class=\"task__title\">"))
            .flatten()
        {
            let rest = &html[start + "<p class=\"task__title\">".len()..];
            titles.push(rest.split('<').next().unwrap().to_owned());
        }
    }
    titles
}

#[tokio::test]
async fn history_in_postgresql_carries_a_page_across_processes_and_reconnects() {
    let (database, url) = TestDatabase::create(Backend::Postgres).await;
    let database = Arc::new(database);
    let env = [
        ("DATABASE_URL", url.as_str()),
        ("PUBSUB_ADAPTER", "postgres"),
    ];
    let a = processes::start(&env).await;
    let mut b = processes::start(&env).await;
    let ada_on_a = TestApp::at(a.address.clone(), Backend::Postgres, database.clone());
    let room = ada_on_a.signed_in_room().await;
    let page = ada_on_a.get_html(&format!("/rooms/{room}")).await;
    let identifier = page_identifier(&page);

    // Changes before the page subscribes, one of them far over NOTIFY's 8,000-byte limit.
    ada_on_a.create_task(room, "early").await;
    let long = "x".repeat(9_000);
    let res = ada_on_a
        .post_turbo(
            &format!("/rooms/{room}/tasks"),
            &[("task[title]", "big"), ("task[notes]", &long)],
        )
        .await;
    assert_eq!(res.status(), 200);

    // The page's socket lands on the other process: it is replayed both, then gets live ones.
    let ada_on_b = TestApp::at(b.address.clone(), Backend::Postgres, database.clone());
    ada_on_b.sign_in("Ada").await;
    let mut cable = Cable::connect(&ada_on_b).await;
    assert_eq!(cable.next().await["type"], "welcome");
    assert_eq!(
        cable.subscribe(&identifier).await["type"],
        "confirm_subscription"
    );
    ada_on_a.create_task(room, "live").await;
    assert_eq!(
        appended_titles(&mut cable, Duration::from_millis(800)).await,
        ["early", "big", "live"]
    );

    // Process B dies; changes go on through A; the client comes back on A with its identifier.
    b.child.start_kill().unwrap();
    let _ = b.child.wait().await;
    drop(cable);
    ada_on_a.create_task(room, "while away").await;
    let mut cable = Cable::connect(&ada_on_a).await;
    cable.next().await;
    assert_eq!(
        cable.subscribe(&identifier).await["type"],
        "confirm_subscription"
    );
    assert_eq!(
        appended_titles(&mut cable, Duration::from_millis(800)).await,
        ["early", "big", "live", "while away"]
    );
}
