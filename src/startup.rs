//! Builds the application from settings, the same way for `main` and for the tests: connect the
//! store, compile the views, bind the listener, assemble the middleware and routes.

use std::net::TcpListener;

use actix_web::{
    App, HttpServer,
    dev::Server,
    middleware::{Compress, DefaultHeaders},
    web,
};
use anyhow::Context as _;

use crate::{
    config::Settings, controllers, form_guard, session::Sessions, store::Store, views::Views,
};

/// Limits the controllers enforce.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_tasks_per_room: i64,
}

/// Everything a request handler may need, built once at start-up.
#[derive(Debug)]
pub struct AppState {
    pub store: Store,
    pub views: Views,
    pub limits: Limits,
}

/// A built, bound, not yet running server.
pub struct Application {
    port: u16,
    server: Server,
    store: Store,
}

impl Application {
    pub async fn build(settings: &Settings) -> anyhow::Result<Self> {
        let secret = settings.secret_key_base()?;
        let store = Store::connect(&settings.database_url(), settings.database_pool_size).await?;
        let views = Views::new().context("cannot compile the templates")?;
        let state = web::Data::new(AppState {
            store: store.clone(),
            views,
            limits: Limits {
                max_tasks_per_room: settings.max_tasks_per_room,
            },
        });
        let sessions = web::Data::new(Sessions::new(&secret, settings.secure_cookies));
        let body_limit = web::Data::new(form_guard::BodyLimit(settings.max_body_bytes));

        let workers = match settings.workers {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        };
        let address = format!("{}:{}", settings.host, settings.port);
        let listener =
            TcpListener::bind(&address).with_context(|| format!("cannot listen on {address}"))?;
        let port = listener.local_addr()?.port();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .app_data(sessions.clone())
                .app_data(body_limit.clone())
                .wrap(Compress::default())
                .wrap(
                    DefaultHeaders::new()
                        .add(("X-Content-Type-Options", "nosniff"))
                        .add(("X-Frame-Options", "DENY"))
                        .add(("Referrer-Policy", "strict-origin-when-cross-origin")),
                )
                .configure(controllers::routes)
        })
        .workers(workers)
        .listen(listener)?
        .run();
        Ok(Self {
            port,
            server,
            store,
        })
    }

    /// The port the server listens on (useful with port 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until the server is stopped (SIGINT/SIGTERM), then closes the database.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let result = self.server.await;
        self.store.close().await;
        result
    }
}
