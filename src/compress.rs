//! Pages, turbo-streams and JSON compressed as they are answered, on the worker that answers:
//! zstd for the browsers that take it (Chromium and Firefox say so in every request), gzip for
//! the rest, nothing for a client that asks for neither.
//!
//! Why not actix-web's `Compress`: it compresses as a stream whose length it does not know, so
//! each zstd response began with a context sized for any input (a window of megabytes) and gzip
//! cost a room page 130 µs; and it sends any body over 1 KiB to tokio's blocking pool, two
//! thread switches a response. Our bodies are whole before they leave the handler, so the whole
//! body is compressed in one call, with parameters zstd fits to its size: a 50-task room page
//! (109 KB) in about 60 µs, to 3.4 KB (README, Performance).
//!
//! Bodies already encoded (the assets, compressed at build time), streamed, smaller than a
//! packet, not text or with an `ETag` (an asset sent as it is) pass through as they are.

use std::{cell::RefCell, io::Write as _, rc::Rc};

use actix_web::{
    body::{BodySize, EitherBody, MessageBody},
    dev::{ResponseHead, ServiceRequest, ServiceResponse},
    http::{
        StatusCode,
        header::{self, AcceptEncoding, ContentEncoding, Encoding, HeaderValue},
    },
    middleware::Next,
    web::Bytes,
};

/// Below this a body goes as it is: compressed, it would save less than the headers it adds
/// cost, in a packet that leaves either way.
const MIN_BYTES: u64 = 1024;

/// zstd's fastest level: level 3, its default, made a room page 2% smaller for a third more CPU.
const ZSTD_LEVEL: i32 = 1;

/// What the server offers; at the same quality actix's negotiation ranks zstd above gzip.
const OFFERED: [Encoding; 3] = [Encoding::zstd(), Encoding::gzip(), Encoding::identity()];

/// A worker's compressing state, kept between its responses: one zstd context. Setting a
/// context up for each response was 4% of the server's CPU through the benchmark's HTTP ramp
/// (`perf`), and freeing it each time left its pieces all over the worker's heap; kept, it
/// holds about 0.5 MB. Each worker's application gets its own (`App::app_data`, built on the
/// worker's thread), so nothing is shared or locked: a response is compressed whole, with no
/// `.await` while the context is borrowed.
#[derive(Default)]
pub struct Compressors {
    zstd: RefCell<Option<zstd::bulk::Compressor<'static>>>,
}

impl Compressors {
    /// For `App::app_data`.
    pub fn for_worker() -> Rc<Self> {
        Rc::new(Self::default())
    }

    fn zstd(&self, bytes: &[u8]) -> std::io::Result<Vec<u8>> {
        let mut context = self.zstd.borrow_mut();
        let compressor = match &mut *context {
            Some(compressor) => compressor,
            None => context.insert(zstd::bulk::Compressor::new(ZSTD_LEVEL)?),
        };
        // Each call starts a new frame whatever the last left, with parameters fitted to
        // this body's size.
        compressor.compress(bytes)
    }
}

pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    // Kept as sent (a copy of a reference-counted value), and read only for a body that could
    // be compressed: most answers (a 101, a redirect, a small turbo-stream) are not.
    let accepted: Vec<HeaderValue> = req
        .headers()
        .get_all(header::ACCEPT_ENCODING)
        .cloned()
        .collect();
    let compressors = req.app_data::<Rc<Compressors>>().cloned();
    let res = next.call(req).await?;
    Ok(res.map_body(|head, body| encode(head, body, &accepted, compressors.as_deref())))
}

/// The encoding of `offered` that `accepted`, the request's `Accept-Encoding` values, prefers,
/// by actix's negotiation: the highest q-value (RFC 9110, 12.5.3), ties going to brotli, then
/// zstd, then gzip; identity when nothing offered is taken or the header does not parse.
pub fn negotiate<'a>(
    accepted: impl Iterator<Item = &'a HeaderValue> + 'a,
    offered: &[Encoding],
) -> ContentEncoding {
    header::from_comma_delimited(accepted)
        .ok()
        .and_then(|items| AcceptEncoding(items).negotiate(offered.iter()))
        .and_then(|encoding| match encoding {
            Encoding::Known(known) => Some(known),
            Encoding::Unknown(_) => None,
        })
        .unwrap_or(ContentEncoding::Identity)
}

/// The response's body, compressed if it should be and the client takes an encoding we offer.
fn encode<B: MessageBody>(
    head: &mut ResponseHead,
    body: B,
    accepted: &[HeaderValue],
    compressors: Option<&Compressors>,
) -> EitherBody<B, Bytes> {
    if !compressible(head, body.size()) {
        return EitherBody::left(body);
    }
    let bytes = match body.try_into_bytes() {
        Ok(bytes) => bytes,
        Err(body) => return EitherBody::left(body),
    };
    vary_on_accept_encoding(head);
    let encoding = negotiate(accepted.iter(), &OFFERED);
    if encoding == ContentEncoding::Identity {
        return EitherBody::right(bytes);
    }
    match compress(encoding, &bytes, compressors) {
        Ok(compressed) => {
            head.headers_mut()
                .insert(header::CONTENT_ENCODING, encoding.to_header_value());
            EitherBody::right(Bytes::from(compressed))
        }
        Err(error) => {
            tracing::error!(%error, ?encoding, "compressing a response failed; sent as it is");
            EitherBody::right(bytes)
        }
    }
}

/// A whole text body of some size, not already encoded, on a response that has a body and no
/// validator: an `ETag` names one representation, which an encoding made here would change.
fn compressible(head: &ResponseHead, size: BodySize) -> bool {
    let has_body = !matches!(
        head.status,
        StatusCode::SWITCHING_PROTOCOLS | StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED
    );
    let text = head
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/") || v.starts_with("application/json"));
    has_body
        && text
        && matches!(size, BodySize::Sized(n) if n >= MIN_BYTES)
        && !head.headers().contains_key(header::CONTENT_ENCODING)
        && !head.headers().contains_key(header::ETAG)
}

/// Caches must keep one copy per encoding asked for.
fn vary_on_accept_encoding(head: &mut ResponseHead) {
    let headers = head.headers_mut();
    let already = headers
        .get_all(header::VARY)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|v| v.trim().eq_ignore_ascii_case("accept-encoding"));
    if !already {
        headers.append(header::VARY, HeaderValue::from_static("accept-encoding"));
    }
}

/// `bytes` in `encoding`, with the worker's `compressors` when the application has them.
fn compress(
    encoding: ContentEncoding,
    bytes: &[u8],
    compressors: Option<&Compressors>,
) -> std::io::Result<Vec<u8>> {
    match encoding {
        // An application without them (a test's) gets a context for this response alone.
        ContentEncoding::Zstd => match compressors {
            Some(compressors) => compressors.zstd(bytes),
            None => Compressors::default().zstd(bytes),
        },
        ContentEncoding::Gzip => {
            let mut encoder = flate2::write::GzEncoder::new(
                Vec::with_capacity(bytes.len() / 8),
                flate2::Compression::fast(),
            );
            encoder.write_all(bytes)?;
            encoder.finish()
        }
        other => Err(std::io::Error::other(format!("{other:?} is not offered"))),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use actix_web::{
        App, HttpResponse,
        http::header::{ACCEPT_ENCODING, CONTENT_ENCODING, VARY},
        middleware::from_fn,
        test, web,
    };

    use super::*;

    fn page() -> String {
        "<li class=\"task\">Write the agenda</li>\n".repeat(100)
    }

    async fn get(
        accept_encoding: Option<&str>,
        path: &str,
    ) -> (StatusCode, Option<String>, Option<String>, Bytes) {
        let app = test::init_service(
            App::new()
                .wrap(from_fn(middleware))
                .route(
                    "/page",
                    web::get()
                        .to(|| async { HttpResponse::Ok().content_type("text/html").body(page()) }),
                )
                .route(
                    "/small",
                    web::get().to(|| async {
                        HttpResponse::Ok()
                            .content_type("text/html")
                            .body("<p>hi</p>")
                    }),
                )
                .route(
                    "/image",
                    web::get()
                        .to(|| async { HttpResponse::Ok().content_type("image/png").body(page()) }),
                )
                .route(
                    "/tagged",
                    web::get().to(|| async {
                        HttpResponse::Ok()
                            .content_type("text/css")
                            .insert_header((header::ETAG, "\"abc\""))
                            .body(page())
                    }),
                )
                .route(
                    "/encoded",
                    web::get().to(|| async {
                        HttpResponse::Ok()
                            .content_type("text/css")
                            .insert_header((CONTENT_ENCODING, "br"))
                            .body(page())
                    }),
                ),
        )
        .await;
        let mut req = test::TestRequest::get().uri(path);
        if let Some(value) = accept_encoding {
            req = req.insert_header((ACCEPT_ENCODING, value));
        }
        let res = test::call_service(&app, req.to_request()).await;
        let status = res.status();
        let header = |name| {
            res.headers()
                .get(name)
                .map(|v: &HeaderValue| v.to_str().unwrap().to_owned())
        };
        let (encoding, vary) = (header(CONTENT_ENCODING), header(VARY));
        (status, encoding, vary, test::read_body(res).await)
    }

    fn decode(encoding: Option<&str>, body: &[u8]) -> String {
        let mut text = String::new();
        match encoding {
            None => return String::from_utf8(body.to_vec()).unwrap(),
            Some("zstd") => zstd::stream::read::Decoder::new(body)
                .unwrap()
                .read_to_string(&mut text)
                .unwrap(),
            Some("gzip") => flate2::read::GzDecoder::new(body)
                .read_to_string(&mut text)
                .unwrap(),
            Some(other) => panic!("{other}"),
        };
        text
    }

    #[actix_web::test]
    async fn a_page_goes_in_the_best_encoding_the_client_takes() {
        for (accept, expected) in [
            (Some("gzip, deflate, br, zstd"), Some("zstd")),
            (Some("gzip, deflate, br"), Some("gzip")),
            (Some("zstd;q=0.5, gzip"), Some("gzip")),
            (Some("gzip;q=0, zstd;q=0"), None),
            (Some("br"), None),
            (Some("not a list;;;q=x"), None),
            (None, None),
        ] {
            let (status, encoding, vary, body) = get(accept, "/page").await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(encoding.as_deref(), expected, "{accept:?}");
            assert_eq!(vary.as_deref(), Some("accept-encoding"), "{accept:?}");
            assert_eq!(decode(expected, &body), page(), "{accept:?}");
            if expected.is_some() {
                assert!(body.len() * 10 < page().len(), "{accept:?}: {}", body.len());
            }
        }
    }

    /// The worker's context, kept from one response to the next, makes whole frames of each,
    /// small after large and large after small.
    #[actix_web::test]
    async fn a_workers_kept_context_compresses_each_response_on_its_own() {
        let compressors = Compressors::for_worker();
        let app = test::init_service(
            App::new()
                .app_data(Rc::clone(&compressors))
                .wrap(from_fn(middleware))
                .route(
                    "/{times}",
                    web::get().to(|times: web::Path<usize>| async move {
                        HttpResponse::Ok()
                            .content_type("text/html")
                            .body(format!("<h1>{times}</h1>{}", page().repeat(*times)))
                    }),
                ),
        )
        .await;
        for times in [1, 40, 1, 3] {
            let req = test::TestRequest::get()
                .uri(&format!("/{times}"))
                .insert_header((ACCEPT_ENCODING, "zstd"))
                .to_request();
            let res = test::call_service(&app, req).await;
            assert_eq!(res.headers().get(CONTENT_ENCODING).unwrap(), "zstd");
            let body = test::read_body(res).await;
            let expected = format!("<h1>{times}</h1>{}", page().repeat(times));
            assert_eq!(decode(Some("zstd"), &body), expected, "{times}");
            assert!(
                compressors.zstd.borrow().is_some(),
                "compressed with the worker's context"
            );
        }
    }

    #[actix_web::test]
    async fn small_encoded_tagged_and_non_text_bodies_pass_as_they_are() {
        for path in ["/small", "/image", "/tagged", "/encoded"] {
            let (status, encoding, vary, body) = get(Some("zstd, gzip"), path).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(vary, None, "{path}");
            if path == "/encoded" {
                assert_eq!(encoding.as_deref(), Some("br"));
            } else {
                assert_eq!(encoding, None, "{path}");
            }
            let expected = if path == "/small" {
                "<p>hi</p>".to_owned()
            } else {
                page()
            };
            assert_eq!(body, expected.as_bytes(), "{path}");
        }
    }
}
