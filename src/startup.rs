//! Builds the application from settings, the same way for `main` and for the tests: connect the
//! store, compile the views, bind the listener, assemble the middleware and routes.

use std::net::TcpListener;

use actix_http::{HttpService, Request};
use actix_service::{
    IntoServiceFactory as _, Service as _, ServiceFactoryExt as _, apply_fn_factory, map_config,
};
use actix_web::{
    App,
    dev::{AppConfig, Server},
    middleware::from_fn,
    web,
};
use anyhow::Context as _;

use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio_util::task::TaskTracker;

use crate::{
    cable::{Broadcaster, CableConfig, HubHandle, StreamSigner, connection::CableContext},
    compress,
    config::Settings,
    controllers, form_guard, headers,
    limits::{ConnectionLimiter, MutationLimiter, MutationRate},
    memory::{self, Activity},
    metrics::Metrics,
    observability,
    origin::{AllowedOrigins, TrustedProxies},
    presence::PresenceHandle,
    pubsub::{Delivery, Envelope, PubSub, Sequencer, Topic},
    request_headers,
    session::Sessions,
    socket,
    store::{KnownRooms, Store},
    views::Views,
    write_lane::WriteLane,
};

/// Limits the controllers enforce.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_tasks_per_room: i64,
}

/// Everything a request handler may need, built once at start-up.
pub struct AppState {
    pub store: Store,
    /// Rooms already found in `store`, so sockets opening in them skip the read.
    pub known_rooms: KnownRooms,
    pub views: Views,
    pub limits: Limits,
    pub pubsub: PubSub,
    pub broadcaster: Broadcaster,
    pub cable: Arc<CableContext>,
    pub allowed_origins: AllowedOrigins,
    pub presence: PresenceHandle,
    /// Turns true when the process starts shutting down; every socket task watches it.
    pub shutdown: watch::Receiver<bool>,
    pub metrics: Metrics,
    /// Requests and closed sockets, counted so that free memory is given back once a burst of
    /// them is over (see `memory`).
    pub activity: Activity,
    /// `GET /metrics` is served only with this bearer token; `None` hides it.
    pub metrics_token: Option<String>,
    /// Mutations per session, and sockets per client address.
    pub mutations: MutationLimiter,
    pub connections: ConnectionLimiter,
    /// Where every change to a room runs (see [`WriteLane`]).
    pub write_lane: WriteLane,
    /// Every socket's task. Once upgraded, a socket's connection is its task's alone (see
    /// [`crate::socket::upgrade`]), so the HTTP server does not wait for it when stopping;
    /// [`Application::run_until`] does, through this.
    pub sockets: TaskTracker,
}

/// A built, bound, not yet running server.
pub struct Application {
    port: u16,
    server: Server,
    /// Every socket's task (see [`AppState::sockets`]).
    sockets: TaskTracker,
    store: Store,
    pubsub: PubSub,
    presence: PresenceHandle,
    shutdown: watch::Sender<bool>,
    shutdown_timeout: std::time::Duration,
}

impl Application {
    pub async fn build(settings: &Settings) -> anyhow::Result<Self> {
        let secret = settings.secret_key_base()?;
        let previous_secrets = settings.previous_secrets();
        let store = Store::connect(&settings.database_url(), settings.database_pool_size).await?;
        let views = Views::new().context("cannot compile the templates")?;
        let hub = HubHandle::start();
        let metrics = Metrics::new();
        let (inbox, received) = mpsc::channel(1024);
        let pubsub = PubSub::start(&settings.pubsub()?, settings.history_window(), inbox).await?;
        let presence = PresenceHandle::start(pubsub.clone(), settings.presence()?);
        let (shutdown, shutting_down) = watch::channel(false);
        let sockets = TaskTracker::new();
        let sequencer = Sequencer::new(pubsub.clone(), metrics.clone()).await;
        tokio::spawn(route_inbox(
            received,
            sequencer,
            hub.clone(),
            presence.clone(),
            metrics.clone(),
        ));
        let activity = Activity::default();
        tokio::spawn(memory::release_after_bursts(
            activity.clone(),
            shutting_down.clone(),
        ));
        let state = web::Data::new(AppState {
            store: store.clone(),
            known_rooms: KnownRooms::default(),
            views,
            limits: Limits {
                max_tasks_per_room: settings.max_tasks_per_room,
            },
            pubsub: pubsub.clone(),
            broadcaster: Broadcaster::new(pubsub.clone()).with_metrics(metrics.clone()),
            cable: Arc::new(CableContext {
                hub,
                signer: StreamSigner::rotating(&secret, &previous_secrets),
                config: CableConfig::default(),
                metrics: metrics.clone(),
                pubsub: pubsub.clone(),
            }),
            allowed_origins: AllowedOrigins::parse(&settings.allowed_origins)
                .with_trusted_proxies(TrustedProxies::parse(&settings.trusted_proxies)?),
            presence: presence.clone(),
            shutdown: shutting_down,
            metrics,
            activity,
            metrics_token: settings.metrics_token.clone().filter(|t| !t.is_empty()),
            mutations: MutationLimiter::new(MutationRate {
                burst: settings.mutation_burst,
                per_second: settings.mutations_per_second,
                max_sessions: settings.mutation_rate_sessions,
            }),
            connections: ConnectionLimiter::new(
                settings.max_connections_per_address,
                TrustedProxies::parse(&settings.trusted_proxies)?,
            ),
            write_lane: WriteLane::start().context("cannot start the write lane")?,
            sockets: sockets.clone(),
        });
        let sessions = web::Data::new(Sessions::new(
            &secret,
            &previous_secrets,
            settings.secure_cookies,
        ));
        let body_limit = web::Data::new(form_guard::BodyLimit(settings.max_body_bytes));

        let workers = match settings.workers {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        };
        let address = format!("{}:{}", settings.host, settings.port);
        let listener = listen(&address)
            .await
            .with_context(|| format!("cannot listen on {address}"))?;
        let port = listener.local_addr()?.port();
        let app = move || {
            App::new()
                .app_data(state.clone())
                .app_data(sessions.clone())
                .app_data(body_limit.clone())
                .app_data(compress::Compressors::for_worker())
                .wrap(from_fn(compress::middleware))
                .wrap(from_fn(headers::middleware))
                // Outermost, so that everything inside logs under the request's id.
                .wrap(from_fn(observability::middleware))
                .configure(controllers::routes)
        };
        let builder = actix_server::Server::build();
        let graceful = builder.graceful_shutdown_signal();
        let request_timeout = std::time::Duration::from_millis(settings.client_request_timeout_ms);
        // What `actix_web::HttpServer` assembles, plus an upgrade service: a request that asks
        // for an upgrade (a WebSocket handshake) runs through the same application, and an
        // accepted socket's connection then leaves the HTTP/1 dispatcher for the socket's task
        // (see `socket::upgrade`).
        let server = builder
            .workers(workers)
            // Signals are ours (see `run_until`): sockets must be told to go before the server
            // waits for connections to finish.
            .disable_signals()
            .shutdown_timeout(settings.shutdown_timeout_secs)
            .listen("tasksync", listener, move || {
                let graceful = graceful.clone();
                HttpService::build()
                    // Every write goes out at once: with Nagle's algorithm a compressed page's
                    // last chunk, or a socket's frame right behind another, waited for the
                    // client's delayed ACK (40 ms on Linux).
                    .tcp_nodelay(true)
                    .client_request_timeout(request_timeout)
                    .client_disconnect_timeout(std::time::Duration::from_secs(1))
                    .graceful_shutdown_signal(move || {
                        let signal = graceful.clone();
                        async move { signal.notified().await }
                    })
                    .upgrade(socket::upgrade::service(app.clone()))
                    .finish(apply_fn_factory(
                        map_config(
                            app().into_factory().map_err(|err| err.error_response()),
                            |()| AppConfig::default(),
                        ),
                        // So that the heads actix keeps for reuse keep nothing of the
                        // connection's read buffer (see `request_headers`).
                        |mut req: Request, app| {
                            request_headers::detach(req.headers_mut());
                            app.call(req)
                        },
                    ))
                    .tcp()
            })?
            .run();
        Ok(Self {
            port,
            server,
            sockets,
            store,
            pubsub,
            presence,
            shutdown,
            shutdown_timeout: std::time::Duration::from_secs(settings.shutdown_timeout_secs),
        })
    }

    /// The port the server listens on (useful with port 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until SIGTERM or SIGINT, then shuts down gracefully.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.run_until(termination()).await
    }

    /// Serves until `stop` completes, then shuts down gracefully: other processes are told this
    /// one's people are leaving, sockets are told to reconnect elsewhere and closed, the server
    /// stops accepting and finishes in-flight requests (for at most the shutdown timeout), and
    /// the adapter and database connections close.
    pub async fn run_until(self, stop: impl Future<Output = ()>) -> std::io::Result<()> {
        let handle = self.server.handle();
        let mut server = std::pin::pin!(self.server);
        tokio::select! {
            result = &mut server => return result,
            () = stop => {}
        }
        tracing::info!("shutting down");
        self.presence.stop().await;
        let _ = self.shutdown.send(true);
        // Sockets were just told to go; their connections are not the HTTP server's to wait
        // for, so their last frames are waited for here, before the workers stop. The server
        // future must keep running for the stop to be carried out.
        let sockets = self.sockets;
        sockets.close();
        let graceful = async {
            sockets.wait().await;
            tokio::join!(handle.stop(true), &mut server).1
        };
        let result = match tokio::time::timeout(self.shutdown_timeout, graceful).await {
            Ok(result) => result,
            Err(_) => {
                tracing::warn!("shutdown timeout reached; dropping the remaining connections");
                tokio::join!(handle.stop(false), server).1
            }
        };
        self.pubsub.shutdown().await;
        self.store.close().await;
        result
    }
}

/// Completes on SIGTERM or SIGINT.
async fn termination() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => tokio::select! {
                _ = interrupt => {}
                _ = terminate.recv() => {}
            },
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen for SIGTERM; only SIGINT stops the server");
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}

/// Connections the kernel may queue before they are accepted. The standard library's `bind`
/// asks for 128, which a crowd reconnecting at once (every tab after a deploy) overflows: the
/// kernel then drops their SYNs and each client waits a full second to retry. The kernel caps
/// this at `net.core.somaxconn` (4096 on current Linux).
const LISTEN_BACKLOG: u32 = 4096;

/// Binds `address` (host:port; port 0 for any free one) with [`LISTEN_BACKLOG`].
async fn listen(address: &str) -> anyhow::Result<TcpListener> {
    let addr = tokio::net::lookup_host(address)
        .await?
        .next()
        .with_context(|| format!("{address} resolves to no address"))?;
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    Ok(socket.listen(LISTEN_BACKLOG)?.into_std()?)
}

/// How often the inbox router checks whether the adapter has reconnected (and so may have
/// missed messages that history holds).
const RECONNECT_CHECK: std::time::Duration = std::time::Duration::from_millis(250);

/// Hands what the pub/sub adapter receives to the server it is for, cable messages through the
/// [`Sequencer`], which fills gaps from history.
async fn route_inbox(
    mut received: mpsc::Receiver<Envelope>,
    mut sequencer: Sequencer,
    hub: HubHandle,
    presence: PresenceHandle,
    metrics: Metrics,
) {
    let mut check = tokio::time::interval(RECONNECT_CHECK);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let deliveries = tokio::select! {
            envelope = received.recv() => {
                let Some(envelope) = envelope else { break };
                metrics.pubsub_lag_seconds.observe(envelope.created.elapsed().as_secs_f64());
                metrics.pubsub_backlog.set(i64::try_from(received.len()).unwrap_or(i64::MAX));
                sequencer.accept(envelope).await
            }
            _ = check.tick() => sequencer.tick().await,
        };
        for delivery in deliveries {
            match delivery {
                Delivery::Message(envelope) if envelope.topic == Topic::Presence => {
                    presence.remote(&envelope.payload).await
                }
                Delivery::Message(envelope) => {
                    hub.deliver_at(
                        envelope.stream,
                        envelope.payload,
                        envelope.offset,
                        envelope.created,
                    )
                    .await
                }
                Delivery::Reset { stream, offset } => hub.reset(stream, offset).await,
            }
        }
    }
}
