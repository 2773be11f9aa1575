//! A test client for the cable socket: speaks ActionCable's JSON over tokio-tungstenite.

use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream,
    tungstenite::{self, Message, client::IntoClientRequest as _, http::HeaderValue},
};

use crate::helpers::TestApp;

pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long any single wait for a frame may take.
pub const WAIT: Duration = Duration::from_secs(5);

pub struct Cable {
    pub ws: Socket,
    /// The subprotocol the server selected.
    pub protocol: Option<String>,
}

/// The subprotocols `@rails/actioncable` offers.
pub const ACTIONCABLE_PROTOCOLS: &str = "actioncable-v1-json, actioncable-unsupported";

/// A WebSocket handshake to `path` with this client's cookies, the given Origin and, if any,
/// the subprotocols to offer.
pub async fn handshake(
    app: &TestApp,
    path: &str,
    origin: Option<&str>,
    protocols: Option<&'static str>,
) -> Result<(Socket, tungstenite::handshake::client::Response), tungstenite::Error> {
    let url = format!("{}{}", app.address.replacen("http", "ws", 1), path);
    let mut request = url.into_client_request()?;
    let headers = request.headers_mut();
    if let Some(protocols) = protocols {
        headers.insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static(protocols),
        );
    }
    if let Some(origin) = origin {
        headers.insert("Origin", HeaderValue::from_str(origin).unwrap());
    }
    if let Some(cookie) = app.cookie_header() {
        headers.insert("Cookie", HeaderValue::from_str(&cookie).unwrap());
    }
    tokio_tungstenite::connect_async(request).await
}

/// A presence socket in `room`, opened as the room's page would.
pub async fn presence(app: &TestApp, room: i64) -> Socket {
    handshake(
        app,
        &format!("/rooms/{room}/presence"),
        Some(&app.address),
        None,
    )
    .await
    .expect("presence handshake")
    .0
}

/// The close frame's code, once the server closes `ws`; skips anything before it.
pub async fn close_code(ws: &mut Socket) -> Option<u16> {
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("closed in time")
        {
            Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return None,
        }
    }
}

impl Cable {
    /// Connects to `/cable` as a browser on the app's own page would.
    pub async fn connect(app: &TestApp) -> Cable {
        Self::connect_offering(app, ACTIONCABLE_PROTOCOLS).await
    }

    /// Connects as [`Cable::connect`] does and subscribes with `identifier`, asserting the
    /// welcome and the confirmation.
    pub async fn subscribed(app: &TestApp, identifier: &str) -> Cable {
        let mut cable = Self::connect(app).await;
        assert_eq!(cable.next().await["type"], "welcome");
        assert_eq!(
            cable.subscribe(identifier).await["type"],
            "confirm_subscription"
        );
        cable
    }

    /// Connects offering `protocols` (a client of another ActionCable dialect, say).
    pub async fn connect_offering(app: &TestApp, protocols: &'static str) -> Cable {
        let (ws, response) = handshake(app, "/cable", Some(&app.address), Some(protocols))
            .await
            .expect("cable handshake");
        let protocol = response
            .headers()
            .get("Sec-WebSocket-Protocol")
            .map(|v| v.to_str().unwrap().to_owned());
        Cable { ws, protocol }
    }

    /// The next frame that is not a ping, as JSON; panics after [`WAIT`].
    pub async fn next(&mut self) -> Value {
        // Pings keep coming, so the wait is for the whole call, not for each frame.
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.next_frame())
                .await
                .expect("a frame other than a ping within the wait")
                .expect("a frame before the socket closed");
            if frame["type"] != "ping" {
                return frame;
            }
        }
    }

    /// The next frame, pings included; `None` once the socket has closed.
    pub async fn next_frame(&mut self) -> Option<Value> {
        loop {
            let message = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("no frame within the wait")?;
            match message {
                Ok(Message::Text(text)) => {
                    return Some(serde_json::from_str(&text).expect("frames are JSON"));
                }
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => continue,
            }
        }
    }

    /// The close frame's code, once the server closes; skips anything before it.
    pub async fn close_code(&mut self) -> Option<u16> {
        close_code(&mut self.ws).await
    }

    /// Asserts nothing but pings arrives for a little while.
    pub async fn expect_silence(&mut self, wait: Duration) {
        let deadline = tokio::time::Instant::now() + wait;
        while let Ok(Some(message)) = tokio::time::timeout_at(deadline, self.ws.next()).await {
            if let Ok(Message::Text(text)) = message {
                let frame: Value = serde_json::from_str(&text).unwrap();
                assert_eq!(frame["type"], "ping", "unexpected frame {frame}");
            }
        }
    }

    pub async fn send_text(&mut self, text: String) {
        self.ws.send(Message::text(text)).await.expect("send");
    }

    pub async fn send(&mut self, command: Value) {
        self.send_text(command.to_string()).await;
    }

    /// Sends a subscribe command and returns the server's answer.
    pub async fn subscribe(&mut self, identifier: &str) -> Value {
        self.send(json!({"command": "subscribe", "identifier": identifier}))
            .await;
        self.next().await
    }
}

/// The identifier `@hotwired/turbo-rails` sends for a `<turbo-cable-stream-source>`.
pub fn identifier(signed_stream_name: &str) -> String {
    json!({"channel": "Turbo::StreamsChannel", "signed_stream_name": signed_stream_name})
        .to_string()
}

/// The signed stream name a room page hands its cable source.
pub fn signed_stream_in(html: &str) -> String {
    let marker = "signed-stream-name=\"";
    let start = html.find(marker).expect("page has a cable stream source") + marker.len();
    html[start..].split('"').next().unwrap().to_owned()
}

/// The subscription identifier `@hotwired/turbo-rails` builds from a room page's
/// `<turbo-cable-stream-source>`: its channel and signed name plus every `data-*` attribute
/// (the stream position the page was rendered at).
pub fn page_identifier(html: &str) -> String {
    let attribute = |name: &str| {
        let marker = format!("{name}=\"");
        let start = html
            .find(&marker)
            .unwrap_or_else(|| panic!("{name} on the page"))
            + marker.len();
        html[start..].split('"').next().unwrap().to_owned()
    };
    json!({
        "channel": "Turbo::StreamsChannel",
        "signed_stream_name": signed_stream_in(html),
        "epoch": attribute("data-epoch"),
        "offset": attribute("data-offset"),
    })
    .to_string()
}
