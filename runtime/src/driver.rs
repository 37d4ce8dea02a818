//! Runs the core. The [`Gateway`] sits in a mutex held only around one `handle` plus the drain
//! of its actions (never across an `.await`); the actions are then carried out by the part that
//! owns them: tcp listeners in [`crate::listeners`], visitor limits in [`crate::admission`],
//! session lines, exit statuses and disconnects in [`crate::session_writer`], and the answers a
//! handler must give back to russh in [`Answers`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use russh::server::Handle;
use tokio::sync::{watch, Notify};
use tunnel_core::{
    Action, Address, ConnId, EndpointId, Gateway, GatewayConfig, Input, ReleaseOutcome, Reply,
    RequestId,
};

use crate::admission::{ServerVisitors, SourceConnections, VisitorLimits};
use crate::listeners::Listeners;
use crate::net::Net;
use crate::session_writer::{Outbox, Outgoing};
use crate::spill::Spills;

/// What the adapter needs besides the core's decisions.
#[derive(Clone, Debug)]
pub struct DriverSettings {
    /// The address tcp endpoint listeners bind on.
    pub tcp_bind_ip: IpAddr,
    /// How long an HTTP visitor may take to send a request head.
    pub http_header_timeout: Duration,
    /// How long an HTTP visitor connection may stay quiet (before its first request, between
    /// requests, in a request body) before it is closed; upgraded streams are exempt.
    pub http_idle_timeout: Duration,
    /// How long an https visitor may take to send its ClientHello, and a trusted proxy its PROXY
    /// header.
    pub tls_hello_timeout: Duration,
    /// How long a `forwarded-tcpip` channel open may take before the visitor is refused.
    pub channel_open_timeout: Duration,
    /// After a session's exit status, how long the client gets to hang up before we do.
    pub close_grace: Duration,
    /// Where slow visitors' waiting data is spilled; it must exist.
    pub spill_dir: PathBuf,
    /// Proxies in front of the server whose forwarding headers are believed.
    pub trusted_proxies: tunnel_core::TrustedProxies,
    /// Whether each visitor connection gets an access log line (`--access-log`).
    pub access_log: bool,
    /// `--metrics-per-endpoint`: series labelled with each endpoint's name or port.
    pub metrics_per_endpoint: bool,
}

pub(crate) struct ConnLink {
    pub(crate) handle: Option<Handle>,
    outbox: Outbox,
    /// Dropped with the link when the connection ends, which ends every visitor stream on it.
    _alive: watch::Sender<()>,
    pub(crate) alive: watch::Receiver<()>,
}

/// Resolves when a connection ends. Visitor streams wait on it beside their copy, because a
/// russh channel writer can stay pending for good once its connection is gone.
#[derive(Clone, Debug)]
pub struct ConnectionGone(pub(crate) watch::Receiver<()>);

impl ConnectionGone {
    /// Waits until the connection has ended.
    pub async fn wait(mut self) {
        while self.0.changed().await.is_ok() {}
    }
}

pub(crate) struct State<L> {
    pub(crate) gateway: Gateway,
    pub(crate) conns: HashMap<ConnId, ConnLink>,
    pub(crate) listeners: Listeners<L>,
    pub(crate) visitor_limits: VisitorLimits,
    /// Every visitor the server serves at once.
    pub(crate) visitors_on_server: ServerVisitors,
}

/// What a handler call gets back synchronously: the core's answers, each kept with the
/// connection it is for (request ids are unique only within one connection).
#[derive(Debug, Default)]
pub struct Answers {
    auths: Vec<(ConnId, bool)>,
    sessions: Vec<(ConnId, bool)>,
    replies: Vec<(ConnId, RequestId, Reply)>,
    closed: Vec<ConnId>,
}

impl Answers {
    /// Whether `conn`'s key is accepted; no answer is a rejection.
    pub fn auth(&self, conn: ConnId) -> bool {
        self.auths
            .iter()
            .any(|&(c, accepted)| c == conn && accepted)
    }

    /// Whether `conn` may open its session channel; no answer is a refusal.
    pub fn session(&self, conn: ConnId) -> bool {
        self.sessions
            .iter()
            .any(|&(c, accepted)| c == conn && accepted)
    }

    /// The reply to `conn`'s global request `request`; no answer is a refusal.
    pub fn reply(&self, conn: ConnId, request: RequestId) -> Reply {
        self.replies
            .iter()
            .find(|&&(c, r, _)| c == conn && r == request)
            .map_or(Reply::Refused, |&(_, _, reply)| reply)
    }

    /// Whether the core closed `conn`.
    pub fn closed(&self, conn: ConnId) -> bool {
        self.closed.contains(&conn)
    }
}

/// Counters for leak checks in tests and simulations.
#[derive(Debug, Default)]
pub struct Stats {
    /// Visitor streams being piped.
    pub active_streams: AtomicUsize,
    /// Tcp endpoint listeners running.
    pub active_listeners: AtomicUsize,
}

/// The running gateway: core state plus the links to connections and listeners.
pub struct Driver<N: Net> {
    state: Mutex<State<N::Listener>>,
    pub(crate) net: N,
    /// Replaced whole when the operator reconfigures (SIGHUP); each reader takes the current one.
    settings: std::sync::RwLock<Arc<DriverSettings>>,
    timer_changed: Notify,
    /// Told when the core's holdings moved past `holdings_seen` (see `holdings_file`).
    holdings_moved: Notify,
    holdings_seen: AtomicU64,
    /// Set once the server begins to stop.
    stopping: watch::Sender<bool>,
    /// Leak-check counters.
    pub stats: Stats,
    /// The spill buffers of every visitor stream.
    pub spills: Arc<Spills>,
    /// Open connections to the http and https listeners, per source.
    pub(crate) visitor_connections: Arc<SourceConnections>,
    /// What `/metrics` and the admin API report.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Each listed key's `authorized_keys` comment, by fingerprint, for the admin API.
    key_comments: Mutex<HashMap<String, String>>,
}

/// Current time for the core: tokio's clock, so simulations run on simulated time.
pub fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

impl<N: Net> Driver<N> {
    /// Wraps a gateway.
    pub fn new(gateway: Gateway, net: N, settings: DriverSettings) -> Arc<Self> {
        let gateway_spill_limits = &gateway.config().spill_limits().clone();
        let visitors_total = gateway.config().limits().visitors_total();
        let visitor_connections = SourceConnections::new(gateway.config().limits().clone());
        Arc::new(Self {
            state: Mutex::new(State {
                gateway,
                conns: HashMap::new(),
                listeners: Listeners::default(),
                visitor_limits: VisitorLimits::default(),
                visitors_on_server: ServerVisitors::new(visitors_total),
            }),
            spills: Spills::new(*gateway_spill_limits, settings.spill_dir.clone()),
            net,
            timer_changed: Notify::new(),
            holdings_moved: Notify::new(),
            holdings_seen: AtomicU64::new(0),
            stopping: watch::Sender::new(false),
            stats: Stats::default(),
            visitor_connections,
            metrics: Arc::new(crate::metrics::Metrics::new(settings.metrics_per_endpoint)),
            key_comments: Mutex::default(),
            settings: std::sync::RwLock::new(Arc::new(settings)),
        })
    }

    /// The settings as they are now.
    pub fn settings(&self) -> Arc<DriverSettings> {
        let settings = self.settings.read().unwrap_or_else(|p| p.into_inner());
        Arc::clone(&settings)
    }

    /// Reconfigures a running server (SIGHUP): the core takes what it can change live (see
    /// [`GatewayConfig::take_live`](tunnel_core::GatewayConfig::take_live)) and the limits it
    /// then runs with reach the counts kept here; `settings` replaces the runtime's own for every
    /// visitor and connection from now on (those in flight keep what they started with).
    pub async fn reconfigure(self: &Arc<Self>, config: GatewayConfig, settings: DriverSettings) {
        *self.settings.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(settings);
        self.submit(Input::Reconfigured {
            config: Box::new(config),
        })
        .await;
        let mut state = self.lock();
        let limits = state.gateway.config().limits().clone();
        state.visitors_on_server.set_limit(limits.visitors_total());
        self.visitor_connections.set_limits(limits);
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State<N::Listener>> {
        // A panic while holding the lock is a bug already reported; the state stays usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Reads the core (routing queries, counts) under the lock.
    pub fn with_gateway<T>(&self, f: impl FnOnce(&Gateway) -> T) -> T {
        f(&self.lock().gateway)
    }

    /// Remembers the comments of the keys in `keys` (the file read at start or re-read), for the
    /// admin API to show beside their fingerprints.
    pub fn set_key_comments(&self, keys: &crate::keys::AuthorizedKeys) {
        let comments = keys
            .entries()
            .iter()
            .filter(|e| !e.comment().is_empty())
            .map(|e| (e.fingerprint().to_owned(), e.comment().to_owned()))
            .collect();
        *self.key_comments.lock().unwrap_or_else(|p| p.into_inner()) = comments;
    }

    /// The `authorized_keys` comment of the key with this fingerprint, if it has one.
    pub fn key_comment(&self, fingerprint: &str) -> Option<String> {
        let comments = self.key_comments.lock().unwrap_or_else(|p| p.into_inner());
        comments.get(fingerprint).cloned()
    }

    /// Registers a new connection's outbox before any input names it.
    pub fn register(&self, conn: ConnId, outbox: Outbox) {
        let (alive_tx, alive) = watch::channel(());
        self.lock().conns.insert(
            conn,
            ConnLink {
                handle: None,
                outbox,
                _alive: alive_tx,
                alive,
            },
        );
    }

    /// Records the connection's russh handle once its session runs.
    pub fn set_handle(&self, conn: ConnId, handle: Handle) {
        if let Some(link) = self.lock().conns.get_mut(&conn) {
            link.handle = Some(handle);
        }
    }

    /// Queues a message for a connection's outbox.
    pub fn send_outgoing(&self, conn: ConnId, message: Outgoing) {
        self.lock().outgoing(conn, message);
    }

    /// Feeds one input, carries out what follows, and returns the answers the calling handler
    /// must give. Listeners are bound here, before returning, so that a forward's reply names a
    /// port the host really gave us (the core answers once the bind is reported).
    pub async fn submit(self: &Arc<Self>, input: Input) -> Answers {
        let mut answers = Answers::default();
        let mutate = |state: &mut State<N::Listener>| {
            // The link goes in the same lock as the connection's routes, so no visitor finds a
            // route whose connection is gone.
            match &input {
                Input::ConnectionClosed { conn } => {
                    state.conns.remove(conn);
                }
                Input::ConnectionOpened { .. } => self.metrics.connection_opened(),
                _ => {}
            }
            state.gateway.handle(now(), input);
        };
        self.run(mutate, &mut answers).await;
        answers
    }

    /// The operator closes `conn` (see [`Input::Kick`]); false if no such connection is open.
    pub async fn kick(self: &Arc<Self>, conn: ConnId, reason: Option<String>) -> bool {
        let mut found = false;
        let mutate = |state: &mut State<N::Listener>| {
            found = state
                .gateway
                .connections_view(now())
                .iter()
                .any(|c| c.conn == conn);
            state.gateway.handle(now(), Input::Kick { conn, reason });
        };
        self.run(mutate, &mut Answers::default()).await;
        found
    }

    /// The operator drops a reservation (see [`Input::Release`]): what the core found, decided
    /// under the same lock as the release itself.
    pub async fn release(self: &Arc<Self>, address: Address) -> ReleaseOutcome {
        let mut outcome = ReleaseOutcome::NotHeld;
        let mutate = |state: &mut State<N::Listener>| {
            outcome = state.gateway.release_outcome(&address);
            state.gateway.handle(now(), Input::Release { address });
        };
        self.run(mutate, &mut Answers::default()).await;
        outcome
    }

    /// Runs the core's deadlines for as long as the driver lives.
    pub async fn run_timers(self: Arc<Self>) {
        loop {
            let next = self.lock().gateway.poll_timeout();
            match next {
                Some(at) => {
                    let at = tokio::time::Instant::from_std(at);
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {}
                        () = self.timer_changed.notified() => continue,
                    }
                }
                None => {
                    self.timer_changed.notified().await;
                    continue;
                }
            }
            let mut answers = Answers::default();
            let mutate = |state: &mut State<N::Listener>| state.gateway.handle_timeout(now());
            self.run(mutate, &mut answers).await;
        }
    }

    /// One mutation of the core, then its actions carried out, binds answered in order until the
    /// core asks for nothing more.
    async fn run(
        self: &Arc<Self>,
        mutate: impl FnOnce(&mut State<N::Listener>),
        answers: &mut Answers,
    ) {
        // The holdings' version is read under the locks taken anyway, never with one of its own.
        let (mut binds, mut version) = {
            let mut state = self.lock();
            mutate(&mut state);
            let actions = drain(&mut state.gateway);
            let binds = self.execute(&mut state, actions, answers);
            (binds, state.gateway.holdings_version())
        };
        while !binds.is_empty() {
            let (endpoint, port) = binds.remove(0);
            let outcome = self.bind(endpoint, port).await;
            let mut state = self.lock();
            state.gateway.handle(now(), outcome);
            let actions = drain(&mut state.gateway);
            binds.extend(self.execute(&mut state, actions, answers));
            version = state.gateway.holdings_version();
        }
        self.timer_changed.notify_one();
        if self.holdings_seen.swap(version, Ordering::Relaxed) != version {
            self.holdings_moved.notify_one();
        }
    }

    /// Resolves once the server has begun to stop: visitor connections finish what is in flight
    /// and close.
    pub async fn stopping(&self) {
        let mut stopping = self.stopping.subscribe();
        let _ = stopping.wait_for(|s| *s).await;
    }

    /// Begins the stop: tcp endpoint listeners stop accepting, the core tells every session and
    /// closes newcomers, visitor connections are asked to finish.
    pub async fn begin_stop(self: &Arc<Self>) {
        self.stopping.send_replace(true);
        self.lock().listeners.stop_accepting();
        self.submit(Input::Stopping).await;
    }

    /// Ends the stop: the core closes every connection.
    pub async fn end_stop(self: &Arc<Self>) {
        self.submit(Input::Stopped).await;
    }

    /// Waits until the core's holdings (names and ports, live or reserved) have changed.
    pub(crate) async fn holdings_changed(&self) {
        self.holdings_moved.notified().await;
    }

    /// Carries out actions under the lock (none of them waits); returns the binds to perform.
    fn execute(
        self: &Arc<Self>,
        state: &mut State<N::Listener>,
        actions: Vec<Action>,
        answers: &mut Answers,
    ) -> Vec<(EndpointId, u16)> {
        let mut binds = Vec::new();
        let mut certificate_refused = None;
        for action in actions {
            match action {
                Action::Auth { conn, accepted } => {
                    if !accepted {
                        let by_certificate = certificate_refused == Some(conn);
                        self.metrics.auth_failed(if by_certificate {
                            "certificate"
                        } else {
                            "key"
                        });
                    }
                    answers.auths.push((conn, accepted));
                }
                Action::CertificateRefused { conn, reason } => {
                    certificate_refused = Some(conn);
                    tracing::warn!(%conn, "certificate login refused: {reason}");
                }
                Action::SessionAnswer { conn, accepted } => {
                    answers.sessions.push((conn, accepted));
                }
                Action::Reply {
                    conn,
                    request,
                    reply,
                } => answers.replies.push((conn, request, reply)),
                Action::Bind { endpoint, port } => binds.push((endpoint, port)),
                Action::Unbind { endpoint, port } => state.listeners.unbind(endpoint, port),
                Action::RouteAdded(route) => {
                    tracing::debug!(endpoint = %route.endpoint, conn = %route.conn, "route added");
                    let stats = self.metrics.route_added(&route);
                    state.visitor_limits.route_added(&route, stats);
                    self.start_accepting(&mut state.listeners, &route);
                }
                Action::RouteRemoved(endpoint) => {
                    tracing::debug!(%endpoint, "route removed");
                    state.visitor_limits.route_removed(endpoint);
                    self.metrics.route_removed(endpoint);
                }
                Action::Print { conn, stream, line } => {
                    state.outgoing(conn, Outgoing::Print(stream, line));
                }
                Action::Exit { conn, status } => state.outgoing(conn, Outgoing::Exit(status)),
                Action::Close { conn, message } => {
                    answers.closed.push(conn);
                    state.outgoing(conn, Outgoing::Close(message));
                }
                other => tracing::warn!(?other, "action not understood by this runtime"),
            }
        }
        binds
    }
}

impl<L> State<L> {
    pub(crate) fn outgoing(&self, conn: ConnId, message: Outgoing) {
        if let Some(link) = self.conns.get(&conn) {
            link.outbox.send(message);
        }
    }
}

fn drain(gateway: &mut Gateway) -> Vec<Action> {
    std::iter::from_fn(|| gateway.poll_action()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_is_found_only_by_its_own_connection() {
        let (a, b) = (ConnId::from_raw(1), ConnId::from_raw(2));
        let request = RequestId::from_raw(1);
        let answers = Answers {
            replies: vec![(b, request, Reply::Granted { port: Some(20001) })],
            ..Answers::default()
        };
        assert_eq!(answers.reply(a, request), Reply::Refused);
        assert_eq!(
            answers.reply(b, request),
            Reply::Granted { port: Some(20001) }
        );
    }
}
