//! The presence socket: states, diffs, tabs, typing and its limits, bad input, and presence
//! across processes (clean stops and kill -9).

use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};
use tokio_tungstenite::tungstenite::{self, Message};

use crate::{
    cable_client::{Socket, WAIT, close_code, handshake, presence},
    helpers::{Backend, TestApp, spawn, spawn_with},
    processes::Cluster,
};

/// A presence socket as a test sees it.
struct Presence {
    ws: Socket,
}

impl Presence {
    async fn connect(app: &TestApp, room: i64) -> Presence {
        Presence {
            ws: presence(app, room).await,
        }
    }

    /// The next frame; `None` once closed.
    async fn next(&mut self) -> Option<Value> {
        loop {
            match tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("a frame in time")?
            {
                Ok(Message::Text(text)) => return Some(serde_json::from_str(&text).unwrap()),
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => continue,
            }
        }
    }

    async fn frame(&mut self) -> Value {
        self.next().await.expect("a frame before the socket closed")
    }

    /// Skips frames until one of `kind` arrives.
    async fn until(&mut self, kind: &str) -> Value {
        loop {
            let frame = self.frame().await;
            if frame["type"] == kind {
                return frame;
            }
        }
    }

    async fn send(&mut self, frame: Value) {
        self.ws
            .send(Message::text(frame.to_string()))
            .await
            .unwrap();
    }

    async fn close_code(&mut self) -> Option<u16> {
        close_code(&mut self.ws).await
    }
}

fn names(users: &Value) -> Vec<String> {
    let mut names: Vec<String> = users
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

/// Applies a presence frame to a client's view the way the page does: the state replaces it,
/// diffs add and remove (a diff may repeat what the state already showed).
fn apply(view: &mut Vec<String>, frame: &Value) {
    match frame["type"].as_str() {
        Some("presence_state") => *view = names(&frame["users"]),
        Some("presence_diff") => {
            let leaves = names(&frame["leaves"]);
            view.retain(|n| !leaves.contains(n));
            view.extend(names(&frame["joins"]));
            view.sort();
            view.dedup();
        }
        _ => {}
    }
}

/// Applies frames until the view equals `expected` (within 12 s).
async fn wait_for_people(socket: &mut Presence, view: &mut Vec<String>, expected: &[&str]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(12);
    while view != expected {
        match tokio::time::timeout_at(deadline, socket.ws.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => apply(view, &serde_json::from_str(&text).unwrap()),
            Ok(Some(Ok(_))) => {}
            other => panic!("view {view:?}, expected {expected:?}: {other:?}"),
        }
    }
}

/// Applies frames for `wait`, asserting the view never changes.
async fn view_stays(socket: &mut Presence, view: &mut Vec<String>, wait: Duration) {
    let before = view.clone();
    let deadline = tokio::time::Instant::now() + wait;
    while let Ok(Some(Ok(Message::Text(text)))) =
        tokio::time::timeout_at(deadline, socket.ws.next()).await
    {
        apply(view, &serde_json::from_str(&text).unwrap());
        assert_eq!(*view, before, "after {text}");
    }
}

crate::backend_tests! {
    async fn the_first_frame_is_the_state_and_newcomers_arrive_as_diffs(app: TestApp) {
        let room = app.signed_in_room().await;
        let mut ada = Presence::connect(&app, room).await;
        let state = ada.frame().await;
        assert_eq!(state["type"], "presence_state");
        assert_eq!(names(&state["users"]), ["Ada"]);
        assert!(state["users"][0]["id"].is_u64());

        let mut view = names(&state["users"]);

        let grace = app.new_visitor_signed_in("Grace").await;
        let mut grace_socket = Presence::connect(&grace, room).await;
        assert_eq!(names(&grace_socket.frame().await["users"]), ["Ada", "Grace"]);
        // A first diff may still repeat Ada's own join, which the state already showed.
        let diff = loop {
            let diff = ada.until("presence_diff").await;
            apply(&mut view, &diff);
            if names(&diff["joins"]).contains(&"Grace".to_owned()) {
                break diff;
            }
            assert_eq!(names(&diff["joins"]), ["Ada"], "{diff}");
        };
        assert_eq!(diff["leaves"], json!([]));
        wait_for_people(&mut ada, &mut view, &["Ada", "Grace"]).await;

        drop(grace_socket);
        wait_for_people(&mut ada, &mut view, &["Ada"]).await;
    }
}

#[tokio::test]
async fn someone_with_several_tabs_is_listed_once_and_leaves_with_the_last_tab() {
    let app = spawn(Backend::Sqlite).await;
    let room = app.signed_in_room().await;
    let watcher = app.new_visitor_signed_in("Watcher").await;
    let mut watch = Presence::connect(&watcher, room).await;
    let mut view = names(&watch.frame().await["users"]);

    let mut tab1 = Presence::connect(&app, room).await;
    let mut tab2 = Presence::connect(&app, room).await;
    assert_eq!(names(&tab2.frame().await["users"]), ["Ada", "Watcher"]);
    tab1.frame().await;
    wait_for_people(&mut watch, &mut view, &["Ada", "Watcher"]).await;
    view_stays(&mut watch, &mut view, Duration::from_millis(300)).await;

    tab1.ws.close(None).await.unwrap();
    view_stays(&mut watch, &mut view, Duration::from_millis(500)).await;
    tab2.ws.close(None).await.unwrap();
    wait_for_people(&mut watch, &mut view, &["Watcher"]).await;
}

#[tokio::test]
async fn typing_reaches_everyone_else_but_not_the_typists_own_tabs() {
    let app = spawn(Backend::Sqlite).await;
    let room = app.signed_in_room().await;
    let mut ada = Presence::connect(&app, room).await;
    let mut ada_tab2 = Presence::connect(&app, room).await;
    let grace_app = app.new_visitor_signed_in("Grace").await;
    let mut grace = Presence::connect(&grace_app, room).await;
    for socket in [&mut ada, &mut ada_tab2, &mut grace] {
        socket.frame().await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    ada.send(json!({"type": "typing", "typing": true})).await;
    let frame = grace.until("typing").await;
    assert_eq!(frame["typing"], true);
    assert_eq!(frame["user"]["name"], "Ada");
    ada.send(json!({"type": "typing", "typing": false})).await;
    assert_eq!(grace.until("typing").await["typing"], false);

    for own in [&mut ada, &mut ada_tab2] {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(400);
        while let Ok(Some(Ok(Message::Text(text)))) =
            tokio::time::timeout_at(deadline, own.ws.next()).await
        {
            assert!(
                !text.contains("\"typing\""),
                "the typist's own tab got {text}"
            );
        }
    }
}

#[tokio::test]
async fn typing_is_rate_limited_and_expires_by_itself() {
    let app = spawn(Backend::Sqlite).await;
    let room = app.signed_in_room().await;
    let mut ada = Presence::connect(&app, room).await;
    let grace_app = app.new_visitor_signed_in("Grace").await;
    let mut grace = Presence::connect(&grace_app, room).await;
    ada.frame().await;
    grace.frame().await;

    // 40 alternating events in a burst: most are dropped, none are queued for later.
    for i in 0..40 {
        ada.send(json!({"type": "typing", "typing": i % 2 == 0}))
            .await;
    }
    let mut relayed = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(800);
    while let Ok(Some(Ok(Message::Text(text)))) =
        tokio::time::timeout_at(deadline, grace.ws.next()).await
    {
        if text.contains("\"type\":\"typing\"") {
            relayed += 1;
        }
    }
    // Starts are limited to the burst of 5; a stop is relayed only when it clears a start.
    assert!(
        (2..=12).contains(&relayed),
        "{relayed} typing frames relayed for 40 sent"
    );

    // A "typing" whose "stop" never comes clears itself after about five seconds. (A "stop"
    // is never rate-limited, so the burst above cannot leave Ada shown as typing.)
    ada.send(json!({"type": "typing", "typing": false})).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(100), grace.ws.next()).await
    {
    }
    ada.send(json!({"type": "typing", "typing": true})).await;
    let started = tokio::time::Instant::now();
    let frame = grace.until("typing").await;
    assert_eq!(frame["typing"], true, "{frame}");
    // The stop comes about five seconds later: longer than a frame wait, so read it raw.
    let stop = loop {
        let message = tokio::time::timeout(Duration::from_secs(8), grace.ws.next())
            .await
            .expect("the typing indicator expires");
        if let Some(Ok(Message::Text(text))) = message {
            let frame: Value = serde_json::from_str(&text).unwrap();
            if frame["type"] == "typing" && frame["typing"] == false {
                break started.elapsed();
            }
        }
    };
    assert!(
        stop >= Duration::from_secs(4) && stop <= Duration::from_secs(7),
        "{stop:?}"
    );
}

#[tokio::test]
async fn bad_frames_get_a_clear_error_and_the_socket_stays_up() {
    let app = spawn(Backend::Sqlite).await;
    let room = app.signed_in_room().await;
    let mut ada = Presence::connect(&app, room).await;
    ada.frame().await;
    for (frame, reason) in [
        ("not json", "frames must be JSON objects with a type"),
        (r#"{"type":"dance"}"#, "unknown frame type \"dance\""),
        (
            r#"{"type":"typing","typing":"yes"}"#,
            "typing frames need \"typing\": true or false",
        ),
    ] {
        ada.ws.send(Message::text(frame)).await.unwrap();
        assert_eq!(
            ada.until("error").await,
            json!({"type": "error", "reason": reason})
        );
    }
    ada.ws.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    assert_eq!(
        ada.until("error").await["reason"],
        "frames must be JSON text"
    );
    ada.ws
        .send(Message::text("x".repeat(10_000)))
        .await
        .unwrap();
    assert_eq!(ada.close_code().await, Some(1009));
}

#[tokio::test]
async fn the_socket_checks_origin_room_and_session_like_the_cable() {
    let app = spawn(Backend::Sqlite).await;
    let room = app.signed_in_room().await;
    let cases = [
        (
            format!("/rooms/{room}/presence"),
            Some("http://evil.example"),
            403,
        ),
        (format!("/rooms/{room}/presence"), None, 403),
        (
            "/rooms/999999/presence".to_owned(),
            Some(app.address.as_str()),
            404,
        ),
        (
            "/rooms/abc/presence".to_owned(),
            Some(app.address.as_str()),
            404,
        ),
    ];
    for (path, origin, status) in cases {
        match handshake(&app, &path, origin, None).await {
            Err(tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), status, "{path}")
            }
            other => panic!("{path}: expected {status}, got {:?}", other.map(|r| r.1)),
        }
    }
    let stranger = app.new_visitor();
    let mut socket = Presence::connect(&stranger, room).await;
    assert_eq!(
        socket.frame().await,
        json!({"type": "error", "reason": "unauthorized"})
    );
    assert_eq!(socket.close_code().await, Some(1008));
}

#[tokio::test]
async fn a_storm_of_arrivals_reaches_each_client_as_a_few_batched_diffs() {
    let app = spawn(Backend::Sqlite).await;
    let room = app.signed_in_room().await;
    let mut watcher = Presence::connect(&app, room).await;
    watcher.frame().await;

    let mut people = Vec::new();
    for i in 0..200 {
        people.push(app.new_visitor_signed_in(&format!("person{i:03}")).await);
    }
    let sockets =
        futures_util::future::join_all(people.iter().map(|p| Presence::connect(p, room))).await;
    let mut everyone: Vec<String> = (0..200).map(|i| format!("person{i:03}")).collect();
    everyone.push("Ada".into());
    everyone.sort();
    let mut view = vec!["Ada".to_owned()];
    let mut frames = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while view != everyone {
        let frame = tokio::time::timeout_at(deadline, watcher.until("presence_diff"))
            .await
            .expect("all joins arrive");
        frames += 1;
        apply(&mut view, &frame);
    }
    assert!(frames <= 20, "{frames} diff frames for 200 arrivals");
    drop(sockets);
    let mut frames = 0;
    while view != ["Ada"] {
        let frame = tokio::time::timeout_at(
            deadline + Duration::from_secs(5),
            watcher.until("presence_diff"),
        )
        .await
        .expect("all leaves arrive");
        frames += 1;
        apply(&mut view, &frame);
    }
    assert!(frames <= 20, "{frames} diff frames for 200 departures");
    let up: Value = app.get("/up").await.json().await.unwrap();
    assert_eq!(up["presence"]["connections"], 1, "{up}");
}

/// Two processes on one PostgreSQL database: Ada on A, Grace on B.
async fn across_processes(adapter: &str) {
    let channel = format!("tasksync-test-{}", uuid::Uuid::new_v4().simple());
    let cluster = Cluster::new(&[
        ("PUBSUB_ADAPTER", adapter),
        ("PUBSUB_CHANNEL", channel.as_str()),
    ])
    .await;
    let a = cluster.start().await;
    let mut b = cluster.start().await;
    let ada = cluster.client(&a.address);
    let room = ada.signed_in_room().await;
    let mut ada_socket = Presence::connect(&ada, room).await;
    let mut view = names(&ada_socket.frame().await["users"]);
    assert_eq!(view, ["Ada"]);

    let grace = cluster.client(&b.address);
    grace.sign_in("Grace").await;
    let mut grace_socket = Presence::connect(&grace, room).await;
    let mut grace_view = names(&grace_socket.frame().await["users"]);
    wait_for_people(&mut ada_socket, &mut view, &["Ada", "Grace"]).await;
    wait_for_people(&mut grace_socket, &mut grace_view, &["Ada", "Grace"]).await;

    // A clean stop: Grace leaves Ada's list at once.
    let started = std::time::Instant::now();
    let pid = b.child.id().unwrap().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    assert_eq!(
        grace_socket.close_code().await,
        Some(1012),
        "told to reconnect elsewhere"
    );
    wait_for_people(&mut ada_socket, &mut view, &["Ada"]).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let status = tokio::time::timeout(Duration::from_secs(12), b.child.wait())
        .await
        .expect("exits within the shutdown timeout")
        .unwrap();
    assert!(status.success(), "{status:?}");

    // Back again, Grace reconnects; then the process dies without warning.
    let mut b = cluster.start().await;
    let grace = cluster.client(&b.address);
    grace.sign_in("Grace").await;
    let mut grace_socket = Presence::connect(&grace, room).await;
    let mut grace_view = names(&grace_socket.frame().await["users"]);
    wait_for_people(&mut ada_socket, &mut view, &["Ada", "Grace"]).await;
    wait_for_people(&mut grace_socket, &mut grace_view, &["Ada", "Grace"]).await;
    let started = std::time::Instant::now();
    b.child.start_kill().unwrap();
    wait_for_people(&mut ada_socket, &mut view, &["Ada"]).await;
    let took = started.elapsed();
    assert!(
        took <= Duration::from_secs(10),
        "a killed node's people left after {took:?}"
    );
    drop(a);
}

#[tokio::test]
async fn presence_is_shared_across_processes_through_postgres_and_heals_after_stops_and_kills() {
    across_processes("postgres").await;
}

#[tokio::test]
async fn presence_is_shared_across_processes_through_redis_and_heals_after_stops_and_kills() {
    across_processes("redis").await;
}

#[tokio::test]
async fn a_plain_get_of_the_presence_socket_is_a_bad_request() {
    let app = spawn(Backend::Sqlite).await;
    let room = app.signed_in_room().await;
    let res = app
        .client
        .get(app.url(&format!("/rooms/{room}/presence")))
        .header("Origin", &app.address)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
}

// ---- server pings and the idle timeout --------------------------------------------------------

const PING_INTERVAL: Duration = Duration::from_millis(200);
const IDLE_TIMEOUT: Duration = Duration::from_millis(1000);

/// A server that pings presence sockets every 200 ms and closes one silent for 1 s.
async fn spawn_pinging() -> TestApp {
    spawn_with(Backend::Sqlite, |settings| {
        settings.presence_ping_interval_ms = PING_INTERVAL.as_millis() as u64;
        settings.presence_idle_timeout_ms = IDLE_TIMEOUT.as_millis() as u64;
    })
    .await
}

/// Reads `socket` for `wait` as a live client does (tokio-tungstenite answers each ping while
/// it is read), failing if the server closes it; returns the pings seen.
async fn read_for(socket: &mut Presence, wait: Duration) -> usize {
    let deadline = tokio::time::Instant::now() + wait;
    let mut pings = 0;
    loop {
        match tokio::time::timeout_at(deadline, socket.ws.next()).await {
            Err(_) => return pings,
            Ok(Some(Ok(Message::Ping(_)))) => pings += 1,
            Ok(Some(Ok(Message::Text(_) | Message::Pong(_)))) => {}
            other => panic!("the server ended a socket that answers its pings: {other:?}"),
        }
    }
}

/// A presence client that does the WebSocket handshake by hand and then never writes a byte:
/// it answers no ping, as a peer behind a closed laptop lid or a dropped NAT mapping.
struct Unresponsive {
    tcp: TcpStream,
    /// Bytes read past the handshake's response.
    read: Vec<u8>,
}

impl Unresponsive {
    async fn connect(app: &TestApp, room: i64) -> Unresponsive {
        let host = app
            .address
            .strip_prefix("http://")
            .expect("an http address");
        let mut tcp = TcpStream::connect(host).await.expect("connect");
        let request = format!(
            "GET /rooms/{room}/presence HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: {}\r\nCookie: {}\r\n\r\n",
            app.address,
            app.cookie_header().expect("signed in"),
        );
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut read = Vec::new();
        let end = loop {
            if let Some(end) = read.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            let mut chunk = [0; 1024];
            let n = tokio::time::timeout(WAIT, tcp.read(&mut chunk))
                .await
                .expect("a handshake response in time")
                .unwrap();
            assert!(n > 0, "closed during the handshake");
            read.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&read[..end]).into_owned();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        read.drain(..end);
        Unresponsive { tcp, read }
    }

    /// Every frame the server sent, as (opcode, payload), up to and including its close frame.
    async fn frames_until_close(mut self) -> Vec<(u8, Vec<u8>)> {
        let mut frames = Vec::new();
        loop {
            while let Some((frame, len)) = parse_frame(&self.read) {
                self.read.drain(..len);
                let close = frame.0 == 0x8;
                frames.push(frame);
                if close {
                    return frames;
                }
            }
            let mut chunk = [0; 4096];
            let n = tokio::time::timeout(WAIT, self.tcp.read(&mut chunk))
                .await
                .expect("frames in time")
                .expect("read");
            assert!(n > 0, "connection ended without a close frame: {frames:?}");
            self.read.extend_from_slice(&chunk[..n]);
        }
    }
}

/// One unmasked server frame at the start of `bytes`, and its length; `None` if incomplete.
fn parse_frame(bytes: &[u8]) -> Option<((u8, Vec<u8>), usize)> {
    let (&first, &second) = (bytes.first()?, bytes.get(1)?);
    assert_eq!(second & 0x80, 0, "server frames are never masked");
    let (len, header) = match second & 0x7f {
        126 => (
            u16::from_be_bytes(bytes.get(2..4)?.try_into().unwrap()) as usize,
            4,
        ),
        127 => (
            u64::from_be_bytes(bytes.get(2..10)?.try_into().unwrap()) as usize,
            10,
        ),
        len => (len as usize, 2),
    };
    let payload = bytes.get(header..header + len)?;
    Some(((first & 0x0f, payload.to_vec()), header + len))
}

#[tokio::test]
async fn a_client_that_answers_pings_stays_connected_past_the_idle_timeout() {
    let app = spawn_pinging().await;
    let room = app.signed_in_room().await;
    let mut ada = Presence::connect(&app, room).await;
    assert_eq!(ada.frame().await["type"], "presence_state");

    // Three idle timeouts in which Ada sends nothing of her own: only her pongs keep her.
    let pings = read_for(&mut ada, IDLE_TIMEOUT * 3).await;
    assert!(pings >= 5, "{pings} pings in 3 s");

    // Still here, as others see it, and still hearing about them.
    let grace = app.new_visitor_signed_in("Grace").await;
    let mut grace_socket = Presence::connect(&grace, room).await;
    assert_eq!(
        names(&grace_socket.frame().await["users"]),
        ["Ada", "Grace"]
    );
    let diff = ada.until("presence_diff").await;
    assert!(
        names(&diff["joins"]).contains(&"Grace".to_owned()),
        "{diff}"
    );
}

#[tokio::test]
async fn a_client_that_stops_answering_pings_is_closed_and_leaves_the_room() {
    let app = spawn_pinging().await;
    let room = app.signed_in_room().await;
    let grace = app.new_visitor_signed_in("Grace").await;
    let mut grace_socket = Presence::connect(&grace, room).await;
    let mut view = names(&grace_socket.frame().await["users"]);

    let ada = Unresponsive::connect(&app, room).await;
    let silent_since = tokio::time::Instant::now();
    wait_for_people(&mut grace_socket, &mut view, &["Ada", "Grace"]).await;

    // Grace reads (and so answers her pings) all along; Ada never does.
    wait_for_people(&mut grace_socket, &mut view, &["Grace"]).await;
    let gone_after = silent_since.elapsed();
    assert!(
        gone_after >= IDLE_TIMEOUT - PING_INTERVAL,
        "Ada left after {gone_after:?}, before the idle timeout"
    );

    let frames = ada.frames_until_close().await;
    let (first, payload) = &frames[0];
    assert_eq!(*first, 0x1, "text first");
    assert!(String::from_utf8_lossy(payload).contains("presence_state"));
    assert!(
        frames.iter().any(|(opcode, _)| *opcode == 0x9),
        "pings before the close: {frames:?}"
    );
    let (opcode, close) = frames.last().unwrap();
    assert_eq!(*opcode, 0x8);
    assert_eq!(
        u16::from_be_bytes([close[0], close[1]]),
        1001,
        "going away: {:?}",
        String::from_utf8_lossy(&close[2..])
    );

    let up: Value = app.get("/up").await.json().await.unwrap();
    assert_eq!(up["presence"]["connections"], 1, "{up}");
}

#[tokio::test]
async fn clients_see_the_servers_ping_frames() {
    let app = spawn_pinging().await;
    let room = app.signed_in_room().await;
    let mut ada = Presence::connect(&app, room).await;
    ada.frame().await;
    let started = tokio::time::Instant::now();
    let mut pings = 0;
    while pings < 3 {
        match tokio::time::timeout(WAIT, ada.ws.next())
            .await
            .expect("a ping in time")
        {
            Some(Ok(Message::Ping(payload))) => {
                assert!(payload.is_empty(), "{payload:?}");
                pings += 1;
            }
            Some(Ok(_)) => {}
            other => panic!("socket ended: {other:?}"),
        }
    }
    // Three pings take about three intervals: not a burst, not a stall.
    let took = started.elapsed();
    assert!(
        took >= PING_INTERVAL * 2 && took <= PING_INTERVAL * 10,
        "3 pings in {took:?}"
    );
}
