//! The network edge: binds the listeners, accepts connections (at most `max_connections` at
//! once), runs one task per connection and shuts everything down gracefully on request.

mod admission;
mod connection;
pub mod controller_auth;
pub mod controller_listener;
mod maintenance;
pub mod memory;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::broker::Broker;
use crate::clock::Clock;
use crate::config::{Config, SecurityProtocol};
use crate::meta::records::Endpoint;
use crate::protocol::Session;
use crate::security::session::{Authentication, ANONYMOUS};
use crate::security::tls::{Tls, TlsFiles};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("bad listen address {0:?}: expected HOST:PORT")]
    Address(String),
    #[error("cannot open the data directory: {0}")]
    Storage(String),
    #[error("TLS: {0}")]
    Tls(String),
}

/// The endpoint each listener protocol registers (its first listener's): the advertised
/// address configured for it, else the bound address (`localhost` for a wildcard host).
fn advertised_endpoints(
    config: &Config,
    listeners: &[(TcpListener, SecurityProtocol)],
) -> Result<Vec<Endpoint>, StartError> {
    let mut out: Vec<Endpoint> = Vec::new();
    let specs = config.listeners().map_err(StartError::Address)?;
    for (protocol, spec) in &specs {
        if out.iter().any(|e| e.name == protocol.name()) {
            continue;
        }
        let bound = listeners
            .iter()
            .find(|(_, p)| p == protocol)
            .and_then(|(l, _)| l.local_addr().ok());
        let (host, port) = match config.advertised_for(*protocol) {
            Some(a) => {
                let (h, p) = crate::config::split_host_port(&a)
                    .ok_or_else(|| StartError::Address(a.clone()))?;
                (h.to_string(), p)
            }
            None => {
                let host = spec.rsplit_once(':').map(|(h, _)| h).unwrap_or("localhost");
                let host = match host {
                    "" | "0.0.0.0" | "[::]" | "::" => "localhost",
                    h => h.trim_start_matches('[').trim_end_matches(']'),
                };
                (host.to_string(), bound.map_or(0, |b| b.port()))
            }
        };
        out.push(Endpoint {
            name: protocol.name().to_string(),
            host,
            port,
            security_protocol: *protocol as i16,
        });
    }
    if out.is_empty() {
        // A controller-only node: no client listener.
        out.push(Endpoint {
            name: SecurityProtocol::Plaintext.name().to_string(),
            host: "localhost".into(),
            port: 0,
            security_protocol: 0,
        });
    }
    Ok(out)
}

/// A bound, ready broker. [`Server::run`] serves until the shutdown future completes.
pub struct Server {
    /// Each client listener with its protocol.
    listeners: Vec<(TcpListener, SecurityProtocol)>,
    /// The TLS configuration of the SSL and SASL_SSL listeners.
    tls: Option<Arc<Tls>>,
    broker: Arc<Broker>,
    started: Instant,
    /// Stops the controller listener (after the client listeners).
    controller_stop: watch::Sender<bool>,
    /// The controller listener's address, when this node has one.
    controller_addr: Option<SocketAddr>,
}

/// Resolves `HOST:PORT`; `localhost` means both loopback addresses (librdkafka tries ::1 first).
fn listen_addrs(spec: &str) -> Result<Vec<SocketAddr>, StartError> {
    let spec = crate::config::split_listener(spec)
        .map(|(_, addr)| addr)
        .map_err(|_| StartError::Address(spec.to_string()))?;
    let (host, port) = spec
        .rsplit_once(':')
        .ok_or_else(|| StartError::Address(spec.to_string()))?;
    let port: u16 = port
        .parse()
        .map_err(|_| StartError::Address(spec.to_string()))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host == "localhost" {
        return Ok(vec![
            SocketAddr::from(([127, 0, 0, 1], port)),
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port)),
        ]);
    }
    let ip = host
        .parse()
        .map_err(|_| StartError::Address(spec.to_string()))?;
    Ok(vec![SocketAddr::new(ip, port)])
}

impl Server {
    /// Opens the data directory and binds every listener.
    pub async fn bind(config: Config) -> Result<Server, StartError> {
        Server::bind_with_clock(config, Clock::system()).await
    }

    /// As [`Server::bind`], with every deadline of the broker computed from `clock`.
    pub async fn bind_with_clock(config: Config, clock: Clock) -> Result<Server, StartError> {
        let started = Instant::now();
        let mut listeners = Vec::new();
        // A controller-only node serves no clients: only its controller listener.
        let client_listen: &[String] = if config.is_broker() {
            &config.listen
        } else {
            &[]
        };
        for spec in client_listen {
            let protocol = crate::config::split_listener(spec)
                .map(|(p, _)| p)
                .map_err(|_| StartError::Address(spec.clone()))?;
            let addrs = listen_addrs(spec)?;
            let is_localhost = addrs.len() > 1;
            for (i, addr) in addrs.into_iter().enumerate() {
                // With `localhost` and port 0, both families share the port the first one got.
                let addr = match listeners.last() {
                    Some((l, _)) if is_localhost && i > 0 && addr.port() == 0 => {
                        let first: &TcpListener = l;
                        SocketAddr::new(
                            addr.ip(),
                            first.local_addr().map(|a| a.port()).unwrap_or(0),
                        )
                    }
                    _ => addr,
                };
                match TcpListener::bind(addr).await {
                    Ok(l) => listeners.push((l, protocol)),
                    // A host without IPv6 still serves `localhost` on 127.0.0.1.
                    Err(e) if is_localhost && addr.is_ipv6() => {
                        tracing::warn!(%addr, error = %e, "IPv6 loopback unavailable; serving IPv4 only");
                    }
                    Err(e) => {
                        return Err(StartError::Bind {
                            addr: addr.to_string(),
                            source: e,
                        })
                    }
                }
            }
        }
        let endpoints = advertised_endpoints(&config, &listeners)?;
        let controller_protocol = config
            .controller_listener()
            .map_err(|_| StartError::Address(config.controller_listen.clone().unwrap_or_default()))?
            .map(|(p, _)| p);
        let tls = match TlsFiles::from_config(&config) {
            Some(files)
                if listeners.iter().any(|(_, p)| p.tls())
                    || controller_protocol.is_some_and(|p| p.tls()) =>
            {
                Some(Arc::new(Tls::new(files).map_err(StartError::Tls)?))
            }
            _ => None,
        };
        // The controller listener serves peers' raft RPCs while this node forms or joins the
        // quorum: bound first, served as soon as the metadata node exists.
        let (controller_stop, controller_stop_rx) = watch::channel(false);
        let mut controller_addr = None;
        let serve_controller = match &config.controller_listen {
            // (Validation allows it only with voters: a cluster of one has no peers.)
            Some(spec) => {
                let addr = *listen_addrs(spec)?
                    .first()
                    .ok_or_else(|| StartError::Address(spec.clone()))?;
                let listener = TcpListener::bind(addr)
                    .await
                    .map_err(|e| StartError::Bind {
                        addr: addr.to_string(),
                        source: e,
                    })?;
                controller_addr = listener.local_addr().ok();
                let max_frame = config.max_frame_bytes;
                let protocol = controller_protocol.unwrap_or(SecurityProtocol::Plaintext);
                let peer_config = config.clone();
                let peer_tls = tls.clone();
                let serve: Box<dyn FnOnce(Arc<crate::meta::node::MetaNode>) + Send> =
                    Box::new(move |node| {
                        tokio::spawn(async move {
                            let security =
                                peer_security(&peer_config, protocol, peer_tls, node.clone()).await;
                            let handler: controller_listener::ControllerHandler =
                                Arc::new(move |key, version, body| {
                                    Box::pin(
                                        node.clone().handle_controller_request(key, version, body),
                                    )
                                });
                            controller_listener::serve(
                                listener,
                                handler,
                                max_frame,
                                Arc::new(security),
                                controller_stop_rx,
                            )
                            .await;
                        });
                    });
                Some(serve)
            }
            None => None,
        };
        let broker = Broker::open_with_clock(config, endpoints, clock, serve_controller)
            .await
            .map_err(StartError::Storage)?;
        Ok(Server {
            listeners,
            tls,
            broker: Arc::new(broker),
            started,
            controller_stop,
            controller_addr,
        })
    }

    /// The addresses actually bound (useful with port 0).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|(l, _)| l.local_addr().ok())
            .collect()
    }

    /// The broker state behind the listeners (tests drive the protocol layer with it).
    pub fn broker(&self) -> Arc<Broker> {
        self.broker.clone()
    }

    /// The line printed once the broker accepts connections.
    pub fn ready_line(&self) -> String {
        let mut addrs: Vec<String> = self.local_addrs().iter().map(|a| a.to_string()).collect();
        if !self.broker.config.is_broker() {
            let controller = self.controller_addr.map(|a| a.to_string());
            addrs = vec![format!(
                "controller listener {} (controller only)",
                controller.unwrap_or_default()
            )];
        }
        let data = if self.broker.config.memory {
            "memory".to_string()
        } else {
            format!("data: {}", self.broker.config.data_dir.display())
        };
        format!(
            "ottla ready on {} ({data}) in {} ms",
            addrs.join(", "),
            self.started.elapsed().as_millis()
        )
    }

    /// Serves until `shutdown` completes, then stops accepting, lets connections finish the
    /// request in hand (up to `shutdown_grace_ms`), aborts those still running and waits
    /// until their tasks are gone, and only then syncs every log (closing it for appends
    /// first) and writes the clean-shutdown marker: nothing appends after the sync.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        let (stop_tx, stop_rx) = watch::channel(false);
        let permits = Arc::new(Semaphore::new(self.broker.config.max_connections));
        let config = &self.broker.config;
        let edge = Edge {
            tls: self.tls.clone(),
            memory: memory::RequestMemory::new(config.request_memory_bytes()),
            admission: admission::Admission::new(
                config.max_connections_per_ip,
                // Validated with the configuration.
                config.connections_per_ip_overrides().unwrap_or_default(),
                config.max_connection_creation_rate,
            ),
        };
        tracing::info!(
            queued_max_request_bytes = edge.memory.total(),
            "request memory budget"
        );
        let reload = self
            .tls
            .clone()
            .map(|tls| tokio::spawn(reload_on_sighup(tls, stop_rx.clone())));
        let mut accept_tasks = Vec::new();
        for (listener, protocol) in self.listeners {
            accept_tasks.push(tokio::spawn(accept_loop(
                listener,
                protocol,
                self.broker.clone(),
                edge.clone(),
                permits.clone(),
                stop_rx.clone(),
            )));
        }
        let maintenance = tokio::spawn(maintenance::run(self.broker.clone(), stop_rx.clone()));
        // Heartbeats stop first at shutdown (a beat after the controlled shutdown would
        // unfence this broker again).
        let (beats_stop, beats_rx) = watch::channel(false);
        let heartbeats = tokio::spawn(self.broker.clone().heartbeat_loop(beats_rx));
        let fencing = tokio::spawn(self.broker.meta.clone().fencing_loop(
            Duration::from_millis(self.broker.config.broker_session_timeout_ms),
            stop_rx.clone(),
        ));
        let rebalance = self.broker.config.auto_leader_rebalance_enable.then(|| {
            tokio::spawn(self.broker.meta.clone().rebalance_loop(
                Duration::from_secs(self.broker.config.leader_imbalance_check_interval_seconds),
                self.broker.config.leader_imbalance_per_broker_percentage,
                stop_rx.clone(),
            ))
        });
        shutdown.await;
        tracing::info!("shutting down");
        let t0 = std::time::Instant::now();
        let step =
            |what: &str| tracing::debug!(ms = t0.elapsed().as_millis() as u64, "shutdown: {what}");
        // A controlled shutdown first, while this broker still serves: the controller
        // fences it and moves the leadership of what it leads to other ISR members, so
        // clients see NOT_LEADER_OR_FOLLOWER (retriable) and move before the listener
        // closes.
        let _ = beats_stop.send(true);
        let _ = heartbeats.await;
        step("heartbeats stopped");
        self.broker.controlled_shutdown().await;
        step("controlled shutdown done");
        let _ = stop_tx.send(true);
        let _ = maintenance.await;
        let _ = fencing.await;
        if let Some(r) = reload {
            let _ = r.await;
        }
        if let Some(r) = rebalance {
            let _ = r.await;
        }
        step("maintenance and fencing stopped");
        let mut connections = Vec::new();
        for t in accept_tasks {
            if let Ok(set) = t.await {
                connections.push(set);
            }
        }
        step("accepting stopped");
        let grace = Duration::from_millis(self.broker.config.shutdown_grace_ms);
        let drained = tokio::time::timeout(grace, async {
            for set in &mut connections {
                while set.join_next().await.is_some() {}
            }
        })
        .await;
        if drained.is_err() {
            let open: usize = connections.iter().map(|s| s.len()).sum();
            tracing::warn!(
                connections = open,
                "connections still busy after the grace period: aborting them"
            );
            for set in &mut connections {
                set.abort_all();
            }
            // An aborted task stops at its next await point: wait until every one is gone.
            for set in &mut connections {
                while set.join_next().await.is_some() {}
            }
        }
        drop(permits);
        step("connections closed");
        // Followers append what they fetch: stopped before the logs are synced and closed.
        self.broker.fetchers.stop_all().await;
        step("follower fetchers stopped");
        let broker = self.broker.clone();
        let flushed = crate::threads::spawn_blocking(move || broker.close()).await;
        match flushed {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(error = %e, "flushing logs at shutdown failed; the next start recovers")
            }
            Err(e) => {
                tracing::error!(error = %e, "flushing logs at shutdown failed; the next start recovers")
            }
        }
        step("logs flushed");
        let _ = self.controller_stop.send(true);
        self.broker.meta.shutdown().await;
        step("metadata node stopped");
        tracing::info!("stopped");
    }
}

/// What every client connection shares at the edge: the request memory budget and the
/// admission rules.
#[derive(Clone)]
struct Edge {
    tls: Option<Arc<Tls>>,
    memory: Arc<memory::RequestMemory>,
    admission: Arc<admission::Admission>,
}

/// Accepts connections until `stop`; returns the tasks of those still open (shutdown drains
/// or aborts them). Finished connection tasks are reaped as they end.
/// Connections closed for the per-address creation rate, logged at most every 5 s.
static IP_THROTTLED_LOG: crate::log_every::LogLimit = crate::log_every::LogLimit::new();

async fn accept_loop(
    listener: TcpListener,
    protocol: SecurityProtocol,
    broker: Arc<Broker>,
    edge: Edge,
    permits: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
) -> JoinSet<()> {
    let mut connections = JoinSet::new();
    loop {
        // KIP-612: beyond the creation rate the next accept waits.
        loop {
            let delay = edge.admission.creation_delay();
            if delay.is_zero() {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                Some(_) = connections.join_next() => {}
                _ = stop.changed() => return connections,
            }
        }
        let permit = loop {
            tokio::select! {
                p = permits.clone().acquire_owned() => match p {
                    Ok(p) => break p,
                    Err(_) => return connections,
                },
                Some(_) = connections.join_next() => {}
                _ = stop.changed() => return connections,
            }
        };
        let accepted = loop {
            tokio::select! {
                a = listener.accept() => break a,
                Some(_) = connections.join_next() => {}
                _ = stop.changed() => return connections,
            }
        };
        match accepted {
            Ok((socket, peer)) => {
                let Some(counted) = edge.admission.admit(peer.ip()) else {
                    drop(socket);
                    continue;
                };
                // KIP-612's per-address quota (`connection_creation_rate` of an ip entity):
                // a connection over it is closed once its throttle time has passed, held
                // until then (counted against its address and the connection permits).
                let throttle = broker.quotas.connection_throttle(peer.ip());
                if throttle > 0 {
                    if IP_THROTTLED_LOG.allow(Duration::from_secs(5)) {
                        tracing::warn!(%peer, throttle_ms = throttle,
                            "closing connection: connection_creation_rate quota of this address exceeded");
                    }
                    let mut stop = stop.clone();
                    connections.spawn(async move {
                        let wait = Duration::from_millis(throttle.unsigned_abs());
                        tokio::select! {
                            _ = tokio::time::sleep(wait) => {}
                            _ = stop.changed() => {}
                        }
                        drop((socket, counted, permit));
                    });
                    continue;
                }
                let _ = socket.set_nodelay(true);
                let broker = broker.clone();
                let stop = stop.clone();
                let lease = edge.memory.lease(&peer.to_string());
                let tls = edge.tls.clone();
                connections.spawn(async move {
                    if let Some((stream, certified)) =
                        handshake(socket, peer, protocol, tls, &broker).await
                    {
                        // SASL_SSL: the SASL principal; SSL: the client certificate's subject.
                        let auth = if protocol.sasl() {
                            Authentication::sasl()
                        } else {
                            Authentication::open(certified.unwrap_or_else(|| ANONYMOUS.to_string()))
                        };
                        let session = Session {
                            peer: peer.to_string(),
                            listener: protocol,
                            auth,
                            quota: Default::default(),
                        };
                        connection::serve(stream, peer, broker, lease, stop, session).await;
                    }
                    drop(counted);
                    drop(permit);
                });
            }
            Err(e) => {
                // Usually EMFILE: back off briefly instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// How the controller listener authenticates and admits peers: its protocol; SCRAM
/// credentials from the metadata image, or from `bootstrap_users` while the image has none
/// for the user; with `authorizer = "acl"` a peer needs CLUSTER_ACTION on the cluster (super
/// users have it), as Kafka's controller asks of brokers and other controllers.
async fn peer_security(
    config: &Config,
    protocol: SecurityProtocol,
    tls: Option<Arc<Tls>>,
    node: Arc<crate::meta::node::MetaNode>,
) -> controller_auth::PeerSecurity {
    use crate::security::acl::{AclOperation, Authorizer, ResourceType, CLUSTER_NAME};
    let users = config.bootstrap_credentials().unwrap_or_default();
    let bootstrap = if protocol.sasl() && !users.is_empty() {
        crate::threads::spawn_blocking(move || controller_auth::bootstrap_credentials(&users))
            .await
            .unwrap_or_default()
    } else {
        Default::default()
    };
    let image_node = node.clone();
    let credentials: controller_auth::CredentialLookup = Arc::new(move |user, m| {
        let image = image_node.image();
        if image.scram.contains_key(user) {
            image.scram_credential(user, m)
        } else {
            bootstrap.get(&(user.to_string(), m)).cloned()
        }
    });
    let admit: controller_auth::Admission = if config.authorizer == "acl" {
        let super_users = config.super_users.clone();
        let everyone = config.allow_everyone_if_no_acl_found;
        Arc::new(move |principal, host| {
            let acls = node.image().acls.clone();
            Authorizer::new(acls.iter().cloned(), super_users.clone(), everyone)
                .authorize(
                    principal,
                    host,
                    AclOperation::ClusterAction,
                    ResourceType::Cluster,
                    CLUSTER_NAME,
                )
                .is_allowed()
        })
    } else {
        Arc::new(|_, _| true)
    };
    let mut mechanisms: Vec<String> = config
        .sasl_enabled_mechanisms
        .iter()
        .filter(|m| m.as_str() != "OAUTHBEARER")
        .cloned()
        .collect();
    let own = config.controller_mechanism().to_string();
    if !mechanisms.contains(&own) {
        mechanisms.push(own);
    }
    controller_auth::PeerSecurity {
        protocol,
        tls,
        mechanisms,
        credentials,
        admit,
        max_receive: config.sasl_server_max_receive_size,
        timeout: Duration::from_millis(config.authentication_timeout_ms),
    }
}

/// The TLS handshake of a connection to an SSL or SASL_SSL listener, within
/// `authentication_timeout_ms`, with the principal of the client's certificate when it sent
/// one (mutual TLS); a plain connection as it is. None (logged) when it failed.
async fn handshake(
    socket: tokio::net::TcpStream,
    peer: SocketAddr,
    protocol: SecurityProtocol,
    tls: Option<Arc<Tls>>,
    broker: &Broker,
) -> Option<(connection::Stream, Option<String>)> {
    if !protocol.tls() {
        return Some((connection::Stream::Plain(socket), None));
    }
    let Some(tls) = tls else {
        tracing::error!(%peer, "closing connection: TLS listener without a TLS configuration");
        return None;
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.current());
    let limit = Duration::from_millis(broker.config.authentication_timeout_ms);
    match tokio::time::timeout(limit, acceptor.accept(socket)).await {
        Ok(Ok(stream)) => {
            let certified = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| crate::security::principal::certificate_principal(c));
            let principal = match certified {
                None => None,
                Some(Ok(p)) => {
                    tracing::debug!(%peer, principal = %p, "client certificate");
                    Some(p)
                }
                Some(Err(e)) => {
                    tracing::info!(%peer, error = %e, "closing connection: unreadable client certificate");
                    return None;
                }
            };
            Some((connection::Stream::Tls(Box::new(stream)), principal))
        }
        Ok(Err(e)) => {
            tracing::info!(%peer, error = %e, "closing connection: TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::info!(%peer, "closing connection: TLS handshake not done in authentication_timeout_ms");
            None
        }
    }
}

/// Reloads the TLS certificate and key on SIGHUP (new connections use them; open ones keep
/// theirs), until `stop`.
async fn reload_on_sighup(tls: Arc<Tls>, mut stop: watch::Receiver<bool>) {
    let mut hangups = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGHUP: TLS files will not be reloaded");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = hangups.recv() => {}
            _ = stop.changed() => return,
        }
        let tls = tls.clone();
        match crate::threads::spawn_blocking(move || tls.reload()).await {
            Ok(Ok(())) => tracing::info!("SIGHUP: TLS certificate and key reloaded"),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "SIGHUP: TLS reload failed; the previous certificate stays")
            }
            Err(e) => {
                tracing::error!(error = %e, "SIGHUP: TLS reload failed; the previous certificate stays")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn localhost_means_both_families() {
        let a = listen_addrs("localhost:9092").unwrap();
        assert_eq!(a.len(), 2);
        assert!(a[0].is_ipv4() && a[1].is_ipv6());
        assert_eq!(listen_addrs("[::1]:1").unwrap()[0].port(), 1);
        assert!(listen_addrs("nohost").is_err());
        assert!(listen_addrs("example.com:9092").is_err());
    }
}
