//! Static assets: our CSS and JS from `static/` and Turbo from its npm package. `build.rs`
//! fingerprints each file and compresses it with gzip and brotli at build time, so the server
//! only picks the right bytes: URLs change whenever content does, and every asset can be cached
//! for a year.

use actix_web::{
    HttpRequest, HttpResponse,
    http::header::{self, ContentEncoding, Encoding, Header as _, IfNoneMatch},
    web,
};

use crate::{compress, error::AppError};

/// One asset, in each encoding.
pub struct Asset {
    /// The name templates ask for, such as `application.css`.
    pub logical: &'static str,
    /// The fingerprinted URL path, such as `/assets/application-1a2b3c4d.css`.
    pub path: &'static str,
    pub content_type: &'static str,
    pub identity: Encoded,
    pub gzip: Encoded,
    pub brotli: Encoded,
}

/// An asset's bytes in one content-coding, with that representation's own entity tag: the
/// tag names the bytes sent, so each encoding has its own (RFC 9110, 8.8.3).
pub struct Encoded {
    pub bytes: &'static [u8],
    pub etag: &'static str,
}

include!(concat!(env!("OUT_DIR"), "/assets.rs"));

/// The fingerprinted URL of `logical`. Unknown names are a programming error caught by tests:
/// they yield a path that answers 404.
pub fn path(logical: &str) -> &'static str {
    ASSETS
        .iter()
        .find(|a| a.logical == logical)
        .map_or("/assets/missing", |a| a.path)
}

/// The encodings each asset is built in.
const OFFERED: [Encoding; 3] = [Encoding::brotli(), Encoding::gzip(), Encoding::identity()];

/// `GET /assets/{file}`: the asset in the best encoding the client accepts.
pub async fn show(req: HttpRequest, file: web::Path<String>) -> Result<HttpResponse, AppError> {
    let wanted = format!("/assets/{file}");
    let asset = ASSETS
        .iter()
        .find(|a| a.path == wanted)
        .ok_or(AppError::NotFound)?;
    // Ties between equal q-values go to brotli, the smaller.
    let accepted = req.headers().get_all(header::ACCEPT_ENCODING);
    let (encoding, encoded) = match compress::negotiate(accepted, &OFFERED) {
        ContentEncoding::Brotli => (ContentEncoding::Brotli, &asset.brotli),
        ContentEncoding::Gzip => (ContentEncoding::Gzip, &asset.gzip),
        _ => (ContentEncoding::Identity, &asset.identity),
    };
    let not_modified = match IfNoneMatch::parse(&req) {
        Ok(IfNoneMatch::Any) => true,
        // The weak comparison If-None-Match asks for: the opaque tags alone.
        Ok(IfNoneMatch::Items(tags)) => {
            let ours = encoded.etag.trim_matches('"');
            tags.iter().any(|tag| tag.tag() == ours)
        }
        Err(_) => false,
    };
    let mut res = if not_modified {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    res.insert_header((header::CACHE_CONTROL, "public, max-age=31536000, immutable"))
        .insert_header((header::VARY, "Accept-Encoding"))
        .insert_header((header::ETAG, encoded.etag));
    if not_modified {
        return Ok(res.finish());
    }
    res.content_type(asset.content_type);
    if encoding != ContentEncoding::Identity {
        res.insert_header((header::CONTENT_ENCODING, encoding));
    }
    Ok(res.body(encoded.bytes))
}
