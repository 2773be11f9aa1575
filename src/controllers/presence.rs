use actix_web::{HttpRequest, HttpResponse, web};

use super::{admit_socket, rooms::room_id, spawn_socket};
use crate::{error::AppError, presence::connection, session::Sessions, socket, startup::AppState};

/// `GET /rooms/{room_id}/presence`: the presence WebSocket. A foreign Origin (403) or an
/// unknown room (404) is refused before the upgrade.
pub async fn connect(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
    sessions: web::Data<Sessions>,
) -> Result<HttpResponse, AppError> {
    let permit = admit_socket(&req, &state)?;
    let room = room_id(&path)?;
    state.known_rooms.check(&state.store, room).await?;
    let user = sessions.user(&req);
    let (response, pending) = socket::accept(&req, &[], state.presence.config.max_frame_bytes)?;
    let span = tracing::info_span!("socket", kind = "presence", room = %room);
    let serve = connection::serve(
        pending,
        user,
        room,
        state.presence.clone(),
        state.shutdown.clone(),
    );
    spawn_socket(&state, permit, span, serve);
    Ok(response)
}
