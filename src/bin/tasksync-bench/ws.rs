//! The two WebSocket clients: the cable as `@hotwired/turbo-rails` speaks it, and presence as
//! `static/presence.js` does.

use std::{
    net::{IpAddr, SocketAddr},
    os::fd::AsRawFd as _,
    time::Duration,
};

use anyhow::{Context as _, Result, anyhow, bail};
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::json;
use tokio::{
    net::{TcpSocket, TcpStream},
    task::JoinHandle,
};
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream,
    tungstenite::{
        Message, client::IntoClientRequest as _, http::HeaderValue, protocol::WebSocketConfig,
    },
};

pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What a browser's `new WebSocket(url, protocols)` sends from a page of the app. With
/// `source`, the connection leaves from that loopback address (each one has its own range of
/// ephemeral ports, so tens of thousands of sockets don't run out of them).
async fn open(
    origin: &str,
    path: &str,
    cookie: &str,
    protocols: Option<&str>,
    source: Option<IpAddr>,
) -> Result<Socket> {
    let url = format!("{}{}", origin.replacen("http", "ws", 1), path);
    let mut request = url.into_client_request()?;
    let headers = request.headers_mut();
    headers.insert("Origin", HeaderValue::from_str(origin)?);
    headers.insert("Cookie", HeaderValue::from_str(cookie)?);
    if let Some(protocols) = protocols {
        headers.insert("Sec-WebSocket-Protocol", HeaderValue::from_str(protocols)?);
    }
    let addr: SocketAddr = origin
        .strip_prefix("http://")
        .context("an http:// origin")?
        .parse()?;
    let stream = match source {
        None => TcpStream::connect(addr).await,
        Some(ip) => connect_from(ip, addr).await,
    }
    .with_context(|| format!("connect to {addr}"))?;
    // Small buffers: tungstenite's default 128 KiB read buffer, filled on every socket, would
    // make 20,000 held sockets cost the generator 2.5 GB. Frames here are well under 8 KiB
    // (larger ones still arrive whole: the buffer grows).
    let config = WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .write_buffer_size(8 * 1024);
    let (socket, _) = tokio_tungstenite::client_async_with_config(
        request,
        MaybeTlsStream::Plain(stream),
        Some(config),
    )
    .await
    .with_context(|| format!("WebSocket {path}"))?;
    Ok(socket)
}

async fn connect_from(source: IpAddr, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    // Pick the port at connect time, per destination, as an unbound connect does, instead of
    // reserving one for every destination at bind time.
    let on: libc::c_int = 1;
    // SAFETY: a valid socket and a c_int option of the size we pass.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    socket.bind(SocketAddr::new(source, 0))?;
    socket.connect(addr).await
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
pub async fn cable(
    origin: &str,
    cookie: &str,
    identifier: &str,
    source: Option<IpAddr>,
) -> Result<Socket> {
    let mut socket = open(
        origin,
        "/cable",
        cookie,
        Some("actioncable-v1-json"),
        source,
    )
    .await?;
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
pub async fn presence(
    origin: &str,
    cookie: &str,
    room: i64,
    source: Option<IpAddr>,
) -> Result<Socket> {
    let path = format!("/rooms/{room}/presence");
    let mut socket = open(origin, &path, cookie, None, source).await?;
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
/// returns each post's arrival time, indexed by post number, and the socket, still open: the
/// caller closes the sockets once every subscriber is done, so the first ones to finish do not
/// load the servers with closing handshakes while the last post is still on its way to others.
pub async fn receive_posts(
    mut socket: Socket,
    marker: &str,
    posts: usize,
    until: tokio::time::Instant,
) -> (Vec<Option<std::time::Instant>>, Socket) {
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
    (seen, socket)
}

pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
