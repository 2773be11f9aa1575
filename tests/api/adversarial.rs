//! Hostile input against the real server: requests, frames and cookies no browser of ours would
//! send. Every case asserts the exact answer, then that the room's data is byte for byte what it
//! was and that the server still serves someone else. Cases already covered elsewhere are not
//! repeated here; SECURITY.md lists where they live.

use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use reqwest::{Method, StatusCode, header};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_tungstenite::tungstenite::{
    self, Message,
    protocol::frame::{Frame, coding::Data, coding::OpCode},
};

use crate::{
    cable_client::{
        ACTIONCABLE_PROTOCOLS, Cable, Socket, WAIT, close_code, handshake, identifier, presence,
        signed_stream_in,
    },
    helpers::{Backend, TURBO_ACCEPT, TestApp, spawn, spawn_with},
};

/// A room with one task that has been changed once (lock version 1), seen by Ada.
struct Fixture {
    app: TestApp,
    room: i64,
    task: i64,
}

async fn fixture(app: TestApp) -> Fixture {
    let room = app.signed_in_room().await;
    let task = app.create_task(room, "Target").await;
    let res = app
        .post_turbo(
            &format!("/rooms/{room}/tasks/{task}"),
            &[
                ("_method", "patch"),
                ("task[notes]", "Original notes"),
                ("task[lock_version]", "0"),
            ],
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    Fixture { app, room, task }
}

/// The room page without the per-render CSRF tokens: everything stored about the room (name,
/// tasks, lock versions, counts) and where its stream stands, so a broadcast shows too.
async fn snapshot(app: &TestApp, room: i64) -> String {
    let mut page = app.get_html(&format!("/rooms/{room}")).await;
    for marker in [
        "name=\"authenticity_token\" value=\"",
        "name=\"csrf-token\" content=\"",
    ] {
        let mut from = 0;
        while let Some(at) = page[from..].find(marker) {
            let start = from + at + marker.len();
            let end = start + page[start..].find('"').unwrap();
            page.replace_range(start..end, "");
            from = start;
        }
    }
    page
}

/// Someone else can still sign in, open the room and reach the health check.
async fn still_serves(app: &TestApp, room: i64) {
    let other = app.new_visitor_signed_in("Bystander").await;
    assert_eq!(
        other.get(&format!("/rooms/{room}")).await.status(),
        StatusCode::OK
    );
    assert_eq!(other.get("/up").await.status(), StatusCode::OK);
}

/// A request to throw at the server. `{room}` and `{task}` in paths are filled in.
enum Req {
    /// A form post with a valid CSRF token, as Turbo sends it.
    Form(&'static str, Vec<(&'static str, String)>),
    /// Exactly this body, with a valid token in the X-CSRF-Token header.
    Raw(Method, &'static str, &'static str, Vec<u8>),
}

fn form(path: &'static str, fields: &[(&'static str, &str)]) -> Req {
    Req::Form(
        path,
        fields.iter().map(|(k, v)| (*k, (*v).to_owned())).collect(),
    )
}

fn raw_form(path: &'static str, body: &[u8]) -> Req {
    Req::Raw(
        Method::POST,
        path,
        "application/x-www-form-urlencoded",
        body.to_vec(),
    )
}

async fn send(f: &Fixture, req: &Req) -> reqwest::Response {
    let fill = |p: &str| {
        p.replace("{room}", &f.room.to_string())
            .replace("{task}", &f.task.to_string())
    };
    match req {
        Req::Form(path, fields) => {
            let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
            f.app.post_turbo(&fill(path), &fields).await
        }
        Req::Raw(method, path, content_type, body) => {
            let token = f.app.csrf().await;
            f.app
                .client
                .request(method.clone(), f.app.url(&fill(path)))
                .header("X-CSRF-Token", token)
                .header(header::ACCEPT, TURBO_ACCEPT)
                .header(header::CONTENT_TYPE, *content_type)
                .body(body.clone())
                .send()
                .await
                .unwrap()
        }
    }
}

/// The HTTP cases: (what, request, exact status, a phrase the answer must contain).
fn http_cases() -> Vec<(&'static str, Req, u16, &'static str)> {
    let t = "/rooms/{room}/tasks/{task}";
    let emoji_title = "😀".repeat(201);
    let fields_flood = "x=&".repeat(80_000);
    vec![
        // Methods.
        ("PUT override on the task list", form("/rooms/{room}/tasks", &[("_method", "put"), ("task[title]", "x")]), 405, ""),
        ("GET smuggled as a method override", form("/rooms/{room}/tasks", &[("_method", "get"), ("task[title]", "x")]), 400, "unknown _method"),
        ("override with a NUL byte", form(t, &[("_method", "patch\0"), ("task[done]", "true"), ("task[lock_version]", "1")]), 400, "unknown _method"),
        ("DELETE a room", form("/rooms/{room}", &[("_method", "delete")]), 405, ""),
        ("PATCH the room list", form("/rooms", &[("_method", "patch"), ("room[name]", "x")]), 405, ""),
        ("POST to a task without an override", form(t, &[("task[title]", "x")]), 405, ""),
        ("a real PUT request", Req::Raw(Method::PUT, t, "application/x-www-form-urlencoded", b"task%5Btitle%5D=x".to_vec()), 405, ""),
        // Missing, oversized and garbled fields.
        ("a task without its title field", form("/rooms/{room}/tasks", &[("task[notes]", "n")]), 400, "task[title] field is missing"),
        ("an escape sequence in a title", form("/rooms/{room}/tasks", &[("task[title]", "\u{1b}[31mred")]), 422, "Title contains control characters"),
        ("a CR LF in a title", form(t, &[("_method", "patch"), ("task[title]", "a\r\nSet-Cookie: x=y"), ("task[lock_version]", "1")]), 422, "Title contains control characters"),
        ("a NUL in the notes", form("/rooms/{room}/tasks", &[("task[title]", "ok"), ("task[notes]", "a\0b")]), 422, "Notes contains control characters"),
        ("201 four-byte characters in a title", Req::Form("/rooms/{room}/tasks", vec![("task[title]", emoji_title)]), 422, "Title is too long"),
        ("a room name of 81 characters", Req::Form("/rooms/{room}", vec![("_method", "patch".into()), ("room[name]", "r".repeat(81))]), 422, "Name is too long"),
        ("a blank room name", form("/rooms/{room}", &[("_method", "patch"), ("room[name]", " \t ")]), 422, "Name can&#x27;t be blank"),
        ("a bell in a room name", form("/rooms/{room}", &[("_method", "patch"), ("room[name]", "ding\u{7}")]), 422, "Name contains control characters"),
        // Encodings.
        ("invalid UTF-8 in the notes", raw_form("/rooms/{room}/tasks", b"task%5Btitle%5D=ok&task%5Bnotes%5D=%FF"), 400, "form fields must be UTF-8"),
        ("invalid UTF-8 in a field name", raw_form("/rooms/{room}/tasks", b"task%5Btitle%5D=ok&%C3%28=x"), 400, "form fields must be UTF-8"),
        ("an overlong encoding of '<'", raw_form("/rooms/{room}/tasks", b"task%5Btitle%5D=%C0%BCscript"), 400, "form fields must be UTF-8"),
        ("an encoded UTF-16 surrogate", raw_form("/rooms/{room}/tasks", b"task%5Btitle%5D=%ED%A0%80"), 400, "form fields must be UTF-8"),
        ("raw invalid UTF-8 bytes, unescaped", raw_form("/rooms/{room}/tasks", b"task%5Btitle%5D=\xff\xfe"), 400, "form fields must be UTF-8"),
        ("80,000 empty fields and no title", raw_form("/rooms/{room}/tasks", fields_flood.as_bytes()), 400, "task[title] field is missing"),
        ("a multipart body", Req::Raw(Method::POST, "/rooms/{room}/tasks", "multipart/form-data; boundary=x", b"--x\r\nContent-Disposition: form-data; name=\"task[title]\"\r\n\r\nmp\r\n--x--\r\n".to_vec()), 400, "task[title] field is missing"),
        ("a form body labelled as plain text", Req::Raw(Method::POST, "/rooms/{room}/tasks", "text/plain", b"task%5Btitle%5D=x".to_vec()), 400, "task[title] field is missing"),
        // Numbers and ids.
        ("a task id beyond i64", form("/rooms/{room}/tasks/99999999999999999999", &[("_method", "delete")]), 404, "doesn't exist"),
        ("a negative task id", form("/rooms/{room}/tasks/-1", &[("_method", "delete")]), 404, ""),
        ("task id zero", form("/rooms/{room}/tasks/0", &[("_method", "patch"), ("task[done]", "true"), ("task[lock_version]", "0")]), 404, ""),
        ("a task id with a sign", form("/rooms/{room}/tasks/+1", &[("_method", "delete")]), 404, ""),
        ("a fractional task id", form("/rooms/{room}/tasks/1.0", &[("_method", "delete")]), 404, ""),
        ("a negative room id", form("/rooms/-5/tasks", &[("task[title]", "x")]), 404, ""),
        ("i64::MAX as a room id", form("/rooms/9223372036854775807/tasks", &[("task[title]", "x")]), 404, ""),
        ("a lock version beyond u64", form(t, &[("_method", "patch"), ("task[title]", "x"), ("task[lock_version]", "18446744073709551616")]), 400, "task[lock_version] is not valid"),
        ("a lock version in exponent form", form(t, &[("_method", "patch"), ("task[title]", "x"), ("task[lock_version]", "1e0")]), 400, "task[lock_version] is not valid"),
        // Optimistic locking.
        ("a stale lock version", form(t, &[("_method", "patch"), ("task[title]", "Stale"), ("task[lock_version]", "0")]), 409, "changed this task while you were working on it"),
        ("a lock version from the future", form(t, &[("_method", "patch"), ("task[title]", "Future"), ("task[lock_version]", "999")]), 409, "changed this task while you were working on it"),
        ("i64::MAX as a lock version", form(t, &[("_method", "patch"), ("task[done]", "true"), ("task[lock_version]", "922337203685477580")]), 409, ""),
    ]
}

crate::backend_tests! {
    async fn hostile_requests_get_exact_answers_and_change_nothing(app: TestApp) {
        let f = fixture(app).await;
        let before = snapshot(&f.app, f.room).await;
        for (what, req, status, phrase) in http_cases() {
            let res = send(&f, &req).await;
            assert_eq!(res.status().as_u16(), status, "{what}");
            let body = res.text().await.unwrap();
            assert!(body.contains(phrase), "{what}: wanted {phrase:?} in {body}");
            assert_eq!(snapshot(&f.app, f.room).await, before, "{what} changed the room");
            still_serves(&f.app, f.room).await;
        }
    }

    async fn double_posts_do_their_work_once(app: TestApp) {
        let f = fixture(app).await;
        let path = format!("/rooms/{}/tasks/{}", f.room, f.task);
        let toggle = [("_method", "patch"), ("task[done]", "true"), ("task[lock_version]", "1")];
        assert_eq!(f.app.post_turbo(&path, &toggle).await.status(), StatusCode::OK);
        let clear = format!("/rooms/{}/tasks/completed", f.room);
        assert_eq!(f.app.post_turbo(&clear, &[("_method", "delete")]).await.status(), StatusCode::OK);
        let after_first = snapshot(&f.app, f.room).await;
        // The second clear finds nothing to remove; the second delete finds no task.
        assert_eq!(f.app.post_turbo(&clear, &[("_method", "delete")]).await.status(), StatusCode::OK);
        let res = f.app.post_turbo(&path, &[("_method", "delete")]).await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
        let after_second = snapshot(&f.app, f.room).await;
        // The repeated clear broadcasts its (empty) removal, so only the stream position moves.
        assert_eq!(without_position(&after_second), without_position(&after_first));
        assert!(f.app.task_ids(f.room).await.is_empty());
        still_serves(&f.app, f.room).await;
    }

    async fn markup_in_every_user_text_is_inert_in_pages_and_streams(app: TestApp) {
        let room = app.signed_in_room().await;
        let signed = signed_stream_in(&app.get_html(&format!("/rooms/{room}")).await);
        let mut cable = Cable::subscribed(&app, &identifier(&signed)).await;

        let eve = app.new_visitor_signed_in(XSS_NAME).await;
        let res = eve
            .post_turbo(&format!("/rooms/{room}/tasks"), &[("task[title]", XSS_TITLE), ("task[notes]", XSS_NOTES)])
            .await;
        assert_eq!(res.status(), StatusCode::OK);
        let response = res.text().await.unwrap();
        let frame = cable.next().await;
        let streamed = frame["message"].as_str().unwrap().to_owned();
        let res = eve
            .post_turbo(&format!("/rooms/{room}"), &[("_method", "patch"), ("room[name]", XSS_ROOM)])
            .await;
        assert_eq!(res.status(), StatusCode::OK);
        let renamed = cable.next().await["message"].as_str().unwrap().to_owned();

        let page = app.get_html(&format!("/rooms/{room}")).await;
        let eves_page = eve.get_html("/rooms").await;
        for (where_, html) in [("response", &response), ("stream", &streamed), ("rename stream", &renamed), ("page", &page), ("index", &eves_page)] {
            assert_inert(where_, html);
        }
        assert!(page.contains("Last changed by &lt;img src=x onerror=alert(&#x27;name&#x27;)&gt;"), "{page}");
        assert!(eves_page.contains("Signed in as <strong>&lt;img src=x onerror=alert(&#x27;name&#x27;)&gt;</strong>"));
        assert!(streamed.contains("&lt;&#x2F;textarea&gt;&lt;script&gt;alert(&#x27;notes&#x27;)"), "{streamed}");
    }
}

const XSS_NAME: &str = "<img src=x onerror=alert('name')>";
const XSS_TITLE: &str = "\"><script>alert('title')</script>";
const XSS_NOTES: &str = "</textarea><script>alert('notes')</script>";
const XSS_ROOM: &str = "<svg onload=alert('room')>";

/// No payload survives as markup: no live tag or handler from user text anywhere.
fn assert_inert(where_: &str, html: &str) {
    for live in [
        "<script>alert",
        "<img src=x",
        "<svg onload",
        "\"><script",
        "</textarea><script",
    ] {
        assert!(
            !html.contains(live),
            "{where_} carries {live:?} live: {html}"
        );
    }
}

fn without_position(page: &str) -> String {
    page.split_whitespace()
        .filter(|w| !w.starts_with("data-offset=") && !w.starts_with("data-epoch="))
        .collect::<Vec<_>>()
        .join(" ")
}

#[tokio::test]
async fn markup_in_names_reaches_presence_frames_as_plain_json_strings() {
    let app = spawn(Backend::Sqlite).await;
    let room = app.signed_in_room().await;
    let mut ada = presence(&app, room).await;
    assert_eq!(next_json(&mut ada).await["type"], "presence_state");
    let eve = app.new_visitor_signed_in(XSS_NAME).await;
    let mut eves = presence(&eve, room).await;
    next_json(&mut eves).await;
    let diff = until(&mut ada, "presence_diff").await;
    // The frame carries the name as data; static/presence.js renders it with textContent only.
    let joined: Vec<&Value> = diff["joins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| &u["name"])
        .collect();
    assert!(joined.contains(&&json!(XSS_NAME)), "{diff}");
    send_text(&mut eves, r#"{"type":"typing","typing":true}"#).await;
    let typing = until(&mut ada, "typing").await;
    assert_eq!(typing["user"]["name"], XSS_NAME);
    // A hostile frame type comes back as data in a JSON string, never as markup.
    send_text(&mut eves, r#"{"type":"<script>alert(1)</script>"}"#).await;
    assert_eq!(
        until(&mut eves, "error").await,
        json!({"type": "error", "reason": "unknown frame type \"<script>alert(1)</script>\""})
    );
    still_serves(&app, room).await;
}

// ---- the cable -------------------------------------------------------------------------------

async fn subscribed(app: &TestApp, room: i64) -> (String, Cable) {
    let signed = signed_stream_in(&app.get_html(&format!("/rooms/{room}")).await);
    let mut cable = Cable::connect(app).await;
    assert_eq!(cable.next().await, json!({"type": "welcome"}));
    let id = identifier(&signed);
    assert_eq!(cable.subscribe(&id).await["type"], "confirm_subscription");
    (id, cable)
}

/// A text frame whose payload is not UTF-8, which tungstenite's `Message::Text` cannot carry.
fn invalid_utf8_text() -> Message {
    Message::Frame(Frame::message(
        vec![b'{', 0xff, 0xfe, b'}'],
        OpCode::Data(Data::Text),
        true,
    ))
}

#[tokio::test]
async fn hostile_cable_frames_are_dropped_and_the_socket_keeps_working() {
    let app = spawn(Backend::Sqlite).await;
    let f = fixture(app).await;
    let (id, mut cable) = subscribed(&f.app, f.room).await;
    let before = snapshot(&f.app, f.room).await;
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    // (what, frame, the exact reply: none means logged and dropped)
    let cases: Vec<(&str, String, Option<Value>)> = vec![
        (
            "an identifier that is a number",
            r#"{"command":"subscribe","identifier":7}"#.into(),
            None,
        ),
        (
            "no command at all",
            json!({"identifier": id}).to_string(),
            None,
        ),
        ("nesting 5,000 deep", deep, None),
        // serde would read a struct from a sequence too; commands are objects only.
        (
            "the command as a positional array",
            json!(["subscribe", id]).to_string(),
            None,
        ),
        (
            "a lone surrogate escape",
            r#"{"command":"subscribe","identifier":"\ud800"}"#.into(),
            None,
        ),
        (
            "a command in upper case",
            json!({"command": "SUBSCRIBE", "identifier": "{}"}).to_string(),
            None,
        ),
        (
            "a duplicated command key",
            format!(
                r#"{{"command":"subscribe","command":"unsubscribe","identifier":{}}}"#,
                json!(id)
            ),
            None,
        ),
        (
            "an unknown key holding a number beyond f64",
            r#"{"command":"subscribe","identifier":"x","n":1e999999}"#.into(),
            Some(json!({"identifier": "x", "type": "reject_subscription"})),
        ),
        (
            "an identifier of 15,000 bytes",
            json!({"command": "subscribe", "identifier": "i".repeat(15_000)}).to_string(),
            Some(json!({"identifier": "i".repeat(15_000), "type": "reject_subscription"})),
        ),
    ];
    for (what, text, reply) in cases {
        cable.send_text(text).await;
        match reply {
            Some(reply) => assert_eq!(cable.next().await, reply, "{what}"),
            None => cable.expect_silence(Duration::from_millis(150)).await,
        }
        assert_eq!(snapshot(&f.app, f.room).await, before, "{what}");
        still_serves(&f.app, f.room).await;
    }
    // The subscription made before them still delivers.
    f.app.create_task(f.room, "Still subscribed").await;
    let frame = cable.next().await;
    assert!(
        frame["message"]
            .as_str()
            .unwrap()
            .contains("Still subscribed"),
        "{frame}"
    );
}

#[tokio::test]
async fn a_text_frame_that_is_not_utf8_closes_only_that_cable() {
    let app = spawn(Backend::Sqlite).await;
    let room = app.signed_in_room().await;
    let (_id, mut bad) = subscribed(&app, room).await;
    let (_id, mut good) = subscribed(&app, room).await;
    bad.ws.send(invalid_utf8_text()).await.unwrap();
    assert_eq!(bad.close_code().await, Some(1002));
    app.create_task(room, "Others unaffected").await;
    assert!(
        good.next().await["message"]
            .as_str()
            .unwrap()
            .contains("Others unaffected")
    );
}

#[tokio::test]
async fn stream_names_forged_or_replayed_for_another_room_are_rejected() {
    let app = spawn(Backend::Sqlite).await;
    let room = app.signed_in_room().await;
    let other_room = app.create_room("Other").await;
    let mut cable = Cable::connect(&app).await;
    cable.next().await;
    let cookie = app.cookie_header().unwrap();
    let session_value = cookie.split_once('=').unwrap().1.to_owned();
    let other_secret = {
        let other = spawn_with(Backend::Sqlite, |s| {
            s.secret_key_base = Some("another-secret-0123456789abcdef0123456789".into())
        })
        .await;
        let room = other.signed_in_room().await;
        signed_stream_in(&other.get_html(&format!("/rooms/{room}")).await)
    };
    for (what, name) in [
        ("a signed session cookie as a stream name", session_value),
        ("a name signed by another deployment's secret", other_secret),
        ("an empty name", String::new()),
        ("a name of dashes", "-".repeat(45)),
        ("a name with a NUL", "cm9vbXM6MQ\0--x".into()),
    ] {
        let id = identifier(&name);
        assert_eq!(
            cable.subscribe(&id).await,
            json!({"identifier": id, "type": "reject_subscription"}),
            "{what}"
        );
    }
    // Room A's name, sent with room B's stream position, still subscribes to room A only.
    let page_b = app.get_html(&format!("/rooms/{other_room}")).await;
    let offset_b = attribute(&page_b, "data-offset").unwrap_or_default();
    let signed_a = signed_stream_in(&app.get_html(&format!("/rooms/{room}")).await);
    let id = json!({"channel": "Turbo::StreamsChannel", "signed_stream_name": signed_a, "offset": offset_b, "room": other_room}).to_string();
    assert_eq!(cable.subscribe(&id).await["type"], "confirm_subscription");
    app.create_task(other_room, "For B only").await;
    app.create_task(room, "For A").await;
    let frame = cable.next().await;
    assert!(
        frame["message"].as_str().unwrap().contains("For A"),
        "{frame}"
    );
    cable.expect_silence(Duration::from_millis(300)).await;
    still_serves(&app, room).await;
}

fn attribute(html: &str, name: &str) -> Option<String> {
    let marker = format!("{name}=\"");
    let start = html.find(&marker)? + marker.len();
    Some(html[start..].split('"').next()?.to_owned())
}

#[tokio::test]
async fn a_subscribe_flood_is_answered_in_order_and_leaves_nothing_behind() {
    let app = spawn(Backend::Sqlite).await;
    let room = app.signed_in_room().await;
    let mut cable = Cable::connect(&app).await;
    cable.next().await;
    for n in 0..500 {
        let id = json!({"channel": "Turbo::StreamsChannel", "signed_stream_name": format!("forged{n}--x")}).to_string();
        cable
            .send(json!({"command": "subscribe", "identifier": id}))
            .await;
    }
    for n in 0..500 {
        let reply = cable.next().await;
        assert_eq!(reply["type"], "reject_subscription", "{n}");
        assert!(
            reply["identifier"]
                .as_str()
                .unwrap()
                .contains(&format!("forged{n}--x"))
        );
    }
    let up: Value = app.get("/up").await.json().await.unwrap();
    assert_eq!(up["cable"]["subscriptions"], 0, "{up}");
    let (_id, mut other) = subscribed(&app.new_visitor_signed_in("Grace").await, room).await;
    app.create_task(room, "After the flood").await;
    assert!(
        other.next().await["message"]
            .as_str()
            .unwrap()
            .contains("After the flood")
    );
}

#[tokio::test]
async fn a_reconnect_storm_on_both_sockets_leaves_no_connection_behind() {
    let app = spawn(Backend::Sqlite).await;
    let room = app.signed_in_room().await;
    let id = identifier(&signed_stream_in(
        &app.get_html(&format!("/rooms/{room}")).await,
    ));
    for _ in 0..3 {
        let storm = (0..60).map(|i| {
            let (app, id) = (&app, id.clone());
            async move {
                if i % 2 == 0 {
                    let mut cable = Cable::connect(app).await;
                    cable
                        .send(json!({"command": "subscribe", "identifier": id}))
                        .await;
                    // Half are dropped without a close frame, as a crashed tab would.
                    if i % 4 == 0 {
                        let _ = cable.ws.close(None).await;
                    }
                } else {
                    let ws = presence(app, room).await;
                    drop(ws);
                }
            }
        });
        futures_util::future::join_all(storm).await;
    }
    let mut up: Value = Value::Null;
    for _ in 0..50 {
        up = app.get("/up").await.json().await.unwrap();
        if up["cable"]["connections"] == 0 && up["presence"]["connections"] == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(up["cable"]["connections"], 0, "{up}");
    assert_eq!(up["cable"]["subscriptions"], 0, "{up}");
    assert_eq!(up["presence"]["connections"], 0, "{up}");
    still_serves(&app, room).await;
}

// ---- presence --------------------------------------------------------------------------------

async fn next_json(ws: &mut Socket) -> Value {
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a frame in time")
        {
            Some(Ok(Message::Text(text))) => return serde_json::from_str(&text).unwrap(),
            Some(Ok(_)) => continue,
            other => panic!("socket ended: {other:?}"),
        }
    }
}

async fn until(ws: &mut Socket, kind: &str) -> Value {
    loop {
        let frame = next_json(ws).await;
        if frame["type"] == kind {
            return frame;
        }
    }
}

async fn send_text(ws: &mut Socket, text: &str) {
    ws.send(Message::text(text)).await.unwrap();
}

#[tokio::test]
async fn hostile_presence_frames_get_exact_errors_and_the_room_is_untouched() {
    let app = spawn(Backend::Sqlite).await;
    let f = fixture(app).await;
    let before = snapshot(&f.app, f.room).await;
    let mut ws = presence(&f.app, f.room).await;
    assert_eq!(next_json(&mut ws).await["type"], "presence_state");
    let malformed = "frames must be JSON objects with a type";
    let bad_typing = "typing frames need \"typing\": true or false";
    // Under the 4 KiB frame limit, far beyond serde_json's recursion limit of 128.
    let deep = format!("{}{}", "[".repeat(1500), "]".repeat(1500));
    for (what, frame, reason) in [
        ("a null type", r#"{"type":null}"#.to_owned(), malformed),
        ("a numeric type", r#"{"type":7}"#.to_owned(), malformed),
        ("nesting 1,500 deep", deep, malformed),
        (
            "typing as a number",
            r#"{"type":"typing","typing":1}"#.to_owned(),
            bad_typing,
        ),
        (
            "typing missing",
            r#"{"type":"typing"}"#.to_owned(),
            bad_typing,
        ),
        (
            "typing as a huge number",
            r#"{"type":"typing","typing":1e999999}"#.to_owned(),
            malformed,
        ),
        ("an empty object", "{}".to_owned(), malformed),
        ("an empty frame", String::new(), malformed),
    ] {
        send_text(&mut ws, &frame).await;
        assert_eq!(
            next_json(&mut ws).await,
            json!({"type": "error", "reason": reason}),
            "{what}"
        );
    }
    assert_eq!(snapshot(&f.app, f.room).await, before);
    still_serves(&f.app, f.room).await;
    // The socket is still a working presence socket.
    send_text(&mut ws, r#"{"type":"typing","typing":false}"#).await;
    let mut grace = presence(&f.app.new_visitor_signed_in("Grace").await, f.room).await;
    let state = next_json(&mut grace).await;
    assert_eq!(state["users"].as_array().unwrap().len(), 2, "{state}");
}

#[tokio::test]
async fn a_presence_frame_that_is_not_utf8_closes_only_that_socket() {
    let app = spawn(Backend::Sqlite).await;
    let room = app.signed_in_room().await;
    let mut bad = presence(&app, room).await;
    next_json(&mut bad).await;
    bad.send(invalid_utf8_text()).await.unwrap();
    assert_eq!(close_code(&mut bad).await, Some(1002));
    let mut good = presence(&app, room).await;
    assert_eq!(next_json(&mut good).await["type"], "presence_state");
}

#[tokio::test]
async fn presence_for_impossible_rooms_is_refused_before_the_upgrade() {
    let app = spawn(Backend::Sqlite).await;
    let room = app.signed_in_room().await;
    for path in [
        "/rooms/-1/presence",
        "/rooms/0/presence",
        "/rooms/99999999999999999999/presence",
        "/rooms/1%00/presence",
    ] {
        match handshake(&app, path, Some(&app.address), None).await {
            Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 404, "{path}"),
            other => panic!("{path}: expected 404, got {:?}", other.map(|r| r.1)),
        }
    }
    still_serves(&app, room).await;
}

// ---- cookies ---------------------------------------------------------------------------------

#[tokio::test]
async fn tampered_cookies_make_a_signed_out_visitor_who_can_change_nothing() {
    let app = spawn(Backend::Sqlite).await;
    let f = fixture(app).await;
    let before = snapshot(&f.app, f.room).await;
    let cookie = f.app.cookie_header().unwrap();
    let value = cookie.split_once('=').unwrap().1.to_owned();
    let signed_stream = signed_stream_in(&f.app.get_html(&format!("/rooms/{}", f.room)).await);
    let (data, tag) = value.split_once("--").unwrap();
    let mut flipped = tag.to_owned().into_bytes();
    flipped[0] = if flipped[0] == b'A' { b'B' } else { b'A' };
    let token = f.app.csrf().await;
    for (what, cookie) in [
        (
            "a flipped signature byte",
            format!("{data}--{}", String::from_utf8(flipped).unwrap()),
        ),
        ("the data without its signature", data.to_owned()),
        ("a signed stream name as the cookie", signed_stream),
        ("a 4 KB cookie of junk", "A".repeat(4000)),
    ] {
        let client = crate::helpers::new_client();
        let header = format!("_tasksync_session={cookie}");
        let res = client
            .get(f.app.url("/rooms"))
            .header(header::COOKIE, &header)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::SEE_OTHER, "{what}");
        let res = client
            .post(f.app.url(&format!("/rooms/{}/tasks", f.room)))
            .header(header::COOKIE, &header)
            .header("X-CSRF-Token", &token)
            .form(&[("task[title]", "forged")])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY, "{what}");
        let mut cable = Cable::connect_with_cookie(&f.app, &header).await;
        assert_eq!(
            cable.next().await,
            json!({"type": "disconnect", "reason": "unauthorized", "reconnect": false}),
            "{what}"
        );
        assert_eq!(snapshot(&f.app, f.room).await, before, "{what}");
    }
    still_serves(&f.app, f.room).await;
}

// ---- other HTTP surfaces ---------------------------------------------------------------------

#[tokio::test]
async fn asset_paths_cannot_escape_the_embedded_assets() {
    let app = spawn(Backend::Sqlite).await;
    for path in [
        "/assets/..%2F..%2FCargo.toml",
        "/assets/%2e%2e%2fconfig.rs",
        "/assets/..\\..\\Cargo.toml",
        "/assets/application.css%00.js",
    ] {
        let res = app.get(path).await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND, "{path}");
    }
    let res = app.get(&format!("/assets/{}", "a".repeat(8000))).await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    let room = app.signed_in_room().await;
    still_serves(&app, room).await;
}

#[tokio::test]
async fn a_hostile_host_header_cannot_write_the_content_security_policy() {
    let app = spawn(Backend::Sqlite).await;
    let port = app.address.rsplit(':').next().unwrap();
    let mut stream = tokio::net::TcpStream::connect(format!("127.0.0.1:{port}"))
        .await
        .unwrap();
    stream
        .write_all(
            b"GET /session/new HTTP/1.1\r\nHost: x; script-src *\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let csp = response
        .lines()
        .find(|l| {
            l.to_ascii_lowercase()
                .starts_with("content-security-policy:")
        })
        .unwrap_or_else(|| panic!("no CSP in {response}"));
    assert_eq!(csp.matches("script-src").count(), 1, "{csp}");
    assert!(csp.contains("connect-src 'self'; "), "{csp}");
}

// ---- limits ----------------------------------------------------------------------------------

#[tokio::test]
async fn mutations_beyond_the_session_rate_get_429_with_retry_after() {
    let app = spawn_with(Backend::Sqlite, |s| {
        s.mutation_burst = 3;
        s.mutations_per_second = 0.5;
    })
    .await;
    // Signing in starts a new session (and a new allowance); then three mutations pass.
    let room = app.signed_in_room().await;
    app.create_task(room, "two").await;
    app.create_task(room, "three").await;
    let before = snapshot(&app, room).await;
    let res = app
        .post_turbo(&format!("/rooms/{room}/tasks"), &[("task[title]", "five")])
        .await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(res.headers()[header::RETRY_AFTER], "2");
    assert!(
        res.text()
            .await
            .unwrap()
            .contains("Too many changes at once")
    );
    // Reading is not limited, nothing changed, and another session is unaffected.
    assert_eq!(snapshot(&app, room).await, before);
    let grace = app.new_visitor_signed_in("Grace").await;
    grace.create_task(room, "Grace's").await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    app.create_task(room, "after waiting").await;
}

#[tokio::test]
async fn sockets_beyond_the_per_address_limit_are_refused_until_one_closes() {
    let app = spawn_with(Backend::Sqlite, |s| s.max_connections_per_address = 3).await;
    let room = app.signed_in_room().await;
    let cable = Cable::connect(&app).await;
    let _second = Cable::connect(&app).await;
    let _presence = presence(&app, room).await;
    let refused = [
        handshake(
            &app,
            "/cable",
            Some(&app.address),
            Some(ACTIONCABLE_PROTOCOLS),
        )
        .await,
        handshake(
            &app,
            &format!("/rooms/{room}/presence"),
            Some(&app.address),
            None,
        )
        .await,
    ];
    for result in refused {
        match result {
            Err(tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 429);
                assert_eq!(response.headers()["retry-after"], "5");
            }
            other => panic!("expected 429, got {:?}", other.map(|r| r.1)),
        }
    }
    // Plain HTTP is not counted.
    still_serves(&app, room).await;
    drop(cable);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match handshake(
            &app,
            "/cable",
            Some(&app.address),
            Some(ACTIONCABLE_PROTOCOLS),
        )
        .await
        {
            Ok(_) => break,
            Err(tungstenite::Error::Http(r)) if r.status() == 429 => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the closed socket's slot never came back"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(other) => panic!("{other}"),
        }
    }
}

#[tokio::test]
async fn a_client_that_sends_its_headers_too_slowly_gets_408() {
    let app = spawn_with(Backend::Sqlite, |s| s.client_request_timeout_ms = 1000).await;
    let port = app.address.rsplit(':').next().unwrap().to_owned();
    let mut slow = tokio::net::TcpStream::connect(format!("127.0.0.1:{port}"))
        .await
        .unwrap();
    slow.write_all(b"GET /up HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(5), slow.read_to_string(&mut response))
        .await
        .expect("the server hangs up on a slow client")
        .unwrap();
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    assert!(started.elapsed() < Duration::from_secs(4));
    // A client that sends its request promptly is served.
    assert_eq!(app.get("/up").await.status(), StatusCode::OK);
}

impl Cable {
    /// Connects with exactly this Cookie header.
    async fn connect_with_cookie(app: &TestApp, cookie: &str) -> Cable {
        use tokio_tungstenite::tungstenite::{client::IntoClientRequest as _, http::HeaderValue};
        let url = format!("{}/cable", app.address.replacen("http", "ws", 1));
        let mut request = url.into_client_request().unwrap();
        let headers = request.headers_mut();
        headers.insert("Origin", HeaderValue::from_str(&app.address).unwrap());
        headers.insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static(ACTIONCABLE_PROTOCOLS),
        );
        headers.insert("Cookie", HeaderValue::from_str(cookie).unwrap());
        let (ws, _) = tokio_tungstenite::connect_async(request)
            .await
            .expect("cable handshake");
        Cable { ws, protocol: None }
    }
}
