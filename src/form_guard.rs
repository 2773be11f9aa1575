//! Reads each non-GET request body once, before routing, to do what Rails does for form posts:
//! refuse oversized bodies (413) and undecodable form fields (400), check the CSRF token (field or
//! `X-CSRF-Token` header, else 422; else 404 where no route has the path), and honour the
//! `_method` override so that an HTML form can PATCH and DELETE. The decoded fields are kept for
//! the handler as [`FormParams`].
//!
//! Before routing, because the override decides which route a form reaches (Rails reads it in
//! `Rack::MethodOverride`, before its router, too). So a path that routes but does not take the
//! method is refused by the token check before the router could answer its 405: only a request
//! with a valid token learns which methods such a path takes.

use std::rc::Rc;

use actix_web::{
    FromRequest, HttpMessage as _, HttpRequest,
    body::{EitherBody, MessageBody},
    dev::{Payload, ServiceRequest, ServiceResponse},
    http::{Method, header},
    middleware::Next,
    web,
};
use bytes::BytesMut;
use futures_util::StreamExt as _;

use crate::{csrf, error::AppError, session::Session};

/// How large a request body may be.
#[derive(Clone, Copy, Debug)]
pub struct BodyLimit(pub usize);

pub async fn middleware(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(next.call(req).await?.map_into_left_body());
    }
    let limit = req
        .app_data::<web::Data<BodyLimit>>()
        .map_or(64 * 1024, |l| l.0);
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(AppError::PayloadTooLarge.into());
    }
    let mut payload = req.take_payload();
    let mut body = BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk =
            chunk.map_err(|_| AppError::BadRequest("the request body could not be read"))?;
        if body.len() + chunk.len() > limit {
            return Err(AppError::PayloadTooLarge.into());
        }
        body.extend_from_slice(&chunk);
    }
    let body = body.freeze();

    let is_form = req.content_type() == "application/x-www-form-urlencoded";
    let fields = if is_form {
        decode_form(&body)?
    } else {
        Vec::new()
    };
    let fields = FormParams(Rc::new(fields));
    let field = |name: &str| fields.get(name);

    let session =
        req.extensions().get::<Session>().cloned().ok_or_else(|| {
            AppError::internal("session middleware must run before the form guard")
        })?;
    let sent = req
        .headers()
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .or_else(|| field(csrf::PARAM));
    if !sent.is_some_and(|token| session.verify_csrf(token)) {
        // A path no route has is not found, whatever its token: a form posted to a mistyped
        // action should say so, not send its author looking for a CSRF problem. Nothing runs
        // for such a path but the 404, so there is nothing for the token to protect.
        if !req.resource_map().has_resource(req.path()) {
            return Err(AppError::NotFound.into());
        }
        return Err(AppError::InvalidAuthenticityToken.into());
    }

    if *req.method() == Method::POST {
        match field("_method").map(str::to_ascii_lowercase).as_deref() {
            None | Some("post") => {}
            Some("patch") => req.head_mut().method = Method::PATCH,
            Some("put") => req.head_mut().method = Method::PUT,
            Some("delete") => req.head_mut().method = Method::DELETE,
            Some(_) => return Err(AppError::BadRequest("unknown _method").into()),
        }
    }

    req.extensions_mut().insert(fields);
    Ok(next.call(req).await?.map_into_left_body())
}

/// The fields of the request's form body, decoded once by the middleware above.
#[derive(Clone, Debug, Default)]
pub struct FormParams(pub Rc<Vec<(String, String)>>);

impl FormParams {
    /// The value of field `name`; when a field repeats, the last one wins, as in Rails.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Like [`get`](Self::get), but a missing field is a malformed request.
    pub fn require(&self, name: &'static str) -> Result<&str, AppError> {
        self.get(name).ok_or(AppError::MissingParam(name))
    }
}

impl FromRequest for FormParams {
    type Error = AppError;
    type Future = std::future::Ready<Result<Self, AppError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(Ok(req
            .extensions()
            .get::<FormParams>()
            .cloned()
            .unwrap_or_default()))
    }
}

/// Decodes an `application/x-www-form-urlencoded` body, refusing malformed escapes and invalid
/// UTF-8 instead of silently replacing characters.
pub fn decode_form(body: &[u8]) -> Result<Vec<(String, String)>, AppError> {
    fn decode(part: &[u8]) -> Result<String, AppError> {
        let spaced: Vec<u8> = part
            .iter()
            .map(|&b| if b == b'+' { b' ' } else { b })
            .collect();
        let bytes: Vec<u8> = percent_encoding::percent_decode(&spaced).collect();
        String::from_utf8(bytes).map_err(|_| AppError::BadRequest("form fields must be UTF-8"))
    }
    body.split(|&b| b == b'&')
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut kv = part.splitn(2, |&b| b == b'=');
            let key = decode(kv.next().unwrap_or_default())?;
            let value = decode(kv.next().unwrap_or_default())?;
            Ok((key, value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::decode_form;

    #[test]
    fn forms_decode_plus_and_percent_escapes() {
        let fields = decode_form(b"task%5Btitle%5D=Buy+milk+%26+eggs&_method=patch&&x").unwrap();
        assert_eq!(
            fields,
            vec![
                ("task[title]".into(), "Buy milk & eggs".into()),
                ("_method".into(), "patch".into()),
                ("x".into(), String::new()),
            ]
        );
    }

    #[test]
    fn invalid_utf8_is_refused_not_replaced() {
        assert!(decode_form(b"task%5Btitle%5D=%FF%FE").is_err());
        assert!(decode_form(b"name=%C3%A9").is_ok());
    }
}
