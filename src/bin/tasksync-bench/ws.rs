//! The two WebSocket clients: the cable as `@hotwired/turbo-rails` speaks it, and presence as
//! `static/presence.js` does.

use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::json;
use tokio::{net::TcpStream, task::JoinHandle};
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream,
    tungstenite::{Message, client::IntoClientRequest as _, http::HeaderValue},
};

pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What a browser's `new WebSocket(url, protocols)` sends from a page of the app.
async fn open(origin: &str, path: &str, cookie: &str, protocols: Option<&str>) -> Result<Socket> {
    let url = format!("{}{}", origin.replacen("http", "ws", 1), path);
    let mut request = url.into_client_request()?;
    let headers = request.headers_mut();
    headers.insert("Origin", HeaderValue::from_str(origin)?);
    headers.insert("Cookie", HeaderValue::from_str(cookie)?);
    if let Some(protocols) = protocols {
        headers.insert("Sec-WebSocket-Protocol", HeaderValue::from_str(protocols)?);
    }
    let (socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .with_context(|| format!("WebSocket {path}"))?;
    Ok(socket)
}

/// The next text frame; pings and pongs are answered by tungstenite on the way.
async fn next_text(socket: &mut Socket) -> Result<String> {
    loop {
        match socket.next().await {
            Some(Ok(Message::Text(text))) => return Ok(text.as_str().to_owned()),
            Some(Ok(Message::Close(frame))) => bail!("closed by the server: {frame:?}"),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.into()),
            None => bail!("connection dropped"),
        }
    }
}

pub fn identifier(signed_stream_name: &str) -> String {
    json!({"channel": "Turbo::StreamsChannel", "signed_stream_name": signed_stream_name})
        .to_string()
}

/// Opens `/cable`, waits for the welcome, subscribes, and returns once confirmed.
pub async fn cable(origin: &str, cookie: &str, identifier: &str) -> Result<Socket> {
    let mut socket = open(origin, "/cable", cookie, Some("actioncable-v1-json")).await?;
    let subscribe = json!({"command": "subscribe", "identifier": identifier}).to_string();
    let mut sent = false;
    loop {
        let text = next_text(&mut socket).await?;
        let frame: serde_json::Value = serde_json::from_str(&text)?;
        match frame["type"].as_str() {
            Some("welcome") if !sent => {
                socket.send(Message::text(subscribe.clone())).await?;
                sent = true;
            }
            Some("confirm_subscription") => return Ok(socket),
            Some("ping") | Some("welcome") => {}
            _ => return Err(anyhow!("unexpected cable frame: {text}")),
        }
    }
}

/// Opens the room's presence socket and returns at the first `presence_state`.
pub async fn presence(origin: &str, cookie: &str, room: i64) -> Result<Socket> {
    let mut socket = open(origin, &format!("/rooms/{room}/presence"), cookie, None).await?;
    loop {
        let text = next_text(&mut socket).await?;
        if text.contains("\"presence_state\"") {
            return Ok(socket);
        }
    }
}

/// Keeps a socket open and drained (so pings are answered and queues never back up) until the
/// handle is aborted.
pub fn hold(mut socket: Socket) -> JoinHandle<()> {
    tokio::spawn(async move { while let Some(Ok(_)) = socket.next().await {} })
}

/// Reads a subscriber's frames until `posts` distinct marked posts have arrived or `until`;
/// returns each post's arrival time, indexed by post number.
pub async fn receive_posts(
    mut socket: Socket,
    marker: &str,
    posts: usize,
    until: tokio::time::Instant,
) -> Vec<Option<std::time::Instant>> {
    let mut seen = vec![None; posts];
    let mut count = 0;
    while count < posts {
        let message = match tokio::time::timeout_at(until, socket.next()).await {
            Ok(Some(Ok(message))) => message,
            _ => break,
        };
        let now = std::time::Instant::now();
        let Message::Text(text) = message else {
            continue;
        };
        let mut rest = text.as_str();
        while let Some(at) = rest.find(marker) {
            rest = &rest[at + marker.len()..];
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            if let Ok(k) = digits.parse::<usize>()
                && k < posts
                && seen[k].is_none()
            {
                seen[k] = Some(now);
                count += 1;
            }
        }
    }
    let _ = socket.close(None).await;
    seen
}

pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
