use actix_web::{HttpRequest, HttpResponse, web};
use tracing::Instrument as _;

use crate::{
    cable::{connection, protocol},
    error::AppError,
    session::Sessions,
    startup::AppState,
};

/// `GET /cable`: the ActionCable WebSocket. A foreign Origin is refused before the upgrade;
/// who the client is comes from the session cookie.
pub async fn connect(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
    sessions: web::Data<Sessions>,
) -> Result<HttpResponse, AppError> {
    if !state.allowed_origins.allows(&req) {
        return Err(AppError::ForbiddenOrigin);
    }
    let permit = state
        .connections
        .acquire(&req)
        .ok_or(AppError::TooManyConnections)?;
    let user = sessions.user(&req);
    let protocol = protocol::Protocol::offered(req.headers());
    let (response, session, messages) =
        actix_ws::handle_with_protocols(&req, body, &[protocol.name()])
            .map_err(|_| AppError::BadRequest("expected a WebSocket upgrade"))?;
    // Created inside the upgrade request's span, so the socket's lines carry its request id
    // for as long as the socket lives.
    let span = tracing::info_span!("socket", kind = "cable");
    let serve = connection::serve(
        session,
        messages,
        user,
        protocol,
        state.cable.clone(),
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
