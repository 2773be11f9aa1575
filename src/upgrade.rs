//! Connections whose request asks for an upgrade, as actix-http tells them apart
//! (`Upgrade: websocket`, or `CONNECT`): every WebSocket handshake, for the cable and presence.
//!
//! actix-http's HTTP/1 dispatcher would otherwise carry each socket for its whole life, and it
//! keeps an 8 KiB read and an 8 KiB write buffer per connection however quiet the socket is:
//! most of what a held socket costs. Here the request still goes through the whole application
//! (middleware, routing, the handlers' Origin, admission and session checks, actix-ws's
//! handshake), and only moving the bytes afterwards is done differently: a frame is written
//! straight from the bytes the socket queued, and what the client sends is read through a
//! buffer on the stack, so a held socket owns no buffer while nothing is in flight.

use std::{
    cell::RefCell,
    future::{Future, poll_fn},
    io,
    pin::{Pin, pin},
    rc::Rc,
    task::{Context, Poll, Waker, ready},
};

use actix_codec::{Encoder as _, Framed, FramedParts};
use actix_http::{
    ConnectionType, Payload, Request, Response, StatusCode,
    body::{BoxBody, MessageBody},
    error::PayloadError,
    h1,
};
use actix_web::dev::{Service, ServiceResponse};
use bytes::{Buf as _, Bytes, BytesMut};
use futures_util::Stream;
use tokio::{
    io::{AsyncRead, AsyncWrite, AsyncWriteExt as _, ReadBuf},
    net::TcpStream,
};
use tokio_util::task::TaskTracker;

/// The most one read from the client takes at a time. A frame larger than this (presence and
/// the cable accept up to 16 KiB) arrives in several reads.
const READ_CHUNK: usize = 4096;

/// Serves one connection whose request asked for an upgrade: runs the request through `app` and
/// writes the answer. When that answer is `101 Switching Protocols`, the socket's bytes are then
/// relayed by a task of their own, tracked by `relays`, and this returns: the HTTP/1
/// dispatcher that called it (a few KiB, sized for any request) is freed, and a held socket
/// keeps only the relay. Any other answer (a refused handshake, or a path that takes no
/// socket) is written with `Connection: close`.
///
/// Never fails: a client that goes away is the normal end of a socket.
pub async fn serve<S, B>(
    app: &S,
    mut req: Request,
    framed: Framed<TcpStream, h1::Codec>,
    relays: &TaskTracker,
) -> Result<(), actix_web::Error>
where
    S: Service<Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody + 'static,
{
    let FramedParts {
        io,
        mut codec,
        read_buf,
        ..
    } = framed.into_parts();
    let inbound = Inbound::new(read_buf.freeze());
    *req.payload() = Payload::Stream {
        payload: Box::pin(InboundStream(inbound.clone())),
    };
    let mut relay = Relay {
        io,
        inbound,
        reading: true,
    };

    // The client may send a body with its request; read it while the application answers.
    let response = {
        let mut call = pin!(app.call(req));
        poll_fn(|cx| {
            relay.read(cx);
            call.as_mut().poll(cx)
        })
        .await
    };
    let response = match response {
        Ok(response) => Response::from(response).map_into_boxed_body(),
        Err(err) => Response::from(err),
    };
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        let (head, body) = response.into_parts();
        match encode_head(&mut codec, head, &body) {
            Ok(head) => {
                actix_web::rt::spawn(relays.track_future(relay.run(head.freeze(), body)));
            }
            Err(err) => relay.close(Err(err)).await,
        }
    } else {
        let answered = relay.answer(&mut codec, response).await;
        relay.close(answered).await;
    }
    Ok(())
}

/// One upgraded connection.
struct Relay {
    io: TcpStream,
    inbound: Rc<RefCell<Inbound>>,
    /// Whether the client may still send anything.
    reading: bool,
}

impl Relay {
    /// Writes `head`, then the body (the socket's outgoing frames) as it comes, while handing
    /// what the client sends to the socket, until the socket ends its body.
    async fn run(mut self, head: Bytes, mut body: BoxBody) {
        let mut pending = Some(head);
        let relayed = poll_fn(|cx| {
            self.read(cx);
            write_body(cx, &mut self.io, &mut body, &mut pending)
        })
        .await;
        self.close(relayed).await;
    }

    /// Writes a response that refused the upgrade, whole, for a connection that closes after it.
    async fn answer(
        &mut self,
        codec: &mut h1::Codec,
        mut response: Response<BoxBody>,
    ) -> io::Result<()> {
        response
            .head_mut()
            .set_connection_type(ConnectionType::Close);
        let (head, body) = response.into_parts();
        let mut out = encode_head(codec, head, &body)?;
        let bytes = actix_http::body::to_bytes(body)
            .await
            .map_err(|err| io::Error::other(err.to_string()))?;
        codec.encode(h1::Message::Chunk(Some(bytes)), &mut out)?;
        codec.encode(h1::Message::Chunk(None), &mut out)?;
        self.io.write_all(&out).await
    }

    /// Ends the connection: the socket, if it still reads, sees the client's side end, and the
    /// connection is shut down.
    async fn close(mut self, result: io::Result<()>) {
        if let Err(err) = result {
            tracing::debug!(error = %err, "upgraded connection ended with an error");
        }
        self.inbound
            .borrow_mut()
            .finish(Err(PayloadError::Incomplete(None)));
        let _ = self.io.shutdown().await;
    }

    /// Reads what the client sent into the socket's inbound chunk, while the socket has taken
    /// the last one; stops reading for good at the client's end, a read error, or once the
    /// socket no longer listens.
    fn read(&mut self, cx: &mut Context<'_>) {
        while self.reading {
            let mut inbound = self.inbound.borrow_mut();
            if inbound.closed {
                self.reading = false;
                return;
            }
            if inbound.chunk.is_some() {
                // Woken when the socket takes it.
                inbound.relay = Some(cx.waker().clone());
                return;
            }
            let mut chunk = [0u8; READ_CHUNK];
            let mut buf = ReadBuf::new(&mut chunk);
            match Pin::new(&mut self.io).poll_read(cx, &mut buf) {
                Poll::Pending => return,
                Poll::Ready(Ok(())) if buf.filled().is_empty() => {
                    self.reading = false;
                    inbound.finish(Ok(()));
                }
                Poll::Ready(Ok(())) => {
                    inbound.chunk = Some(Bytes::copy_from_slice(buf.filled()));
                    inbound.wake_reader();
                }
                Poll::Ready(Err(err)) => {
                    self.reading = false;
                    inbound.finish(Err(PayloadError::Io(err)));
                }
            }
        }
    }
}

/// Encodes a response head with the connection's codec, which knows the request's version and
/// that an upgrade's body runs until the connection closes.
fn encode_head(codec: &mut h1::Codec, head: Response<()>, body: &BoxBody) -> io::Result<BytesMut> {
    let mut out = BytesMut::new();
    codec.encode(h1::Message::Item((head, body.size())), &mut out)?;
    Ok(out)
}

/// Writes `pending`, then each chunk of `body` as it comes, straight from the body's own bytes;
/// ready once the body has ended and everything is written.
fn write_body(
    cx: &mut Context<'_>,
    io: &mut TcpStream,
    body: &mut BoxBody,
    pending: &mut Option<Bytes>,
) -> Poll<io::Result<()>> {
    loop {
        if let Some(bytes) = pending {
            while !bytes.is_empty() {
                let written = ready!(Pin::new(&mut *io).poll_write(cx, bytes))?;
                if written == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                bytes.advance(written);
            }
            *pending = None;
        }
        match ready!(Pin::new(&mut *body).poll_next(cx)) {
            Some(Ok(bytes)) => *pending = Some(bytes),
            Some(Err(err)) => return Poll::Ready(Err(io::Error::other(err.to_string()))),
            None => return Poll::Ready(Ok(())),
        }
    }
}

/// What the client has sent that the socket has not taken yet: at most one chunk, so a client
/// that sends faster than its socket reads waits in TCP's buffers, not in ours.
struct Inbound {
    chunk: Option<Bytes>,
    /// How the client's side ended, once it has; an error is handed to the socket once.
    end: Option<Result<(), PayloadError>>,
    ended: bool,
    /// The socket has dropped its end: nothing more is read.
    closed: bool,
    /// The socket, waiting for a chunk.
    reader: Option<Waker>,
    /// The relay, waiting for the socket to take the chunk.
    relay: Option<Waker>,
}

impl Inbound {
    /// Starts with whatever the client sent right behind its request.
    fn new(first: Bytes) -> Rc<RefCell<Self>> {
        Rc::new(RefCell::new(Self {
            chunk: (!first.is_empty()).then_some(first),
            end: None,
            ended: false,
            closed: false,
            reader: None,
            relay: None,
        }))
    }

    /// Records how the client's side ended (the first ending counts) and tells the socket.
    fn finish(&mut self, how: Result<(), PayloadError>) {
        if !self.ended {
            self.ended = true;
            self.end = Some(how);
        }
        self.wake_reader();
    }

    fn wake_reader(&mut self) {
        if let Some(reader) = self.reader.take() {
            reader.wake();
        }
    }
}

/// The socket's end of [`Inbound`]: the request's payload, which actix-ws reads frames from.
struct InboundStream(Rc<RefCell<Inbound>>);

impl Stream for InboundStream {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut inbound = self.0.borrow_mut();
        if let Some(chunk) = inbound.chunk.take() {
            if let Some(relay) = inbound.relay.take() {
                relay.wake();
            }
            return Poll::Ready(Some(Ok(chunk)));
        }
        if inbound.ended {
            return Poll::Ready(inbound.end.take().and_then(Result::err).map(Err));
        }
        inbound.reader = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for InboundStream {
    fn drop(&mut self) {
        let mut inbound = self.0.borrow_mut();
        inbound.closed = true;
        inbound.chunk = None;
        if let Some(relay) = inbound.relay.take() {
            relay.wake();
        }
    }
}
