use actix_web::{HttpRequest, HttpResponse, web};

use super::{admit_socket, spawn_socket};
use crate::{
    cable::{connection, protocol},
    error::AppError,
    session::Sessions,
    socket,
    startup::AppState,
};

/// `GET /cable`: the ActionCable WebSocket. A foreign Origin is refused before the upgrade;
/// who the client is comes from the session cookie.
pub async fn connect(
    req: HttpRequest,
    state: web::Data<AppState>,
    sessions: web::Data<Sessions>,
) -> Result<HttpResponse, AppError> {
    let permit = admit_socket(&req, &state)?;
    let user = sessions.user(&req);
    let protocol = protocol::Protocol::offered(req.headers());
    let (response, pending) =
        socket::accept(&req, &[protocol.name()], state.cable.config.max_frame_bytes)?;
    let span = tracing::info_span!("socket", kind = "cable");
    let serve = connection::serve(
        pending,
        user,
        protocol,
        state.cable.clone(),
        state.shutdown.clone(),
    );
    spawn_socket(&state, permit, span, serve);
    Ok(response)
}
