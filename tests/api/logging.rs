//! Logs of a real process in production's JSON format: every HTTP line and every line of a
//! socket carry the id of the request that opened it, and no cookie or CSRF token is ever
//! written.

use std::sync::{Arc, Mutex};

use futures_util::{SinkExt as _, StreamExt as _};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest as _, http::HeaderValue};

use crate::{
    helpers::{Backend, TestApp, TestDatabase},
    processes::{self, log_line_where},
};

/// The request id of the span a line was written in: its own span's, or an enclosing one's.
fn request_id(line: &serde_json::Value) -> Option<&str> {
    let own = std::iter::once(&line["span"]);
    let enclosing = line["spans"].as_array().into_iter().flatten();
    own.chain(enclosing).find_map(|s| s["request_id"].as_str())
}

#[tokio::test]
async fn json_logs_name_the_request_on_http_and_socket_lines_and_never_hold_secrets() {
    let (database, url) = TestDatabase::create(Backend::Sqlite).await;
    let mut server = processes::start_logging_json(&[("DATABASE_URL", &url)]).await;
    let lines = Arc::new(Mutex::new(Vec::<serde_json::Value>::new()));
    let raw = Arc::new(Mutex::new(String::new()));
    let mut stdout = BufReader::new(server.child.stdout.take().unwrap()).lines();
    let (sink, raw_sink) = (lines.clone(), raw.clone());
    tokio::spawn(async move {
        while let Ok(Some(line)) = stdout.next_line().await {
            raw_sink.lock().unwrap().push_str(&line);
            let parsed =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            sink.lock().unwrap().push(parsed);
        }
    });
    let address = server.address.clone();

    let app = TestApp::at(address.clone(), Backend::Sqlite, Arc::new(database));
    app.sign_in("Ada").await;
    let res = app
        .client
        .get(app.url("/rooms"))
        .header("X-Request-Id", "page-req-1")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let access = log_line_where(&lines, |l| request_id(l) == Some("page-req-1")).await;
    assert_eq!(access["fields"]["route"], "/rooms", "{access}");
    assert_eq!(access["fields"]["status"], 200);

    // A socket: its lines belong to the upgrade request, long after the response went out.
    let mut request = format!("{}/cable", address.replacen("http", "ws", 1))
        .into_client_request()
        .unwrap();
    let headers = request.headers_mut();
    headers.insert("Origin", HeaderValue::from_str(&address).unwrap());
    headers.insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static("actioncable-v1-json"),
    );
    headers.insert("X-Request-Id", HeaderValue::from_static("cable-req-42"));
    let cookie = app.cookie_header().expect("signed in");
    headers.insert("Cookie", HeaderValue::from_str(&cookie).unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("cable handshake");
    ws.next().await.expect("welcome").unwrap();
    ws.send(Message::text("this is not JSON")).await.unwrap();
    let socket_line = log_line_where(&lines, |l| {
        l["fields"]["message"] == "ignoring a cable frame"
    })
    .await;
    assert_eq!(
        request_id(&socket_line),
        Some("cable-req-42"),
        "{socket_line}"
    );

    // A form post with a CSRF token, then a look for anything secret in everything logged.
    let token = app.csrf().await;
    let res = app
        .post_raw(
            "/rooms",
            &[
                ("authenticity_token", &token),
                ("room[name]", "Secret plans"),
            ],
            None,
        )
        .await;
    assert_eq!(res.status(), 303);
    drop(ws);
    let _ = log_line_where(&lines, |l| {
        l["fields"]["route"] == "/rooms" && l["span"]["method"] == "POST"
    })
    .await;
    let raw = raw.lock().unwrap().clone();
    let session_value = cookie.split_once('=').unwrap().1;
    assert!(!raw.contains(session_value), "a session cookie was logged");
    assert!(!raw.contains(&token), "a CSRF token was logged");
    let _ = server.child.kill().await;
}
