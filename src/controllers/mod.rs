//! HTTP entry points, thin: each action parses its input into domain types, calls the store,
//! renders through `views`, and answers with a Turbo Stream or, for browsers without
//! JavaScript, a redirect or a full page.

mod cable;
mod health;
mod metrics;
mod presence;
mod rooms;
mod sessions;
mod tasks;

use actix_web::{
    FromRequest, HttpRequest, HttpResponse,
    dev::Payload,
    guard,
    http::{StatusCode, header},
    middleware::from_fn,
    web,
};

use crate::{
    assets, error::AppError, form_guard, limits, models::RoomId, session, startup::AppState,
    store::RoomChange, views::turbo_stream,
};

/// Every route of the app. Health checks and assets need no session; everything else runs
/// inside the session and form-guard middleware.
///
/// Every path is a `web::resource`, never `cfg.route(path, ...)`: that one lifts its route's
/// method guard onto the resource, so another method would not find the path at all and fall
/// through to the 404 (or, for a form method, to the form guard's 422) instead of getting the
/// resource's 405 with its `Allow` list.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/up").route(read().to(health::up)))
        .service(web::resource("/metrics").route(read().to(metrics::show)))
        .service(web::resource("/cable").route(web::get().to(cable::connect)))
        .service(web::resource("/rooms/{room_id}/presence").route(web::get().to(presence::connect)))
        .service(web::resource("/assets/{file}").route(read().to(assets::show)))
        .service(
            web::scope("")
                // Innermost: counts only requests whose CSRF token the form guard accepted.
                .wrap(from_fn(limits::mutation_rate))
                .wrap(from_fn(form_guard::middleware))
                .wrap(from_fn(session::middleware))
                .configure(app_routes)
                .default_service(web::to(not_found)),
        );
}

/// A route that reads: GET, and HEAD, which every general-purpose server answers as it would
/// GET, without the body (RFC 9110, 9.3.2); actix-http leaves the body out and keeps its length.
/// The sockets' routes are GET alone: a handshake is a GET.
fn read() -> actix_web::Route {
    web::route().guard(guard::Any(guard::Get()).or(guard::Head()))
}

fn app_routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/").route(read().to(root)))
        .service(web::resource("/session/new").route(read().to(sessions::new)))
        .service(
            web::resource("/session")
                .route(web::post().to(sessions::create))
                .route(web::delete().to(sessions::destroy)),
        )
        .service(
            web::resource("/rooms")
                .route(read().to(rooms::index))
                .route(web::post().to(rooms::create)),
        )
        .service(
            web::resource("/rooms/{room_id}")
                .route(read().to(rooms::show))
                .route(web::patch().to(rooms::update)),
        )
        .service(web::resource("/rooms/{room_id}/tasks").route(web::post().to(tasks::create)))
        .service(
            web::resource("/rooms/{room_id}/tasks/completed")
                .route(web::delete().to(tasks::clear_completed)),
        )
        .service(
            web::resource("/rooms/{room_id}/tasks/{task_id}")
                .route(web::patch().to(tasks::update))
                .route(web::delete().to(tasks::destroy)),
        );
}

async fn root() -> HttpResponse {
    see_other("/rooms")
}

/// How the client wants a mutation answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Turbo asked for `text/vnd.turbo-stream.html`: answer with stream actions.
    TurboStream,
    /// A plain form post (no JavaScript): redirect or render a page.
    Html,
}

impl FromRequest for Format {
    type Error = actix_web::Error;
    type Future = std::future::Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let turbo = req
            .headers()
            .get_all(header::ACCEPT)
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.contains("text/vnd.turbo-stream.html"));
        std::future::ready(Ok(if turbo { Self::TurboStream } else { Self::Html }))
    }
}

/// `303 See Other`: where a form post sends a browser afterwards.
pub fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, location))
        .finish()
}

/// A Turbo Stream response.
pub fn stream(status: StatusCode, body: String) -> HttpResponse {
    HttpResponse::build(status)
        .content_type(turbo_stream::CONTENT_TYPE)
        .body(body)
}

/// A full HTML page.
pub fn html(status: StatusCode, body: String) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .body(body)
}

/// Any other path.
async fn not_found() -> Result<HttpResponse, AppError> {
    Err(AppError::NotFound)
}

/// Runs a change to room `room_id` on the write lane (`crate::write_lane`): opens it, taking the
/// room's lock, and hands it to `make`, which commits it with its broadcast
/// (`state.broadcaster.commit`) or drops it to roll it back.
fn change_room<T, F, Fut>(
    state: &web::Data<AppState>,
    room_id: RoomId,
    make: F,
) -> impl Future<Output = Result<T, AppError>> + use<T, F, Fut>
where
    F: FnOnce(RoomChange, web::Data<AppState>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, AppError>> + Send + 'static,
    T: Send + 'static,
{
    let lane_state = state.clone();
    state.write_lane.run(async move {
        let change = lane_state.store.change_room(room_id).await?;
        make(change, lane_state).await
    })
}

/// What both WebSocket endpoints check before upgrading: the Origin (403), then a connection
/// slot for the client's address (429). The slot is held by the returned permit.
fn admit_socket(req: &HttpRequest, state: &AppState) -> Result<limits::ConnectionPermit, AppError> {
    if !state.allowed_origins.allows(req) {
        return Err(AppError::ForbiddenOrigin);
    }
    state
        .connections
        .acquire(req)
        .ok_or(AppError::TooManyConnections)
}

/// Runs a socket's task in `span` (created inside the upgrade request's span, so the socket's
/// log lines carry its request id), holding `permit` until the task ends, however it ends;
/// tracked in `state.sockets`, so that a graceful stop waits for it.
fn spawn_socket(
    state: &AppState,
    permit: limits::ConnectionPermit,
    span: tracing::Span,
    serve: impl std::future::Future<Output = ()> + 'static,
) {
    use tracing::Instrument as _;
    // Boxed: an async block that captures a future and then awaits it lays the future out
    // twice (the capture and the await), and this task lives as long as its socket.
    let serve = Box::pin(serve);
    let activity = state.activity.clone();
    actix_web::rt::spawn(
        state.sockets.track_future(
            async move {
                let _permit = permit;
                serve.await;
                // What the socket held is free now: a crowd leaving is a burst too.
                activity.record();
            }
            .instrument(span),
        ),
    );
}
