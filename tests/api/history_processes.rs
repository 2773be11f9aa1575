//! Stream history kept in PostgreSQL, across two processes: a page rendered by one process and
//! subscribed on the other misses nothing, and a client that reconnects to the other process
//! after its own went away is replayed what it missed.

use std::time::Duration;

use crate::{
    cable_client::{Cable, page_identifier},
    helpers::task_title,
    processes::Cluster,
};

async fn appended_titles(cable: &mut Cable, wait: Duration) -> Vec<String> {
    let mut titles = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    while let Ok(frame) = tokio::time::timeout_at(deadline, cable.next()).await {
        let html = frame["message"].as_str().unwrap_or_default();
        if html.starts_with("<turbo-stream action=\"append\"")
            && let Some(title) = task_title(html)
        {
            titles.push(title.to_owned());
        }
    }
    titles
}

#[tokio::test]
async fn history_in_postgresql_carries_a_page_across_processes_and_reconnects() {
    let cluster = Cluster::new(&[("PUBSUB_ADAPTER", "postgres")]).await;
    let a = cluster.start().await;
    let mut b = cluster.start().await;
    let ada_on_a = cluster.client(&a.address);
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
    let ada_on_b = cluster.client(&b.address);
    ada_on_b.sign_in("Ada").await;
    let mut cable = Cable::subscribed(&ada_on_b, &identifier).await;
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

/// A change and the broadcast announcing it commit together. The stream's history row is held
/// locked from outside, so a task post stops inside its transaction, between writing the task
/// and recording its broadcast; the process is then killed. Neither may survive: a task kept
/// without its broadcast would never reach the pages already open.
#[tokio::test]
async fn a_process_killed_between_a_change_and_its_broadcast_keeps_neither() {
    use sqlx::{Connection as _, PgConnection};

    let cluster = Cluster::new(&[("PUBSUB_ADAPTER", "postgres")]).await;
    let mut a = cluster.start().await;
    let ada = cluster.client(&a.address);
    let room = ada.signed_in_room().await;
    let kept = ada.create_task(room, "before").await;

    let mut admin = PgConnection::connect(&cluster.url)
        .await
        .expect("admin connection");
    let mut holding = admin.begin().await.expect("BEGIN");
    let locked: i64 =
        sqlx::query_scalar("SELECT last_offset FROM tasksync_streams WHERE stream = $1 FOR UPDATE")
            .bind(format!("rooms:{room}"))
            .fetch_one(&mut *holding)
            .await
            .expect("lock the stream's row");

    let stuck = {
        let url = ada.url(&format!("/rooms/{room}/tasks"));
        let cookie = ada.cookie_header().expect("signed in");
        let token = ada.csrf().await;
        // Its answer never comes: the process dies first.
        tokio::spawn(async move {
            let _ = reqwest::Client::new()
                .post(url)
                .header("Cookie", cookie)
                .form(&[
                    ("authenticity_token", token.as_str()),
                    ("task[title]", "doomed"),
                ])
                .send()
                .await;
        })
    };
    let mut watcher = PgConnection::connect(&cluster.url)
        .await
        .expect("watcher connection");
    let waiting = async {
        loop {
            let blocked: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
            )
            .fetch_one(&mut watcher)
            .await
            .expect("pg_stat_activity");
            if blocked > 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the post waits on the stream's row, inside its transaction");

    a.child.start_kill().unwrap();
    let _ = a.child.wait().await;
    holding.rollback().await.expect("ROLLBACK");
    let _ = stuck.await;

    let titles: Vec<String> =
        sqlx::query_scalar("SELECT title FROM tasks WHERE room_id = $1 ORDER BY id")
            .bind(room)
            .fetch_all(&mut admin)
            .await
            .expect("tasks");
    assert_eq!(titles, ["before"], "the killed change was rolled back");
    let last: i64 =
        sqlx::query_scalar("SELECT last_offset FROM tasksync_streams WHERE stream = $1")
            .bind(format!("rooms:{room}"))
            .fetch_one(&mut admin)
            .await
            .expect("stream row");
    assert_eq!(last, locked, "and so was its broadcast");
    assert!(kept > 0);
}
