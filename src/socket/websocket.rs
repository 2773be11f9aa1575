//! A WebSocket connection after its handshake, read and written by the socket's own task.
//!
//! Framing is actix-http's (`ws::Codec`: masking, opcodes, control frames, the frame size
//! limit); this adds what a socket needs on top: whole messages out of fragments, UTF-8 checked
//! text, and writes that survive being cancelled in a `select!`. A socket owns no buffer while
//! it is idle: bytes are read only once the connection is readable, and both buffers are
//! released whenever they are empty, so a held socket costs its task and its TCP stream.

use std::{io, time::Duration};

use actix_codec::{Decoder as _, Encoder as _};
use actix_http::ws::{self, CloseReason, Item, ProtocolError};
use bytes::{Buf as _, Bytes, BytesMut};
use bytestring::ByteString;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

/// What one read from the connection asks room for.
const READ_CHUNK: usize = 4096;

/// How long closing may wait for the close frame to be written and the client to close its
/// side, so that a client that reads nothing cannot hold a closing socket.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// A whole message from the client.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    Text(ByteString),
    Binary(Bytes),
    Ping(Bytes),
    Pong(Bytes),
    Close(Option<CloseReason>),
}

/// The connection is gone: a write failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

/// A fragmented message being put together.
struct Fragments {
    text: bool,
    data: BytesMut,
}

impl Fragments {
    /// Adds a fragment, keeping the whole message within `max_bytes`.
    fn push(&mut self, data: &[u8], max_bytes: usize) -> Result<(), ProtocolError> {
        if self.data.len() + data.len() > max_bytes {
            return Err(ProtocolError::Overflow);
        }
        self.data.extend_from_slice(data);
        Ok(())
    }
}

pub struct WebSocket {
    io: TcpStream,
    codec: ws::Codec,
    /// The largest message, fragments together, and so the largest frame.
    max_bytes: usize,
    /// Read, not yet decoded.
    read: BytesMut,
    /// Encoded, not yet written: a write cut short (its future dropped in a `select!`) leaves
    /// the rest here, and the next write sends it first.
    out: BytesMut,
    partial: Option<Fragments>,
}

impl WebSocket {
    /// The socket on `io`. `read` holds whatever the client sent right behind its handshake;
    /// `unsent` what is still to be written before any frame: the handshake's `101`, which so
    /// leaves in the same write as the socket's first message (or before the socket first
    /// waits for the client: [`recv`](Self::recv) writes what is pending). Messages are limited
    /// to `max_bytes`.
    pub fn new(io: TcpStream, read: BytesMut, unsent: BytesMut, max_bytes: usize) -> Self {
        Self {
            io,
            codec: ws::Codec::new().max_size(max_bytes),
            max_bytes,
            read,
            out: unsent,
            partial: None,
        }
    }

    /// The next whole message; `None` once the client has closed the connection. Writes
    /// anything a cancelled write left first. Cancel-safe: a message is only taken from the
    /// buffer once it is returned.
    pub async fn recv(&mut self) -> Option<Result<Incoming, ProtocolError>> {
        if self.flush().await.is_err() {
            return None;
        }
        loop {
            match self.decode() {
                Ok(Some(message)) => return Some(Ok(message)),
                Ok(None) => {}
                Err(err) => return Some(Err(err)),
            }
            if self.read.is_empty() {
                // Let go of the buffer while waiting, however long the client is quiet.
                self.read = BytesMut::new();
            }
            // `poll_read_ready`, not `readable()`: it waits in the stream's one read-waker slot,
            // which still holds the waker of the HTTP/1 task that read the handshake. Left
            // there, that waker keeps the finished task allocated (~3 KB) until the client
            // next sends something: for a presence socket, whose client only listens, its
            // first pong, seconds later. Through a burst of connects those tasks add up, and
            // the heap keeps the high-water mark.
            if let Err(err) = std::future::poll_fn(|cx| self.io.poll_read_ready(cx)).await {
                return Some(Err(ProtocolError::Io(err)));
            }
            self.read.reserve(READ_CHUNK);
            match self.io.try_read_buf(&mut self.read) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                Err(err) => return Some(Err(ProtocolError::Io(err))),
            }
        }
    }

    /// Decodes frames from what has been read until one completes a message.
    fn decode(&mut self) -> Result<Option<Incoming>, ProtocolError> {
        while let Some(frame) = self.codec.decode(&mut self.read)? {
            if let Some(message) = self.assemble(frame)? {
                return Ok(Some(message));
            }
        }
        Ok(None)
    }

    /// A frame's part in a message: the whole message, or `None` while fragments are missing.
    fn assemble(&mut self, frame: ws::Frame) -> Result<Option<Incoming>, ProtocolError> {
        let message = match frame {
            ws::Frame::Text(data) => {
                self.unfragmented()?;
                Incoming::Text(utf8(data)?)
            }
            ws::Frame::Binary(data) => {
                self.unfragmented()?;
                Incoming::Binary(data)
            }
            ws::Frame::Ping(data) => Incoming::Ping(data),
            ws::Frame::Pong(data) => Incoming::Pong(data),
            ws::Frame::Close(reason) => Incoming::Close(reason),
            ws::Frame::Continuation(Item::FirstText(data)) => return self.first(true, &data),
            ws::Frame::Continuation(Item::FirstBinary(data)) => return self.first(false, &data),
            ws::Frame::Continuation(Item::Continue(data)) => {
                self.partial
                    .as_mut()
                    .ok_or(ProtocolError::ContinuationNotStarted)?
                    .push(&data, self.max_bytes)?;
                return Ok(None);
            }
            ws::Frame::Continuation(Item::Last(data)) => {
                let mut fragments = self
                    .partial
                    .take()
                    .ok_or(ProtocolError::ContinuationNotStarted)?;
                fragments.push(&data, self.max_bytes)?;
                let data = fragments.data.freeze();
                if fragments.text {
                    Incoming::Text(utf8(data)?)
                } else {
                    Incoming::Binary(data)
                }
            }
        };
        Ok(Some(message))
    }

    /// A data frame that is not a fragment may not interrupt a fragmented message (RFC 6455,
    /// section 5.4).
    fn unfragmented(&self) -> Result<(), ProtocolError> {
        match self.partial {
            Some(_) => Err(ProtocolError::ContinuationStarted),
            None => Ok(()),
        }
    }

    fn first(&mut self, text: bool, data: &[u8]) -> Result<Option<Incoming>, ProtocolError> {
        self.unfragmented()?;
        let mut fragments = Fragments {
            text,
            data: BytesMut::new(),
        };
        fragments.push(data, self.max_bytes)?;
        self.partial = Some(fragments);
        Ok(None)
    }

    pub async fn text(&mut self, text: impl Into<ByteString>) -> Result<(), Closed> {
        self.send(ws::Message::Text(text.into())).await
    }

    pub async fn ping(&mut self, data: &[u8]) -> Result<(), Closed> {
        self.send(ws::Message::Ping(Bytes::copy_from_slice(data)))
            .await
    }

    pub async fn pong(&mut self, data: &[u8]) -> Result<(), Closed> {
        self.send(ws::Message::Pong(Bytes::copy_from_slice(data)))
            .await
    }

    async fn send(&mut self, message: ws::Message) -> Result<(), Closed> {
        self.codec
            .encode(message, &mut self.out)
            .map_err(|_| Closed)?;
        self.flush().await
    }

    /// Writes everything encoded. Cancel-safe: what has been written is taken off `out` as it
    /// goes.
    async fn flush(&mut self) -> Result<(), Closed> {
        while !self.out.is_empty() {
            match self.io.write(&self.out).await {
                Ok(0) | Err(_) => return Err(Closed),
                Ok(written) => self.out.advance(written),
            }
        }
        self.out = BytesMut::new();
        Ok(())
    }

    /// Sends a close frame with `reason`, then closes the connection once the client has closed
    /// its side, or after `CLOSE_WAIT` (a second). Waiting for the client keeps anything it was
    /// still sending from turning the close into a reset, which could lose the close frame.
    ///
    /// The closing is boxed: with its timer and read buffer it is about 1 KB, and a socket's
    /// task that awaits it inline is that large for the socket's whole life, not only while it
    /// closes.
    pub fn close(mut self, reason: Option<CloseReason>) -> impl Future<Output = ()> {
        Box::pin(async move {
            let _ = tokio::time::timeout(CLOSE_WAIT, async {
                if self.send(ws::Message::Close(reason)).await.is_ok() {
                    let _ = self.io.shutdown().await;
                    let mut sink = [0u8; 512];
                    while matches!(self.io.read(&mut sink).await, Ok(n) if n > 0) {}
                }
            })
            .await;
        })
    }
}

fn utf8(data: Bytes) -> Result<ByteString, ProtocolError> {
    ByteString::try_from(data)
        .map_err(|err| ProtocolError::Io(io::Error::new(io::ErrorKind::InvalidData, err)))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use actix_http::ws::{Codec, Message};
    use tokio::{
        io::{AsyncReadExt as _, AsyncWriteExt as _},
        net::{TcpListener, TcpStream},
    };

    use super::*;

    /// A server socket limited to `max_bytes`, and the client's end of its connection.
    async fn pair(max_bytes: usize) -> (WebSocket, TcpStream) {
        pair_unsent(max_bytes, b"").await
    }

    /// [`pair`], with `unsent` waiting to be written ahead of any frame.
    async fn pair_unsent(max_bytes: usize, unsent: &[u8]) -> (WebSocket, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let unsent = BytesMut::from(unsent);
        (
            WebSocket::new(server, BytesMut::new(), unsent, max_bytes),
            client,
        )
    }

    /// Reads from the client's end until `want` bytes have come, within 5 s.
    async fn read_exactly(client: &mut TcpStream, want: usize) -> Vec<u8> {
        let mut got = vec![0u8; want];
        tokio::time::timeout(Duration::from_secs(5), client.read_exact(&mut got))
            .await
            .expect("the bytes within 5 s")
            .unwrap();
        got
    }

    /// A server frame (unmasked) of one short text message.
    fn server_text(text: &str) -> Vec<u8> {
        let mut frame = vec![0x81, text.len() as u8];
        frame.extend_from_slice(text.as_bytes());
        frame
    }

    #[tokio::test]
    async fn the_unsent_handshake_leaves_ahead_of_the_first_message() {
        let head = b"HTTP/1.1 101 Switching Protocols\r\n\r\n";
        let (mut socket, mut client) = pair_unsent(64, head).await;
        socket.text("welcome").await.unwrap();
        let mut expected = head.to_vec();
        expected.extend(server_text("welcome"));
        assert_eq!(read_exactly(&mut client, expected.len()).await, expected);
    }

    #[tokio::test]
    async fn a_socket_that_first_waits_for_the_client_still_writes_the_handshake() {
        let head = b"HTTP/1.1 101 Switching Protocols\r\n\r\n";
        let (mut socket, mut client) = pair_unsent(64, head).await;
        // The client speaks only once it has the whole 101, as a real one does.
        let server = tokio::spawn(async move { recv(&mut socket).await });
        assert_eq!(read_exactly(&mut client, head.len()).await, head);
        client
            .write_all(&client_frames(vec![Message::Text("hi".into())]))
            .await
            .unwrap();
        assert_eq!(
            server.await.unwrap().unwrap().unwrap(),
            Incoming::Text(ByteString::from_static("hi"))
        );
    }

    /// The HTTP/1 task that read the handshake waited for more in the stream's read-waker
    /// slot; the socket's first wait for the client must take that slot over, so the finished
    /// task's waker, and with it the task's memory, is let go of then and not at the client's
    /// next message.
    #[tokio::test]
    async fn waiting_for_the_client_lets_go_of_the_handshake_readers_waker() {
        use std::{
            sync::Arc,
            task::{Context, Wake, Waker},
        };
        struct Task;
        impl Wake for Task {
            fn wake(self: Arc<Self>) {}
        }
        let (socket, client) = pair(64).await;
        let WebSocket { io, .. } = socket;
        let handshake_reader = Arc::new(Task);
        let waker = Waker::from(Arc::clone(&handshake_reader));
        // As that task read: until the stream would block, leaving its waker to be woken.
        let mut cx = Context::from_waker(&waker);
        while io.poll_read_ready(&mut cx).is_ready() {
            let read = io.try_read(&mut [0u8; 16]);
            assert!(
                matches!(&read, Err(err) if err.kind() == io::ErrorKind::WouldBlock),
                "nothing to read: {read:?}"
            );
        }
        drop(waker);
        assert_eq!(
            Arc::strong_count(&handshake_reader),
            2,
            "the stream keeps the handshake reader's waker"
        );
        let mut socket = WebSocket::new(io, BytesMut::new(), BytesMut::new(), 64);
        tokio::select! {
            biased;
            _ = socket.recv() => panic!("the client sent nothing"),
            () = std::future::ready(()) => {}
        }
        assert_eq!(
            Arc::strong_count(&handshake_reader),
            1,
            "the socket's own wait replaced it"
        );
        drop(client);
    }

    /// Frames as a client sends them (masked).
    fn client_frames(messages: Vec<Message>) -> Vec<u8> {
        let mut codec = Codec::new().client_mode();
        let mut out = BytesMut::new();
        for message in messages {
            codec.encode(message, &mut out).unwrap();
        }
        out.to_vec()
    }

    /// One frame as a client sends it, masked with a zero key (so the payload reads as it is),
    /// whatever the frames before it: `head` is the first byte (FIN bit and opcode).
    fn raw(head: u8, payload: &[u8]) -> Vec<u8> {
        assert!(payload.len() < 126);
        let mut frame = vec![head, 0x80 | payload.len() as u8, 0, 0, 0, 0];
        frame.extend_from_slice(payload);
        frame
    }

    fn fragment(item: fn(Bytes) -> Item, data: &'static [u8]) -> Message {
        Message::Continuation(item(Bytes::from_static(data)))
    }

    async fn recv(socket: &mut WebSocket) -> Option<Result<Incoming, ProtocolError>> {
        tokio::time::timeout(Duration::from_secs(5), socket.recv())
            .await
            .expect("an answer within 5 s")
    }

    #[tokio::test]
    async fn fragments_make_one_message_and_control_frames_may_come_between_them() {
        let (mut socket, mut client) = pair(64).await;
        let frames = client_frames(vec![
            fragment(Item::FirstText, b"hel"),
            Message::Ping(Bytes::from_static(b"p")),
            fragment(Item::Continue, b"lo "),
            fragment(Item::Last, "w\u{f6}rld".as_bytes()),
            fragment(Item::FirstBinary, b"\x00\x01"),
            fragment(Item::Last, b"\x02"),
        ]);
        client.write_all(&frames).await.unwrap();
        assert_eq!(
            recv(&mut socket).await.unwrap().unwrap(),
            Incoming::Ping(Bytes::from_static(b"p"))
        );
        assert_eq!(
            recv(&mut socket).await.unwrap().unwrap(),
            Incoming::Text(ByteString::from_static("hello w\u{f6}rld"))
        );
        assert_eq!(
            recv(&mut socket).await.unwrap().unwrap(),
            Incoming::Binary(Bytes::from_static(b"\x00\x01\x02"))
        );
        drop(client);
        assert!(
            recv(&mut socket).await.is_none(),
            "the client's close ends the stream"
        );
    }

    #[tokio::test]
    async fn broken_messages_are_protocol_errors() {
        type Check = fn(&ProtocolError) -> bool;
        let cases: Vec<(&str, Vec<u8>, Check)> = vec![
            (
                "one frame over the limit",
                client_frames(vec![Message::Binary(Bytes::from(vec![0u8; 17]))]),
                |e| matches!(e, ProtocolError::Overflow),
            ),
            (
                "fragments over the limit together",
                client_frames(vec![
                    fragment(Item::FirstText, b"0123456789"),
                    fragment(Item::Last, b"0123456789"),
                ]),
                |e| matches!(e, ProtocolError::Overflow),
            ),
            (
                "text that is not UTF-8",
                raw(0x81, &[0xff, 0xfe]),
                |e| matches!(e, ProtocolError::Io(io) if io.kind() == io::ErrorKind::InvalidData),
            ),
            (
                "fragmented text that is not UTF-8",
                client_frames(vec![
                    fragment(Item::FirstText, b"\xc3"),
                    fragment(Item::Last, b"("),
                ]),
                |e| matches!(e, ProtocolError::Io(io) if io.kind() == io::ErrorKind::InvalidData),
            ),
            ("a continuation nobody started", raw(0x00, b"x"), |e| {
                matches!(e, ProtocolError::ContinuationNotStarted)
            }),
            ("a last fragment nobody started", raw(0x80, b"x"), |e| {
                matches!(e, ProtocolError::ContinuationNotStarted)
            }),
            (
                "a second first fragment",
                [raw(0x01, b"a"), raw(0x02, b"b")].concat(),
                |e| matches!(e, ProtocolError::ContinuationStarted),
            ),
            (
                "a whole message inside a fragmented one",
                [raw(0x01, b"a"), raw(0x81, b"b")].concat(),
                |e| matches!(e, ProtocolError::ContinuationStarted),
            ),
            ("an unmasked frame", vec![0x81, 0x01, b'a'], |e| {
                matches!(e, ProtocolError::UnmaskedFrame)
            }),
        ];
        for (what, frames, expected) in cases {
            let (mut socket, mut client) = pair(16).await;
            client.write_all(&frames).await.unwrap();
            let err = recv(&mut socket).await.unwrap().unwrap_err();
            assert!(expected(&err), "{what}: {err:?}");
        }
    }

    #[tokio::test]
    async fn a_quiet_socket_holds_no_buffer() {
        let (mut socket, mut client) = pair(1024).await;
        client
            .write_all(&client_frames(vec![Message::Text("hi".into())]))
            .await
            .unwrap();
        assert!(matches!(
            recv(&mut socket).await,
            Some(Ok(Incoming::Text(_)))
        ));
        socket.text("hello").await.unwrap();
        // Waiting for the next message, with nothing arriving.
        let waiting = tokio::time::timeout(Duration::from_millis(50), socket.recv()).await;
        assert!(waiting.is_err(), "nothing arrived");
        assert_eq!(socket.read.capacity(), 0);
        assert_eq!(socket.out.capacity(), 0);
    }

    #[tokio::test]
    async fn a_write_cut_short_is_finished_by_the_next_one() {
        let (mut socket, mut client) = pair(1024).await;
        let big = "x".repeat(256 * 1024);
        // The client reads nothing, so the connection's buffers fill and a write blocks; the
        // timeout drops it part way, as a `select!` would.
        let mut sent = 0;
        loop {
            let write = tokio::time::timeout(Duration::from_millis(100), socket.text(big.clone()));
            sent += 1;
            if write.await.is_err() {
                break;
            }
            assert!(sent < 1000, "the connection never filled up");
        }
        assert!(!socket.out.is_empty(), "the cut-short write left its rest");
        let reader = tokio::spawn(async move {
            let mut received = Vec::new();
            client.read_to_end(&mut received).await.unwrap();
            received
        });
        socket.text("after").await.unwrap();
        drop(socket);

        let mut received = BytesMut::from(&reader.await.unwrap()[..]);
        let mut codec = Codec::new().client_mode().max_size(1024 * 1024);
        let mut frames = Vec::new();
        while let Some(frame) = codec.decode(&mut received).unwrap() {
            frames.push(frame);
        }
        assert!(received.is_empty(), "no partial frame is left over");
        assert_eq!(frames.len(), sent + 1);
        for frame in &frames[..sent] {
            assert_eq!(frame, &ws::Frame::Text(Bytes::from(big.clone())));
        }
        assert_eq!(frames[sent], ws::Frame::Text(Bytes::from_static(b"after")));
    }
}
