use actix_web::{HttpRequest, HttpResponse, web};
use tracing::Instrument as _;

use super::rooms::room_id;
use crate::{error::AppError, presence::connection, session::Sessions, startup::AppState};

/// `GET /rooms/{room_id}/presence`: the presence WebSocket. A foreign Origin (403) or an
/// unknown room (404) is refused before the upgrade.
pub async fn connect(
    req: HttpRequest,
    body: web::Payload,
    path: web::Path<String>,
    state: web::Data<AppState>,
    sessions: web::Data<Sessions>,
) -> Result<HttpResponse, AppError> {
    if !state.allowed_origins.allows(&req) {
        return Err(AppError::ForbiddenOrigin);
    }
    let room = state.store.find_room(room_id(&path)?).await?;
    let permit = state
        .connections
        .acquire(&req)
        .ok_or(AppError::TooManyConnections)?;
    let user = sessions.user(&req);
    let (response, session, messages) = actix_ws::handle(&req, body)
        .map_err(|_| AppError::BadRequest("expected a WebSocket upgrade"))?;
    // A child of the upgrade request's span: the socket's lines carry its request id.
    let span = tracing::info_span!("socket", kind = "presence", room = %room.id);
    let serve = connection::serve(
        session,
        messages,
        user,
        room.id,
        state.presence.clone(),
        state.shutdown.clone(),
    );
    // The permit lives as long as the socket's task, so however the socket ends, its slot is
    // given back.
    actix_web::rt::spawn(
        async move {
            let _permit = permit;
            serve.await;
        }
        .instrument(span),
    );
    Ok(response)
}
