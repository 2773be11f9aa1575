//! The session: a signed, HttpOnly, SameSite=Lax cookie holding the visitor's CSRF token and,
//! once they sign in, who they are. Nothing is stored server-side, so any process can read any
//! session. A missing, altered or garbled cookie simply means a new, signed-out visitor.

use std::{cell::RefCell, rc::Rc};

use actix_web::{
    FromRequest, HttpMessage as _, HttpRequest,
    body::MessageBody,
    cookie::{Cookie, SameSite},
    dev::{Payload, ServiceRequest, ServiceResponse},
    middleware::Next,
    web,
};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use serde::{Deserialize, Serialize};

use crate::{csrf, error::AppError, models::User, signing::Verifier};

pub const COOKIE: &str = "_tasksync_session";

/// Reads and writes session cookies.
#[derive(Clone, Debug)]
pub struct Sessions {
    verifier: Verifier,
    secure: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SessionData {
    csrf: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    user: Option<User>,
}

impl Sessions {
    /// Sessions signed with `secret`; cookies signed with any of `previous` still verify and
    /// are signed again with `secret` on their next response.
    pub fn new(secret: &str, previous: &[String], secure: bool) -> Self {
        Self {
            verifier: Verifier::rotating(secret, previous, "session"),
            secure,
        }
    }

    /// The session in a cookie, and whether it was signed with a previous secret.
    fn decode(&self, value: &str) -> Option<(SessionData, bool)> {
        let verified = self.verifier.verify_rotating(value)?;
        let data: SessionData = serde_json::from_slice(&verified.data).ok()?;
        let token = B64.decode(&data.csrf).ok()?;
        (token.len() == csrf::TOKEN_LEN).then_some((data, verified.stale))
    }

    /// The signed-in user behind a request's cookie, if any; for sockets, which have no forms.
    pub fn user(&self, req: &HttpRequest) -> Option<User> {
        self.decode(req.cookie(COOKIE)?.value())?.0.user
    }

    fn cookie(&self, data: &SessionData) -> Cookie<'static> {
        let json = serde_json::to_vec(data).expect("session data always serializes");
        Cookie::build(COOKIE, self.verifier.sign(&json))
            .path("/")
            .http_only(true)
            .same_site(SameSite::Lax)
            .secure(self.secure)
            .finish()
    }
}

struct State {
    data: SessionData,
    token: [u8; csrf::TOKEN_LEN],
    changed: bool,
}

/// The current request's session, handed to handlers by the middleware below.
#[derive(Clone)]
pub struct Session(Rc<RefCell<State>>);

impl Session {
    fn fresh(user: Option<User>) -> State {
        let token = csrf::new_token();
        State {
            data: SessionData {
                csrf: B64.encode(token),
                user,
            },
            token,
            changed: true,
        }
    }

    pub fn user(&self) -> Option<User> {
        self.0.borrow().data.user.clone()
    }

    /// A masked CSRF token for one page or form.
    pub fn csrf_token(&self) -> String {
        csrf::masked(&self.0.borrow().token)
    }

    /// Whether `sent` is this session's CSRF token.
    pub fn verify_csrf(&self, sent: &str) -> bool {
        csrf::verify(&self.0.borrow().token, sent)
    }

    /// Calls `f` with bytes that identify this session to the mutation limiter. They are the
    /// session's secret token, so `f` must only hash them (see `limits::MutationLimiter`).
    pub fn with_limiter_key<T>(&self, f: impl FnOnce(&[u8]) -> T) -> T {
        f(&self.0.borrow().token)
    }

    /// Signs `user` in. The CSRF token is renewed so nothing issued before sign-in carries over.
    pub fn sign_in(&self, user: User) {
        *self.0.borrow_mut() = Self::fresh(Some(user));
    }

    pub fn sign_out(&self) {
        *self.0.borrow_mut() = Self::fresh(None);
    }
}

impl FromRequest for Session {
    type Error = AppError;
    type Future = std::future::Ready<Result<Self, AppError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(
            req.extensions()
                .get::<Session>()
                .cloned()
                .ok_or_else(|| AppError::internal("session middleware is not installed")),
        )
    }
}

/// The signed-in user; a signed-out visitor is sent to the sign-in page.
pub struct SignedIn(pub User);

impl FromRequest for SignedIn {
    type Error = AppError;
    type Future = std::future::Ready<Result<Self, AppError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let user = req.extensions().get::<Session>().and_then(Session::user);
        std::future::ready(user.map(SignedIn).ok_or_else(|| AppError::SignInRequired {
            return_to: match req.method() {
                &actix_web::http::Method::GET => Some(req.uri().to_string()),
                _ => None,
            },
        }))
    }
}

/// Middleware: loads the session before the handler and writes the cookie back after it when the
/// session is new or changed.
pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let sessions = req
        .app_data::<web::Data<Sessions>>()
        .cloned()
        .ok_or_else(|| AppError::internal("Sessions missing from app data"))?;
    let state = match req.cookie(COOKIE).and_then(|c| sessions.decode(c.value())) {
        Some((data, stale)) => {
            let mut token = [0; csrf::TOKEN_LEN];
            token.copy_from_slice(&B64.decode(&data.csrf).unwrap_or_default());
            State {
                data,
                token,
                // Re-signed with the current secret, so a rotation can finish.
                changed: stale,
            }
        }
        None => Session::fresh(None),
    };
    let session = Session(Rc::new(RefCell::new(state)));
    req.extensions_mut().insert(session.clone());
    let mut res = next.call(req).await?;
    let state = session.0.borrow();
    if state.changed {
        res.response_mut()
            .add_cookie(&sessions.cookie(&state.data))
            .map_err(|e| AppError::internal(format!("cannot set session cookie: {e}")))?;
    }
    Ok(res)
}
