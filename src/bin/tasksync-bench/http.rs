//! A lean HTTP/1.1 client for the load generator: one keep-alive connection per virtual user,
//! as a browser tab would hold, with the session cookie kept by hand. No pool, no redirects:
//! every request costs the generator as little as possible so the server is what gets measured.
//! It asks for compressed responses as Chromium does, so the server compresses as it would for
//! a browser, and decodes what comes back as a browser would.

use std::{io::Read as _, net::SocketAddr};

use anyhow::{Context as _, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{Method, Request, client::conn::http1::SendRequest, header};
use hyper_util::rt::TokioIo;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use tokio::net::TcpStream;

pub const TURBO_ACCEPT: &str = "text/vnd.turbo-stream.html, text/html, application/xhtml+xml";

/// What Chromium sends with every request.
pub const BROWSER_ACCEPT_ENCODING: &str = "gzip, deflate, br, zstd";

pub struct Response {
    pub status: u16,
    pub body: String,
    pub location: Option<String>,
}

pub struct Client {
    addr: SocketAddr,
    host: String,
    sender: Option<SendRequest<Full<Bytes>>>,
    cookies: Vec<(String, String)>,
    accept_encoding: Option<String>,
}

impl Client {
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            host: addr.to_string(),
            sender: None,
            cookies: Vec::new(),
            accept_encoding: Some(BROWSER_ACCEPT_ENCODING.to_owned()),
        }
    }

    /// Sends this `Accept-Encoding` instead of Chromium's, or none.
    pub fn with_accept_encoding(mut self, accept_encoding: Option<String>) -> Self {
        self.accept_encoding = accept_encoding;
        self
    }

    /// A client that already carries a signed-in session.
    pub fn with_cookie(addr: SocketAddr, cookie: &str) -> Self {
        let mut client = Self::new(addr);
        client.store_cookie(cookie);
        client
    }

    /// The `Cookie` header a browser would send, for WebSocket handshakes.
    pub fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn store_cookie(&mut self, set_cookie: &str) {
        let pair = set_cookie.split(';').next().unwrap_or_default();
        if let Some((name, value)) = pair.split_once('=') {
            let (name, value) = (name.trim().to_owned(), value.trim().to_owned());
            self.cookies.retain(|(k, _)| *k != name);
            self.cookies.push((name, value));
        }
    }

    async fn connect(&mut self) -> Result<()> {
        let stream = TcpStream::connect(self.addr)
            .await
            .with_context(|| format!("connect to {}", self.addr))?;
        // Small request/response pairs: Nagle would add tens of milliseconds to each.
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        self.sender = Some(sender);
        Ok(())
    }

    pub async fn get(&mut self, path: &str) -> Result<Response> {
        self.send(Method::GET, path, None, None).await
    }

    /// A form post; `fields` are encoded as `application/x-www-form-urlencoded`.
    pub async fn post(
        &mut self,
        path: &str,
        fields: &[(&str, &str)],
        accept: Option<&str>,
    ) -> Result<Response> {
        self.send(Method::POST, path, Some(encode_form(fields)), accept)
            .await
    }

    async fn send(
        &mut self,
        method: Method,
        path: &str,
        body: Option<String>,
        accept: Option<&str>,
    ) -> Result<Response> {
        // A connection the server closed (keep-alive timeout, restart) is replaced once.
        for attempt in 0..2 {
            if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
                self.connect().await?;
            }
            let mut builder = Request::builder()
                .method(method.clone())
                .uri(path)
                .header(header::HOST, &self.host);
            if let Some(accept_encoding) = &self.accept_encoding {
                builder = builder.header(header::ACCEPT_ENCODING, accept_encoding);
            }
            if !self.cookies.is_empty() {
                builder = builder.header(header::COOKIE, self.cookie_header());
            }
            if let Some(accept) = accept {
                builder = builder.header(header::ACCEPT, accept);
            }
            let body = match &body {
                Some(form) => {
                    builder =
                        builder.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
                    Full::new(Bytes::from(form.clone()))
                }
                None => Full::new(Bytes::new()),
            };
            let request = builder.body(body)?;
            let sender = self.sender.as_mut().expect("connected above");
            if sender.ready().await.is_err() {
                self.sender = None;
                continue;
            }
            let res = match sender.send_request(request).await {
                Ok(res) => res,
                Err(e) if attempt == 0 && e.is_canceled() => {
                    self.sender = None;
                    continue;
                }
                Err(e) => {
                    self.sender = None;
                    return Err(e.into());
                }
            };
            let status = res.status().as_u16();
            for value in res.headers().get_all(header::SET_COOKIE) {
                if let Ok(value) = value.to_str() {
                    self.store_cookie(value);
                }
            }
            let location = res
                .headers()
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let encoding = res.headers().get(header::CONTENT_ENCODING).cloned();
            let bytes = res.into_body().collect().await?.to_bytes();
            let body = decode(encoding.as_ref().map(|v| v.as_bytes()), &bytes)
                .with_context(|| format!("{method} {path}: the response body"))?;
            return Ok(Response {
                status,
                body,
                location,
            });
        }
        bail!("{method} {path}: the connection kept closing")
    }
}

/// A response body as text, decoded by its `Content-Encoding`: the server compresses with zstd
/// for a client that takes it, as Chromium does, and with gzip for one that does not.
fn decode(encoding: Option<&[u8]>, bytes: &[u8]) -> Result<String> {
    let mut text = String::new();
    match encoding {
        None | Some(b"identity") => return Ok(String::from_utf8_lossy(bytes).into_owned()),
        Some(b"zstd") => zstd::stream::read::Decoder::new(bytes)?.read_to_string(&mut text)?,
        Some(b"gzip") => flate2::read::GzDecoder::new(bytes).read_to_string(&mut text)?,
        Some(other) => bail!(
            "Content-Encoding {}, which the benchmark does not decode",
            String::from_utf8_lossy(other)
        ),
    };
    Ok(text)
}

fn encode_form(fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                utf8_percent_encode(k, NON_ALPHANUMERIC),
                utf8_percent_encode(v, NON_ALPHANUMERIC)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// The value of the first `attr="..."` after `marker` in a page, HTML entities decoded.
pub fn attribute_after(html: &str, marker: &str) -> Option<String> {
    let start = html.find(marker)? + marker.len();
    let raw = html[start..].split('"').next()?;
    Some(unescape(raw))
}

pub fn csrf_token(html: &str) -> Option<String> {
    attribute_after(html, "name=\"csrf-token\" content=\"")
}

pub fn task_id(html: &str) -> Option<i64> {
    let start = html.find("<div id=\"task_")? + "<div id=\"task_".len();
    html[start..].split('"').next()?.parse().ok()
}

/// Tera escapes `&<>"'/`; the signed names and tokens only ever contain a few of them.
fn unescape(s: &str) -> String {
    s.replace("&#x2F;", "/")
        .replace("&#x3D;", "=")
        .replace("&#x27;", "'")
        .replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    const PAGE: &str = "<div class=\"task\">Write the agenda</div>\n";

    #[test]
    fn a_body_is_decoded_by_its_content_encoding() {
        let zstd = zstd::bulk::compress(PAGE.as_bytes(), 1).unwrap();
        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gzip.write_all(PAGE.as_bytes()).unwrap();
        let gzip = gzip.finish().unwrap();

        assert_eq!(decode(None, PAGE.as_bytes()).unwrap(), PAGE);
        assert_eq!(decode(Some(b"identity"), PAGE.as_bytes()).unwrap(), PAGE);
        assert_eq!(decode(Some(b"zstd"), &zstd).unwrap(), PAGE);
        assert_eq!(decode(Some(b"gzip"), &gzip).unwrap(), PAGE);
    }

    #[test]
    fn an_encoding_it_does_not_decode_or_a_broken_body_is_an_error() {
        let error = decode(Some(b"br"), b"\x0b\x02\x80").unwrap_err();
        assert!(error.to_string().contains("Content-Encoding br"), "{error}");
        assert!(decode(Some(b"zstd"), PAGE.as_bytes()).is_err());
        assert!(decode(Some(b"gzip"), PAGE.as_bytes()).is_err());
    }
}
