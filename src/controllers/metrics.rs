//! `GET /metrics`: Prometheus's text format, for the scraper only. With no token configured the
//! route answers 404 like any unknown path, so a deployment that has not chosen to expose its
//! metrics does not; with `METRICS_TOKEN` set, it wants `Authorization: Bearer <token>`.

use actix_web::{HttpRequest, HttpResponse, http::header, web};
use subtle::ConstantTimeEq as _;

use crate::{
    error::AppError,
    metrics::{CONTENT_TYPE, Snapshot},
    pubsub::Health,
    startup::AppState,
    views,
};

pub async fn show(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, AppError> {
    let Some(token) = state.metrics_token.as_deref() else {
        return Err(AppError::NotFound);
    };
    if !bearer_matches(&req, token) {
        return Ok(HttpResponse::Unauthorized()
            .insert_header((header::WWW_AUTHENTICATE, "Bearer realm=\"metrics\""))
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .finish());
    }
    state.metrics.record(&snapshot(&state).await);
    Ok(HttpResponse::Ok()
        .content_type(CONTENT_TYPE)
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(state.metrics.encode()))
}

/// Compares in constant time, so the token cannot be guessed byte by byte from response times.
fn bearer_matches(req: &HttpRequest, token: &str) -> bool {
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|given| bool::from(given.trim().as_bytes().ct_eq(token.as_bytes())))
}

async fn snapshot(state: &AppState) -> Snapshot {
    let cable = state.cable.hub.stats().await;
    let presence = state.presence.stats().await;
    let pool = state.store.pool_stats();
    let (markup_tasks, markup_bytes) = views::tasks::cache_size(&state.views);
    let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
    Snapshot {
        cable_connections: count(cable.connections),
        cable_subscriptions: count(cable.subscriptions),
        cable_delivered: cable.delivered,
        cable_slow_disconnects: cable.slow_disconnects,
        presence_connections: count(presence.connections),
        presence_slow_disconnects: presence.slow_disconnects,
        pubsub_healthy: state.pubsub.health() == Health::Healthy,
        pubsub_reconnects: state.pubsub.reconnects(),
        db_pool_connections: u64::from(pool.open),
        db_pool_idle: count(pool.idle),
        db_pool_max: u64::from(pool.max),
        task_markup_cached: count(markup_tasks),
        task_markup_bytes: count(markup_bytes),
    }
}
