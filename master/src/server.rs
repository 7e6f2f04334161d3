//! [`Master`]: the store behind one HTTP port serving JSON-RPC (HTTP and WebSocket, at `/` and
//! `/rpc`), `GET /health` and `GET /metrics`, plus the lease sweeper.

use crate::api::Api;
use crate::auth::{Authenticated, Authenticator};
use crate::config::{MasterConfig, LEASE_SWEEP_MILLIS};
use crate::error::MasterError;
use crate::metrics;
use crate::recipes::RecipeCatalog;
use crate::store::{Store, StoreOptions};
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, Request, Response, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use pyti_wire::rpc::PytiApiServer;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;

/// Longest shutdown waits for open subscriptions to send their final event.
const SUBSCRIPTION_DRAIN_LIMIT: Duration = Duration::from_secs(2);

/// A master ready to serve: recipes loaded, database migrated, port bound.
pub struct Master {
    store: Arc<Store>,
    listener: tokio::net::TcpListener,
    local_addr: SocketAddr,
    config: MasterConfig,
}

impl Master {
    /// Loads the recipes, opens (and migrates) the database and binds the port.
    pub async fn open(config: MasterConfig) -> Result<Master, MasterError> {
        let recipes = Arc::new(RecipeCatalog::load_dir(&config.recipes_dir)?);
        Master::open_with_recipes(config, recipes).await
    }

    /// Like [`Master::open`] with recipes given directly (tests, embedded mode).
    pub async fn open_with_recipes(
        config: MasterConfig,
        recipes: Arc<RecipeCatalog>,
    ) -> Result<Master, MasterError> {
        let options = StoreOptions {
            lease_secs: config.lease_secs.max(1),
            max_attempts: config.max_attempts.max(1),
            connections: config.database_connections,
            clock: config.clock.clone(),
            recipes,
        };
        let store = Arc::new(Store::open(&config.database_url, options).await?);
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| MasterError::Listen {
                addr: config.listen,
                source,
            })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| MasterError::Listen {
                addr: config.listen,
                source,
            })?;
        Ok(Master {
            store,
            listener,
            local_addr,
            config,
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The store (for token management and tests).
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Serves until `shutdown` completes, then ends subscriptions and long polls and returns.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), MasterError> {
        let store = self.store.clone();
        let (stop_handle, server_handle) = jsonrpsee::server::stop_channel();
        let rpc_config = jsonrpsee::server::ServerConfig::builder()
            .max_request_body_size(self.config.max_request_bytes)
            .max_response_body_size(self.config.max_request_bytes)
            .build();
        let rpc = jsonrpsee::server::Server::builder()
            .set_config(rpc_config)
            .to_service_builder()
            .build(
                Api {
                    store: store.clone(),
                }
                .into_rpc(),
                stop_handle,
            );
        let auth = Arc::new(Authenticator::default());
        let rpc_store = store.clone();
        let rpc_service = tower::service_fn(move |mut request: Request<Body>| {
            let rpc = rpc.clone();
            let store = rpc_store.clone();
            let auth = auth.clone();
            async move {
                let header = request
                    .headers()
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok());
                let caller = match auth.resolve(&store, header).await {
                    Ok(caller) => caller,
                    Err(e) => {
                        tracing::error!(error = %e, "token lookup failed");
                        None
                    }
                };
                request.extensions_mut().insert(Authenticated(caller));
                let response = match rpc.oneshot(request).await {
                    Ok(response) => response.map(Body::new),
                    Err(e) => {
                        tracing::error!(error = %e, "JSON-RPC service failed");
                        Response::builder()
                            .status(StatusCode::INTERNAL_SERVER_ERROR)
                            .body(Body::from("internal error"))
                            .unwrap_or_default()
                    }
                };
                Ok::<_, Infallible>(response)
            }
        });
        let app = Router::new()
            .route("/health", get(health))
            .route("/metrics", get(metrics_page))
            .route_service("/", rpc_service.clone())
            .route_service("/rpc", rpc_service)
            .with_state(store.clone());

        // Slaves may have run on while no master answered: give them a lease period to
        // heartbeat before their tasks count as abandoned.
        match store.extend_open_leases().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                leases = n,
                "open leases extended by one lease period at start"
            ),
            Err(e) => tracing::warn!(error = %e, "extending open leases at start failed"),
        }
        let sweeper = tokio::spawn(sweep_leases(store.clone()));
        let stop_store = store.clone();
        let result = axum::serve(self.listener, app)
            .with_graceful_shutdown(async move {
                shutdown.await;
                stop_store.stop();
                // Subscriptions end with an explicit final event; let them send it before the
                // server closes their connections (bounded: a stuck client cannot hold shutdown).
                stop_store
                    .subscriptions_drained(SUBSCRIPTION_DRAIN_LIMIT)
                    .await;
                let _ = server_handle.stop();
            })
            .await;
        store.stop();
        sweeper.abort();
        store.close().await;
        result.map_err(|source| MasterError::Listen {
            addr: self.local_addr,
            source,
        })
    }
}

/// Requeues tasks of slaves that stopped heartbeating, every [`LEASE_SWEEP_MILLIS`].
async fn sweep_leases(store: Arc<Store>) {
    let mut tick = tokio::time::interval(Duration::from_millis(LEASE_SWEEP_MILLIS));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = store.stopped() => return,
        }
        match store.expire_leases().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(tasks = n, "leases expired"),
            Err(e) => tracing::warn!(error = %e, "lease sweep failed"),
        }
    }
}

async fn health(State(store): State<Arc<Store>>) -> impl IntoResponse {
    match store.ping().await {
        Ok(()) => (StatusCode::OK, "ok\n".to_string()),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("database unavailable: {e}\n"),
        ),
    }
}

async fn metrics_page(State(store): State<Arc<Store>>) -> impl IntoResponse {
    match metrics::render(&store).await {
        Ok(text) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            text,
        ),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "text/plain")],
            format!("metrics unavailable: {e}\n"),
        ),
    }
}
