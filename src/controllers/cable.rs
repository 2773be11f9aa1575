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
    let user = sessions.user(&req);
    let (response, session, messages) =
        actix_ws::handle_with_protocols(&req, body, &[protocol::SUBPROTOCOL])
            .map_err(|_| AppError::BadRequest("expected a WebSocket upgrade"))?;
    // Created inside the upgrade request's span, so the socket's lines carry its request id
    // for as long as the socket lives.
    let span = tracing::info_span!("socket", kind = "cable");
    actix_web::rt::spawn(
        connection::serve(
            session,
            messages,
            user,
            state.cable.clone(),
            state.shutdown.clone(),
        )
        .instrument(span),
    );
    Ok(response)
}
