use actix_web::{HttpResponse, web};
use serde_json::json;

use crate::{pubsub::Health, startup::AppState};

/// `GET /up`: `ok` (200) when the database and the pub/sub adapter answer, `degraded` (200)
/// while the adapter reconnects (pages work, live updates pause), `down` (503) when the database
/// does not answer. The body says which part is unwell and how many sockets are open.
pub async fn up(state: web::Data<AppState>) -> HttpResponse {
    let database = state.store.ping().await;
    if let Err(err) = &database {
        tracing::warn!(error = %err, "health check: database unavailable");
    }
    let pubsub = state.pubsub.health();
    let cable = state.cable.hub.stats().await;
    let presence = state.presence.stats().await;
    let status = match (&database, &pubsub) {
        (Err(_), _) => "down",
        (Ok(()), Health::Degraded(_)) => "degraded",
        (Ok(()), Health::Healthy) => "ok",
    };
    let body = json!({
        "status": status,
        "database": if database.is_ok() { "ok" } else { "down" },
        "pubsub": {
            "adapter": state.pubsub.name(),
            "status": match &pubsub { Health::Healthy => "ok", Health::Degraded(_) => "reconnecting" },
            "detail": match &pubsub { Health::Healthy => None, Health::Degraded(why) => Some(why) },
        },
        "cable": {
            "connections": cable.connections,
            "subscriptions": cable.subscriptions,
            "slow_disconnects": cable.slow_disconnects,
        },
        "presence": {
            "connections": presence.connections,
            "rooms": presence.rooms,
        },
    });
    let mut res = if database.is_ok() {
        HttpResponse::Ok()
    } else {
        HttpResponse::ServiceUnavailable()
    };
    res.insert_header(("Cache-Control", "no-store")).json(body)
}
