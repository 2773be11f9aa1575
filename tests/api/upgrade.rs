//! Connections that ask for an upgrade leave the HTTP/1 dispatcher (src/socket/upgrade.rs): what the
//! client sends right behind its handshake still reaches the socket, a refused upgrade gets its
//! answer (saying what was wrong) and a closed connection, and a graceful stop still delivers
//! every socket's last frames, and waits for each to finish closing, before the process exits.

use std::time::Duration;

use futures_util::StreamExt as _;
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{
        Message,
        protocol::{
            Role,
            frame::{Frame, coding::Data, coding::OpCode},
        },
    },
};

use crate::{
    cable_client::{Cable, WAIT, identifier, presence, signed_stream_in},
    helpers::{Backend, TestApp, TestDatabase, spawn},
    processes,
};

/// `host:port` of the app.
fn authority(app: &TestApp) -> &str {
    app.address.trim_start_matches("http://")
}

/// Reads until the end of a response head; returns the head and whatever came after it.
async fn read_head(stream: &mut TcpStream) -> (String, Vec<u8>) {
    let mut read = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = read.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = read.split_off(end + 4);
            return (String::from_utf8(read).expect("an ASCII head"), rest);
        }
        let n = tokio::time::timeout(WAIT, stream.read(&mut chunk))
            .await
            .expect("the response head within the wait")
            .expect("read");
        assert!(
            n > 0,
            "connection closed before the end of the head: {read:?}"
        );
        read.extend_from_slice(&chunk[..n]);
    }
}

/// A client's text frame, masked as a client must mask it.
fn masked_text(text: &str) -> Vec<u8> {
    let mut frame = Frame::message(text.as_bytes().to_vec(), OpCode::Data(Data::Text), true);
    frame.header_mut().mask = Some([0x12, 0x34, 0x56, 0x78]);
    let mut bytes = Vec::new();
    frame.format(&mut bytes).expect("frame");
    bytes
}

async fn next_json(ws: &mut WebSocketStream<TcpStream>) -> Value {
    loop {
        let message = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a frame within the wait")
            .expect("the socket is open")
            .expect("a frame");
        if let Message::Text(text) = message {
            let value: Value = serde_json::from_str(&text).expect("JSON");
            if value["type"] != "ping" {
                return value;
            }
        }
    }
}

#[tokio::test]
async fn a_command_sent_in_the_same_packet_as_the_handshake_is_answered() {
    let app = spawn(Backend::Sqlite).await;
    let room = app.signed_in_room().await;
    let id = identifier(&signed_stream_in(
        &app.get_html(&format!("/rooms/{room}")).await,
    ));
    let subscribe = json!({"command": "subscribe", "identifier": id}).to_string();
    let mut request = format!(
        "GET /cable HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Protocol: actioncable-v1-json\r\nOrigin: {origin}\r\nCookie: {cookie}\r\n\r\n",
        host = authority(&app),
        origin = app.address,
        cookie = app.cookie_header().expect("signed in"),
    )
    .into_bytes();
    request.extend(masked_text(&subscribe));

    let mut stream = TcpStream::connect(authority(&app)).await.unwrap();
    stream.write_all(&request).await.unwrap();
    let (head, rest) = read_head(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    // The handshake's headers and the request id, none of a page's: a 101 has no body for a
    // Content-Security-Policy or X-Frame-Options to govern.
    let head = head.to_ascii_lowercase();
    assert!(head.contains("\r\nx-request-id: "), "{head}");
    for page_only in [
        "content-security-policy",
        "x-frame-options",
        "x-content-type-options",
        "referrer-policy",
    ] {
        assert!(!head.contains(page_only), "{head}");
    }
    let mut ws = WebSocketStream::from_partially_read(stream, rest, Role::Client, None).await;
    assert_eq!(next_json(&mut ws).await["type"], "welcome");
    assert_eq!(
        next_json(&mut ws).await,
        json!({"type": "confirm_subscription", "identifier": id})
    );
}

#[tokio::test]
async fn a_handshake_that_is_not_taken_is_answered_and_the_connection_closed() {
    let app = spawn(Backend::Sqlite).await;
    const KEY: &str = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    let host = authority(&app);
    let origin = &app.address;
    for (request, status, says) in [
        // A WebSocket handshake from a foreign page is refused before the upgrade.
        (
            format!(
                "GET /cable HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\n\
                 Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n{KEY}\
                 Origin: http://evil.example\r\n\r\n"
            ),
            "HTTP/1.1 403",
            "This origin may not open a socket here.",
        ),
        // A handshake to a path that has no socket gets that path's answer.
        (
            format!(
                "GET /up HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\n\
                 Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n{KEY}\r\n"
            ),
            "HTTP/1.1 200",
            "\"status\":\"ok\"",
        ),
        // A broken handshake is told what is wrong with it.
        (
            format!(
                "GET /cable HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\
                 Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n{KEY}\
                 Origin: {origin}\r\n\r\n"
            ),
            "HTTP/1.1 400",
            "a WebSocket upgrade needs Connection: Upgrade",
        ),
        (
            format!(
                "GET /cable HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\n\
                 Upgrade: websocket\r\n{KEY}Origin: {origin}\r\n\r\n"
            ),
            "HTTP/1.1 400",
            "a WebSocket upgrade needs Sec-WebSocket-Version",
        ),
        (
            format!(
                "GET /cable HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\n\
                 Upgrade: websocket\r\nSec-WebSocket-Version: 8\r\n{KEY}\
                 Origin: {origin}\r\n\r\n"
            ),
            "HTTP/1.1 400",
            "only WebSocket version 13 is spoken here",
        ),
        (
            format!(
                "GET /cable HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\n\
                 Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
                 Origin: {origin}\r\n\r\n"
            ),
            "HTTP/1.1 400",
            "the Sec-WebSocket-Key is not valid",
        ),
    ] {
        let mut stream = TcpStream::connect(host).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = Vec::new();
        tokio::time::timeout(WAIT, stream.read_to_end(&mut response))
            .await
            .unwrap_or_else(|_| panic!("no close after the answer to {request}"))
            .unwrap();
        let response = String::from_utf8_lossy(&response);
        assert!(response.starts_with(status), "{request}\n->\n{response}");
        assert!(response.contains(says), "{request}\n->\n{response}");
        assert!(
            response
                .to_ascii_lowercase()
                .contains("\r\nconnection: close\r\n"),
            "{response}"
        );
    }
    // The server goes on serving.
    assert!(app.get("/up").await.status().is_success());
}

#[tokio::test]
async fn a_graceful_stop_tells_every_socket_why_before_the_process_exits() {
    let (database, url) = TestDatabase::create(Backend::Sqlite).await;
    let mut server = processes::start(&[("DATABASE_URL", &url)]).await;
    let app = TestApp::at(server.address.clone(), Backend::Sqlite, database.into());
    let room = app.signed_in_room().await;
    let mut cables = Vec::new();
    let mut presences = Vec::new();
    for _ in 0..120 {
        let mut cable = Cable::connect(&app).await;
        assert_eq!(cable.next().await["type"], "welcome");
        cables.push(cable);
        let mut presence = presence(&app, room).await;
        let first = tokio::time::timeout(WAIT, presence.next()).await.unwrap();
        assert!(matches!(first, Some(Ok(Message::Text(_)))), "{first:?}");
        presences.push(presence);
    }

    let pid = server.child.id().expect("running").to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());

    for cable in &mut cables {
        assert_eq!(
            cable.next().await,
            json!({"type": "disconnect", "reason": "server_restart", "reconnect": true})
        );
    }
    for presence in &mut presences {
        let close = loop {
            match tokio::time::timeout(WAIT, presence.next()).await.unwrap() {
                Some(Ok(Message::Close(frame))) => break frame,
                Some(Ok(_)) => continue,
                other => panic!("expected a close frame, got {other:?}"),
            }
        };
        assert_eq!(close.map(|f| u16::from(f.code)), Some(1012));
    }
    let status = tokio::time::timeout(Duration::from_secs(20), server.child.wait())
        .await
        .expect("the process exits")
        .unwrap();
    assert!(status.success(), "{status}");
}

/// The server's last frames are sent and the connection shut for writing; the server then waits
/// (up to a second) for the client to close its side. A stop that did not wait for its sockets
/// would end the process, and every socket still closing with it, right after the frames.
#[tokio::test]
async fn a_graceful_stop_waits_for_a_socket_to_finish_closing() {
    let (database, url) = TestDatabase::create(Backend::Sqlite).await;
    let mut server = processes::start(&[("DATABASE_URL", &url)]).await;
    let app = TestApp::at(server.address.clone(), Backend::Sqlite, database.into());
    app.sign_in("Ada").await;
    let request = format!(
        "GET /cable HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Protocol: actioncable-v1-json\r\nOrigin: {origin}\r\nCookie: {cookie}\r\n\r\n",
        host = authority(&app),
        origin = app.address,
        cookie = app.cookie_header().expect("signed in"),
    );
    let mut stream = TcpStream::connect(authority(&app)).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let (head, mut read) = read_head(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");

    let pid = server.child.id().expect("running").to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    // Everything up to the server's end of the connection, without answering its close.
    tokio::time::timeout(WAIT, stream.read_to_end(&mut read))
        .await
        .expect("the server shuts its side within the wait")
        .unwrap();
    let frames = server_frames(&read);
    let texts: Vec<Value> = frames
        .iter()
        .filter(|(opcode, _)| *opcode == 0x1)
        .map(|(_, payload)| serde_json::from_slice(payload).expect("JSON"))
        .collect();
    assert_eq!(
        texts.last(),
        Some(&json!({"type": "disconnect", "reason": "server_restart", "reconnect": true})),
        "{texts:?}"
    );
    let (opcode, payload) = frames.last().expect("frames");
    assert_eq!(*opcode, 0x8, "a close frame ends the stream: {frames:?}");
    assert_eq!(payload[..2], 1012u16.to_be_bytes(), "{payload:?}");

    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "the process waits while a socket is still closing"
    );
    drop(stream);
    let status = tokio::time::timeout(Duration::from_secs(10), server.child.wait())
        .await
        .expect("the process exits once the socket has closed")
        .unwrap();
    assert!(status.success(), "{status}");
}

/// The frames a server sent (unmasked, unfragmented), as opcode and payload.
fn server_frames(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut frames = Vec::new();
    while let [first, second, rest @ ..] = bytes {
        let (len, rest) = match second & 0x7f {
            126 => (
                usize::from(u16::from_be_bytes([rest[0], rest[1]])),
                &rest[2..],
            ),
            127 => panic!("a frame too long for a test"),
            len => (usize::from(len), rest),
        };
        frames.push((first & 0x0f, rest[..len].to_vec()));
        bytes = &rest[len..];
    }
    assert!(bytes.is_empty(), "a partial frame: {bytes:?}");
    frames
}
