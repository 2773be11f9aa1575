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

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::{
    cable::{Broadcaster, CableConfig, HubHandle, StreamSigner, connection::CableContext},
    config::Settings,
    controllers, form_guard,
    origin::AllowedOrigins,
    pubsub::{Envelope, PubSub, Topic},
    session::Sessions,
    store::Store,
    views::Views,
};

/// Limits the controllers enforce.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_tasks_per_room: i64,
}

/// Everything a request handler may need, built once at start-up.
pub struct AppState {
    pub store: Store,
    pub views: Views,
    pub limits: Limits,
    pub pubsub: PubSub,
    pub broadcaster: Broadcaster,
    pub cable: Arc<CableContext>,
    pub allowed_origins: AllowedOrigins,
}

/// A built, bound, not yet running server.
pub struct Application {
    port: u16,
    server: Server,
    store: Store,
    pubsub: PubSub,
}

impl Application {
    pub async fn build(settings: &Settings) -> anyhow::Result<Self> {
        let secret = settings.secret_key_base()?;
        let store = Store::connect(&settings.database_url(), settings.database_pool_size).await?;
        let views = Views::new().context("cannot compile the templates")?;
        let hub = HubHandle::start();
        let (inbox, received) = mpsc::channel(1024);
        let pubsub = PubSub::start(&settings.pubsub()?, inbox).await?;
        tokio::spawn(route_inbox(received, hub.clone()));
        let state = web::Data::new(AppState {
            store: store.clone(),
            views,
            limits: Limits {
                max_tasks_per_room: settings.max_tasks_per_room,
            },
            pubsub: pubsub.clone(),
            broadcaster: Broadcaster::new(pubsub.clone()),
            cable: Arc::new(CableContext {
                hub,
                signer: StreamSigner::new(&secret),
                config: CableConfig::default(),
            }),
            allowed_origins: AllowedOrigins::parse(&settings.allowed_origins),
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
            pubsub,
        })
    }

    /// The port the server listens on (useful with port 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until the server is stopped (SIGINT/SIGTERM), then closes the database.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let result = self.server.await;
        self.pubsub.shutdown().await;
        self.store.close().await;
        result
    }
}

/// Hands what the pub/sub adapter receives to the server it is for.
async fn route_inbox(mut received: mpsc::Receiver<Envelope>, hub: HubHandle) {
    while let Some(envelope) = received.recv().await {
        match envelope.topic {
            Topic::Cable => hub.deliver(envelope.stream, envelope.payload).await,
            Topic::Presence => {}
        }
    }
}
