//! Sockets leave nothing behind: after 10,000 connect / subscribe / disconnect cycles the hub is
//! empty and the process's memory is back near where it started.

use futures_util::{StreamExt as _, stream};
use serde_json::json;

use crate::{
    cable_client::{Cable, identifier, signed_stream_in},
    helpers::{Backend, TestApp, TestDatabase},
    processes,
};

async fn cycle(app: &TestApp, id: &str) {
    let mut cable = Cable::connect(app).await;
    assert_eq!(cable.next().await["type"], "welcome");
    cable
        .send(json!({"command": "subscribe", "identifier": id}))
        .await;
    assert_eq!(cable.next().await["type"], "confirm_subscription");
    let _ = cable.ws.close(None).await;
}

async fn cycles(app: &TestApp, id: &str, count: usize) {
    stream::iter(0..count)
        .for_each_concurrent(50, |_| cycle(app, id))
        .await;
}

#[tokio::test]
async fn ten_thousand_socket_cycles_leave_the_hub_empty_and_memory_near_its_baseline() {
    let (database, url) = TestDatabase::create(Backend::Sqlite).await;
    let server = processes::start(&[("DATABASE_URL", &url)]).await;
    let app = TestApp::at(server.address.clone(), Backend::Sqlite, database.into());
    let room = app.signed_in_room().await;
    let id = identifier(&signed_stream_in(
        &app.get_html(&format!("/rooms/{room}")).await,
    ));

    // Warm up: allocator pools, worker buffers and the hub's maps reach their working size.
    cycles(&app, &id, 1_000).await;
    let baseline = server.rss_kib();
    cycles(&app, &id, 10_000).await;

    // Closing is asynchronous on the server; give the last sockets a moment to unregister.
    let mut up = server.up().await;
    for _ in 0..50 {
        if up["cable"]["connections"] == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        up = server.up().await;
    }
    assert_eq!(up["cable"]["connections"], 0, "{up}");
    assert_eq!(up["cable"]["subscriptions"], 0, "{up}");
    let after = server.rss_kib();
    eprintln!("RSS: baseline {baseline} KiB, after 10,000 cycles {after} KiB");
    assert!(
        after <= baseline + 8 * 1024,
        "memory grew from {baseline} KiB to {after} KiB over 10,000 cycles"
    );
}
