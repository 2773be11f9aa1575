//! Two server processes on one database: a change made through one reaches the cable
//! subscribers of the other, through the PostgreSQL and the Redis adapters.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::{
    cable_client::{Cable, identifier, signed_stream_in},
    helpers::{TestApp, TestDatabase, postgres_admin_url},
    processes::{Cluster, ServerProcess},
};

struct Pair {
    _a: ServerProcess,
    _b: ServerProcess,
    /// Ada, on process A, subscribed to the room.
    ada: TestApp,
    cable: Cable,
    /// Grace, on process B.
    grace: TestApp,
    room: i64,
    database: String,
}

async fn pair(adapter: &str) -> Pair {
    let channel = format!("tasksync-test-{}", uuid::Uuid::new_v4().simple());
    let cluster = Cluster::new(&[
        ("PUBSUB_ADAPTER", adapter),
        ("PUBSUB_CHANNEL", channel.as_str()),
    ])
    .await;
    let TestDatabase::Postgres { name } = &*cluster.database else {
        panic!("a PostgreSQL test database");
    };
    let name = name.clone();
    let a = cluster.start().await;
    let b = cluster.start().await;
    let ada = cluster.client(&a.address);
    let grace = cluster.client(&b.address);
    let room = ada.signed_in_room().await;
    grace.sign_in("Grace").await;
    let signed = signed_stream_in(&ada.get_html(&format!("/rooms/{room}")).await);
    let cable = Cable::subscribed(&ada, &identifier(&signed)).await;
    Pair {
        _a: a,
        _b: b,
        ada,
        cable,
        grace,
        room,
        database: name,
    }
}

/// The next broadcast's HTML, within one second.
async fn received_within_a_second(cable: &mut Cable) -> String {
    let frame: Value = tokio::time::timeout(Duration::from_secs(1), cable.next())
        .await
        .expect("the broadcast arrives within a second");
    frame["message"].as_str().expect("a broadcast").to_owned()
}

async fn a_task_posted_on_one_process_reaches_subscribers_on_another(adapter: &str) {
    let mut p = pair(adapter).await;
    let task = p.grace.create_task(p.room, "Posted on B").await;
    let html = received_within_a_second(&mut p.cable).await;
    assert!(html.contains(&format!("<div id=\"task_{task}\"")), "{html}");
    assert!(html.contains(">Posted on B</p>"));
    // And back the other way, for good measure.
    let res = p
        .ada
        .post_turbo(
            &format!("/rooms/{}/tasks/{task}", p.room),
            &[("_method", "delete")],
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        received_within_a_second(&mut p.cable)
            .await
            .contains(&format!("target=\"task_{task}\""))
    );
}

#[tokio::test]
async fn a_task_posted_on_one_process_reaches_subscribers_on_another_through_postgres() {
    a_task_posted_on_one_process_reaches_subscribers_on_another("postgres").await;
}

#[tokio::test]
async fn a_task_posted_on_one_process_reaches_subscribers_on_another_through_redis() {
    a_task_posted_on_one_process_reaches_subscribers_on_another("redis").await;
}

async fn a_20_kb_payload_crosses_intact(adapter: &str) {
    let mut p = pair(adapter).await;
    let task = p.grace.create_task(p.room, "Long notes").await;
    received_within_a_second(&mut p.cable).await;
    let notes = "é\t\"<ü>\"\n".repeat(1_250); // 10,000 characters, 12,500 bytes before escaping
    let title = "ß".repeat(200);
    let res = p
        .grace
        .post_turbo(
            &format!("/rooms/{}/tasks/{task}", p.room),
            &[
                ("_method", "patch"),
                ("task[title]", &title),
                ("task[notes]", &notes),
                ("task[lock_version]", "0"),
            ],
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let sent = res.text().await.unwrap();
    assert!(sent.len() > 20_000, "{}", sent.len());
    let html = received_within_a_second(&mut p.cable).await;
    assert_eq!(html.len(), sent.len());
    assert_eq!(
        html, sent,
        "the broadcast is byte for byte what the poster got"
    );
}

#[tokio::test]
async fn a_20_kb_payload_crosses_the_postgres_adapter_intact() {
    a_20_kb_payload_crosses_intact("postgres").await;
}

#[tokio::test]
async fn a_20_kb_payload_crosses_the_redis_adapter_intact() {
    a_20_kb_payload_crosses_intact("redis").await;
}

#[tokio::test]
async fn broadcasts_resume_by_themselves_after_postgresql_drops_every_connection() {
    let mut p = pair("postgres").await;
    // What a PostgreSQL restart does to its clients: every connection to the database ends.
    // (The real server is shared with tests running in parallel, so it is not restarted here.)
    use sqlx::Connection as _;
    let mut admin = sqlx::PgConnection::connect(&postgres_admin_url())
        .await
        .unwrap();
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()")
        .bind(&p.database)
        .execute(&mut admin)
        .await
        .unwrap();

    // Within a few seconds both processes listen again and the broadcast gets through.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let res = p
            .grace
            .post_turbo(
                &format!("/rooms/{}/tasks", p.room),
                &[("task[title]", &format!("after restart {attempt}"))],
            )
            .await;
        if res.status() == StatusCode::OK {
            let frame = tokio::time::timeout(Duration::from_millis(700), p.cable.next()).await;
            if let Ok(frame) = frame
                && frame["message"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("after restart")
            {
                break;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "broadcasts never resumed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let up: Value = p.ada.get("/up").await.json().await.unwrap();
    assert_eq!(up["status"], "ok", "{up}");
}
