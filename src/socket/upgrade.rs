//! Connections whose request asks for an upgrade, as actix-http tells them apart
//! (`Upgrade: websocket`, or `CONNECT`): every WebSocket handshake, for the cable and presence.
//!
//! actix-http's HTTP/1 dispatcher would otherwise carry each socket for its whole life, with an
//! 8 KiB read and an 8 KiB write buffer and a few KiB of its own state, however quiet the socket
//! is: most of what a held socket cost. Here the request still goes through the whole
//! application (middleware, routing, the handlers' Origin, admission and session checks); a
//! handler that takes the socket answers with [`accept`], and the connection itself goes to the
//! socket's task as a [`WebSocket`], with that `101` encoded and waiting to leave in the same
//! write as the socket's first message. Nothing of the HTTP side is left holding it.

use std::rc::Rc;

use actix_codec::{Encoder as _, Framed, FramedParts};
use actix_http::{
    ConnectionType, Request, Response, StatusCode,
    body::{BoxBody, MessageBody},
    h1,
    ws::HandshakeError,
};
use actix_service::IntoServiceFactory as _;
use actix_web::{
    App, Error, HttpRequest, HttpResponse,
    dev::{
        AppConfig, Service, ServiceFactory, ServiceRequest, ServiceResponse, fn_factory, fn_service,
    },
    http::header,
};
use bytes::BytesMut;
use tokio::{io::AsyncWriteExt as _, net::TcpStream, sync::oneshot};

use super::websocket::WebSocket;
use crate::request_headers;

/// Answers a WebSocket handshake: the `101` response, naming the first of the client's offered
/// subprotocols that is in `protocols` (none if none is), and the socket that connection
/// becomes, the response waiting in it to be written. Messages on it are limited to
/// `max_bytes`.
pub fn accept(
    req: &HttpRequest,
    protocols: &[&str],
    max_bytes: usize,
) -> Result<(HttpResponse, Pending), HandshakeError> {
    let mut response = actix_http::ws::handshake(req.head())?;
    if let Some(protocol) = chosen_protocol(req, protocols) {
        response.insert_header((header::SEC_WEBSOCKET_PROTOCOL, protocol));
    }
    let mut response = HttpResponse::from(response.finish().map_into_boxed_body());
    let (handoff, pending) = oneshot::channel();
    response.extensions_mut().insert(Handoff {
        socket: handoff,
        max_bytes,
    });
    Ok((response, Pending(pending)))
}

fn chosen_protocol<'a>(req: &HttpRequest, protocols: &[&'a str]) -> Option<&'a str> {
    req.headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .filter_map(|value| value.to_str().ok())
        .flat_map(|offered| offered.split(',').map(str::trim))
        .find_map(|offered| protocols.iter().find(|ours| **ours == offered).copied())
}

/// Where the connection goes once the `101` is encoded; carried in the response's extensions.
struct Handoff {
    socket: oneshot::Sender<WebSocket>,
    max_bytes: usize,
}

/// The socket a handshake answered with [`accept`] becomes.
pub struct Pending(oneshot::Receiver<WebSocket>);

impl Pending {
    /// The socket, its `101` waiting to be written (see [`WebSocket::new`]); `None` if the
    /// connection was lost before.
    pub async fn socket(self) -> Option<WebSocket> {
        self.0.await.ok()
    }
}

/// The upgrade service for actix-http's `HttpService::upgrade`: an instance of the application
/// built by `app` (the same one the HTTP side serves) and [`serve`] around it.
pub fn service<T, B>(
    app: impl Fn() -> App<T> + 'static,
) -> impl ServiceFactory<
    (Request, Framed<TcpStream, h1::Codec>),
    Config = (),
    Response = (),
    Error = Error,
    InitError = (),
>
where
    T: ServiceFactory<
            ServiceRequest,
            Config = (),
            Response = ServiceResponse<B>,
            Error = Error,
            InitError = (),
        > + 'static,
    B: MessageBody + 'static,
{
    fn_factory(move || {
        let app = app().into_factory();
        async move {
            let app = Rc::new(app.new_service(AppConfig::default()).await?);
            Ok(fn_service(move |(req, framed)| {
                let app = Rc::clone(&app);
                async move { serve(&*app, req, framed).await }
            }))
        }
    })
}

/// Serves one connection whose request asked for an upgrade: runs the request through `app`
/// and, when a handler accepted the socket (see [`accept`]), hands the connection with the
/// encoded `101` to the socket's task and returns, freeing the HTTP/1 dispatcher that called it.
/// Any other answer (a refused handshake, or a path that takes no socket) is written with
/// `Connection: close`.
///
/// Never fails: a client that goes away is the normal end of a connection.
pub async fn serve<S, B>(
    app: &S,
    mut req: Request,
    framed: Framed<TcpStream, h1::Codec>,
) -> Result<(), Error>
where
    S: Service<Request, Response = ServiceResponse<B>, Error = Error>,
    B: MessageBody + 'static,
{
    // The connection's read buffer goes to the socket; the request's head, kept by actix for
    // reuse, must not keep it too.
    request_headers::detach(req.headers_mut());
    let FramedParts {
        mut io,
        mut codec,
        read_buf,
        ..
    } = framed.into_parts();
    let mut response = match app.call(req).await {
        Ok(response) => Response::from(response).map_into_boxed_body(),
        Err(err) => Response::from(err),
    };
    let handoff = response.extensions_mut().remove::<Handoff>();
    let written = match handoff {
        Some(handoff) if response.status() == StatusCode::SWITCHING_PROTOCOLS => {
            match encode_head(&mut codec, response) {
                Ok(head) => {
                    let socket = WebSocket::new(io, read_buf, head, handoff.max_bytes);
                    // A socket task that is already gone drops the connection with it.
                    let _ = handoff.socket.send(socket);
                    return Ok(());
                }
                Err(err) => Err(err),
            }
        }
        _ => answer(&mut io, &mut codec, response).await,
    };
    if let Err(err) = written {
        tracing::debug!(error = %err, "upgrade request ended with an error");
    }
    let _ = io.shutdown().await;
    Ok(())
}

/// The head of a `101`, which has no body, as bytes for the socket to write ahead of its first
/// message: one write instead of two, and one wakeup of the client fewer, on every handshake.
fn encode_head(codec: &mut h1::Codec, response: Response<BoxBody>) -> std::io::Result<BytesMut> {
    let (head, body) = response.into_parts();
    let mut out = BytesMut::new();
    codec.encode(h1::Message::Item((head, body.size())), &mut out)?;
    Ok(out)
}

/// Writes a response that did not upgrade, whole, for a connection that closes after it.
async fn answer(
    io: &mut TcpStream,
    codec: &mut h1::Codec,
    mut response: Response<BoxBody>,
) -> std::io::Result<()> {
    response
        .head_mut()
        .set_connection_type(ConnectionType::Close);
    let (head, body) = response.into_parts();
    let size = body.size();
    let bytes = actix_http::body::to_bytes(body)
        .await
        .map_err(|err| std::io::Error::other(err.to_string()))?;
    let mut out = BytesMut::new();
    codec.encode(h1::Message::Item((head, size)), &mut out)?;
    codec.encode(h1::Message::Chunk(Some(bytes)), &mut out)?;
    codec.encode(h1::Message::Chunk(None), &mut out)?;
    io.write_all(&out).await
}
