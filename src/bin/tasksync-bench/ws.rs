//! The two WebSocket clients: the cable as `@hotwired/turbo-rails` speaks it, and presence as
//! `static/presence.js` does.

use std::{
    net::{IpAddr, SocketAddr},
    os::fd::AsRawFd as _,
    time::Duration,
};

use anyhow::{Context as _, Result, anyhow, bail};
use futures_util::StreamExt as _;
use rand::random;
use serde_json::json;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpSocket, TcpStream},
    task::JoinHandle,
};
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream,
    tungstenite::{
        Message,
        handshake::{client::generate_key, derive_accept_key},
        protocol::{
            Role, WebSocketConfig,
            frame::coding::{Control, Data, OpCode},
        },
    },
};

pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Small buffers: tungstenite's default 128 KiB read buffer, filled on every socket, is 2.6 GB
/// for 20,000 held sockets (the generator measured 2.7 GB with it). Frames here are well under
/// 8 KiB (larger ones still arrive whole: the buffer grows).
fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .write_buffer_size(8 * 1024)
}

/// A socket from its opening handshake on, read by hand: the request is one write of bytes
/// formatted here, and frames are read straight from one buffer. tokio-tungstenite's own client
/// cost the generator 67–84 µs of CPU a handshake where this costs 46–59 µs (500 at once
/// against a server answering with pre-built bytes; where the difference goes was not
/// profiled: its request goes through `http`'s header map, and it sets up two 8 KiB buffers
/// before the first byte): in a flood the generator shares the 2 cores with the server, so its
/// CPU is handshake time. A held socket stays this way ([`hold`]: frames dropped unread); one
/// whose messages are read goes to tungstenite ([`Opening::into_socket`]).
#[derive(Debug)]
pub struct Opening {
    stream: TcpStream,
    /// Bytes read and not yet taken: the rest of the 101 response, then frames.
    buf: Vec<u8>,
}

impl Opening {
    async fn read_more(&mut self) -> Result<()> {
        if read_more(&mut self.stream, &mut self.buf).await? == 0 {
            bail!("connection dropped");
        }
        Ok(())
    }

    /// Reads at least the rest of the frame at the front of the buffer, when its header is in:
    /// a frame of many KiB (a room's presence list) then costs one allocation, not a doubling
    /// and a copy for every 4 KiB read.
    async fn read_frame(&mut self) -> Result<()> {
        let rest = frame::length(&self.buf)?.saturating_sub(self.buf.len());
        self.buf.reserve(rest);
        self.read_more().await
    }

    /// The next text message; a ping is answered, a close is an error.
    async fn next_text(&mut self) -> Result<String> {
        loop {
            while let Some((opcode, payload)) = frame::take(&mut self.buf)? {
                if let OpCode::Data(Data::Text) = opcode {
                    return Ok(String::from_utf8(payload)?);
                }
                self.control(opcode, &payload).await?;
            }
            self.read_frame().await?;
        }
    }

    /// Answers a ping; a close, or any other frame the benchmark does not expect, is an error.
    async fn control(&mut self, opcode: OpCode, payload: &[u8]) -> Result<()> {
        match opcode {
            OpCode::Control(Control::Ping) => {
                let pong = frame::encode(OpCode::Control(Control::Pong), payload, Some(random()));
                Ok(self.stream.write_all(&pong).await?)
            }
            OpCode::Control(Control::Close) => {
                bail!("closed by the server: {}", String::from_utf8_lossy(payload))
            }
            other => bail!("unexpected {other} frame"),
        }
    }

    /// Reads frames until the socket closes or breaks, dropping every message unread (no
    /// UTF-8 check, no copy) and answering pings. The buffer is let go whenever it is empty,
    /// so a quiet held socket costs its stream alone.
    async fn drain(mut self) -> Result<()> {
        loop {
            while let Some((opcode, payload)) = frame::skip(&mut self.buf)? {
                if let OpCode::Control(_) = opcode {
                    self.control(opcode, &payload).await?;
                }
            }
            if self.buf.is_empty() {
                self.buf = Vec::new();
            }
            self.read_frame().await?;
        }
    }

    async fn send_text(&mut self, text: &str) -> Result<()> {
        let frame = frame::encode(OpCode::Data(Data::Text), text.as_bytes(), Some(random()));
        Ok(self.stream.write_all(&frame).await?)
    }

    /// Hands the socket, with any bytes already read past the awaited message, to tungstenite.
    pub async fn into_socket(self) -> Socket {
        WebSocketStream::from_partially_read(
            MaybeTlsStream::Plain(self.stream),
            self.buf,
            Role::Client,
            Some(config()),
        )
        .await
    }
}

/// What a browser's `new WebSocket(url, protocols)` sends from a page of the app. With
/// `source`, the connection leaves from that loopback address (each one has its own range of
/// ephemeral ports, so tens of thousands of sockets don't run out of them).
async fn open(
    origin: &str,
    path: &str,
    cookie: &str,
    protocol: Option<&str>,
    source: Option<IpAddr>,
) -> Result<Opening> {
    let host = origin
        .strip_prefix("http://")
        .context("an http:// origin")?;
    let addr: SocketAddr = host.parse()?;
    let mut stream = match source {
        None => TcpStream::connect(addr).await,
        Some(ip) => connect_from(ip, addr).await,
    }
    .with_context(|| format!("connect to {addr}"))?;
    let key = generate_key();
    let protocol_line = protocol
        .map(|p| format!("Sec-WebSocket-Protocol: {p}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\nOrigin: {origin}\r\n\
         Cookie: {cookie}\r\n{protocol_line}\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut opening = Opening {
        stream,
        buf: Vec::new(),
    };
    loop {
        opening.read_more().await?;
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut response = httparse::Response::new(&mut headers);
        let httparse::Status::Complete(length) = response.parse(&opening.buf)? else {
            continue;
        };
        let code = response.code.unwrap_or_default();
        if code != 101 {
            bail!("WebSocket {path}: answered {code}, not 101");
        }
        let accept = header(response.headers, "Sec-WebSocket-Accept");
        if accept != Some(derive_accept_key(key.as_bytes()).as_bytes()) {
            bail!("WebSocket {path}: a missing or wrong Sec-WebSocket-Accept");
        }
        if let Some(protocol) = protocol
            && header(response.headers, "Sec-WebSocket-Protocol") != Some(protocol.as_bytes())
        {
            bail!("WebSocket {path}: the server did not choose {protocol}");
        }
        opening.buf.drain(..length);
        return Ok(opening);
    }
}

/// Appends what `stream` has to `buf`; 0 once the peer has closed. For the opening here and the
/// floor server.
pub async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    buf.reserve(4096);
    stream.read_buf(buf).await
}

/// A header's value, by name in any case.
pub fn header<'a>(headers: &[httparse::Header<'a>], name: &str) -> Option<&'a [u8]> {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value)
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

/// WebSocket frames as bytes, for the generator's opening and the floor server: whole frames
/// only (neither side here fragments), headers through tungstenite's `FrameHeader`.
pub mod frame {
    use std::{io::Cursor, ops::Range};

    use anyhow::{Result, bail};
    use tokio_tungstenite::tungstenite::protocol::frame::{FrameHeader, coding::OpCode};

    /// One final frame; a client masks (`mask`), a server does not.
    pub fn encode(opcode: OpCode, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
        let header = FrameHeader {
            opcode,
            mask,
            ..FrameHeader::default()
        };
        let length = payload.len() as u64;
        let mut out = Vec::with_capacity(header.len(length) + payload.len());
        header
            .format(length, &mut out)
            .expect("writing to a Vec does not fail");
        let start = out.len();
        out.extend_from_slice(payload);
        if let Some(mask) = mask {
            unmask(&mut out[start..], mask);
        }
        out
    }

    /// The first frame's header and where its payload lies in `buf` (which may not hold all of
    /// it yet); `None` until the header is in.
    fn locate(buf: &[u8]) -> Result<Option<(FrameHeader, Range<usize>)>> {
        let mut cursor = Cursor::new(buf);
        let Some((header, length)) = FrameHeader::parse(&mut cursor)? else {
            return Ok(None);
        };
        let start = cursor.position() as usize;
        let Some(end) = usize::try_from(length)
            .ok()
            .and_then(|length| start.checked_add(length))
        else {
            bail!("a frame of {length} bytes");
        };
        if !header.is_final {
            bail!("a fragmented message");
        }
        Ok(Some((header, start..end)))
    }

    /// How many bytes the first frame in `buf` takes, header and payload; 0 until its header
    /// is in.
    pub fn length(buf: &[u8]) -> Result<usize> {
        Ok(locate(buf)?.map_or(0, |(_, payload)| payload.end))
    }

    /// Takes the first whole frame off `buf`, unmasked; `None` until one is there.
    pub fn take(buf: &mut Vec<u8>) -> Result<Option<(OpCode, Vec<u8>)>> {
        take_keeping(buf, true)
    }

    /// Takes the first whole frame off `buf` like [`take`], but a data frame's payload is
    /// dropped unread: it comes back empty. A control frame's comes back as it is.
    pub fn skip(buf: &mut Vec<u8>) -> Result<Option<(OpCode, Vec<u8>)>> {
        take_keeping(buf, false)
    }

    fn take_keeping(buf: &mut Vec<u8>, data: bool) -> Result<Option<(OpCode, Vec<u8>)>> {
        let Some((header, payload)) = locate(buf)?.filter(|(_, p)| p.end <= buf.len()) else {
            return Ok(None);
        };
        let end = payload.end;
        let keep = data || matches!(header.opcode, OpCode::Control(_));
        let mut payload = if keep {
            buf[payload].to_vec()
        } else {
            Vec::new()
        };
        if let Some(mask) = header.mask {
            unmask(&mut payload, mask);
        }
        buf.drain(..end);
        Ok(Some((header.opcode, payload)))
    }

    /// Masking and unmasking are the same XOR (RFC 6455, 5.3).
    fn unmask(payload: &mut [u8], mask: [u8; 4]) {
        for (i, byte) in payload.iter_mut().enumerate() {
            *byte ^= mask[i % 4];
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
) -> Result<Opening> {
    let mut opening = open(
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
        let text = opening.next_text().await?;
        let frame: serde_json::Value = serde_json::from_str(&text)?;
        match frame["type"].as_str() {
            Some("welcome") if !sent => {
                opening.send_text(&subscribe).await?;
                sent = true;
            }
            Some("confirm_subscription") => return Ok(opening),
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
) -> Result<Opening> {
    let path = format!("/rooms/{room}/presence");
    let mut opening = open(origin, &path, cookie, None, source).await?;
    loop {
        let text = opening.next_text().await?;
        if text.contains("\"presence_state\"") {
            return Ok(opening);
        }
    }
}

/// Keeps a socket open and drained (so pings are answered and the server's queues never back
/// up) until the handle is aborted, reading its frames as cheaply as it can ([`Opening`]'s
/// drain): a real client reads them on its own machine, and here every byte the generator
/// spends on them is taken from the server it measures.
pub fn hold(socket: Opening) -> JoinHandle<()> {
    tokio::spawn(async move {
        // However it ends (closed, dropped, a broken frame), the socket is no longer held.
        let _ = socket.drain().await;
    })
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

#[cfg(test)]
mod tests {
    use tokio::net::TcpListener;

    use super::*;

    #[test]
    fn frames_come_back_as_they_were_sent_masked_or_not() {
        let long = "x".repeat(300); // a 16-bit length
        for (text, mask) in [
            ("hi", None),
            ("hi", Some([1, 2, 3, 4])),
            (&*long, Some([9; 4])),
        ] {
            let mut buf = frame::encode(OpCode::Data(Data::Text), text.as_bytes(), mask);
            let whole = buf.len();
            buf.extend_from_slice(b"\x81"); // the start of the next frame stays
            let (opcode, payload) = frame::take(&mut buf).unwrap().unwrap();
            assert_eq!(opcode, OpCode::Data(Data::Text));
            assert_eq!(payload, text.as_bytes());
            assert_eq!(buf, b"\x81", "{whole} bytes taken, the rest left");
        }
    }

    #[test]
    fn skipping_drops_data_frames_unread_and_keeps_control_frames() {
        let text = frame::encode(OpCode::Data(Data::Text), &[b'x'; 300], None);
        let ping = frame::encode(OpCode::Control(Control::Ping), b"hi", Some([7; 4]));
        let mut buf = [&text[..], &ping[..], b"\x81"].concat();
        assert_eq!(frame::length(&buf).unwrap(), text.len());
        assert_eq!(
            frame::skip(&mut buf).unwrap(),
            Some((OpCode::Data(Data::Text), Vec::new()))
        );
        assert_eq!(
            frame::skip(&mut buf).unwrap(),
            Some((OpCode::Control(Control::Ping), b"hi".to_vec()))
        );
        assert_eq!(buf, b"\x81", "the next frame's first byte stays");
        assert_eq!(frame::length(&buf).unwrap(), 0, "its header is not in yet");
        assert_eq!(frame::skip(&mut buf).unwrap(), None);
    }

    #[test]
    fn a_frame_is_taken_only_once_all_of_it_is_in() {
        let sent = frame::encode(OpCode::Data(Data::Text), b"hello", None);
        let mut buf = sent[..sent.len() - 1].to_vec();
        assert_eq!(frame::length(&buf).unwrap(), sent.len());
        assert!(frame::take(&mut buf).unwrap().is_none());
        assert!(frame::skip(&mut buf).unwrap().is_none());
        assert_eq!(buf.len(), sent.len() - 1, "nothing consumed");
        let mut fragment = sent.clone();
        fragment[0] &= 0x7f; // not final
        assert!(frame::take(&mut fragment).is_err());
    }

    #[tokio::test]
    async fn a_held_socket_drops_messages_answers_pings_and_ends_when_closed() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        let (mut server, _) = accepted.unwrap();
        let held = hold(Opening {
            stream: client.unwrap(),
            buf: Vec::new(),
        });

        // A message larger than one read, then a ping: only the ping is answered.
        let list = frame::encode(OpCode::Data(Data::Text), &[b'x'; 20_000], None);
        let ping = frame::encode(OpCode::Control(Control::Ping), b"are you there", None);
        server.write_all(&[list, ping].concat()).await.unwrap();
        let mut answer = Vec::new();
        let within = Duration::from_secs(5);
        let pong = tokio::time::timeout(within, async {
            loop {
                if let Some(frame) = frame::take(&mut answer).unwrap() {
                    return frame;
                }
                read_more(&mut server, &mut answer).await.unwrap();
            }
        })
        .await
        .expect("a pong within 5 s");
        assert_eq!(
            pong,
            (OpCode::Control(Control::Pong), b"are you there".to_vec())
        );

        drop(server);
        tokio::time::timeout(within, held)
            .await
            .expect("the hold ends once the server is gone")
            .unwrap();
    }

    /// A server that answers any request with `answer`.
    async fn answering(answer: &'static str) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut request = vec![0; 2048];
            let _ = stream.read(&mut request).await;
            stream.write_all(answer.as_bytes()).await.unwrap();
            let _ = stream.read(&mut request).await;
        });
        origin
    }

    #[tokio::test]
    async fn a_wrong_accept_key_or_refusal_fails_the_handshake() {
        let wrong_key = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                         Connection: Upgrade\r\nSec-WebSocket-Accept: bm90IHRoZSBrZXk=\r\n\r\n";
        // A client that missed the refusal would wait for a frame: give up after 5 s.
        let within = Duration::from_secs(5);
        let origin = answering(wrong_key).await;
        let err = tokio::time::timeout(within, presence(&origin, "a=b", 1, None))
            .await
            .expect("an answer within 5 s")
            .unwrap_err();
        assert!(err.to_string().contains("Sec-WebSocket-Accept"), "{err:#}");

        let origin = answering("HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n").await;
        let err = tokio::time::timeout(within, presence(&origin, "a=b", 1, None))
            .await
            .expect("an answer within 5 s")
            .unwrap_err();
        assert!(err.to_string().contains("403"), "{err:#}");
    }
}
